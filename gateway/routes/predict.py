"""``POST /v1/models/<name>/predict``: instances in, one prediction per instance out."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from gateway import gateway
from gateway.routes import deadline, guarded
from shared import artifacts
from shared.errors import PayloadTooLarge
from shared.service import read_json, request_body

bp = Blueprint("predict", __name__, url_prefix="/v1")


@bp.post("/models/<name>/predict")
@guarded("predict")
def predict(name: str) -> dict[str, Any]:
    """Validate, transform and predict ``{"instances": [...]}`` with the deployed version (or its canary)."""
    artifacts.validate_name(name)
    body = read_json()
    state = gateway()
    instances = body.get("instances") if isinstance(body, dict) else None
    if isinstance(instances, list) and len(instances) > state.settings.max_batch_rows:
        raise PayloadTooLarge(f"{len(instances)} instances exceed the limit of {state.settings.max_batch_rows}")
    shareable = instances if isinstance(body, dict) and len(body) == 1 and isinstance(instances, list) else None
    return state.router.predict(name, request_body(), shareable, g.request_id, deadline())
