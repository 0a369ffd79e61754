"""Preprocessing and model services as real gunicorn processes, chained as the gateway will chain them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model_service.registry import Registry
from tests.conftest import SIGNING_KEY
from tests.integration.conftest import Service, start_service

pytestmark = pytest.mark.integration


@pytest.fixture
def preprocessing_process(registry_root: Path, tmp_path: Path) -> Iterator[Service]:
    service = start_service(
        "preprocessing_service.wsgi:app",
        "preprocessing",
        "PREPROCESSING_PORT",
        tmp_path,
        {"MODEL_REGISTRY": str(registry_root), "MODEL_SIGNING_KEY": SIGNING_KEY.decode()},
    )
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


@pytest.mark.parametrize("name", ["breast-cancer", "penguins", "diabetes"])
def test_transform_then_infer_across_processes(
    preprocessing_process: Service, model_service_process: Service, registry_root: Path, name: str
) -> None:
    metadata = Registry(registry_root, SIGNING_KEY).metadata(name, 1)
    instances = metadata["examples"]
    trace = {"X-Request-ID": f"chain-{name}-0001"}
    request = preprocessing_process.request(
        "POST", f"/v1/models/{name}/versions/1/transform", {"instances": instances}, headers=trace
    )
    assert request.status == 200, request.body
    assert request.headers["x-request-id"] == trace["X-Request-ID"]
    answer = model_service_process.request("POST", f"/v2/models/{name}/versions/1/infer", request.json(), headers=trace)
    assert answer.status == 200, answer.body
    assert answer.json()["outputs"][0]["shape"] == [len(instances)]
    assert answer.json()["id"] == trace["X-Request-ID"]
    for service in (preprocessing_process, model_service_process):
        service.stop()
        assert any(line.get("request_id") == trace["X-Request-ID"] for line in service.log_lines())


def test_contract_errors_cross_the_process_boundary_intact(preprocessing_process: Service) -> None:
    reply = preprocessing_process.request(
        "POST", "/v1/models/penguins/versions/1/transform", {"instances": [{"island": "Mars"}]}
    )
    assert reply.status == 422
    assert reply.headers["content-type"] == "application/problem+json"
    errors = reply.json()["errors"]["instances"]["0"]
    assert errors["island"] == ["'Mars' is not one of: Biscoe, Dream, Torgersen."]
    assert errors["sex"] == ["Missing data for required field."]
