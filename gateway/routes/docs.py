"""``/openapi.json`` and ``/docs``: interactive docs whose assets the gateway serves itself (no CDN)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, redirect
from flask_swagger_ui import get_swaggerui_blueprint
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.openapi import build_spec

bp = Blueprint("docs", __name__)

try:
    _VERSION = version("modelgate")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    _VERSION = "0"

_SPEC = build_spec(_VERSION)


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """The OpenAPI 3 document."""
    return _SPEC


@bp.get("/docs")
def docs_root() -> WerkzeugResponse:
    return redirect("/docs/", code=308)


# Swagger UI from the flask-swagger-ui wheel; validatorUrl None keeps it from calling an online validator.
swagger = get_swaggerui_blueprint(
    "/docs", "/openapi.json", config={"app_name": "modelgate", "validatorUrl": None}, blueprint_name="swagger_ui"
)
bp.register_blueprint(swagger)
