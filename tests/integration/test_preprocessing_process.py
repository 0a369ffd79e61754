"""Preprocessing and model services as real gunicorn processes, chained as the gateway will chain them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

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


def _island_counts(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "modelgate_feature_values_total" and (labels["model"], labels["feature"]) == (
                "penguins",
                "island",
            ):
                counts[labels["bin"]] = counts.get(labels["bin"], 0.0) + sample.value
    return counts


def _start_with_drift(registry_root: Path, tmp_path: Path, flush_seconds: str) -> Service:
    return start_service(
        "preprocessing_service.wsgi:app",
        "preprocessing",
        "PREPROCESSING_PORT",
        tmp_path,
        {
            "MODEL_REGISTRY": str(registry_root),
            "MODEL_SIGNING_KEY": SIGNING_KEY.decode(),
            "DRIFT_FLUSH_SECONDS": flush_seconds,
        },
    )


def _send_penguins(service: Service, registry_root: Path, requests: int) -> dict[str, float]:
    """Post the penguins examples ``requests`` times from 4 threads; return the island values sent, by value."""
    instances = Registry(registry_root, SIGNING_KEY).metadata("penguins", 1)["examples"]

    def post(_: int) -> int:
        path = "/v1/models/penguins/versions/1/transform"
        return service.request("POST", path, {"instances": instances}).status

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(post, range(requests))) == {200}
    sent = Counter(instance["island"] for instance in instances if instance.get("island") is not None)
    return {island: float(n * requests) for island, n in sent.items()}


def test_drift_counts_from_every_worker_reach_the_metrics(registry_root: Path, tmp_path: Path) -> None:
    service = _start_with_drift(registry_root, tmp_path, "0.2")
    try:
        service.wait_ready()
        sent = _send_penguins(service, registry_root, 40)
        deadline = time.monotonic() + 15
        counts = _island_counts(service.request("GET", "/metrics").body.decode())
        while {k: v for k, v in counts.items() if v} != sent and time.monotonic() < deadline:
            time.sleep(0.1)
            counts = _island_counts(service.request("GET", "/metrics").body.decode())
        assert {k: v for k, v in counts.items() if v} == sent
        assert set(counts) == {"Biscoe", "Dream", "Torgersen"}  # a bin nobody sent still exists, at 0
    finally:
        assert service.stop() == 0


def test_a_stopping_worker_flushes_what_it_counted(registry_root: Path, tmp_path: Path) -> None:
    # A flush interval longer than the test: only the exit flush can move these counts to the metrics files.
    service = _start_with_drift(registry_root, tmp_path, "300")
    try:
        service.wait_ready()
        sent = _send_penguins(service, registry_root, 10)
        assert not any(_island_counts(service.request("GET", "/metrics").body.decode()).values())
    finally:
        assert service.stop() == 0
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=service.env["PROMETHEUS_MULTIPROC_DIR"])
    counts = _island_counts(generate_latest(registry).decode())
    assert {k: v for k, v in counts.items() if v} == sent
