"""The preprocessing service over HTTP (Flask test client), against the real demo models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_service import create_app as create_model_app
from model_service.registry import Registry
from model_service.training import train_demo
from preprocessing_service import create_app
from shared import artifacts
from shared.pipeline import records_frame
from tests.conftest import SIGNING_KEY
from tests.model_service.conftest import make_settings as model_settings
from tests.preprocessing_service.conftest import make_settings

DEMOS = ["breast-cancer", "penguins", "diabetes"]


def rows(registry: Registry, name: str, count: int = 64) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    metadata = registry.metadata(name, 1)
    order = [f["name"] for f in metadata["contract"]["features"]]
    return metadata, [{k: row[k] for k in order} for row in metadata["parity_sample"][:count]]


def transform(client: FlaskClient, name: str, body: Any, version: str | None = "1") -> Any:
    path = f"/v1/models/{name}/versions/{version}/transform" if version else f"/v1/models/{name}/transform"
    return client.post(path, json=body)


@pytest.mark.parametrize("name", DEMOS)
def test_transform_then_infer_equals_the_scikit_learn_pipeline(
    client: FlaskClient, registry: Registry, registry_root: Path, name: str
) -> None:
    metadata, instances = rows(registry, name)
    response = transform(client, name, {"instances": instances})
    assert response.status_code == 200, response.get_json()
    request = response.get_json()
    assert request["parameters"]["contract_fingerprint"] == metadata["contract_fingerprint"]
    assert request["parameters"]["version"] == "1"
    assert request["parameters"]["transform"] == "compiled"
    tensor = request["inputs"][0]
    assert tensor["name"] == "preprocessed"
    assert tensor["shape"] == [len(instances), metadata["transformed"]["count"]]
    pipeline = artifacts.load_version(registry_root / name / "1", SIGNING_KEY).estimator
    frame = records_frame(instances, metadata["contract"])
    expected = np.asarray(pipeline[:-1].transform(frame), dtype=float)
    np.testing.assert_allclose(np.asarray(tensor["data"]).reshape(tensor["shape"]), expected, rtol=0, atol=1e-12)

    model = create_model_app(model_settings(registry_root)).test_client()
    answer = model.post(f"/v2/models/{name}/versions/1/infer", json=request)
    assert answer.status_code == 200, answer.get_json()
    outputs = {o["name"]: o for o in answer.get_json()["outputs"]}
    if metadata["task"] == "classification":
        assert outputs["label"]["data"] == [str(v) for v in pipeline.predict(frame)]
    else:
        np.testing.assert_allclose(outputs["prediction"]["data"], pipeline.predict(frame), rtol=1e-6)


def test_ids_are_echoed_and_never_features(client: FlaskClient, registry: Registry) -> None:
    _, instances = rows(registry, "diabetes", 3)
    instances[0]["id"] = "first"
    instances[2]["id"] = 42
    body = transform(client, "diabetes", {"instances": instances}).get_json()
    assert body["parameters"]["instance_ids"] == ["first", None, 42]
    assert body["inputs"][0]["shape"] == [3, 10]


def test_out_of_range_values_are_accepted_with_warnings(client: FlaskClient, registry: Registry) -> None:
    _, instances = rows(registry, "penguins", 2)
    instances[1]["body_mass_g"] = 12000
    response = transform(client, "penguins", {"instances": instances})
    assert response.status_code == 200
    warnings = response.get_json()["parameters"]["warnings"]
    assert warnings == [
        {
            "instance": 1,
            "field": "body_mass_g",
            "message": "12000.0 is outside the range seen in training [2700.0, 6300.0]",
        }
    ]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'modelgate_feature_out_of_range_total{feature="body_mass_g",model="penguins",version="1"} 1.0' in metrics


def test_whitespace_around_a_category_never_reaches_the_model(client: FlaskClient, registry: Registry) -> None:
    _, instances = rows(registry, "penguins", 1)
    clean = transform(client, "penguins", {"instances": instances}).get_json()["inputs"][0]["data"]
    instances[0]["island"] = f"\t {instances[0]['island']}  \n"
    padded = transform(client, "penguins", {"instances": instances}).get_json()["inputs"][0]["data"]
    assert padded == clean


def test_errors_are_listed_per_instance_and_field(client: FlaskClient, registry: Registry) -> None:
    _, instances = rows(registry, "penguins", 5)
    instances[1]["sex"] = "unknown"
    instances[3]["bill_length_mm"] = "39.1"
    instances[3]["colour"] = "blue"
    del instances[4]["island"]
    response = transform(client, "penguins", {"instances": instances})
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["detail"] == "3 of 5 instances do not fit the feature contract of version 1 of 'penguins'"
    assert problem["errors"] == {
        "instances": {
            "1": {"sex": ["'unknown' is not one of: female, male."]},
            "3": {"bill_length_mm": ["Not a number: got string."], "colour": ["Unknown field."]},
            "4": {"island": ["Missing data for required field."]},
        }
    }


def test_unknown_fields_can_be_ignored_by_configuration(registry_root: Path, registry: Registry) -> None:
    client = create_app(make_settings(registry_root, unknown_fields="exclude"), warm=False).test_client()
    _, instances = rows(registry, "diabetes", 1)
    instances[0]["note"] = "ignored"
    assert transform(client, "diabetes", {"instances": instances}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"instances": []}, 422),
        ({"instances": {}}, 422),
        ({"instances": [1, 2]}, 422),
        ({"instances": [{}], "extra": 1}, 422),
        ([], 422),
        ("text", 422),
    ],
)
def test_envelope_errors(client: FlaskClient, body: Any, status: int) -> None:
    response = transform(client, "diabetes", body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert "errors" in response.get_json()


def test_limits_and_syntax(client: FlaskClient, registry_root: Path, registry: Registry) -> None:
    _, instances = rows(registry, "diabetes", 1)
    null = client.post("/v1/models/diabetes/versions/1/transform", data="null", content_type="application/json")
    assert null.status_code == 422
    many = {"instances": instances * 101}
    assert transform(client, "diabetes", many).status_code == 413
    malformed = client.post("/v1/models/diabetes/versions/1/transform", data="{", content_type="application/json")
    assert malformed.status_code == 400
    text = client.post("/v1/models/diabetes/versions/1/transform", data="{}", content_type="text/csv")
    assert text.status_code == 415
    nan = client.post(
        "/v1/models/diabetes/versions/1/transform",
        data='{"instances": [{"age": NaN}]}',
        content_type="application/json",
    )
    assert nan.status_code == 400
    small = create_app(make_settings(registry_root, max_body_bytes=1024), warm=False).test_client()
    assert transform(small, "diabetes", {"instances": instances * 20}).status_code == 413


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/models/nope/versions/1/transform", 404),
        ("/v1/models/diabetes/versions/9/transform", 404),
        ("/v1/models/Diabetes/versions/1/transform", 404),
        ("/v1/models/diabetes/versions/1.0/transform", 404),
        ("/v1/models/..%2Fetc/versions/1/transform", 404),
    ],
)
def test_unknown_and_hostile_names(client: FlaskClient, registry: Registry, path: str, status: int) -> None:
    _, instances = rows(registry, "diabetes", 1)
    assert client.post(path, json={"instances": instances}).status_code == status


def test_unversioned_routes_use_the_deployed_version(client: FlaskClient, registry: Registry) -> None:
    train_demo(registry, "diabetes")  # version 2, not deployed
    _, instances = rows(registry, "diabetes", 1)
    assert (
        transform(client, "diabetes", {"instances": instances}, version=None).get_json()["parameters"]["version"] == "1"
    )
    registry.deploy("diabetes", 2)
    assert (
        transform(client, "diabetes", {"instances": instances}, version=None).get_json()["parameters"]["version"] == "2"
    )
    assert client.get("/v1/models/diabetes/schema").get_json()["title"] == "diabetes version 2"


def test_a_version_registered_after_start_is_served_without_restart(client: FlaskClient, registry: Registry) -> None:
    _, instances = rows(registry, "penguins", 1)
    assert transform(client, "penguins", {"instances": instances}, version="2").status_code == 404
    train_demo(registry, "penguins")
    response = transform(client, "penguins", {"instances": instances}, version="2")
    assert response.status_code == 200
    assert response.get_json()["parameters"]["version"] == "2"


def test_schema_route_has_an_example_that_transforms(client: FlaskClient) -> None:
    schema = client.get("/v1/models/penguins/versions/1/schema").get_json()
    assert schema["required"] == [
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "island",
        "sex",
    ]
    assert schema["properties"]["island"]["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert schema["properties"]["sex"]["enum"] == ["female", "male", None]
    assert schema["additionalProperties"] is False
    example = schema["examples"][0]
    assert transform(client, "penguins", {"instances": [example]}).status_code == 200
    contract = client.get("/v1/models/penguins/versions/1/contract").get_json()
    assert contract["transform"]["path"] == "compiled"
    assert contract["transformed_width"] == 9


def test_a_tampered_version_is_refused_and_others_still_work(registry_root: Path, registry: Registry) -> None:
    artifact = registry_root / "penguins" / "1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[::-1])
    client = create_app(make_settings(registry_root), warm=False).test_client()
    _, instances = rows(registry, "penguins", 1)
    response = transform(client, "penguins", {"instances": instances})
    assert response.status_code == 503
    assert "does not match its signed sha256" in response.get_json()["detail"]
    assert "penguins/1" in client.get("/ready").get_json()["checks"]["models"]["failed"]
    _, good = rows(registry, "diabetes", 1)
    assert transform(client, "diabetes", {"instances": good}).status_code == 200


def test_warm_loads_deployed_versions(registry_root: Path) -> None:
    app = create_app(make_settings(registry_root), warm=False)
    app.extensions["modelgate.preprocessors"].warm()
    loaded = app.test_client().get("/ready").get_json()["checks"]["models"]["loaded"]
    assert loaded == ["breast-cancer/1", "diabetes/1", "penguins/1"]


# --- property: whatever the body, the answer is 200 or a 4xx with a message, never a 5xx ----------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
PENGUIN_FIELDS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "island", "sex", "id"]
PENGUIN_VALUES = JSON_SCALARS | st.sampled_from(["Dream", " Biscoe ", "male", "female", ""]) | JSON_VALUES
INSTANCES = st.lists(
    st.dictionaries(st.sampled_from(PENGUIN_FIELDS) | st.text(max_size=5), PENGUIN_VALUES, max_size=8), max_size=5
)
BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"instances": INSTANCES}),
    st.fixed_dictionaries({"instances": st.lists(JSON_VALUES, max_size=3)}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_any_json_body_gets_200_or_a_4xx_with_a_message(client: FlaskClient, body: Any) -> None:
    response = client.post(
        "/v1/models/penguins/versions/1/transform", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.get_data(as_text=True)
    payload = response.get_json()
    if response.status_code != 200:
        assert payload["detail"]
        assert payload["status"] == response.status_code
