"""``GET /v1/models`` and ``GET /v1/models/<name>``: what can be called, and what an instance looks like."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from gateway import gateway
from gateway.routes import deadline, guarded

bp = Blueprint("models", __name__, url_prefix="/v1")


@bp.get("/models")
@guarded("predict")
def list_models() -> dict[str, Any]:
    """Every model with its versions, routing and readiness."""
    return gateway().router.models(g.request_id, deadline())


@bp.get("/models/<name>")
@guarded("predict")
def show_model(name: str) -> dict[str, Any]:
    """One model: versions, routing, metrics, its input schema and an example instance."""
    return gateway().router.describe(name, g.request_id, deadline())
