"""The gateway's routes end to end, over fake preprocessing and model services that answer like the real ones."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.gateway.conftest import FakeServer, Recorded, Reply, bearer, dead_url, make_token

CLASSES = ["setosa", "versicolor", "virginica"]
INSTANCES = [
    {"id": "a", "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 99.0, "petal_width": 1.5},
    {"id": "c", "sepal_length": 6.3, "sepal_width": 2.8, "petal_length": 5.1, "petal_width": 1.5},
]
PROBABILITIES = [[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.3, 0.45, 0.25]]
OUT_OF_RANGE = {
    "instance": 1,
    "field": "petal_length",
    "message": "99.0 is outside the range seen in training [1, 6.9]",
}


def summary(version: int | None = 1, canary: dict[str, Any] | None = None) -> dict[str, Any]:
    """``GET /v1/models/<name>`` of the model service."""
    return {
        "name": "iris",
        "versions": [1, 2],
        "deployed": None if version is None else {"version": version, "canary": canary},
        "ready": version is not None,
        "metadata": {"task": "classification", "classes": CLASSES, "metrics": {"accuracy": 0.97}},
    }


def transformed(version: int, rows: int = 3) -> dict[str, Any]:
    """What the preprocessing service's transform answers (``Preprocessor.infer_request``)."""
    return {
        "id": "ignored",
        "parameters": {
            "model": "iris",
            "version": str(version),
            "contract_fingerprint": "f" * 64,
            "instance_ids": ["a", None, "c"][:rows],
            "warnings": [OUT_OF_RANGE] if rows > 1 else [],
            "transform": "compiled",
        },
        "inputs": [{"name": "preprocessed", "shape": [rows, 4], "datatype": "FP64", "data": [0.5] * (rows * 4)}],
    }


def inferred(version: int, rows: int = 3) -> dict[str, Any]:
    """What the model service's infer answers (``serving.infer``) for a classifier."""
    labels = [CLASSES[max(range(3), key=p.__getitem__)] for p in PROBABILITIES[:rows]]
    flat = [p for row in PROBABILITIES[:rows] for p in row]
    return {
        "model_name": "iris",
        "model_version": str(version),
        "id": "ignored",
        # The model service echoes the transform's instance ids and warnings (serving.ECHOED_PARAMETERS).
        "parameters": {
            "runtime": "onnx",
            "contract_fingerprint": "f" * 64,
            "instance_ids": ["a", None, "c"][:rows],
            "warnings": [OUT_OF_RANGE] if rows > 1 else [],
        },
        "outputs": [
            {"name": "label", "shape": [rows], "datatype": "BYTES", "data": labels},
            {
                "name": "probabilities",
                "shape": [rows, 3],
                "datatype": "FP64",
                "data": flat,
                "parameters": {"classes": CLASSES},
            },
        ],
    }


