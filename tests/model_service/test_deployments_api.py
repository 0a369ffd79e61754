"""Deployment operations (deploy, canary, promote, rollback): registry, ``/v1`` routes, serving and CLI."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask.testing import FlaskClient

from model_service.cli import main
from model_service.deployments import MAX_HISTORY, Deployment
from model_service.registry import Registry
from model_service.training import train_demo
from shared import artifacts
from shared.errors import Conflict, HashMismatch
from tests.conftest import SIGNING_KEY
from tests.model_service.conftest import raw_inputs

NAME = "diabetes"


@pytest.fixture
def three_versions(registry: Registry) -> Registry:
    """Versions 1 (deployed), 2 and 3 of the diabetes demo."""
    train_demo(registry, NAME)
    train_demo(registry, NAME)
    assert registry.versions(NAME) == [1, 2, 3]
    assert registry.deployment(NAME) == {"version": 1}
    return registry


@pytest.fixture
def infer_body(registry: Registry) -> dict[str, Any]:
    metadata = registry.metadata(NAME, 1)
    return {"inputs": raw_inputs(metadata["examples"][:1], metadata["contract"])}


def served(client: FlaskClient, body: dict[str, Any], requests: int = 20) -> set[str]:
    """The versions that answered ``requests`` unversioned infer requests."""
    versions = set()
    for _ in range(requests):
        response = client.post(f"/v2/models/{NAME}/infer", json=body)
        assert response.status_code == 200, response.get_json()
        versions.add(response.get_json()["model_version"])
    return versions


def record_on_disk(registry: Registry) -> dict[str, Any]:
    return json.loads((registry.root / NAME / artifacts.DEPLOYMENT_FILE).read_text())


def tamper(registry: Registry, version: int) -> None:
    artifact = registry.root / NAME / str(version) / artifacts.ARTIFACT_FILE
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))


# --- happy paths over HTTP ---------------------------------------------------------------------------


def test_deploy_serves_the_new_version_at_once(
    client: FlaskClient, three_versions: Registry, infer_body: dict[str, Any]
) -> None:
    assert served(client, infer_body, 3) == {"1"}
    response = client.post(f"/v1/models/{NAME}/deploy", json={"version": 3})
    assert response.status_code == 200
    assert response.get_json() == {"name": NAME, "version": 3, "canary": None, "history": [1]}
    assert record_on_disk(three_versions) == {"version": 3, "history": [1]}
    assert served(client, infer_body) == {"3"}
    assert client.get(f"/v1/models/{NAME}").get_json()["deployed"] == {"version": 3, "canary": None}


def test_canary_splits_traffic_then_promote_moves_all_of_it(
    client: FlaskClient, three_versions: Registry, infer_body: dict[str, Any]
) -> None:
    response = client.post(f"/v1/models/{NAME}/canary", json={"version": 2, "weight": 50})
    assert response.status_code == 200
    assert response.get_json() == {"name": NAME, "version": 1, "canary": {"version": 2, "weight": 50.0}, "history": []}
    assert served(client, infer_body, 60) == {"1", "2"}
    assert client.get(f"/v1/models/{NAME}").get_json()["deployed"] == {
        "version": 1,
        "canary": {"version": 2, "weight": 50.0},
    }
    promoted = client.post(f"/v1/models/{NAME}/promote")  # no body at all
    assert promoted.status_code == 200
    assert promoted.get_json() == {"name": NAME, "version": 2, "canary": None, "history": [1]}
    assert served(client, infer_body) == {"2"}


def test_canary_weight_zero_removes_the_canary(
    client: FlaskClient, three_versions: Registry, infer_body: dict[str, Any]
) -> None:
    assert client.post(f"/v1/models/{NAME}/canary", json={"version": 3, "weight": 100}).status_code == 200
    assert served(client, infer_body) == {"3"}  # weight 100: the canary takes everything
    removed = client.post(f"/v1/models/{NAME}/canary", json={"version": 3, "weight": 0})
    assert removed.status_code == 200
    assert removed.get_json()["canary"] is None
    assert record_on_disk(three_versions) == {"version": 1}
    assert served(client, infer_body) == {"1"}


def test_deploy_clears_a_canary(client: FlaskClient, three_versions: Registry) -> None:
    client.post(f"/v1/models/{NAME}/canary", json={"version": 2, "weight": 10})
    body = client.post(f"/v1/models/{NAME}/deploy", json={"version": 3}).get_json()
    assert body == {"name": NAME, "version": 3, "canary": None, "history": [1]}


def test_rollback_walks_back_the_history(
    client: FlaskClient, three_versions: Registry, infer_body: dict[str, Any]
) -> None:
    client.post(f"/v1/models/{NAME}/deploy", json={"version": 2})
    client.post(f"/v1/models/{NAME}/deploy", json={"version": 3})
    client.post(f"/v1/models/{NAME}/canary", json={"version": 2, "weight": 30})
    first = client.post(f"/v1/models/{NAME}/rollback", json={})
    assert first.status_code == 200
    assert first.get_json() == {"name": NAME, "version": 2, "canary": None, "history": [1]}
    assert served(client, infer_body) == {"2"}
    second = client.post(f"/v1/models/{NAME}/rollback")
    assert second.get_json() == {"name": NAME, "version": 1, "canary": None, "history": []}
    assert served(client, infer_body) == {"1"}
    third = client.post(f"/v1/models/{NAME}/rollback")
    assert third.status_code == 409
    assert "no earlier deployment to roll back to" in third.get_json()["detail"]


def test_redeploying_the_serving_version_adds_no_history(client: FlaskClient, three_versions: Registry) -> None:
    client.post(f"/v1/models/{NAME}/deploy", json={"version": 2})
    again = client.post(f"/v1/models/{NAME}/deploy", json={"version": 2})
    assert again.get_json()["history"] == [1]


def test_an_old_record_without_history_is_promoted(client: FlaskClient, three_versions: Registry) -> None:
    artifacts.write_deployment(three_versions.root, NAME, {"version": 1, "canary": {"version": 2, "weight": 10}})
    body = client.post(f"/v1/models/{NAME}/promote", json={}).get_json()
    assert body == {"name": NAME, "version": 2, "canary": None, "history": [1]}


# --- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [100.5, -1, 1e308])
def test_a_weight_outside_0_to_100_is_a_422_and_changes_nothing(
    client: FlaskClient, three_versions: Registry, weight: float
) -> None:
    # A value outside the allowed set is the contract's 422 (it was a 409, found by fuzzing the stack).
    before = record_on_disk(three_versions)
    response = client.post(f"/v1/models/{NAME}/canary", json={"version": 2, "weight": weight})
    assert response.status_code == 422
    assert response.get_json()["errors"]["weight"] == [
        "canary weight must be a percentage in (0, 100], or 0 to remove the canary"
    ]
    assert record_on_disk(three_versions) == before


@pytest.mark.parametrize(
    ("operation", "body", "status", "message"),
    [
        ("deploy", {"version": 9}, 404, "version 9 of model 'diabetes' not found"),
        ("canary", {"version": 9, "weight": 10}, 404, "version 9 of model 'diabetes' not found"),
        ("canary", {"version": 1, "weight": 10}, 409, "version 1 is already deployed; a canary must be another"),
        ("promote", None, 409, "there is no canary to promote (version 1 serves alone)"),
        ("rollback", None, 409, "there is no earlier deployment to roll back to"),
    ],
)
def test_refusals_leave_the_deployment_unchanged(
    client: FlaskClient,
    three_versions: Registry,
    operation: str,
    body: dict[str, Any] | None,
    status: int,
    message: str,
) -> None:
    before = record_on_disk(three_versions)
    response = client.post(f"/v1/models/{NAME}/{operation}", json=body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert message in response.get_json()["detail"]
    assert record_on_disk(three_versions) == before


@pytest.mark.parametrize("operation", ["deploy", "canary", "promote", "rollback"])
@pytest.mark.parametrize(
    ("name", "status", "message"),
    [("nope", 404, "model 'nope' not found"), ("BAD", 404, "invalid model name 'BAD'")],
)
def test_unknown_or_invalid_model(client: FlaskClient, operation: str, name: str, status: int, message: str) -> None:
    response = client.post(f"/v1/models/{name}/{operation}", json={"version": 1, "weight": 1})
    assert response.status_code == status
    assert message in response.get_json()["detail"]


def test_canary_without_a_deployment_is_a_conflict(client: FlaskClient, three_versions: Registry) -> None:
    (three_versions.root / NAME / artifacts.DEPLOYMENT_FILE).unlink()
    response = client.post(f"/v1/models/{NAME}/canary", json={"version": 2, "weight": 10})
    assert response.status_code == 409
    assert response.get_json()["detail"] == "model 'diabetes' has no deployed version for a canary to run beside"
    assert client.post(f"/v1/models/{NAME}/rollback").status_code == 409
    deployed = client.post(f"/v1/models/{NAME}/deploy", json={"version": 2})
    assert deployed.get_json() == {"name": NAME, "version": 2, "canary": None, "history": []}


@pytest.mark.parametrize(
    ("operation", "body", "errors"),
    [
        ("deploy", {}, {"version": ["Missing data for required field."]}),
        ("deploy", {"version": "2"}, {"version": ["Not a valid integer."]}),
        ("deploy", {"version": True}, {"version": ["Not a valid integer."]}),
        ("deploy", {"version": 2.5}, {"version": ["Not a valid integer."]}),
        (
            "deploy",
            {"version": 0},
            {"version": ["Must be greater than or equal to 1 and less than or equal to 999999999."]},
        ),
        ("deploy", {"version": 2, "force": True}, {"force": ["Unknown field."]}),
        ("deploy", [2], {"_schema": ["Invalid input type."]}),
        ("canary", {"version": 2}, {"weight": ["Missing data for required field."]}),
        ("canary", {"version": 2, "weight": "10"}, {"weight": ["Not a valid number."]}),
        ("canary", {"version": 2, "weight": False}, {"weight": ["Not a valid number."]}),
        ("canary", {"version": 2, "weight": None}, {"weight": ["Field may not be null."]}),
        ("promote", {"version": 2}, {"version": ["Unknown field."]}),
        ("rollback", {"steps": 2}, {"steps": ["Unknown field."]}),
        ("rollback", "back", {"_schema": ["Invalid input type."]}),
    ],
)
def test_bad_bodies_are_422_with_per_field_errors(
    client: FlaskClient, three_versions: Registry, operation: str, body: Any, errors: dict[str, list[str]]
) -> None:
    response = client.post(f"/v1/models/{NAME}/{operation}", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"] == errors
    assert record_on_disk(three_versions) == {"version": 1}


def test_body_syntax_and_media_type(client: FlaskClient, three_versions: Registry) -> None:
    malformed = client.post(f"/v1/models/{NAME}/deploy", data="{", content_type="application/json")
    assert malformed.status_code == 400
    assert client.post(f"/v1/models/{NAME}/deploy", data="version=2").status_code == 415
    assert client.post(f"/v1/models/{NAME}/promote", data="x", content_type="text/plain").status_code == 415


def test_a_tampered_version_is_refused_with_409(
    client: FlaskClient, three_versions: Registry, infer_body: dict[str, Any]
) -> None:
    tamper(three_versions, 2)
    before = record_on_disk(three_versions)
    for operation, body in [("deploy", {"version": 2}), ("canary", {"version": 2, "weight": 10})]:
        response = client.post(f"/v1/models/{NAME}/{operation}", json=body)
        assert response.status_code == 409
        assert response.get_json()["detail"] == (
            "version 2 of model 'diabetes' failed verification: model.joblib does not match its signed sha256"
        )
        assert record_on_disk(three_versions) == before
    assert served(client, infer_body) == {"1"}


@pytest.mark.parametrize("operation", ["promote", "rollback"])
def test_a_version_tampered_after_it_was_chosen_is_refused(
    client: FlaskClient, three_versions: Registry, operation: str
) -> None:
    if operation == "promote":
        client.post(f"/v1/models/{NAME}/canary", json={"version": 2, "weight": 10})
        target = 2
    else:
        client.post(f"/v1/models/{NAME}/deploy", json={"version": 3})
        target = 1
    before = record_on_disk(three_versions)
    metadata_file = three_versions.root / NAME / str(target) / artifacts.METADATA_FILE
    metadata = json.loads(metadata_file.read_text())
    metadata["metrics"]["r2"] = 0.99  # forged without the key
    metadata_file.write_text(json.dumps(metadata))
    response = client.post(f"/v1/models/{NAME}/{operation}")
    assert response.status_code == 409
    assert response.get_json()["detail"] == (
        f"version {target} of model 'diabetes' failed verification: "
        "metadata.json signature does not match MODEL_SIGNING_KEY"
    )
    assert record_on_disk(three_versions) == before


def test_a_copied_version_folder_is_refused(client: FlaskClient, three_versions: Registry) -> None:
    shutil.copytree(three_versions.root / NAME / "1", three_versions.root / NAME / "4")
    response = client.post(f"/v1/models/{NAME}/deploy", json={"version": 4})
    assert response.status_code == 409
    assert "metadata names another model or version" in response.get_json()["detail"]


def test_an_unreadable_record_is_a_conflict_that_deploy_repairs(client: FlaskClient, three_versions: Registry) -> None:
    (three_versions.root / NAME / artifacts.DEPLOYMENT_FILE).write_text('{"version": 2, "history": "12"}')
    response = client.post(f"/v1/models/{NAME}/rollback")
    assert response.status_code == 409
    assert response.get_json()["detail"] == "deployment.json of model 'diabetes' is invalid"
    (three_versions.root / NAME / artifacts.DEPLOYMENT_FILE).write_text("{not json")
    assert client.post(f"/v1/models/{NAME}/promote").status_code == 409
    repaired = client.post(f"/v1/models/{NAME}/deploy", json={"version": 2})
    assert repaired.status_code == 200
    assert record_on_disk(three_versions) == {"version": 2}


# --- the registry: history, concurrency ----------------------------------------------------------------


def test_history_is_bounded(three_versions: Registry) -> None:
    for step in range(MAX_HISTORY + 5):
        three_versions.deploy(NAME, 2 + step % 2)
    record = record_on_disk(three_versions)
    assert len(record["history"]) == MAX_HISTORY
    assert record["history"][-3:] == [3, 2, 3]
    assert record["version"] == 2
    assert three_versions.deployment(NAME) == {"version": 2}  # what serves; the history routes nothing


def test_deployment_records_old_and_new() -> None:
    old = Deployment.from_record({"version": 2, "canary": {"version": 3, "weight": 10}})
    assert old.history == ()
    assert old.to_record() == {"version": 2, "canary": {"version": 3, "weight": 10.0}}
    new = Deployment.from_record({"version": 2, "history": [1, 3]})
    assert new.rolled_back() == Deployment(3, history=(1,))
    with pytest.raises(TypeError):
        Deployment.from_record({"version": 2, "history": 1})
    with pytest.raises(Conflict, match="canary weight"):
        old.with_canary(3, float("nan"))


def test_registry_refuses_a_tampered_version_with_its_artifact_error(three_versions: Registry) -> None:
    tamper(three_versions, 3)
    with pytest.raises(HashMismatch):
        three_versions.deploy(NAME, 3)
    assert three_versions.deployment(NAME) == {"version": 1}


def test_concurrent_deploys_and_canaries_leave_a_valid_record(three_versions: Registry) -> None:
    root = three_versions.root

    def worker(offset: int) -> None:
        registry = Registry(root, SIGNING_KEY)  # one per "process": each takes the lock through its own open
        for step in range(200):
            if step % 2 == 0:
                registry.deploy(NAME, 1 + (step // 2 + offset) % 2)
            else:
                registry.set_canary(NAME, 3, float(step % 100 + 1))

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker, offset) for offset in range(8)]:
            future.result()  # re-raises anything a worker raised
    record = record_on_disk(three_versions)
    deployment = Deployment.from_record(record)
    assert deployment.version in (1, 2)
    assert deployment.canary_version in (None, 3)
    assert 0 < len(deployment.history) <= MAX_HISTORY
    # Every change flips between 1 and 2, so the history alternates and ends with the other version.
    assert all(a != b for a, b in zip(deployment.history, deployment.history[1:], strict=False))
    assert deployment.history[-1] != deployment.version
    assert sorted(p.name for p in (root / NAME).iterdir()) == ["1", "2", "3", "deployment.json"]


def test_concurrent_rollbacks_lose_no_update(three_versions: Registry) -> None:
    history = [1, 2] * (MAX_HISTORY // 2)
    artifacts.write_deployment(three_versions.root, NAME, {"version": 3, "history": history})
    start = threading.Barrier(8)

    def worker() -> None:
        registry = Registry(three_versions.root, SIGNING_KEY)
        start.wait()
        registry.rollback(NAME)
        registry.rollback(NAME)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker) for _ in range(8)]:
            future.result()
    # 16 rollbacks, each popping exactly one entry: a lost update would leave more behind.
    assert record_on_disk(three_versions) == {"version": history[-16], "history": history[:-16]}


# --- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(three_versions: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("MODEL_REGISTRY", str(three_versions.root))
    monkeypatch.setenv("MODEL_SIGNING_KEY", SIGNING_KEY.decode())
    return three_versions


def last_line(capsys: pytest.CaptureFixture[str]) -> Any:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_cli_canary_promote_rollback(cli_env: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["canary", NAME, "2", "--weight", "25"]) == 0
    assert last_line(capsys) == {"model": NAME, "deployment": {"version": 1, "canary": {"version": 2, "weight": 25.0}}}
    assert main(["promote", NAME]) == 0
    assert last_line(capsys) == {"model": NAME, "deployment": {"version": 2}}
    assert main(["deploy", NAME, "3"]) == 0
    assert last_line(capsys) == {"model": NAME, "deployment": {"version": 3}}
    assert record_on_disk(cli_env) == {"version": 3, "history": [1, 2]}
    assert main(["models"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if NAME in line] == [
        json.dumps({"model": NAME, "versions": [1, 2, 3], "deployment": {"version": 3}})
    ]
    assert main(["rollback", NAME]) == 0
    assert last_line(capsys) == {"model": NAME, "deployment": {"version": 2}}
    assert main(["rollback", NAME]) == 0
    assert last_line(capsys) == {"model": NAME, "deployment": {"version": 1}}
    assert main(["canary", NAME, "3", "--weight", "10"]) == 0
    assert main(["canary", NAME, "3", "--weight", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == json.dumps({"model": NAME, "deployment": {"version": 1}})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rollback", NAME], "no earlier deployment to roll back to"),
        (["promote", NAME], "no canary to promote"),
        (["canary", NAME, "1", "--weight", "10"], "already deployed"),
        (["canary", NAME, "2", "--weight", "nan"], "canary weight must be a percentage"),
        (["canary", NAME, "2", "--weight", "101"], "canary weight must be a percentage"),
        (["canary", NAME, "7", "--weight", "10"], "version 7 of model 'diabetes' not found"),
        (["promote", "nope"], "model 'nope' not found"),
        (["rollback", "../x"], "invalid model name"),
    ],
)
def test_cli_refusals_exit_4(
    cli_env: Registry, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert record_on_disk(cli_env) == {"version": 1}


def test_cli_refuses_a_tampered_canary(cli_env: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(cli_env, 2)
    assert main(["canary", NAME, "2", "--weight", "10"]) == 4
    assert "version 2 of model 'diabetes' failed verification" in capsys.readouterr().err
    assert record_on_disk(cli_env) == {"version": 1}
