"""`make lint` fails when a deployment file is broken.

Each case copies one kind of file (or its folder, where files refer to each other) to a temporary folder,
breaks the copy, and runs on it the same compose/lint.sh check `make lint` runs on the original. The
unbroken copies pass the same checks, so every failure here is the breakage's doing.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.helpers import ROOT, lint

pytestmark = pytest.mark.usefixtures("tools")


@dataclass(frozen=True)
class Kind:
    """One kind of deployment file: where it lives, what is copied, what the check is handed."""

    check: str
    copy: str  # file or folder under ROOT, copied whole
    target: str  # what the check gets, relative to the temporary folder


KINDS = {
    "dockerfile": Kind("dockerfile", "Dockerfile", "Dockerfile"),
    "compose": Kind("compose", "docker-compose.yml", "docker-compose.yml"),
    "workflow": Kind("workflow", ".github/workflows/ci.yml", "ci.yml"),
    "kubernetes-base": Kind("kubernetes", "compose/kubernetes", "kubernetes/base"),
    "kubernetes-production": Kind("kubernetes", "compose/kubernetes", "kubernetes/overlays/production"),
    "kubernetes-demo-models": Kind("kubernetes", "compose/kubernetes", "kubernetes/demo-models"),
    "prometheus-config": Kind("prometheus-config", "compose/prometheus", "prometheus/prometheus.yml"),
    "prometheus-rules": Kind("prometheus-rules", "compose/prometheus", "prometheus/rules.yml"),
    "prometheus-tests": Kind("prometheus-tests", "compose/prometheus", "prometheus/rules_test.yml"),
    "shell": Kind("shell", "compose/compose.sh", "compose.sh"),
    "grafana": Kind("grafana", "compose/grafana/dashboards/modelgate.json", "modelgate.json"),
}


@dataclass(frozen=True)
class Breakage:
    """A regular-expression edit of one file of the copy, and a word the check's report must contain."""

    id: str
    kind: str
    file: str  # relative to the temporary folder
    pattern: str
    replacement: str
    finding: str