def problem(status: int, slug: str, detail: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:modelgate:problem:{slug}",
        "title": {404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity"}.get(status, "Error"),
        "status": status,
        "detail": detail,
        "request_id": "upstream-request-id",
    }
    if errors is not None:
        body["errors"] = errors
    return body


@dataclass
class Services:
    """The two fake upstreams and a gateway in front of them."""

    preprocessing: FakeServer
    model: FakeServer
    app: Flask

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def all_requests(self) -> list[Recorded]:
        return self.preprocessing.requests + self.model.requests

    def predict(self, body: Any = None, *, token: str | None = None, **kwargs: Any) -> Any:
        headers = {**bearer(token or make_token()), **kwargs.pop("headers", {})}
        if "data" not in kwargs:
            kwargs["json"] = {"instances": INSTANCES} if body is None else body
        return self.client.post("/v1/models/iris/predict", headers=headers, **kwargs)


@pytest.fixture
def services(start_server: Callable[..., FakeServer], make_app: Callable[..., Flask]) -> Services:
    preprocessing, model = start_server(), start_server()
    model.on("GET", "/v1/models/iris", Reply(200, summary(1)))
    for version in (1, 2):
        preprocessing.on("POST", f"/v1/models/iris/versions/{version}/transform", Reply(200, transformed(version)))
        model.on("POST", f"/v2/models/iris/versions/{version}/infer", Reply(200, inferred(version)))
    app = make_app(
        preprocessing_urls=preprocessing.url,
        model_urls=model.url,
        max_batch_rows=3,
        request_deadline_seconds=0.6,
        review_threshold=0.6,
    )
    return Services(preprocessing, model, app)


# --- predict -------------------------------------------------------------------------------------


def test_predict_combines_both_hops_into_the_contract_answer(services: Services) -> None:
    response = services.predict(headers={"X-Request-ID": "client-request-0001"})

    assert response.status_code == 200, response.get_json()
    assert response.headers["X-Request-ID"] == "client-request-0001"
    assert response.get_json() == {
        "model": "iris",
        "version": "1",
        "request_id": "client-request-0001",
        "predictions": [
            {
                "id": "a",
                "prediction": "setosa",
                "probabilities": {"setosa": 0.9, "versicolor": 0.05, "virginica": 0.05},
                "confidence": 0.9,
                "review_required": False,
            },
            {
                "prediction": "virginica",
                "probabilities": {"setosa": 0.1, "versicolor": 0.2, "virginica": 0.7},
                "confidence": 0.7,
                "review_required": True,  # confident, but a value outside the training range
                "warnings": [f"petal_length: {OUT_OF_RANGE['message']}"],
            },
            {
                "id": "c",
                "prediction": "versicolor",
                "probabilities": {"setosa": 0.3, "versicolor": 0.45, "virginica": 0.25},
                "confidence": 0.45,
                "review_required": True,  # under REVIEW_THRESHOLD
            },
        ],
    }


def test_predict_sends_each_hop_what_it_needs(services: Services) -> None:
    raw = json.dumps({"instances": INSTANCES}).encode()

    services.predict(data=raw, content_type="application/json", headers={"X-Request-ID": "client-request-0002"})

    assert services.model.paths() == ["/v1/models/iris", "/v2/models/iris/versions/1/infer"]
    assert services.preprocessing.paths() == ["/v1/models/iris/versions/1/transform"]
    assert services.preprocessing.requests[0].body == raw  # the client's instances, unchanged
    assert services.model.requests[1].json() == transformed(1)  # the transform's answer, unchanged
    for recorded in services.all_requests():
        assert recorded.headers["x-request-id"] == "client-request-0002"
        assert "authorization" not in recorded.headers


@pytest.mark.parametrize(("threshold", "flags"), [(0.0, [False, True, False]), (0.95, [True, True, True])])
def test_review_threshold_is_configurable(
    services: Services, make_app: Callable[..., Flask], threshold: float, flags: list[bool]
) -> None:
    app = make_app(
        preprocessing_urls=services.preprocessing.url, model_urls=services.model.url, review_threshold=threshold
    )

    response = app.test_client().post(
        "/v1/models/iris/predict", headers=bearer(make_token()), json={"instances": INSTANCES}
    )

    assert [p["review_required"] for p in response.get_json()["predictions"]] == flags


def test_regression_answers_have_no_probabilities(services: Services) -> None:
    services.model.on(
        "POST",
        "/v2/models/iris/versions/1/infer",
        Reply(
            200,
            {
                "parameters": {"instance_ids": ["a", None, "c"], "warnings": [OUT_OF_RANGE]},
                "outputs": [{"name": "prediction", "shape": [3], "datatype": "FP64", "data": [1.5, 2.5, 3.5]}],
            },
        ),
    )

    predictions = services.predict().get_json()["predictions"]

    assert [p["prediction"] for p in predictions] == [1.5, 2.5, 3.5]
    assert all(p["probabilities"] is None and p["confidence"] is None for p in predictions)
    assert [p["review_required"] for p in predictions] == [False, True, False]  # only the range warning


@pytest.mark.parametrize(("weight", "version"), [(100.0, 2), (0.0, 1)])
def test_a_canary_takes_its_weight(services: Services, weight: float, version: int) -> None:
    services.model.on("GET", "/v1/models/iris", Reply(200, summary(1, {"version": 2, "weight": weight})))

    for _ in range(3):
        assert services.predict().get_json()["version"] == str(version)

    assert services.preprocessing.paths() == [f"/v1/models/iris/versions/{version}/transform"] * 3


def test_no_deployed_version_is_503(services: Services) -> None:
    services.model.on("GET", "/v1/models/iris", Reply(200, summary(None)))

    response = services.predict()

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert services.preprocessing.requests == []


def _many() -> dict[str, Any]:
    return {"instances": INSTANCES + INSTANCES[:1]}  # four rows, the limit is three


#: Requests refused before any upstream call: (keyword arguments for predict, path, status, problem slug).
REFUSED_EARLY: dict[str, tuple[dict[str, Any], str, int, str]] = {
    "too-many-rows": ({"json": _many()}, "iris", 413, "payload-too-large"),
    "not-json-content-type": (
        {"data": "instances=1", "content_type": "text/plain"},
        "iris",
        415,
        "unsupported-media-type",
    ),
    "no-content-type": ({"data": b'{"instances": []}'}, "iris", 415, "unsupported-media-type"),
    "malformed-json": ({"data": '{"instances": [', "content_type": "application/json"}, "iris", 400, "malformed-json"),
    "nan-is-not-json": (
        {"data": '{"instances": [{"x": NaN}]}', "content_type": "application/json"},
        "iris",
        400,
        "malformed-json",
    ),
    "not-utf8": (
        {"data": b'{"instances": ["\xff"]}', "content_type": "application/json"},
        "iris",
        400,
        "malformed-json",
    ),
    "uppercase-name": ({"json": {"instances": INSTANCES}}, "Iris", 404, "invalid-name"),
    "underscore-name": ({"json": {"instances": INSTANCES}}, "iris_v2", 404, "invalid-name"),
    "leading-hyphen": ({"json": {"instances": INSTANCES}}, "-iris", 404, "invalid-name"),
    "overlong-name": ({"json": {"instances": INSTANCES}}, "a" * 64, 404, "invalid-name"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_EARLY))
def test_bad_requests_are_refused_before_any_upstream_call(services: Services, case: str) -> None:
    kwargs, name, status, slug = REFUSED_EARLY[case]

    response = services.client.post(f"/v1/models/{name}/predict", headers=bearer(make_token()), **kwargs)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == f"urn:modelgate:problem:{slug}"
    assert services.all_requests() == []


def test_an_oversized_body_is_413(services: Services, make_app: Callable[..., Flask]) -> None:
    app = make_app(preprocessing_urls=services.preprocessing.url, model_urls=services.model.url, max_body_bytes=1024)
    body = {"instances": [{"note": "x" * 2000}]}

    response = app.test_client().post("/v1/models/iris/predict", headers=bearer(make_token()), json=body)

    assert response.status_code == 413
    assert services.all_requests() == []


def test_upstream_422_is_relayed_with_its_errors(services: Services) -> None:
    errors = {"instances": {"0": {"sepal_length": ["Missing data for required field."]}}}
    services.preprocessing.on(
        "POST",
        "/v1/models/iris/versions/1/transform",
        Reply(
            422,
            problem(422, "validation-error", "1 of 3 instances do not fit", errors),
            content_type="application/problem+json",
        ),
    )

    response = services.predict(headers={"X-Request-ID": "client-request-0003"})

    assert response.status_code == 422
    body = response.get_json()
    assert body["errors"] == errors
    assert body["type"] == "urn:modelgate:problem:validation-error"
    assert body["detail"] == "1 of 3 instances do not fit"
    assert body["request_id"] == "client-request-0003"  # the gateway's id, not the upstream's
    assert services.model.paths() == ["/v1/models/iris"]  # never reached inference


@pytest.mark.parametrize(
    ("upstream_status", "status"),
    [(404, 404), (409, 409), (500, 502), (501, 502), (302, 502), (418, 502)],
)
def test_upstream_statuses_are_relayed_or_become_502(services: Services, upstream_status: int, status: int) -> None:
    services.model.on(
        "POST",
        "/v2/models/iris/versions/1/infer",
        Reply(upstream_status, problem(upstream_status, "whatever", "upstream said no")),
    )

    response = services.predict()

    assert response.status_code == status
    if status == 502:
        assert response.get_json()["type"] == "urn:modelgate:problem:upstream-bad-response"
        assert "upstream said no" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "body",
    [b"not json", json.dumps({"outputs": "nope"}).encode(), json.dumps({"no": "outputs"}).encode()],
)
def test_a_model_answer_without_usable_outputs_is_502(services: Services, body: bytes) -> None:
    services.model.on("POST", "/v2/models/iris/versions/1/infer", Reply(200, body))

    assert services.predict().status_code == 502


