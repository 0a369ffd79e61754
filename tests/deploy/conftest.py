"""Fixtures of the deployment tests."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.helpers import BIN, ROOT, TOOLS


@pytest.fixture(scope="session")
def tools() -> None:
    """Fail with the way out when a checker is missing (never skip: CI must run these)."""
    missing = [name for name in TOOLS if not (BIN / name).exists()]
    assert not missing, f"missing in .venv/bin: {missing}; run `make tools` (make lint and make unit do)"


@pytest.fixture(scope="session")
def compose_file() -> dict[str, Any]:
    """docker-compose.yml, parsed (YAML merge keys resolved)."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data