BREAKAGES = [
    # hadolint
    Breakage(
        "base image tagged latest",
        "dockerfile",
        "Dockerfile",
        r"^FROM python:\S+ AS builder$",
        "FROM python:latest AS builder",
        "DL3007",
    ),
    Breakage(
        "unpinned apt-get install",
        "dockerfile",
        "Dockerfile",
        r"^WORKDIR /build$",
        "WORKDIR /build\nRUN apt-get update && apt-get install -y curl",
        "DL3008",
    ),
    Breakage(
        "base image from an untrusted registry",
        "dockerfile",
        "Dockerfile",
        r"^FROM python:(\S+) AS runtime$",
        r"FROM quay.io/example/python:\1 AS runtime",
        "DL3026",
    ),
    Breakage(
        "unknown instruction", "dockerfile", "Dockerfile", r"^EXPOSE 8000$", "EXPOSE 8000\nRUNN true", "Dockerfile:"
    ),
    # the Compose specification
    Breakage(
        "unknown service key", "compose", "docker-compose.yml", r"^  read_only: true$", "  readonly: true", "readonly"
    ),
    Breakage(
        "unknown depends_on condition",
        "compose",
        "docker-compose.yml",
        r"redis: \{ condition: service_healthy \}",
        "redis: { condition: service_ready }",
        "service_ready",
    ),
    Breakage(
        "list where a mapping belongs",
        "compose",
        "docker-compose.yml",
        r"^        limits: \{ cpus: \"1.0\", memory: 512M \}$",
        "        limits: [1.0, 512M]",
        "limits",
    ),
    Breakage("unknown top-level key", "compose", "docker-compose.yml", r"^volumes:$", "volume:", "volume"),
    # GitHub's workflow schema, and the rule that every job has a timeout
    Breakage(
        "misspelt runs-on", "workflow", "ci.yml", r"^    runs-on: ubuntu-24.04$", "    run-on: ubuntu-24.04", "runs-on"
    ),
    Breakage("job without timeout", "workflow", "ci.yml", r"^    timeout-minutes: 20\n", "", "timeout-minutes"),
    Breakage(
        "step with both uses and run",
        "workflow",
        "ci.yml",
        r"^      - run: make lint$",
        "      - run: make lint\n        uses: actions/checkout@v4",
        "is not valid",
    ),
    # kustomize + kubernetes-validate --strict
    Breakage(
        "unknown container field",
        "kubernetes-base",
        "kubernetes/base/gateway.yaml",
        r"readinessProbe:",
        "readinesProbe:",
        "readinesProbe",
    ),
    Breakage(
        "wrong field type",
        "kubernetes-base",
        "kubernetes/base/preprocessing.yaml",
        r"containerPort: 8001",
        'containerPort: "eight thousand and one"',
        "containerPort",
    ),
    Breakage(
        "unknown kind",
        "kubernetes-base",
        "kubernetes/base/model.yaml",
        r"^kind: PodDisruptionBudget$",
        "kind: PodDisruptionBudgett",
        "PodDisruptionBudgett",
    ),
    Breakage(
        "missing resource",
        "kubernetes-base",
        "kubernetes/base/kustomization.yaml",
        r"^  - model.yaml$",
        "  - models.yaml",
        "models.yaml",
    ),
    Breakage(
        "bad overlay patch",
        "kubernetes-production",
        "kubernetes/overlays/production/model.yaml",
        r"topologySpreadConstraints:",
        "topologySpreadConstraint:",
        "topologySpreadConstraint",
    ),
    Breakage(
        "number as words",
        "kubernetes-demo-models",
        "kubernetes/demo-models/train-demo-models.yaml",
        r"backoffLimit: 2",
        "backoffLimit: two",
        "backoffLimit",
    ),
    # promtool
    Breakage(
        "unknown config field",
        "prometheus-config",
        "prometheus/prometheus.yml",
        r"^  scrape_interval: 15s$",
        "  scrape_intervall: 15s",
        "scrape_intervall",
    ),
    Breakage(
        "missing rule file",
        "prometheus-config",
        "prometheus/prometheus.yml",
        r"^  - rules.yml$",
        "  - alerts.yml",
        "alerts.yml",
    ),
    Breakage(
        "invalid PromQL",
        "prometheus-rules",
        "prometheus/rules.yml",
        r"expr: modelgate_ratelimit_store_up == 0",
        "expr: modelgate_ratelimit_store_up ==",
        "parse error",
    ),
    Breakage(
        "invalid duration", "prometheus-rules", "prometheus/rules.yml", r"for: 30m", "for: half an hour", "half an hour"
    ),
    Breakage(
        "latency threshold raised",
        "prometheus-tests",
        "prometheus/rules.yml",
        r"\) > 0\.5$",
        ") > 5",
        "ModelgateHighLatencyP99",
    ),
    Breakage(
        "probe routes counted in latency",
        "prometheus-tests",
        "prometheus/rules.yml",
        r'_bucket\{route!~"/health\|/ready\|/metrics"\}',
        "_bucket",
        "ModelgateHighLatencyP99",
    ),
    Breakage(
        "error threshold inclusive",
        "prometheus-tests",
        "prometheus/rules.yml",
        r"> 0\.01$",
        ">= 0.01",
        "ModelgateHighErrorRate",
    ),
    Breakage(
        "drift alert gone",
        "prometheus-tests",
        "prometheus/rules.yml",
        r"modelgate_feature_drift_psi > 0\.2",
        "modelgate_feature_drift_psi > 2",
        "ModelgateFeatureDrift",
    ),
    # shellcheck
    Breakage("unquoted arguments", "shell", "compose.sh", r'^docker compose "\$@"$', "docker compose $@", "SC2068"),
    # JSON syntax of the dashboard
    Breakage("truncated dashboard", "grafana", "modelgate.json", r"\}\s*\Z", "", "modelgate.json"),
]


def copy_kind(kind: Kind, into: Path) -> Path:
    """Copy the kind's file or folder into ``into``; return what its check is handed."""
    source = ROOT / kind.copy
    if source.is_dir():
        shutil.copytree(source, into / source.name)
    else:
        shutil.copy2(source, into / source.name)
    return into / kind.target


@pytest.mark.parametrize("name", sorted(KINDS))
def test_unbroken_copy_passes(name: str, tmp_path: Path) -> None:
    target = copy_kind(KINDS[name], tmp_path)
    result = lint(KINDS[name].check, target)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[f"{b.kind}: {b.id}" for b in BREAKAGES])
def test_lint_fails_on_broken_copy(breakage: Breakage, tmp_path: Path) -> None:
    kind = KINDS[breakage.kind]
    target = copy_kind(kind, tmp_path)
    broken = tmp_path / breakage.file
    text, count = re.subn(breakage.pattern, breakage.replacement, broken.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, f"{breakage.pattern!r} is no longer in {breakage.file}: update this breakage"
    broken.write_text(text)

    result = lint(kind.check, target)

    report = result.stdout + result.stderr
    assert result.returncode != 0, f"compose/lint.sh {kind.check} passed a broken copy:\n{report}"
    assert breakage.finding in report, report
