"""Fixtures for the gateway: fake upstream HTTP servers we control, signed tokens, Redis and app builders.

Nothing here is a mock: the upstreams are real HTTP servers on free ports (stdlib ``ThreadingHTTPServer``),
Redis is a real ``redis-server``, tokens are real JWTs signed in the test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask

from gateway import Gateway, create_app
from gateway.config import GatewaySettings
from tests.conftest import SIGNING_KEY, RedisServer, free_port

#: The HS256 key of the test gateways (long enough for production's checks).
SECRET = "gateway-test-secret-0123456789abcdef-0123456789abcdef-not-a-real-one"
AUDIENCE = "modelgate"
ISSUER = "modelgate"


def make_token(
    *,
    key: Any = SECRET,
    algorithm: str = "HS256",
    sub: Any = "alice",
    scope: str = "predict",
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    ttl: float = 300.0,
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A signed JWT with the claims the gateway requires; ``drop`` removes some, ``claims`` adds or overrides."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "scope": scope, "aud": audience, "iss": issuer, "iat": now}
    payload["exp"] = now + int(ttl)
    payload.update(claims)
    for name in drop:
        payload.pop(name, None)
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def dead_url() -> str:
    """An ``http://`` address with nothing listening: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


# --- fake upstreams ------------------------------------------------------------------------------


@dataclass
class Reply:
    """What a fake server does with a request: wait ``delay`` seconds, then answer, or drop the connection."""

    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    content_type: str = "application/json"

    def payload(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


@dataclass
class Recorded:
    """One request a fake server received (header names lowercased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Reply | Callable[[Recorded], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so Connection: close has a meaning
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``FakeServer.requests`` instead."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        recorded = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        reply = self.server.owner._reply(recorded)
        if reply.delay:
            self.server.owner.stopping.wait(reply.delay)
        if reply.drop:
            self.close_connection = True  # close without a status line
            return
        payload = reply.payload()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has the GET answer's headers, and no body
                self.wfile.write(payload)
        except OSError:  # the client gave up waiting (timeout tests)
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that hangs up mid-answer is what some tests do on purpose."""


class FakeServer:
    """A real HTTP server on a free port whose answers a test sets, and which records what it received."""

    def __init__(self, default: Responder | None = None) -> None:
        self.default: Responder = default if default is not None else Reply(404, {"title": "Not Found"})
        self.routes: dict[tuple[str, str], Responder] = {}
        self.requests: list[Recorded] = []
        self.connections = 0
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def on(self, method: str, path: str, reply: Responder) -> None:
        """Answer ``method path`` (exact path) with ``reply``."""
        self.routes[(method, path)] = reply

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [r.path for r in self.requests]

    def _reply(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
        responder = self.routes.get((recorded.method, recorded.path), self.default)
        return responder(recorded) if callable(responder) else responder

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.discard(connection)

    def stop(self) -> None:
        """Stop serving, release hanging handlers and close kept-alive connections."""
        self.stopping.set()
        self._server.shutdown()
        with self._lock:
            still_open = list(self._open)
        for connection in still_open:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def start_server() -> Iterator[Callable[..., FakeServer]]:
    """``start_server(default_reply)`` -> a running ``FakeServer``; all are stopped after the test."""
    started: list[FakeServer] = []

    def start(default: Responder | None = None) -> FakeServer:
        server = FakeServer(default)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real Redis for the gateway tests that do not stop it (those use ``redis_server``)."""
    server = RedisServer(tmp_path_factory.mktemp("gateway-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    """The shared Redis, emptied for this test."""
    client = shared_redis.client()
    try:
        client.flushall()
    finally:
        client.close()
    return shared_redis.url


# --- apps ----------------------------------------------------------------------------------------


def gateway_settings(**overrides: Any) -> GatewaySettings:
    """Settings for a test gateway; upstreams default to addresses where nothing listens."""
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "redis_url": "redis://127.0.0.1:1/0",
        "preprocessing_urls": dead_url(),
        "model_urls": dead_url(),
        "model_signing_key": SIGNING_KEY.decode(),
        "rate_limit": "1000/minute",
        "deployment_cache_seconds": 0.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def state_of(app: Flask) -> Gateway:
    """The gateway state a test app holds."""
    state: Gateway = app.extensions["modelgate.gateway"]
    return state


def close_app(app: Flask) -> None:
    """Close the app's pooled upstream connections and its Redis client."""
    state = state_of(app)
    for upstream in (state.router.preprocessing, state.router.model):
        for address in upstream.addresses:
            address.connections.close()
    state.limiter.close()


@pytest.fixture
def make_app(redis_url: str) -> Iterator[Callable[..., Flask]]:
    """``make_app(**settings)`` -> a gateway over the shared Redis (unless ``redis_url`` is given)."""
    built: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        overrides.setdefault("redis_url", redis_url)
        app = create_app(gateway_settings(**overrides))
        app.config["TESTING"] = True
        built.append(app)
        return app

    yield make
    for app in built:
        close_app(app)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``create_app`` points the root logger at the stdout of the moment; put pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """``write_file(name, content)`` -> a file in this test's directory."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    return write
