"""Wiring every service shares: request ids, JSON access logs, metrics, error handling, health routes.

``init_service`` is called by each service's ``create_app``; ``read_json`` is how views read a body
(content type, size and JSON syntax are checked here, once, with the contract's status codes).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import sys
import time
from typing import Any

import orjson
from flask import Flask, Response, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from gunicorn.http.errors import ParseException as GunicornParseError
from werkzeug.exceptions import ClientDisconnected

from shared.config import CommonSettings
from shared.errors import (
    MalformedBody,
    MalformedJSON,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    register_error_handlers,
)
from shared.health import ReadinessProbe, health_blueprint
from shared.logging import REQUEST_ID_PATTERN, accept_request_id, request_id_var
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS, labelled, render_metrics

access_log = logging.getLogger("modelgate.access")

REQUEST_ID_HEADER = "X-Request-ID"
#: Sent by the gateway with a batched trip: the ids of every request in it (logged with the trip).
BATCH_IDS_HEADER = "X-Batch-Request-IDs"
MAX_BATCH_IDS = 256
#: Methods counted under their own name in the request metrics; any other is counted as ``other``.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_service(app: Flask, service: str, readiness: ReadinessProbe, settings: CommonSettings) -> None:
    """Attach request ids, access logging, metrics, problem+json errors, /health, /ready and /metrics.

    From ``settings``: the body limits (``MAX_BODY_BYTES``, ``BODY_IDLE_TIMEOUT_SECONDS``,
    ``BODY_TIMEOUT_SECONDS``).
    """
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["MODELGATE_BODY_IDLE_TIMEOUT"] = settings.body_idle_timeout_seconds
    app.config["MODELGATE_BODY_TIMEOUT"] = settings.body_timeout_seconds
    # No automatic OPTIONS answers: every route answers only the methods it declares (and its guard runs).
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json = OrjsonProvider(app)
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
        # Any token is a method to HTTP: a client must not mint a time series per made-up one.
        method = request.method if request.method in KNOWN_METHODS else "other"
        labelled(HTTP_REQUESTS, service, route, method, str(response.status_code)).inc()
        labelled(HTTP_LATENCY, service, route, method).observe(elapsed)
        if route not in ("/metrics", "/health") and access_log.isEnabledFor(logging.INFO):
            fields: dict[str, object] = {
                "method": request.method,
                "path": request.path[:200],
                "route": route,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 3),
            }
            batch = request.headers.get(BATCH_IDS_HEADER)
            if batch:
                ids = [i for i in batch.split(",")[:MAX_BATCH_IDS] if REQUEST_ID_PATTERN.fullmatch(i)]
                if ids:
                    fields["request_ids"] = ids
            access_log.info("request", extra=fields)
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


def read_json(max_body_bytes: int | None = None) -> Any:
    """The request's JSON body, after checking its media type (415), size (413) and syntax (400).

    Parsed by orjson, which is strict where Python's json is lenient: NaN, Infinity, lone surrogates and
    integers beyond 64 bits are refused, as is nesting deeper than 1024 levels.
    """
    mimetype = request.mimetype
    if mimetype != "application/json" and not (mimetype.startswith("application/") and mimetype.endswith("+json")):
        raise UnsupportedMediaType(request.content_type)
    limit = max_body_bytes or request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes exceeds the limit of {limit}")
    raw = request_body()
    # A streamed (chunked) body has no Content-Length to check above, and werkzeug stops reading it at
    # MAX_CONTENT_LENGTH without an error: a body that reaches that limit may have been cut short.
    cut_at = request.max_content_length if request.content_length is None else None
    if (limit is not None and len(raw) > limit) or (cut_at is not None and len(raw) >= cut_at):
        smallest = min(n for n in (limit, cut_at) if n is not None)
        raise PayloadTooLarge(f"the body exceeds the limit of {smallest} bytes")
    try:
        return orjson.loads(raw)  # validates UTF-8 itself: the body is decoded once, on the hot path
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(_json_error(raw, exc)) from None


def request_body() -> bytes:
    """The raw request body (read once, then cached), or a 400, 408 or 415: never a hang or a 500.

    A client that pauses longer than the idle timeout (``BODY_IDLE_TIMEOUT_SECONDS``) between two reads
    gets a 408, as with nginx's ``client_body_timeout``; in a gevent worker (the gateway, the one service
    clients reach) so does one whose whole body takes longer than ``BODY_TIMEOUT_SECONDS``, which bounds a
    client trickling a byte within each pause. A body that breaks its chunked framing or ends before its
    ``Content-Length`` is a 400. gunicorn then closes the connection (the framing is lost).
    """
    cached: bytes | None = g.get("modelgate_body")
    if cached is not None:  # read_json then the route's forward: the checks and socket calls run once
        return cached
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):  # gzip and friends: the bytes are not JSON, and nothing here inflates
        raise UnsupportedMediaType(detail=f"Content-Encoding {encoding[:40]!r} is not supported: send JSON as is")
    sock = request.environ.get("gunicorn.socket")
    if sock is None:  # not under gunicorn (the test client): nothing can stall
        return request.get_data(cache=True)
    idle = float(current_app.config["MODELGATE_BODY_IDLE_TIMEOUT"])
    total = float(current_app.config["MODELGATE_BODY_TIMEOUT"])
    deadline = None
    if _runs_gevent():
        import gevent  # only ever imported where the worker already runs it

        deadline = gevent.Timeout(total)
    previous = sock.gettimeout()
    sock.settimeout(idle)
    expired: tuple[type[BaseException], ...] = () if deadline is None else (type(deadline),)
    try:
        with deadline if deadline is not None else contextlib.nullcontext():
            raw = request.get_data(cache=True)
    except expired as exc:
        if exc is not deadline:  # another greenlet's timer: not ours to answer
            raise
        _stop_reading(sock)
        raise RequestTimeout(f"the body did not arrive within {total:g} seconds") from None
    except (ClientDisconnected, TimeoutError) as exc:  # werkzeug wraps any error while reading a body
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            _stop_reading(sock)
            raise RequestTimeout(f"no part of the body arrived for {idle:g} seconds") from None
        raise MalformedBody("the body ended early or broke its chunked framing") from None
    except GunicornParseError as exc:
        raise MalformedBody(f"the body broke its chunked framing ({type(exc).__name__})") from None
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)
    # gunicorn ends a sized body early when the client stops sending, and werkzeug takes what came.
    if request.content_length is not None and len(raw) < request.content_length:
        raise MalformedBody(f"the body ended after {len(raw)} of its {request.content_length} bytes")
    g.modelgate_body = raw
    return raw


@functools.cache
def _runs_gevent() -> bool:
    """Whether this worker runs gevent (its sockets patched before the app was loaded).

    Only there can a deadline cover a whole body: a ``gevent.Timeout`` raises inside whatever read the
    greenlet is blocked in. A thread has no such means: the gthread services keep the idle timeout only,
    and sit behind the gateway, which buffers each body whole.
    """
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def _stop_reading(sock: Any) -> None:
    """After a stalled upload: end the read side, so closing does not linger for more of it.

    gunicorn closes gracefully, waiting up to 2 s on the read side for the client to finish; a stalled
    client never does, so its thread would be held 2 s beyond the idle timeout. (Not after a framing
    error: that client may still be sending, and the linger lets it read the 400.)
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


def _json_error(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """A client-facing message for a body orjson refused (bad UTF-8, NaN and Infinity named as such)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    start = exc.pos - 1 if exc.pos > 0 and raw[exc.pos - 1 : exc.pos] == b"-" else exc.pos
    near = raw[start : start + 9]
    for constant in (b"NaN", b"Infinity", b"-Infinity", b"-NaN"):
        if near.startswith(constant):
            return f"{constant.decode()} is not a JSON number"
    if "recursion" in exc.msg.lower() or "depth" in exc.msg.lower():
        return "the body is nested too deeply"
    return f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON through orjson: several times faster on the response path; NaN becomes null."""

    _options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=self._options).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        body = orjson.dumps(obj, default=self.default, option=self._options)
        return Response(body, mimetype=self.mimetype)
