"""The whole stack as real processes: Redis, model service, preprocessing service, gateway (2 workers each)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from model_service.registry import Registry
from tests.conftest import SIGNING_KEY, RedisServer
from tests.integration.conftest import Stack, bearer, token

pytestmark = pytest.mark.integration

TIERS = "tiny=3/minute,ten=10/minute"


def instances(root: Path, name: str, rows: int = 2) -> list[dict[str, Any]]:
    metadata = Registry(root, SIGNING_KEY).metadata(name, 1)
    order = [f["name"] for f in metadata["contract"]["features"]]
    return [{k: row[k] for k in order} for row in metadata["parity_sample"][:rows]]


@pytest.fixture(scope="module")
def shared_stack(demo_registry_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """One stack for the tests that only read: started once for this module."""
    root = tmp_path_factory.mktemp("stack-registry")
    shutil.copytree(demo_registry_root, root, dirs_exist_ok=True)
    redis_server = RedisServer(tmp_path_factory.mktemp("stack-redis"))
    stack = Stack(root, tmp_path_factory.mktemp("stack"), redis_server.url, {"RATE_LIMIT_TIERS": TIERS})
    try:
        yield stack, root
    finally:
        stack.stop()
        redis_server.stop()


@pytest.mark.parametrize("name", ["breast-cancer", "penguins", "diabetes"])
def test_predict_every_demo_model(shared_stack: tuple[Stack, Path], name: str) -> None:
    stack, root = shared_stack
    rows = instances(root, name, 3)
    rows[0]["id"] = "first"
    reply = stack.gateway.request("POST", f"/v1/models/{name}/predict", {"instances": rows}, headers=bearer(token()))
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["model"] == name
    assert body["version"] == "1"
    assert body["request_id"] == reply.headers["x-request-id"]
    assert len(body["predictions"]) == 3
    assert body["predictions"][0]["id"] == "first"
    assert "id" not in body["predictions"][1]
    for prediction in body["predictions"]:
        assert set(prediction) >= {"prediction", "probabilities", "confidence", "review_required"}
        if name == "diabetes":
            assert isinstance(prediction["prediction"], float)
            assert prediction["probabilities"] is None
        else:
            assert prediction["prediction"] in prediction["probabilities"]
            assert prediction["confidence"] == max(prediction["probabilities"].values())
    assert reply.headers["ratelimit-limit"] == "120"
    assert int(reply.headers["ratelimit-remaining"]) < 120


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", "/v1/models/diabetes/predict", b"{nope", "predict", 400),
        ("POST", "/v1/models/Diabetes/predict", {"instances": [{}]}, "predict", 404),
        ("POST", "/v1/models/diabetes/predict", {"instances": [{}]}, None, 401),
        ("POST", "/v1/models/diabetes/predict", {"instances": [{}]}, "expired", 401),
        ("POST", "/v1/admin/models/diabetes/deploy", {"version": 1}, "predict", 403),
        ("POST", "/v1/models/no-such-model/predict", {"instances": [{"a": 1}]}, "predict", 404),
        ("POST", "/v1/models/diabetes/predict", {"instances": [{"age": 1}] * 51}, "predict", 413),
        ("POST", "/v1/models/diabetes/predict", {"instances": [{"age": "old"}]}, "predict", 422),
        ("GET", "/v2/models/../../etc/passwd", None, "predict", 404),
        ("GET", "/nowhere", None, None, 404),
    ],
)
def test_error_paths(
    shared_stack: tuple[Stack, Path], method: str, path: str, body: Any, headers: str | None, status: int
) -> None:
    stack, _ = shared_stack
    sent = {}
    if headers == "predict":
        sent = bearer(token(sub=f"errors-{status}"))
    elif headers == "expired":
        sent = bearer(token(ttl=-60))
    reply = stack.gateway.request(method, path, body, headers=sent)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == status
    assert problem["request_id"] == reply.headers["x-request-id"]
    assert "Traceback" not in reply.body.decode()
    if status == 401:
        assert reply.headers["www-authenticate"].startswith("Bearer")
    if status == 422:
        assert problem["errors"]["instances"]["0"]["age"] == ["Not a number: got string."]


def test_415_for_another_content_type(shared_stack: tuple[Stack, Path]) -> None:
    stack, _ = shared_stack
    headers = {**bearer(token(sub="media")), "Content-Type": "text/plain"}
    reply = stack.gateway.request("POST", "/v1/models/diabetes/predict", b"instances", headers=headers)
    assert reply.status == 415


def test_429_with_retry_after(shared_stack: tuple[Stack, Path]) -> None:
    stack, _ = shared_stack
    credentials = bearer(token(sub="limited-client", tier="tiny"))
    statuses = [stack.gateway.request("GET", "/v2/health/live", headers=credentials).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = stack.gateway.request("GET", "/v2/health/live", headers=credentials)
    assert limited.status == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-remaining"] == "0"
    assert limited.headers["ratelimit-limit"] == "3"


def test_exactly_n_allowed_out_of_many_concurrent_requests(shared_stack: tuple[Stack, Path]) -> None:
    stack, _ = shared_stack
    credentials = bearer(token(sub="burst-client", tier="ten"))
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def fire() -> None:
        start.wait()
        for _ in range(6):
            status = stack.gateway.request("GET", "/v2/health/live", headers=credentials).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 48
    assert statuses.count(200) == 10
    assert statuses.count(429) == 38


def test_docs_and_openapi_are_served(shared_stack: tuple[Stack, Path]) -> None:
    stack, _ = shared_stack
    assert stack.gateway.request("GET", "/openapi.json").json()["openapi"].startswith("3.")
    page = stack.gateway.request("GET", "/docs/")
    assert page.status == 200
    for asset in re.findall(r'(?:src|href)="(/docs/[^"]+)"', page.body.decode()):
        assert stack.gateway.request("GET", asset).status == 200, asset


@pytest.fixture
def make_stack(registry_root: Path, tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Stack]]:
    """``make_stack(env)``: a private stack over a private registry and Redis, stopped after the test."""
    made: list[Stack] = []

    def make(env: dict[str, str] | None = None) -> Stack:
        made.append(Stack(registry_root, tmp_path, redis_server.url, env))
        return made[-1]

    yield make
    for stack in made:
        stack.stop()


def eventually_ok(call: Callable[[], int], seconds: float, pause: float) -> int:
    """Call until it answers 200 or ``seconds`` pass; the last status."""
    deadline = time.monotonic() + seconds
    status = call()
    while status != 200 and time.monotonic() < deadline:
        time.sleep(pause)
        status = call()
    return status


def test_the_same_request_id_in_all_three_services_logs(make_stack: Callable[..., Stack], registry_root: Path) -> None:
    stack = make_stack()
    trace = "trace-all-three-0042"
    reply = stack.gateway.request(
        "POST",
        "/v1/models/penguins/predict",
        {"instances": instances(registry_root, "penguins")},
        headers={**bearer(token()), "X-Request-ID": trace},
    )
    assert reply.status == 200
    assert reply.json()["request_id"] == trace
    stack.stop()
    for service in (stack.gateway, stack.preprocessing, stack.model):
        lines = service.log_lines()
        assert any(line.get("request_id") == trace for line in lines), service.log_path
        assert not any(token()[:20] in str(line) for line in lines)


def test_model_service_down_then_back(make_stack: Callable[..., Stack], registry_root: Path) -> None:
    stack = make_stack()
    body = {"instances": instances(registry_root, "diabetes")}
    credentials = bearer(token())

    def predict() -> int:
        return stack.gateway.request("POST", "/v1/models/diabetes/predict", body, headers=credentials).status

    assert predict() == 200
    stack.model.stop()
    started = time.monotonic()
    down = stack.gateway.request("POST", "/v1/models/diabetes/predict", body, headers=credentials)
    assert down.status == 503
    assert time.monotonic() - started < 3.5  # within REQUEST_DEADLINE_SECONDS
    assert int(down.headers["retry-after"]) >= 1
    stack.restart_model()
    assert eventually_ok(predict, 20, 0.2) == 200


def test_hung_model_service_gives_504_within_the_deadline(
    make_stack: Callable[..., Stack], registry_root: Path
) -> None:
    stack = make_stack()
    body = {"instances": instances(registry_root, "diabetes")}
    credentials = bearer(token())
    group = os.getpgid(stack.model.process.pid)

    def predict(timeout: float = 10.0) -> Any:
        return stack.gateway.request("POST", "/v1/models/diabetes/predict", body, headers=credentials, timeout=timeout)

    try:
        assert predict().status == 200
        os.killpg(group, signal.SIGSTOP)  # the model service hangs: accepts nothing, answers nothing
        started = time.monotonic()
        hung = predict(timeout=15)
        elapsed = time.monotonic() - started
        assert hung.status in (503, 504), hung.body
        assert elapsed < 4.0  # REQUEST_DEADLINE_SECONDS=3 plus a margin: nothing waits longer
        os.killpg(group, signal.SIGCONT)
        assert eventually_ok(lambda: predict().status, 20, 0.3) == 200
    finally:
        os.killpg(group, signal.SIGCONT)


def test_redis_outage_fails_open_and_recovers(make_stack: Callable[..., Stack], redis_server: RedisServer) -> None:
    stack = make_stack({"RATE_LIMIT_FALLBACK": "1000/minute"})
    credentials = bearer(token())
    assert stack.gateway.request("GET", "/v2/health/live", headers=credentials).status == 200
    redis_server.stop()
    started = time.monotonic()
    statuses = [stack.gateway.request("GET", "/v2/health/live", headers=credentials).status for _ in range(5)]
    assert statuses == [200] * 5
    assert time.monotonic() - started < 3
    metrics = stack.gateway.request("GET", "/metrics").body.decode()
    assert "modelgate_ratelimit_store_up 0.0" in metrics
    assert re.search(r'modelgate_ratelimit_decisions_total\{decision="fallback_allowed"\} [1-9]', metrics)
    redis_server.start()

    def counted_in_redis() -> int:
        stack.gateway.request("GET", "/v2/health/live", headers=credentials)
        return 200 if redis_server.client().keys("modelgate:rl:*") else 0

    assert eventually_ok(counted_in_redis, 15, 0.3) == 200, "the gateway never went back to Redis"


def test_redis_outage_fails_closed_when_configured(make_stack: Callable[..., Stack], redis_server: RedisServer) -> None:
    stack = make_stack({"RATE_LIMIT_FAILURE_MODE": "closed"})
    credentials = bearer(token())
    redis_server.stop()
    reply = stack.gateway.request("GET", "/v2/health/live", headers=credentials)
    assert reply.status == 503
    assert int(reply.headers["retry-after"]) >= 1
    assert stack.gateway.request("GET", "/ready").status == 503
    redis_server.start()
    live = eventually_ok(lambda: stack.gateway.request("GET", "/v2/health/live", headers=credentials).status, 15, 0.3)
    assert live == 200