def test_unreachable_upstream_is_503_with_retry_after(services: Services, make_app: Callable[..., Flask]) -> None:
    app = make_app(preprocessing_urls=services.preprocessing.url, model_urls=dead_url())

    response = app.test_client().post(
        "/v1/models/iris/predict", headers=bearer(make_token()), json={"instances": INSTANCES}
    )

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.get_json()["type"] == "urn:modelgate:problem:upstream-unavailable"


def test_a_hanging_upstream_is_504_within_the_deadline(services: Services) -> None:
    services.preprocessing.on("POST", "/v1/models/iris/versions/1/transform", Reply(200, transformed(1), delay=5.0))

    started = time.monotonic()
    response = services.predict()
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert elapsed < 0.6 + 0.3  # REQUEST_DEADLINE_SECONDS, across both hops, plus slack
    assert services.model.paths() == ["/v1/models/iris"]


def test_the_deadline_covers_every_hop(services: Services) -> None:
    services.model.on("GET", "/v1/models/iris", Reply(200, summary(1), delay=0.25))
    services.preprocessing.on("POST", "/v1/models/iris/versions/1/transform", Reply(200, transformed(1), delay=0.25))
    services.model.on("POST", "/v2/models/iris/versions/1/infer", Reply(200, inferred(1), delay=0.25))

    started = time.monotonic()
    response = services.predict()

    assert response.status_code == 504  # each hop is fast enough alone, not all three together
    assert time.monotonic() - started < 0.6 + 0.3


