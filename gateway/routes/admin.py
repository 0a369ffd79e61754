"""Admin API (``admin`` scope): deploy a version, set a canary weight, promote it, roll back."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from gateway import gateway
from gateway.routes import deadline, guarded
from shared import artifacts
from shared.service import read_json, request_body

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")


def _forward(name: str, action: str) -> dict[str, Any]:
    artifacts.validate_name(name)
    body = b"{}"
    if request.content_length or request.headers.get("Transfer-Encoding"):
        read_json()
        body = request_body()
    state = gateway()
    answer = state.router.forward(
        state.router.model, "POST", f"/v1/models/{name}/{action}", body, g.request_id, deadline(), idempotent=False
    )
    state.router.forget(name)
    return dict(answer.json())


@bp.post("/models/<name>/deploy")
@guarded("admin")
def deploy(name: str) -> dict[str, Any]:
    """``{"version": 3}``: version 3 serves every request (any canary is removed)."""
    return _forward(name, "deploy")


@bp.post("/models/<name>/canary")
@guarded("admin")
def canary(name: str) -> dict[str, Any]:
    """``{"version": 4, "weight": 10}``: version 4 takes 10% of unversioned requests (weight 0 removes it)."""
    return _forward(name, "canary")


@bp.post("/models/<name>/promote")
@guarded("admin")
def promote(name: str) -> dict[str, Any]:
    """The canary becomes the deployed version."""
    return _forward(name, "promote")


@bp.post("/models/<name>/rollback")
@guarded("admin")
def rollback(name: str) -> dict[str, Any]:
    """Back to the previously deployed version."""
    return _forward(name, "rollback")
