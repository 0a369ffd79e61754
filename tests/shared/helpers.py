"""A tiny real Flask service wired by ``init_service``, with routes that exercise the shared code."""

from __future__ import annotations

from typing import Any

from flask import Flask
from marshmallow import Schema, ValidationError, fields
from werkzeug.exceptions import ImATeapot, InternalServerError

from shared.config import CommonSettings
from shared.errors import (
    ArtifactError,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    ModelNotFound,
    ModelNotReady,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
)
from shared.health import Check
from shared.service import init_service, read_json

#: The body limit of the test service (the smallest CommonSettings accepts).
MAX_BODY = 1024
#: A secret that an error must never echo back to a client.
LEAKED = "hunter2-at-/srv/models/secret.joblib"


class PersonSchema(Schema):
    name = fields.String(required=True)
    age = fields.Integer(required=True)


#: What ``GET /raise/<kind>`` raises (each value builds the exception).
RAISES: dict[str, Any] = {
    "bad-request": lambda: BadRequest("the thing is wrong"),
    "unauthorized": lambda: Unauthorized("no token", headers={"WWW-Authenticate": "Bearer"}),
    "forbidden": lambda: Forbidden("needs admin"),
    "model-not-found": lambda: ModelNotFound("iris", 3),
    "conflict": lambda: Conflict("built for another contract"),
    "unprocessable": lambda: UnprocessableEntity("bad features", errors={"age": ["too old"]}),
    "rate-limited": lambda: TooManyRequests("slow down", headers={"Retry-After": "7"}),
    "not-ready": lambda: ModelNotReady("iris", 2),
    "gateway-timeout": lambda: GatewayTimeout("upstream took too long"),
    "artifact": lambda: ArtifactError(LEAKED),
    "runtime": lambda: RuntimeError(LEAKED),
    "key": lambda: KeyError(LEAKED),
    "werkzeug-500": lambda: InternalServerError(LEAKED),
    "werkzeug-teapot": lambda: ImATeapot("short and stout"),
    "marshmallow-schema": lambda: ValidationError("the batch as a whole is wrong"),
}


def build_app(service: str, checks: dict[str, Check], max_body_bytes: int = MAX_BODY) -> Flask:
    """A real Flask app wired like every modelgate service, with routes that exercise the shared code."""
    app = Flask(f"shared-test-{service}")
    init_service(app, service, lambda: dict(checks), CommonSettings(max_body_bytes=max_body_bytes))

    @app.post("/echo")
    def echo() -> dict[str, Any]:
        return {"got": read_json()}

    @app.post("/small-echo")
    def small_echo() -> dict[str, Any]:
        return {"got": read_json(max_body_bytes=100)}

    @app.post("/v2/echo")
    def v2_echo() -> dict[str, Any]:
        return {"got": read_json()}

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        return {"item": item_id}

    @app.post("/people")
    def people() -> dict[str, Any]:
        return PersonSchema().load(read_json())  # type: ignore[no-any-return]

    @app.get("/raise/<kind>")
    @app.get("/v2/raise/<kind>")
    def raise_(kind: str) -> dict[str, Any]:
        raise RAISES[kind]()

    return app