# --- models --------------------------------------------------------------------------------------


def test_list_models_is_the_model_services_list(services: Services) -> None:
    listing = {"models": [{"name": "iris", "versions": [1, 2]}]}
    services.model.on("GET", "/v1/models", Reply(200, listing))

    response = services.client.get("/v1/models", headers=bearer(make_token()))

    assert response.status_code == 200
    assert response.get_json() == listing


def test_describe_adds_the_input_schema_and_an_example(services: Services) -> None:
    schema = {"type": "object", "required": ["sepal_length"], "examples": [INSTANCES[0], INSTANCES[2]]}
    services.preprocessing.on("GET", "/v1/models/iris/versions/1/schema", Reply(200, schema))

    response = services.client.get("/v1/models/iris", headers=bearer(make_token()))

    assert response.status_code == 200
    body = response.get_json()
    assert body["name"] == "iris"
    assert body["deployed"] == {"version": 1, "canary": None}
    assert body["classes"] == CLASSES
    assert body["input_schema"] == schema
    assert body["example"] == INSTANCES[0]


def test_describe_of_an_unknown_model_is_404(services: Services) -> None:
    services.model.on("GET", "/v1/models/nope", Reply(404, problem(404, "model-not-found", "model 'nope' not found")))

    response = services.client.get("/v1/models/nope", headers=bearer(make_token()))

    assert response.status_code == 404
    assert response.get_json()["type"] == "urn:modelgate:problem:model-not-found"


