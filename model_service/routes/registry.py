"""``/v1`` registry routes: models, their versions and deployments, one version's metadata, and the
deployment operations (deploy, canary, promote, rollback).

These routes carry no authentication: the model service is internal-only, reached through the gateway,
whose admin API (``admin`` scope) forwards to the deployment operations here. Never expose this port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint
from marshmallow import RAISE, Schema, fields, validate

from model_service.registry import Registry
from model_service.routes import models
from shared.errors import ArtifactError, Conflict, ModelNotFound
from shared.service import read_json, request_body

log = logging.getLogger(__name__)

bp = Blueprint("registry", __name__, url_prefix="/v1")


class Percent(fields.Float):
    """A JSON number (not a numeric string, not a boolean); the schema bounds it to 0-100."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        result: float = super()._deserialize(value, attr, data, **kwargs)
        return result


def _version_field() -> fields.Integer:
    return fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=999_999_999))


class DeployRequest(Schema):
    """``{"version": 3}``"""

    version = _version_field()

    class Meta:
        unknown = RAISE


class CanaryRequest(Schema):
    """``{"version": 3, "weight": 10}``: weight in percent, in (0, 100]; 0 removes the canary."""

    version = _version_field()
    weight = Percent(
        required=True,
        allow_nan=False,
        validate=validate.Range(
            min=0, max=100, error="canary weight must be a percentage in (0, 100], or 0 to remove the canary"
        ),
    )

    class Meta:
        unknown = RAISE


class EmptyRequest(Schema):
    """No body, or ``{}``."""

    class Meta:
        unknown = RAISE


def _summary(name: str) -> dict[str, Any]:
    server = models()
    deployment = server.deployment(name)
    return {
        "name": name,
        "versions": server.registry.versions(name),
        "deployed": None
        if deployment is None
        else {
            "version": deployment.version,
            "canary": None
            if deployment.canary_version is None
            else {"version": deployment.canary_version, "weight": deployment.canary_weight},
        },
        "ready": server.is_ready(name),
    }


@bp.get("/models")
def list_models() -> dict[str, Any]:
    return {"models": [_summary(name) for name in models().registry.models()]}


@bp.get("/models/<name>")
def show_model(name: str) -> dict[str, Any]:
    server = models()
    summary = _summary(name)
    deployment = server.deployment(name)
    if deployment is not None:
        summary["metadata"] = version_view(name, str(deployment.version))
    return summary


@bp.get("/models/<name>/versions")
def list_versions(name: str) -> dict[str, Any]:
    return {"name": name, "versions": [version_view(name, str(v)) for v in models().registry.versions(name)]}


@bp.get("/models/<name>/versions/<version>")
def show_version(name: str, version: str) -> dict[str, Any]:
    return version_view(name, version)


def version_view(name: str, version: str) -> dict[str, Any]:
    """One version's public metadata; served from memory when loaded, else read and verified from disk."""
    server = models()
    loaded = next((m for m in server.loaded() if m.name == name and str(m.version) == version), None)
    if loaded is not None:
        return dict(loaded.describe(), loaded=True)
    try:
        metadata = server.registry.metadata(name, version)
    except ArtifactError as exc:
        return {"name": name, "version": int(version), "loaded": False, "error": exc.detail}
    except ModelNotFound:
        raise
    public = {k: v for k, v in metadata.items() if k not in ("signature", "files", "parity_sample")}
    return dict(public, loaded=False)


@bp.post("/models/<name>/deploy")
def deploy(name: str) -> dict[str, Any]:
    models().registry.versions(name)  # 404 before the body is read
    body = DeployRequest().load(read_json())
    return _apply(name, lambda registry: registry.deploy(name, body["version"]))


@bp.post("/models/<name>/canary")
def canary(name: str) -> dict[str, Any]:
    models().registry.versions(name)
    body = CanaryRequest().load(read_json())
    return _apply(name, lambda registry: registry.set_canary(name, body["version"], body["weight"]))


@bp.post("/models/<name>/promote")
def promote(name: str) -> dict[str, Any]:
    models().registry.versions(name)
    EmptyRequest().load(_optional_json())
    return _apply(name, lambda registry: registry.promote(name))


@bp.post("/models/<name>/rollback")
def rollback(name: str) -> dict[str, Any]:
    models().registry.versions(name)
    EmptyRequest().load(_optional_json())
    return _apply(name, lambda registry: registry.rollback(name))


def _optional_json() -> Any:
    """The JSON body, or ``{}`` when there is none."""
    return read_json() if request_body() else {}


def _apply(name: str, operation: Callable[[Registry], dict[str, Any]]) -> dict[str, Any]:
    """Run one deployment operation, let this worker serve its result now, and describe the new routing."""
    server = models()
    try:
        record = operation(server.registry)
    except ArtifactError as exc:
        # A version that fails verification is a refusal, not a server fault (ArtifactError renders as 500).
        raise Conflict(exc.detail) from None
    try:
        server.sync()  # the other workers follow within REGISTRY_REFRESH_SECONDS
    except Exception:  # the change is written; the refresh loop will load it
        log.exception("sync after a deployment change failed", extra={"model": name})
    canary = record.get("canary")
    return {
        "name": name,
        "version": record["version"],
        "canary": None if canary is None else {"version": canary["version"], "weight": canary["weight"]},
        "history": list(record.get("history", [])),
    }
