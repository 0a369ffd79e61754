"""Paths of the checkout and the lint script the deployment tests share with `make lint`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LINT = ROOT / "compose" / "lint.sh"
BIN = ROOT / ".venv" / "bin"
#: What compose/lint.sh needs in .venv/bin: `make install` brings all but promtool (`make tools`).
TOOLS = ("hadolint", "check-jsonschema", "kubectl", "kubernetes-validate", "promtool", "shellcheck")
SERVICE_PACKAGES = {"gateway": "gateway", "preprocessing": "preprocessing_service", "model": "model_service"}


def lint(kind: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    """Run one check of compose/lint.sh, exactly as `make lint` does, on the given files or folders."""
    return subprocess.run([str(LINT), kind, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)


def load_yaml_documents(text: str) -> list[Any]:
    """Every document of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The manifests `kubectl apply -k DIRECTORY` would apply."""
    rendered = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=True
    )
    return load_yaml_documents(rendered.stdout)


def project_version() -> str:
    """The version in pyproject.toml."""
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