# --- /v2 passthrough -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v2", "/v2/health/ready", "/v2/models/iris", "/v2/models/iris/versions/2", "/v2/models/iris/versions/2/ready"],
)
def test_v2_get_is_passed_through(services: Services, path: str) -> None:
    services.model.on("GET", path, Reply(200, {"name": "iris", "path": path}))

    response = services.client.get(path, headers=bearer(make_token()))

    assert response.status_code == 200
    assert response.get_json() == {"name": "iris", "path": path}
    assert services.model.paths() == [path]


def test_v2_infer_forwards_path_and_body_unchanged(services: Services) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}).encode()
    answer = {"model_name": "iris", "outputs": []}
    services.model.on("POST", "/v2/models/iris/versions/2/infer", Reply(200, answer))

    response = services.client.post(
        "/v2/models/iris/versions/2/infer",
        data=body,
        content_type="application/json",
        headers={**bearer(make_token()), "X-Request-ID": "client-request-0004"},
    )

    assert response.status_code == 200
    assert response.get_json() == answer
    sent = services.model.requests
    assert [(r.method, r.path) for r in sent] == [("POST", "/v2/models/iris/versions/2/infer")]
    assert sent[0].body == body
    assert sent[0].headers["x-request-id"] == "client-request-0004"
    assert "authorization" not in sent[0].headers


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/../secrets",
        "/v2/models/iris/../../v1/models/iris/deploy",
        "/v2/models/iris/./infer",
        "/v2/models//infer",
        "/v2/models/iris/infer;rm",
        "/v2/models/iris/in fer",
        "/v2/models/iris/%00/infer",
        "/v2/" + "a" * 129,
    ],
)
def test_v2_refuses_odd_segments(services: Services, path: str) -> None:
    response = services.client.get(path, headers=bearer(make_token()))

    assert response.status_code == 404
    assert response.get_json()["error"]  # OIP clients read "error"
    assert services.model.requests == []


@pytest.mark.parametrize(
    "path", ["/v2/models/Iris/infer", "/v2/models/iris_x/ready", "/v2/models/iris/versions/0/infer"]
)
def test_v2_refuses_bad_model_names_and_versions(services: Services, path: str) -> None:
    response = services.client.post(path, headers=bearer(make_token()), json={"inputs": []})

    assert response.status_code == 404
    assert response.get_json()["type"] == "urn:modelgate:problem:invalid-name"
    assert services.model.requests == []


def test_v2_batch_over_the_limit_is_413(services: Services) -> None:
    body = {"inputs": [{"name": "x", "shape": [4, 2], "datatype": "FP64", "data": [0.0] * 8}]}

    response = services.client.post("/v2/models/iris/infer", headers=bearer(make_token()), json=body)

    assert response.status_code == 413
    assert services.model.requests == []


@pytest.mark.parametrize("body", [{"inputs": 5}, {"inputs": {"shape": [9]}}, {"inputs": [{"shape": "9"}]}, [1, 2]])
def test_v2_odd_bodies_go_to_the_model_service_to_judge(services: Services, body: Any) -> None:
    services.model.on(
        "POST", "/v2/models/iris/infer", Reply(400, problem(400, "invalid-inference-request", "bad inputs"))
    )

    response = services.client.post("/v2/models/iris/infer", headers=bearer(make_token()), json=body)

    assert response.status_code == 400  # relayed, never a 500 for something a client sent
    assert response.get_json()["detail"] == "bad inputs"
    assert len(services.model.requests) == 1


# --- admin ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "body"),
    [("deploy", {"version": 2}), ("canary", {"version": 2, "weight": 10}), ("promote", None), ("rollback", None)],
)
def test_admin_operations_are_forwarded(services: Services, action: str, body: dict[str, Any] | None) -> None:
    answer = {"name": "iris", "deployed": {"version": 2, "canary": None}}
    services.model.on("POST", f"/v1/models/iris/{action}", Reply(200, answer))
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}

    response = services.client.post(
        f"/v1/admin/models/iris/{action}",
        headers={**bearer(make_token(scope="admin")), "X-Request-ID": "client-request-0005"},
        **kwargs,
    )

    assert response.status_code == 200
    assert response.get_json() == answer
    sent = services.model.requests
    assert [(r.method, r.path) for r in sent] == [("POST", f"/v1/models/iris/{action}")]
    assert sent[0].json() == (body if body is not None else {})
    assert sent[0].headers["x-request-id"] == "client-request-0005"
    assert "authorization" not in sent[0].headers


