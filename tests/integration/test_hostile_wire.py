"""What a client can do on the wire, below JSON: stalled uploads and broken chunked bodies, on all three services.

Real gunicorn processes (gevent in the gateway, gthread in the others) over raw sockets, since no HTTP
client library sends these requests. Found by fuzzing the running stack: eight stalled uploads held every
thread of the preprocessing service for as long as the clients liked, and a broken chunked body was a 500.
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.integration.conftest import Stack, token

pytestmark = pytest.mark.integration

IDLE = 1.0  # BODY_IDLE_TIMEOUT_SECONDS for this stack
TOTAL = 3.0  # BODY_TIMEOUT_SECONDS for this stack


@pytest.fixture(scope="module")
def stack(demo_registry_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("wire-registry")
    shutil.copytree(demo_registry_root, root, dirs_exist_ok=True)
    redis_server = RedisServer(tmp_path_factory.mktemp("wire-redis"))
    running = Stack(
        root,
        tmp_path_factory.mktemp("wire"),
        redis_server.url,
        {"BODY_IDLE_TIMEOUT_SECONDS": str(IDLE), "BODY_TIMEOUT_SECONDS": str(TOTAL)},
    )
    try:
        yield running
    finally:
        running.stop()
        redis_server.stop()


def _target(stack: Stack, service: str) -> tuple[int, str, str]:
    """Port, body-reading route and extra header lines of one service."""
    if service == "gateway":
        return stack.gateway.port, "/v1/models/penguins/predict", f"Authorization: Bearer {token()}\r\n"
    if service == "preprocessing":
        return stack.preprocessing.port, "/v1/models/penguins/versions/1/transform", ""
    return stack.model.port, "/v2/models/penguins/infer", ""


def _exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], Any, float]:
    """Send ``raw``, read until the server closes; status, headers, parsed body and seconds taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None, time.monotonic() - started


def _log_errors(stack: Stack) -> list[str]:
    lines: list[str] = []
    for service in (stack.gateway, stack.preprocessing, stack.model):
        lines += [line["message"] for line in service.log_lines() if line["level"] in ("ERROR", "CRITICAL")]
    return lines


@pytest.mark.parametrize("service", ["gateway", "preprocessing", "model"])
def test_a_stalled_upload_gets_408_and_frees_its_worker(stack: Stack, service: str) -> None:
    port, path, extra = _target(stack, service)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode() + b'{"in'
    # No "Connection: close": _exchange returns once the server closes, so this also shows that a
    # keep-alive connection whose body framing is lost is closed, never read on.
    status, headers, body, took = _exchange(port, request)
    assert status == 408
    assert body["type"] == "urn:modelgate:problem:request-timeout"
    assert headers["x-request-id"] == body["request_id"]
    assert IDLE <= took < IDLE + 5


def test_stalled_uploads_on_every_thread_do_not_stop_the_service(stack: Stack) -> None:
    # Two workers of four threads: eight stalled uploads used to hold them all until the clients left.
    port, path, _ = _target(stack, "preprocessing")
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(12)]
    try:
        for sock in stalled:
            sock.sendall(head.encode() + b'{"in')
        time.sleep(IDLE + 1.5)
        assert stack.preprocessing.request("GET", "/health", timeout=3).status == 200
        for sock in stalled:
            assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in stalled:
            sock.close()


def test_a_body_trickled_within_every_pause_still_has_a_deadline_at_the_gateway(stack: Stack) -> None:
    # A byte every 0.3 s never trips the 1 s idle timeout; the gateway (gevent) ends it at its total deadline.
    port, path, extra = _target(stack, "gateway")
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while not answer and time.monotonic() - started < TOTAL + 10:
            with contextlib.suppress(OSError):  # the gateway closed its read side: the answer is waiting
                sock.sendall(b" ")
            ready, _, _ = select.select([sock], [], [], 0.3)
            if ready:
                while chunk := sock.recv(65536):
                    answer += chunk
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"did not arrive within 3 seconds" in answer
    assert TOTAL <= took < TOTAL + 3


@pytest.mark.parametrize("service", ["gateway", "preprocessing", "model"])
@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX0\r\n\r\n", b"3;\x00=1\r\nabc\r\n0\r\n\r\n"],
    ids=["bad-size", "missing-terminator", "bad-extension"],
)
def test_a_broken_chunked_body_is_a_400_not_a_500(stack: Stack, service: str, chunks: bytes) -> None:
    port, path, extra = _target(stack, service)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode() + chunks
    status, headers, body, _ = _exchange(port, request)
    assert status == 400, body
    assert body["type"] == "urn:modelgate:problem:malformed-body"
    assert headers["content-type"] == "application/problem+json"
    assert not _log_errors(stack)  # no traceback: a client's mistake is not the service's error


def test_a_broken_chunked_token_request_is_a_400(stack: Stack) -> None:
    # The token endpoint reads forms too: the form parser went around the body reader (found in review).
    request = (
        b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    )
    status, _, body, _ = _exchange(stack.gateway.port, request)
    assert status == 400, body
    assert body["type"] == "urn:modelgate:problem:malformed-body"


@pytest.mark.parametrize("service", ["gateway", "preprocessing", "model"])
def test_a_body_shorter_than_its_length_is_a_400(stack: Stack, service: str) -> None:
    # The client sends 7 of 100 bytes and stops sending (half-close): werkzeug took the 7 as the body.
    port, path, extra = _target(stack, service)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"a":1}')
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 "), received[:200]
    body = json.loads(received.partition(b"\r\n\r\n")[2])
    assert body["detail"] == "the body ended after 7 of its 100 bytes"


SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsZWFrIn0.c2VjcmV0LXNpZ25hdHVyZS1uZXZlci1sb2dnZWQ"


@pytest.mark.parametrize("service", ["gateway", "preprocessing", "model"])
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /health?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"t" * 9000 + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
        ("GET /v1/models/é HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
        (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
        (b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET /v1/models?t=" + SECRET_TOKEN.encode() + b"\xff\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
    ids=[
        "long-line",
        "long-header",
        "many-headers",
        "raw-utf8",
        "lowercase",
        "http-9",
        "negative-length",
        "no-colon",
        "gzip-coding",
        "token-in-bad-line",
    ],
)
def test_requests_gunicorn_refuses_get_problem_json_and_leave_no_token_in_logs(
    stack: Stack, service: str, raw: bytes, status: int
) -> None:
    port = _target(stack, service)[0]
    answered, headers, body, _ = _exchange(port, raw)
    assert answered == status
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == status
    assert body["request_id"] == headers["x-request-id"]
    running = {"gateway": stack.gateway, "preprocessing": stack.preprocessing, "model": stack.model}[service]
    time.sleep(0.2)  # the warning is written after the answer
    logged = running.log_path.read_text()
    assert SECRET_TOKEN not in logged
    assert "t" * 200 not in logged
    assert any(
        line.get("request_id") == body["request_id"] and line["message"] == "invalid request"
        for line in running.log_lines()
    )
