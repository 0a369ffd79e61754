"""Wiring every service shares: request ids, JSON access logs, metrics, error handling, health routes.

``init_service`` is called by each service's ``create_app``; ``read_json`` is how views read a body
(content type, size and JSON syntax are checked here, once, with the contract's status codes).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, g, request

from shared.errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType, register_error_handlers
from shared.health import ReadinessProbe, health_blueprint
from shared.logging import accept_request_id, request_id_var
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS, render_metrics

access_log = logging.getLogger("modelgate.access")

REQUEST_ID_HEADER = "X-Request-ID"


def init_service(app: Flask, service: str, readiness: ReadinessProbe, max_body_bytes: int) -> None:
    """Attach request ids, access logging, metrics, problem+json errors, /health, /ready and /metrics."""
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.extensions["modelgate.service"] = service

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.request_id_token = request_id_var.set(g.request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or request_id_var.get()
        started = g.get("started")
        elapsed = time.perf_counter() - started if started is not None else 0.0
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        HTTP_REQUESTS.labels(service, route, request.method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(service, route, request.method).observe(elapsed)
        if route not in ("/metrics", "/health"):
            access_log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path[:200],
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        return response

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    register_error_handlers(app)
    app.register_blueprint(health_blueprint(service, readiness))

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = render_metrics()
        return Response(body, content_type=content_type)


def _refuse_constant(name: str) -> Any:
    raise MalformedJSON(f"{name} is not a JSON number")


def read_json(max_body_bytes: int | None = None) -> Any:
    """The request's JSON body, after checking its media type (415), size (413) and syntax (400).

    NaN and Infinity, which Python's json accepts by default, are refused: they are not JSON.
    """
    mimetype = request.mimetype
    if mimetype != "application/json" and not (mimetype.startswith("application/") and mimetype.endswith("+json")):
        raise UnsupportedMediaType(request.content_type)
    limit = max_body_bytes or request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes exceeds the limit of {limit}")
    raw = request.get_data(cache=True)
    # A streamed (chunked) body has no Content-Length to check above, and werkzeug stops reading it at
    # MAX_CONTENT_LENGTH without an error: a body that reaches that limit may have been cut short.
    cut_at = request.max_content_length if request.content_length is None else None
    if (limit is not None and len(raw) > limit) or (cut_at is not None and len(raw) >= cut_at):
        smallest = min(n for n in (limit, cut_at) if n is not None)
        raise PayloadTooLarge(f"the body exceeds the limit of {smallest} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJSON("the body is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MalformedJSON("the body is nested too deeply") from None
