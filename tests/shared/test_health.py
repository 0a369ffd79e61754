"""``/health`` (liveness) and ``/ready`` (readiness, with its named checks in the body)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from shared.health import Check


def test_health_answers_without_consulting_the_checks(
    client: FlaskClient, checks: dict[str, Check], service_name: str
) -> None:
    checks["redis"] = Check(False, "connection refused")
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": service_name}
    assert response.headers["X-Request-ID"]


def test_ready_is_200_with_every_check_when_all_pass(client: FlaskClient, service_name: str) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "service": service_name,
        "checks": {"redis": {"status": "ok", "detail": "PONG"}, "models": {"status": "ok", "loaded": 3}},
    }


@pytest.mark.parametrize("failing", ["redis", "models"])
def test_ready_is_503_when_any_check_fails(client: FlaskClient, checks: dict[str, Check], failing: str) -> None:
    checks[failing] = Check(False, "down", {"since": 12})
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not ready"
    assert body["checks"][failing] == {"status": "failing", "detail": "down", "since": 12}
    passing = ({"redis", "models"} - {failing}).pop()
    assert body["checks"][passing]["status"] == "ok"


def test_readiness_is_evaluated_on_every_request(client: FlaskClient, checks: dict[str, Check]) -> None:
    assert client.get("/ready").status_code == 200
    checks["models"] = Check(False, "version 2 of model 'iris' failed its signature check")
    assert client.get("/ready").status_code == 503
    checks["models"] = Check(True)
    assert client.get("/ready").status_code == 200


def test_ready_without_checks_is_ready(client: FlaskClient, checks: dict[str, Check]) -> None:
    checks.clear()
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {}


def test_health_routes_are_get_only(client: FlaskClient) -> None:
    assert client.post("/health").status_code == 405
    assert client.post("/ready").status_code == 405


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (Check(True), {"status": "ok"}),
        (Check(False), {"status": "failing"}),
        (Check(False, "timeout"), {"status": "failing", "detail": "timeout"}),
        (
            Check(True, data={"loaded": ["iris/1"], "latency_ms": 1.5}),
            {"status": "ok", "loaded": ["iris/1"], "latency_ms": 1.5},
        ),
    ],
)
def test_check_as_dict(check: Check, expected: dict[str, object]) -> None:
    assert check.as_dict() == expected
