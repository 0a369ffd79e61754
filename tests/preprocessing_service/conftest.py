"""Fixtures for the preprocessing service: an app over a private copy of the demo registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from preprocessing_service import create_app
from preprocessing_service.config import PreprocessingSettings
from tests.conftest import SIGNING_KEY


def make_settings(root: Path, **overrides: Any) -> PreprocessingSettings:
    """Settings for a test app."""
    values: dict[str, Any] = {"model_registry": root, "model_signing_key": SIGNING_KEY.decode(), "max_batch_rows": 100}
    values.update(overrides)
    return PreprocessingSettings(**values)


@pytest.fixture
def app(registry_root: Path) -> Flask:
    return create_app(make_settings(registry_root), warm=False)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
