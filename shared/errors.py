"""One error vocabulary for every service, rendered as RFC 9457 problem+json by one handler.

    ModelgateError (status 500)
    ├── BadRequest (400)
    │   ├── MalformedJSON
    │   └── InferenceInputError       an Open Inference Protocol body that does not fit the model
    ├── Unauthorized (401), Forbidden (403)
    ├── NotFound (404)
    │   ├── ModelNotFound(name, version)
    │   └── InvalidName               a name or version no model can have
    ├── MethodNotAllowed (405)
    ├── Conflict (409)
    │   └── ContractMismatch          a request built for another feature contract (the skew guard)
    ├── PayloadTooLarge (413), UnsupportedMediaType (415)
    ├── UnprocessableEntity (422)      per-field ``errors``
    ├── TooManyRequests (429)
    ├── BadGateway (502), ServiceUnavailable (503), GatewayTimeout (504)
    │   └── ModelNotReady (503)
    ├── Relayed (an upstream's status)  an upstream service's own error, passed on as it put it
    └── ArtifactError (500, never sent to a client as such: a model that fails it is "not ready")
        ├── SignatureMismatch
        └── HashMismatch

Werkzeug's HTTP exceptions and marshmallow's ValidationError are rendered in the same shape; anything
else becomes a generic 500 whose traceback goes to the log only. Responses on ``/v2`` (the Open Inference
Protocol) also carry ``error``, the member that protocol's clients read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from werkzeug.exceptions import HTTPException

from shared.logging import request_id_var

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ModelgateError(Exception):
    """Base error: carries its HTTP status, a short title and a problem type slug."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal-error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.errors = dict(errors) if errors is not None else None
        self.headers = dict(headers or {})
        #: More members for the problem body (e.g. OAuth2's ``error`` code on the token endpoint).
        self.extra = dict(extra or {})
        super().__init__(self.detail)


class BadRequest(ModelgateError):
    status, title, slug = 400, "Bad Request", "bad-request"


class MalformedJSON(BadRequest):
    slug = "malformed-json"

    def __init__(self, reason: str = "the body is not valid JSON") -> None:
        super().__init__(reason)


class MalformedBody(BadRequest):
    slug = "malformed-body"


class RequestTimeout(ModelgateError):
    status, title, slug = 408, "Request Timeout", "request-timeout"


class InferenceInputError(BadRequest):
    slug = "invalid-inference-request"


class Unauthorized(ModelgateError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(ModelgateError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(ModelgateError):
    status, title, slug = 404, "Not Found", "not-found"


class ModelNotFound(NotFound):
    slug = "model-not-found"

    def __init__(self, name: str, version: str | int | None = None) -> None:
        self.name, self.version = name, version
        what = f"model {name!r}" if version is None else f"version {version} of model {name!r}"
        super().__init__(f"{what} not found")


class InvalidName(NotFound):
    """A model name or version that breaks the naming rules: no such model can exist, so it is a 404 (the
    contract keeps 400 for malformed JSON and request lines). Nothing that fails this becomes a path."""

    slug = "invalid-name"

    def __init__(self, kind: str, value: str, pattern: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"invalid {kind} {shown!r}: must match {pattern}")


class MethodNotAllowed(ModelgateError):
    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"


class Conflict(ModelgateError):
    status, title, slug = 409, "Conflict", "conflict"


class ContractMismatch(Conflict):
    slug = "contract-mismatch"


class PayloadTooLarge(ModelgateError):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(ModelgateError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"

    def __init__(self, got: str | None = None, *, detail: str | None = None) -> None:
        super().__init__(detail or f"expected Content-Type application/json, got {got or 'none'}")


class UnprocessableEntity(ModelgateError):
    status, title, slug = 422, "Unprocessable Entity", "validation-error"


class TooManyRequests(ModelgateError):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


class BadGateway(ModelgateError):
    status, title, slug = 502, "Bad Gateway", "bad-gateway"


class ServiceUnavailable(ModelgateError):
    status, title, slug = 503, "Service Unavailable", "unavailable"


class ModelNotReady(ServiceUnavailable):
    slug = "model-not-ready"

    def __init__(self, name: str, version: str | int, reason: str = "not loaded yet") -> None:
        super().__init__(f"version {version} of model {name!r} is not ready: {reason}", headers={"Retry-After": "5"})


class GatewayTimeout(ModelgateError):
    status, title, slug = 504, "Gateway Timeout", "upstream-timeout"


class ArtifactError(ModelgateError):
    """A model artifact that cannot be trusted or read; the model stays unloaded."""

    slug = "artifact-error"


class SignatureMismatch(ArtifactError):
    slug = "artifact-signature-mismatch"


class HashMismatch(ArtifactError):
    slug = "artifact-hash-mismatch"


class Relayed(ModelgateError):
    """An error an upstream service answered with, passed on to the client as that service put it."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        slug: str,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail, errors=errors, headers=headers)
        self.relayed_status = status
        self.relayed_title = title
        self.relayed_slug = slug


_WERKZEUG_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    errors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem+json body for one error, stamped with the current request id."""
    body: dict[str, Any] = {
        "type": f"urn:modelgate:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": request_id_var.get(),
    }
    if errors is not None:
        body["errors"] = dict(errors)
    return body


def register_error_handlers(app: Flask) -> None:
    """Route every exception raised in ``app`` through one renderer."""
    from flask import request
    from marshmallow import ValidationError

    def render(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
        if request.path.startswith("/v2"):
            body["error"] = body["detail"]
        response: Response = app.json.response(body)  # type: ignore[assignment]
        response.status_code = body["status"]
        response.mimetype = PROBLEM_JSON
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    @app.errorhandler(ModelgateError)
    def _ours(exc: ModelgateError) -> Response:
        if isinstance(exc, Relayed):
            body = problem(exc.relayed_status, exc.relayed_title, exc.detail, exc.relayed_slug, exc.errors)
            return render(body, exc.headers)
        if exc.status >= 500 and not isinstance(exc, ServiceUnavailable | GatewayTimeout | BadGateway):
            log.error("internal error: %s", exc.detail)
            return render(problem(500, "Internal Server Error", "internal error", "internal-error"))
        body = problem(exc.status, exc.title, exc.detail, exc.slug, exc.errors)
        body.update(exc.extra)
        return render(body, exc.headers)

    @app.errorhandler(ValidationError)
    def _marshmallow(exc: ValidationError) -> Response:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        return render(
            problem(
                422,
                "Unprocessable Entity",
                "the request body failed validation",
                "validation-error",
                messages,
            )
        )

    @app.errorhandler(HTTPException)
    def _werkzeug(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status >= 500:
            return render(problem(500, "Internal Server Error", "internal error", "internal-error"))
        detail = exc.description or exc.name
        headers: dict[str, str] = {}
        if status == 404:
            detail = f"no such route: {request.method} {request.path[:200]}"
        elif status == 405:
            allowed = sorted(getattr(exc, "valid_methods", None) or [])
            detail = f"{request.method} is not allowed on {request.path[:200]}; allowed: {', '.join(allowed)}"
            headers["Allow"] = ", ".join(allowed)
        elif status == 413:
            detail = f"the body is larger than the limit of {request.max_content_length} bytes"
        return render(problem(status, exc.name, detail, _WERKZEUG_SLUGS.get(status, "http-error")), headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return render(problem(500, "Internal Server Error", "internal error", "internal-error"))
