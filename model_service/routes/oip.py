"""The Open Inference Protocol REST API (KServe v2), so standard clients work unchanged.

Health answers 200 for true and 400 for false, as the protocol asks; errors carry ``{"error": ...}``
(inside the problem+json body every modelgate error has).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

import model_service
from model_service.routes import models
from shared.errors import BadRequest, ModelNotReady
from shared.service import read_json

bp = Blueprint("oip", __name__, url_prefix="/v2")


class NotReady(BadRequest):
    """The protocol's 'false' for a readiness question."""

    slug = "not-ready"


@bp.get("")
def server_metadata() -> dict[str, Any]:
    return {"name": "modelgate-model-service", "version": _version(), "extensions": []}


@bp.get("/health/live")
def live() -> dict[str, Any]:
    return {"live": True}


@bp.get("/health/ready")
def ready() -> dict[str, Any]:
    if not all(check.ok for check in models().readiness().values()):
        raise NotReady("the server is still loading its models")
    return {"ready": True}


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
    server = models()
    return server.model_metadata(server.resolve(name, version))


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
    server = models()
    if version is not None:  # answer from the worker's state: asking must not load anything
        state = server.state(name, version)
        if state != "loaded":
            raise NotReady(f"version {version} of model {name!r} is {state} (an infer request loads it)")
        return {"name": name, "version": str(int(version)), "ready": True}
    try:
        model = server.resolve(name, version)
    except ModelNotReady as exc:
        raise NotReady(exc.detail) from None
    return {"name": name, "version": str(model.version), "ready": True}


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> dict[str, Any]:
    server = models()
    model = server.resolve(name, version)  # 404 / 503 before the body is read
    return server.infer(name, version, read_json(), g.request_id, model=model)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelgate")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return getattr(model_service, "__version__", "0")
