"""``/v1`` registry routes, deployments with canaries, and new deployments picked up without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from model_service import create_app
from model_service.deployments import Deployment
from model_service.registry import Registry
from model_service.training import train_demo
from shared import artifacts
from tests.model_service.conftest import make_settings, raw_inputs


def test_list_models(client: FlaskClient) -> None:
    body = client.get("/v1/models").get_json()
    assert [m["name"] for m in body["models"]] == ["breast-cancer", "diabetes", "penguins"]
    first = body["models"][0]
    assert first == {
        "name": "breast-cancer",
        "versions": [1],
        "deployed": {"version": 1, "canary": None},
        "ready": True,
    }


def test_show_model_and_versions_hide_secrets_of_the_format(client: FlaskClient) -> None:
    body = client.get("/v1/models/penguins").get_json()
    assert body["metadata"]["runtime"]["name"] == "onnx"
    assert body["metadata"]["loaded"] is True
    for hidden in ("signature", "files", "parity_sample"):
        assert hidden not in body["metadata"]
    versions = client.get("/v1/models/penguins/versions").get_json()["versions"]
    assert [v["version"] for v in versions] == [1]
    one = client.get("/v1/models/penguins/versions/1").get_json()
    assert one["contract"]["features"][0]["name"] == "bill_length_mm"
    assert one["examples"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/models/nope", 404),
        ("/v1/models/penguins/versions/4", 404),
        ("/v1/models/BAD", 404),
        ("/v1/models/x/versions/0", 404),
    ],
)
def test_v1_errors(client: FlaskClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert "error" not in response.get_json()  # only the /v2 protocol routes add it


def test_deployment_choice_and_canary_split() -> None:
    plain = Deployment.from_record({"version": 2})
    assert plain.versions() == [2]
    assert {plain.choose() for _ in range(50)} == {2}
    canary = Deployment.from_record({"version": 2, "canary": {"version": 3, "weight": 25}})
    assert canary.versions() == [2, 3]
    assert canary.choose(draw=24.9) == 3
    assert canary.choose(draw=25.0) == 2
    counts = [canary.choose() for _ in range(4000)].count(3)
    assert 800 < counts < 1200
    clamped = Deployment.from_record({"version": 1, "canary": {"version": 2, "weight": 250}})
    assert clamped.canary_weight == 100.0
    with pytest.raises(artifacts.InvalidName):
        Deployment.from_record({"version": 0})


def test_new_deployment_serves_without_restart(registry_root: Path, registry: Registry) -> None:
    app = create_app(make_settings(registry_root, load_in_background=True, registry_refresh_seconds=0.2))
    server = app.extensions["modelgate.models"]
    try:
        assert server.wait_ready(30)
        client = app.test_client()
        metadata = registry.metadata("diabetes", 1)
        body = {"inputs": raw_inputs(metadata["examples"], metadata["contract"])}
        assert client.post("/v2/models/diabetes/infer", json=body).get_json()["model_version"] == "1"
        train_demo(registry, "diabetes", deploy=True)
        deadline = time.monotonic() + 20
        version = "1"
        while time.monotonic() < deadline and version != "2":
            time.sleep(0.1)
            version = client.post("/v2/models/diabetes/infer", json=body).get_json()["model_version"]
        assert version == "2"
        # The old version stays addressable for comparison and rollback.
        old = client.post("/v2/models/diabetes/versions/1/infer", json=body)
        assert old.get_json()["model_version"] == "1"
    finally:
        server.stop()


def test_canary_traffic_reaches_both_versions(registry_root: Path, registry: Registry) -> None:
    train_demo(registry, "diabetes")
    artifacts.write_deployment(registry_root, "diabetes", {"version": 1, "canary": {"version": 2, "weight": 50}})
    client = create_app(make_settings(registry_root)).test_client()
    metadata = registry.metadata("diabetes", 1)
    body = {"inputs": raw_inputs(metadata["examples"][:1], metadata["contract"])}
    seen = {client.post("/v2/models/diabetes/infer", json=body).get_json()["model_version"] for _ in range(60)}
    assert seen == {"1", "2"}
    summary = client.get("/v1/models/diabetes").get_json()
    assert summary["deployed"] == {"version": 1, "canary": {"version": 2, "weight": 50.0}}


def test_ready_is_503_until_models_are_loaded(registry_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    gate = threading.Event()
    real_load = Registry.load

    def slow_load(self: Registry, *args: object, **kwargs: object) -> object:
        gate.wait(30)  # hold loading back until the test has seen the 503
        return real_load(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Registry, "load", slow_load)
    app = create_app(make_settings(registry_root, load_in_background=True, registry_refresh_seconds=0))
    server = app.extensions["modelgate.models"]
    client = app.test_client()
    first = client.get("/ready")
    assert first.status_code == 503
    assert first.get_json()["checks"]["models"]["detail"] == "loading the deployed versions"
    assert client.get("/v2/health/ready").status_code == 400
    assert client.get("/health").status_code == 200
    gate.set()
    assert server.wait_ready(30)
    assert client.get("/ready").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_ready_reports_a_scikit_learn_version_mismatch(registry_root: Path, registry: Registry) -> None:
    import json

    from tests.conftest import SIGNING_KEY

    path = registry_root / "diabetes" / "1" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["libraries"]["scikit-learn"] = "0.24.2"
    metadata["signature"] = artifacts.sign(metadata, SIGNING_KEY)
    path.write_text(json.dumps(metadata))
    body = create_app(make_settings(registry_root)).test_client().get("/ready").get_json()
    assert body["checks"]["models"]["warnings"]["diabetes/1"] == [
        f"trained with scikit-learn 0.24.2, running {__import__('sklearn').__version__}"
    ]


def test_asking_whether_a_version_is_ready_loads_nothing(registry_root: Path, registry: Registry) -> None:
    train_demo(registry, "diabetes")  # version 2, not deployed
    app = create_app(make_settings(registry_root))
    client = app.test_client()
    server = app.extensions["modelgate.models"]
    answer = client.get("/v2/models/diabetes/versions/2/ready")
    assert answer.status_code == 400
    assert "not loaded" in answer.get_json()["error"]
    assert ("diabetes", 2) not in {(m.name, m.version) for m in server.loaded()}
    assert client.get("/v2/models/diabetes/versions/9/ready").status_code == 404


def test_versions_asked_for_by_number_are_unloaded_beyond_the_limit(registry_root: Path, registry: Registry) -> None:
    for _ in range(3):
        train_demo(registry, "diabetes")  # versions 2, 3, 4; version 1 stays deployed
    app = create_app(make_settings(registry_root, model_extra_versions=1))
    client = app.test_client()
    server = app.extensions["modelgate.models"]
    metadata = registry.metadata("diabetes", 1)
    body = {"inputs": raw_inputs(metadata["examples"][:1], metadata["contract"])}
    for version in (2, 3, 4):
        assert client.post(f"/v2/models/diabetes/versions/{version}/infer", json=body).status_code == 200
    loaded = {m.version for m in server.loaded() if m.name == "diabetes"}
    assert loaded == {1, 4}  # the deployed version, and the one most recently asked for
    assert client.post("/v2/models/diabetes/versions/2/infer", json=body).status_code == 200  # loads again
