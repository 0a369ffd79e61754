"""Fixtures for the model service: an app over a private copy of the demo registry, and its client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from model_service import create_app
from model_service.config import ModelServiceSettings
from tests.conftest import SIGNING_KEY


def make_settings(root: Path, **overrides: Any) -> ModelServiceSettings:
    """Settings for a test app: synchronous loading, no refresh thread."""
    values: dict[str, Any] = {
        "model_registry": root,
        "model_signing_key": SIGNING_KEY.decode(),
        "load_in_background": False,
        "registry_refresh_seconds": 0,
        "max_batch_rows": 100,
    }
    values.update(overrides)
    return ModelServiceSettings(**values)


@pytest.fixture
def app(registry_root: Path) -> Iterator[Flask]:
    application = create_app(make_settings(registry_root))
    yield application
    application.extensions["modelgate.models"].stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def raw_inputs(records: list[dict[str, Any]], contract: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-feature OIP input tensors for raw records, with datatypes from the feature contract."""
    datatypes = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "category": "BYTES", "string": "BYTES"}
    return [
        {
            "name": feature["name"],
            "shape": [len(records)],
            "datatype": datatypes[feature["type"]],
            "data": [record[feature["name"]] for record in records],
        }
        for feature in contract["features"]
    ]
