"""Real processes for integration tests: gunicorn started exactly as in production, on a free port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIGNING_KEY, free_port

REPO = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Service:
    """A running gunicorn service and what it printed."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
            sent = {"Content-Type": "application/json"} if payload is not None else {}
            sent.update(headers or {})
            conn.request(method, path, body=payload, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            lines.append(json.loads(line))  # every line must be JSON: this fails the test otherwise
        return lines

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.request("GET", "/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"service not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def start_service(
    app: str,
    service: str,
    port_variable: str,
    tmp_path: Path,
    env: dict[str, str],
    workers: int = 2,
    port: int | None = None,
) -> Service:
    """Start ``gunicorn --config python:shared.gunicorn_conf APP`` with a clean environment."""
    port = port or free_port()
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "MODELGATE_SERVICE": service,
        port_variable: str(port),
        "WEB_CONCURRENCY": str(workers),
        "MODELGATE_LOCAL_SECRETS": str(tmp_path / "local.env"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{service}"),
        **env,
    }
    log_path = tmp_path / f"{service}.log"
    handle = log_path.open("ab")
    process = subprocess.Popen(
        [GUNICORN, "--config", "python:shared.gunicorn_conf", app],
        cwd=REPO,
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    return Service(port, process, log_path, full_env)


@pytest.fixture
def model_service_process(registry_root: Path, tmp_path: Path) -> Iterator[Service]:
    """The model service under gunicorn (2 gthread workers) over a private copy of the demo registry."""
    service = start_service(
        "model_service.wsgi:app",
        "model",
        "MODEL_PORT",
        tmp_path,
        {
            "MODEL_REGISTRY": str(registry_root),
            "MODEL_SIGNING_KEY": SIGNING_KEY.decode(),
            "REGISTRY_REFRESH_SECONDS": "0.5",
        },
    )
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


JWT_SECRET = "integration-jwt-secret-0123456789abcdefghijklmnop"


class Stack:
    """Redis, the model service, the preprocessing service and the gateway, as real processes."""

    def __init__(self, registry_root: Path, tmp_path: Path, redis_url: str, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.common = {
            "MODEL_REGISTRY": str(registry_root),
            "MODEL_SIGNING_KEY": SIGNING_KEY.decode(),
            "JWT_SECRET": JWT_SECRET,
            "REDIS_URL": redis_url,
            "MAX_BATCH_ROWS": "50",
            "REQUEST_DEADLINE_SECONDS": "3",
            "CIRCUIT_OPEN_SECONDS": "1",
            **(env or {}),
        }
        self.model = start_service("model_service.wsgi:app", "model", "MODEL_PORT", tmp_path, self.common)
        self.preprocessing = start_service(
            "preprocessing_service.wsgi:app", "preprocessing", "PREPROCESSING_PORT", tmp_path, self.common
        )
        self.common["MODEL_URLS"] = f"http://127.0.0.1:{self.model.port}"
        self.common["PREPROCESSING_URLS"] = f"http://127.0.0.1:{self.preprocessing.port}"
        self.gateway = start_service("gateway.wsgi:app", "gateway", "GATEWAY_PORT", tmp_path, self.common)
        for service in (self.model, self.preprocessing, self.gateway):
            service.wait_ready()

    def restart_model(self) -> None:
        """Start the model service again on its old port (after a test stopped it)."""
        self.model = start_service(
            "model_service.wsgi:app", "model", "MODEL_PORT", self.tmp_path, self.common, port=self.model.port
        )
        self.model.wait_ready()

    def stop(self) -> None:
        for service in (self.gateway, self.preprocessing, self.model):
            service.stop()


def token(sub: str = "tester", scopes: str = "predict", tier: str | None = None, ttl: int = 600) -> str:
    """A token the stack's gateway accepts."""
    from shared.tokens import issue_token

    return issue_token(
        secret=JWT_SECRET,
        subject=sub,
        scopes=scopes.split(),
        audience="modelgate",
        issuer="modelgate",
        ttl_seconds=ttl,
        tier=tier,
    )


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}
