"""Fixtures for the shared package: a tiny real Flask service wired by ``init_service``."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.health import Check
from tests.shared.helpers import build_app


@pytest.fixture
def service_name() -> str:
    """A service label of this test's own, so Prometheus counters from other tests never mix in."""
    return f"svc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def checks() -> dict[str, Check]:
    """The readiness checks the app reports; a test may change them between requests."""
    return {"redis": Check(True, "PONG"), "models": Check(True, data={"loaded": 3})}


@pytest.fixture
def app(service_name: str, checks: dict[str, Check]) -> Flask:
    return build_app(service_name, checks)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
