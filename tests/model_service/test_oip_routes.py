"""The Open Inference Protocol routes against the real demo models (Flask test client)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from model_service.registry import Registry
from shared import artifacts
from shared.pipeline import records_frame
from tests.conftest import SIGNING_KEY
from tests.model_service.conftest import raw_inputs

DEMOS = ["breast-cancer", "penguins", "diabetes"]


def examples(registry: Registry, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    metadata = registry.metadata(name, 1)
    return metadata, metadata["parity_sample"]


def infer(client: FlaskClient, path: str, body: Any) -> Any:
    return client.post(path, json=body)


def test_server_live_ready_and_metadata(client: FlaskClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").get_json()
    assert meta["name"] == "modelgate-model-service"
    assert meta["extensions"] == []


@pytest.mark.parametrize("name", DEMOS)
def test_model_metadata_lists_contract_inputs_and_outputs(client: FlaskClient, registry: Registry, name: str) -> None:
    metadata = registry.metadata(name, 1)
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
        body = client.get(path).get_json()
        assert body["name"] == name
        assert body["versions"] == ["1"]
        assert [i["name"] for i in body["inputs"]] == [f["name"] for f in metadata["contract"]["features"]]
        assert all(i["shape"] == [-1] for i in body["inputs"])
        outputs = {o["name"]: o for o in body["outputs"]}
        if metadata["task"] == "classification":
            assert set(outputs) == {"label", "probabilities"}
            assert outputs["probabilities"]["shape"] == [-1, len(metadata["classes"])]
        else:
            assert set(outputs) == {"prediction"}
        assert body["parameters"]["runtime"] == "onnx"
        assert body["platform"] == "sklearn_onnx"
        assert body["parameters"]["contract_fingerprint"] == metadata["contract_fingerprint"]
    assert client.get(f"/v2/models/{name}/ready").status_code == 200
    assert client.get(f"/v2/models/{name}/versions/1/ready").get_json()["ready"] is True


@pytest.mark.parametrize("name", DEMOS)
@pytest.mark.parametrize("versioned", [False, True])
def test_infer_matches_scikit_learn_on_held_out_rows(
    client: FlaskClient, registry: Registry, name: str, versioned: bool
) -> None:
    metadata, rows = examples(registry, name)
    path = f"/v2/models/{name}/versions/1/infer" if versioned else f"/v2/models/{name}/infer"
    response = infer(client, path, {"id": "req-1", "inputs": raw_inputs(rows, metadata["contract"])})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model_name"] == name
    assert body["model_version"] == "1"
    assert body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    pipeline = artifacts.load_version(registry_root_of(registry) / name / "1", SIGNING_KEY).estimator
    frame = records_frame(rows, metadata["contract"])
    if metadata["task"] == "classification":
        label = outputs["label"]
        assert label["datatype"] == "BYTES"
        assert label["shape"] == [len(rows)]
        assert label["data"] == [str(v) for v in pipeline.predict(frame)]
        probabilities = outputs["probabilities"]
        assert probabilities["shape"] == [len(rows), len(metadata["classes"])]
        assert probabilities["parameters"]["classes"] == metadata["classes"]
        got = np.asarray(probabilities["data"]).reshape(len(rows), -1)
        np.testing.assert_allclose(got, pipeline.predict_proba(frame), atol=1e-6)
    else:
        prediction = outputs["prediction"]
        assert prediction["datatype"] == "FP64"
        assert prediction["shape"] == [len(rows)]
        np.testing.assert_allclose(prediction["data"], pipeline.predict(frame), rtol=1e-6)


def registry_root_of(registry: Registry) -> Path:
    return registry.root


def test_single_row_and_column_vector_shapes(client: FlaskClient, registry: Registry) -> None:
    metadata, rows = examples(registry, "diabetes")
    inputs = raw_inputs(rows[:1], metadata["contract"])
    for tensor in inputs:
        tensor["shape"] = [1, 1]
        tensor["data"] = [tensor["data"]]
    body = infer(client, "/v2/models/diabetes/infer", {"inputs": inputs}).get_json()
    assert body["outputs"][0]["shape"] == [1]


def test_penguins_accept_nulls_and_stray_spaces(client: FlaskClient, registry: Registry) -> None:
    metadata, rows = examples(registry, "penguins")
    row = dict(rows[0], bill_length_mm=None, sex=None, island=f"  {rows[0]['island']} ")
    response = infer(client, "/v2/models/penguins/infer", {"inputs": raw_inputs([row], metadata["contract"])})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["outputs"][0]["data"][0] in metadata["classes"]


def test_requested_outputs_are_filtered(client: FlaskClient, registry: Registry) -> None:
    metadata, rows = examples(registry, "penguins")
    body = {"inputs": raw_inputs(rows[:2], metadata["contract"]), "outputs": [{"name": "label"}]}
    response = infer(client, "/v2/models/penguins/infer", body).get_json()
    assert [o["name"] for o in response["outputs"]] == ["label"]
    body["outputs"] = [{"name": "nonsense"}]
    assert infer(client, "/v2/models/penguins/infer", body).status_code == 400


def _penguin_body(registry: Registry, **change: Any) -> dict[str, Any]:
    metadata, rows = examples(registry, "penguins")
    return {"inputs": raw_inputs([dict(rows[0], **change)], metadata["contract"])}


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (lambda b: b["inputs"].pop(), 422, "sex: missing"),
        (lambda b: b["inputs"].append({**b["inputs"][0], "name": "beak_colour"}), 422, "beak_colour: unknown input"),
        (lambda b: b["inputs"][0].update(datatype="BYTES", data=["long"]), 422, "does not fit"),
        (lambda b: b["inputs"][4].update(data=["Atlantis"]), 422, "is not one of"),
        (lambda b: b["inputs"][0].update(shape=[2], data=[1.0, 2.0]), 400, "rows"),
        (lambda b: b["inputs"][0].update(shape=[1, 2], data=[[1.0, 2.0]]), 400, "shape"),
        (lambda b: b.update(inputs=[]), 400, "inputs"),
        (lambda b: b.update(inputs="x"), 400, "inputs"),
    ],
)
def test_bad_raw_inputs_get_a_specific_message(
    client: FlaskClient, registry: Registry, mutate: Any, status: int, fragment: str
) -> None:
    body = _penguin_body(registry)
    mutate(body)
    response = infer(client, "/v2/models/penguins/infer", body)
    assert response.status_code == status
    problem = response.get_json()
    assert fragment in problem["error"]
    assert problem["error"] == problem["detail"]
    assert response.mimetype == "application/problem+json"


def test_every_wrong_feature_is_listed_per_input(client: FlaskClient, registry: Registry) -> None:
    body = _penguin_body(registry)
    body["inputs"] = [t for t in body["inputs"] if t["name"] != "sex"]
    body["inputs"][4]["data"] = ["Atlantis"]
    body["inputs"][0].update(datatype="BYTES", data=["long"])
    response = infer(client, "/v2/models/penguins/infer", body)
    assert response.status_code == 422
    errors = response.get_json()["errors"]["inputs"]
    assert set(errors) == {"sex", "island", "bill_length_mm"}
    assert errors["island"] == ["row 0: 'Atlantis' is not one of Biscoe, Dream, Torgersen"]


def test_zero_rows_give_empty_outputs(client: FlaskClient, registry: Registry) -> None:
    metadata, _ = examples(registry, "penguins")
    response = infer(client, "/v2/models/penguins/infer", {"inputs": raw_inputs([], metadata["contract"])})
    assert response.status_code == 200, response.get_json()
    outputs = {o["name"]: o for o in response.get_json()["outputs"]}
    assert outputs["label"]["shape"] == [0]
    assert outputs["probabilities"]["shape"] == [0, 3]


def test_null_in_a_feature_never_missing_in_training_is_refused(client: FlaskClient, registry: Registry) -> None:
    metadata, rows = examples(registry, "diabetes")
    body = {"inputs": raw_inputs([dict(rows[0], bmi=None)], metadata["contract"])}
    response = infer(client, "/v2/models/diabetes/infer", body)
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"inputs": {"bmi": ["row 0: must not be null"]}}


def test_too_many_rows_is_413(registry_root: Path, registry: Registry) -> None:
    from model_service import create_app
    from tests.model_service.conftest import make_settings

    client = create_app(make_settings(registry_root, max_batch_rows=10)).test_client()
    metadata, rows = examples(registry, "diabetes")
    inputs = raw_inputs(rows[:11], metadata["contract"])
    assert infer(client, "/v2/models/diabetes/infer", {"inputs": inputs}).status_code == 413
    inputs = raw_inputs(rows[:10], metadata["contract"])
    assert infer(client, "/v2/models/diabetes/infer", {"inputs": inputs}).status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/models/nope/infer", 404),
        ("/v2/models/penguins/versions/7/infer", 404),
        ("/v2/models/Penguins/infer", 404),
        ("/v2/models/penguins/versions/01/infer", 404),
        ("/v2/models/penguins/versions/-1/infer", 404),
        ("/v2/models/..%2F..%2Fetc/infer", 404),  # %2F is decoded before routing: no such route
        ("/v2/models/../../etc/passwd/infer", 404),
        ("/v2/models/%2e%2e/infer", 404),
    ],
)
def test_unknown_or_hostile_names(client: FlaskClient, registry: Registry, path: str, status: int) -> None:
    response = infer(client, path, _penguin_body(registry))
    assert response.status_code == status, response.get_json()
    assert "error" in response.get_json()


def test_unknown_version_metadata_is_404(client: FlaskClient) -> None:
    assert client.get("/v2/models/penguins/versions/9").status_code == 404
    assert client.get("/v2/models/penguins/versions/9/ready").status_code == 404


def test_wrong_content_type_and_malformed_json(client: FlaskClient) -> None:
    response = client.post("/v2/models/penguins/infer", data="{}", content_type="text/plain")
    assert response.status_code == 415
    response = client.post("/v2/models/penguins/infer", data="{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("the body is not valid JSON")


class TestPreprocessedInput:
    """The path the preprocessing service uses: transformed features plus the contract fingerprint."""

    def body(self, registry: Registry, name: str = "penguins", **parameters: Any) -> dict[str, Any]:
        loaded = registry.load(name, 1)
        features = loaded.transform_records(loaded.metadata["parity_sample"][:3])
        return {
            "parameters": {"contract_fingerprint": loaded.fingerprint, **parameters},
            "inputs": [
                {
                    "name": "preprocessed",
                    "shape": list(features.shape),
                    "datatype": "FP64",
                    "data": features.reshape(-1).tolist(),
                }
            ],
        }

    def test_matches_the_raw_path(self, client: FlaskClient, registry: Registry) -> None:
        metadata, rows = examples(registry, "penguins")
        raw = infer(client, "/v2/models/penguins/infer", {"inputs": raw_inputs(rows[:3], metadata["contract"])})
        pre = infer(client, "/v2/models/penguins/infer", self.body(registry))
        assert pre.status_code == 200, pre.get_json()
        assert pre.get_json()["outputs"] == raw.get_json()["outputs"]

    def test_a_foreign_fingerprint_is_409(self, client: FlaskClient, registry: Registry) -> None:
        response = infer(client, "/v2/models/penguins/infer", self.body(registry, contract_fingerprint="0" * 64))
        assert response.status_code == 409
        assert "transform them for this version" in response.get_json()["error"]

    def test_features_built_for_another_model_are_409(self, client: FlaskClient, registry: Registry) -> None:
        body = self.body(registry, name="diabetes")
        assert infer(client, "/v2/models/penguins/infer", body).status_code == 409

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda b: b["parameters"].pop("contract_fingerprint"),
            lambda b: b["inputs"][0].update(shape=[1, 27], data=[0.0] * 27),
            lambda b: b["inputs"][0].update(datatype="BYTES", data=["x"] * len(b["inputs"][0]["data"])),
            lambda b: b["inputs"].append({"name": "island", "shape": [1], "datatype": "BYTES", "data": ["Dream"]}),
            lambda b: b["inputs"][0]["data"].__setitem__(0, None),
        ],
    )
    def test_malformed_is_400(self, client: FlaskClient, registry: Registry, mutate: Any) -> None:
        body = self.body(registry)
        mutate(body)
        assert infer(client, "/v2/models/penguins/infer", body).status_code == 400


def test_tampered_model_is_refused_while_others_keep_serving(registry_root: Path) -> None:
    from model_service import create_app
    from tests.model_service.conftest import make_settings

    artifact = registry_root / "penguins" / "1" / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    metadata_file = registry_root / "diabetes" / "1" / "metadata.json"
    forged = metadata_file.read_text().replace('"task": "regression"', '"task": "regression" ')
    metadata_file.write_text(forged.replace('"training_rows": 442', '"training_rows": 443'))

    app = create_app(make_settings(registry_root))
    client = app.test_client()
    ready = client.get("/ready")
    assert ready.status_code == 200  # the service is up; the bad models are reported, not served
    checks = ready.get_json()["checks"]["models"]
    assert "does not match its signed sha256" in checks["failed"]["penguins/1"]
    assert "signature" in checks["failed"]["diabetes/1"]
    assert checks["loaded"] == ["breast-cancer/1"]
    assert client.get("/v2/models/penguins/ready").status_code == 400
    response = client.post("/v2/models/penguins/infer", json={"inputs": []})
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    registry = Registry(registry_root, SIGNING_KEY)
    metadata, rows = examples(registry, "breast-cancer")
    good = client.post("/v2/models/breast-cancer/infer", json={"inputs": raw_inputs(rows[:2], metadata["contract"])})
    assert good.status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'modelgate_model_load_failures_total{model="penguins",reason="HashMismatch",version="1"}' in metrics


def test_a_model_signed_with_another_key_is_refused(registry_root: Path) -> None:
    from model_service import create_app
    from tests.model_service.conftest import make_settings

    app = create_app(make_settings(registry_root, model_signing_key="another-key-that-is-long-enough-0123456789"))
    checks = app.test_client().get("/ready").get_json()["checks"]["models"]
    assert checks["loaded"] == []
    assert set(checks["failed"]) == {"breast-cancer/1", "diabetes/1", "penguins/1"}


def test_model_without_deployment_and_empty_registry(tmp_path: Path) -> None:
    from model_service import create_app
    from tests.model_service.conftest import make_settings

    client = create_app(make_settings(tmp_path / "empty")).test_client()
    assert client.get("/v2/models").status_code == 404
    assert client.get("/v2/models/penguins").status_code == 404
    assert client.get("/v1/models").get_json() == {"models": []}


def test_copy_of_a_version_under_another_name_is_refused(registry_root: Path, registry: Registry) -> None:
    import shutil

    shutil.copytree(registry_root / "diabetes", registry_root / "diabetes-copy")
    with pytest.raises(artifacts.ArtifactError, match="another model"):
        registry.load("diabetes-copy", 1)


def test_parity_sample_is_signed(registry_root: Path, registry: Registry) -> None:
    metadata_file = registry_root / "penguins" / "1" / "metadata.json"
    import json

    metadata = json.loads(metadata_file.read_text())
    tampered = copy.deepcopy(metadata)
    tampered["parity_sample"] = tampered["parity_sample"][:1]
    metadata_file.write_text(json.dumps(tampered))
    with pytest.raises(artifacts.SignatureMismatch):
        registry.load("penguins", 1)


def test_instance_ids_and_warnings_are_echoed_from_the_request(client: FlaskClient, registry: Registry) -> None:
    body = TestPreprocessedInput().body(registry)
    warnings = [{"instance": 1, "field": "body_mass_g", "message": "outside"}]
    body["parameters"].update(instance_ids=["a", None, 3], warnings=warnings, transform="compiled")
    answer = infer(client, "/v2/models/penguins/infer", body).get_json()
    assert answer["parameters"]["instance_ids"] == ["a", None, 3]
    assert answer["parameters"]["warnings"] == warnings
    assert "transform" not in answer["parameters"]


def test_a_value_beyond_float32_is_refused_not_answered_as_infinity(client: FlaskClient, registry: Registry) -> None:
    assert registry.load("penguins", 1).runtime.name == "onnx"  # compiled in float32 precision
    response = infer(client, "/v2/models/penguins/infer", _penguin_body(registry, bill_length_mm=1e300))
    assert response.status_code == 422
    assert "beyond the range" in response.get_json()["error"]
