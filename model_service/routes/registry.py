"""``/v1`` registry routes: models, their versions and deployments, and one version's metadata."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from model_service.routes import models
from shared.errors import ArtifactError, ModelNotFound

bp = Blueprint("registry", __name__, url_prefix="/v1")


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
