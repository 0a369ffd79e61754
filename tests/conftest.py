"""Fixtures for the whole suite: a signing key and a registry of the three demo models, trained once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

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
def registry_root(demo_registry_root: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the demo registry that a test may tamper with."""
    root = tmp_path / "registry"
    shutil.copytree(demo_registry_root, root)
    return root


@pytest.fixture
def registry(registry_root: Path) -> Registry:
    """A ``Registry`` over the private copy."""
    return Registry(registry_root, SIGNING_KEY)