@pytest.mark.parametrize("action", ["deploy", "canary", "promote", "rollback"])
def test_admin_operations_need_the_admin_scope(services: Services, action: str) -> None:
    response = services.client.post(
        f"/v1/admin/models/iris/{action}", headers=bearer(make_token(scope="predict")), json={"version": 2}
    )

    assert response.status_code == 403
    assert services.model.requests == []


def test_admin_errors_are_relayed(services: Services) -> None:
    services.model.on("POST", "/v1/models/iris/promote", Reply(409, problem(409, "conflict", "no canary to promote")))

    response = services.client.post("/v1/admin/models/iris/promote", headers=bearer(make_token(scope="admin")))

    assert response.status_code == 409
    assert response.get_json()["detail"] == "no canary to promote"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [({"data": "{", "content_type": "application/json"}, 400), ({"data": "v=2", "content_type": "text/plain"}, 415)],
)
def test_admin_bodies_are_checked_before_forwarding(services: Services, kwargs: dict[str, Any], status: int) -> None:
    response = services.client.post("/v1/admin/models/iris/deploy", headers=bearer(make_token(scope="admin")), **kwargs)

    assert response.status_code == status
    assert services.model.requests == []


def test_admin_bad_model_name_is_404(services: Services) -> None:
    response = services.client.post(
        "/v1/admin/models/Not_Valid/deploy", headers=bearer(make_token(scope="admin")), json={"version": 1}
    )

    assert response.status_code == 404
    assert services.model.requests == []


def test_a_deploy_drops_the_cached_routing(services: Services, make_app: Callable[..., Flask]) -> None:
    app = make_app(
        preprocessing_urls=services.preprocessing.url, model_urls=services.model.url, deployment_cache_seconds=60.0
    )
    client = app.test_client()

    def version() -> str:
        response = client.post("/v1/models/iris/predict", headers=bearer(make_token()), json={"instances": INSTANCES})
        return str(response.get_json()["version"])

    assert version() == "1"
    services.model.on("GET", "/v1/models/iris", Reply(200, summary(2)))
    assert version() == "1"  # cached for a minute
    services.model.on("POST", "/v1/models/iris/deploy", Reply(200, summary(2)))
    client.post("/v1/admin/models/iris/deploy", headers=bearer(make_token(scope="admin")), json={"version": 2})
    assert version() == "2"  # at once, on this worker


# --- operations ----------------------------------------------------------------------------------


def test_health_needs_nothing_and_ready_checks_the_upstreams(services: Services) -> None:
    for server in (services.preprocessing, services.model):
        server.on("GET", "/ready", Reply(200, {"status": "ready"}))

    assert services.client.get("/health").status_code == 200
    ready = services.client.get("/ready")
    assert ready.status_code == 200
    assert set(ready.get_json()["checks"]) == {"redis", "preprocessing", "model"}

    assert ready.get_json()["checks"]["model"]["addresses"] == {"model[0]": True}  # names, never URLs
    calls = len(services.model.requests)
    services.model.on("GET", "/ready", Reply(503, {"status": "not ready"}))
    assert services.client.get("/ready").status_code == 200  # answered from the last second's probe
    assert len(services.model.requests) == calls  # an unauthenticated route cannot drive calls upstream
    time.sleep(1.05)
    assert services.client.get("/ready").status_code == 503


def test_unknown_routes_are_404_problems(services: Services) -> None:
    response = services.client.get("/v1/nothing-here", headers=bearer(make_token()))

    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_options_on_a_protected_route_is_not_an_unauthenticated_200(services: Services) -> None:
    response = services.client.open("/v1/models/iris/predict", method="OPTIONS")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
