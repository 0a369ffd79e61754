"""What the schemas cannot see: the deployment files agree with the code and with each other.

The images hold what their service imports, the compose stack scales and keeps its secrets out of the
file, the Kubernetes manifests probe the right routes, and the alert rules and the dashboard only name
metrics that shared/metrics.py declares.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import shared.metrics
from tests.deploy.helpers import BIN, ROOT, SERVICE_PACKAGES, kustomize, project_version

FIRST_PARTY = {"shared", "gateway", "preprocessing_service", "model_service"}
PORTS = {"gateway": 8000, "preprocessing": 8001, "model": 8002}
COMPOSE_SERVICES = {"gateway": "gateway", "preprocessing": "preprocessing", "model": "model_service"}


# --- the images --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            instructions.append(" ".join(pending.split()))
            pending = ""
    return instructions


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stage name -> {"from": parent, "copies": [sources copied from the build context], "cmd": [...]}."""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for line in dockerfile_instructions():
        words = line.split()
        if words[0] == "FROM":
            current = {"from": words[1], "copies": [], "cmd": None, "healthcheck": None, "user": None}
            stages[words[3] if len(words) > 3 else words[1]] = current
        elif words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            current["copies"].extend(w for w in words[1:-1] if not w.startswith("--"))
        elif words[0] == "CMD":
            current["cmd"] = json.loads(line.removeprefix("CMD").strip())
        elif words[0] == "HEALTHCHECK":
            current["healthcheck"] = line
        elif words[0] == "USER":
            current["user"] = words[1]
    return stages


def image_copies(stages: dict[str, dict[str, Any]], target: str) -> set[str]:
    """Everything the target copies from the context, through the stages it is built on."""
    copies: set[str] = set()
    stage: str | None = target
    while stage in stages:
        copies.update(stages[stage]["copies"])
        stage = stages[stage]["from"]
    return copies


def imports_of(package: str) -> set[str]:
    """Top-level names of every module the package imports (anywhere in its code)."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def locked(path: Path) -> dict[str, str]:
    """Normalised distribution name -> pinned version of a requirements file."""
    pins = {}
    for match in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", path.read_text(), flags=re.MULTILINE):
        pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("target", sorted(SERVICE_PACKAGES))
def test_each_image_holds_its_package_and_shared_only(target: str) -> None:
    copies = image_copies(dockerfile_stages(), target)
    assert copies == {"shared/", f"{SERVICE_PACKAGES[target]}/"}


@pytest.mark.parametrize("target", sorted(SERVICE_PACKAGES))
def test_each_image_runs_gunicorn_with_the_local_mode_config(target: str) -> None:
    cmd = dockerfile_stages()[target]["cmd"]
    assert cmd == ["gunicorn", "--config", "python:shared.gunicorn_conf", f"{SERVICE_PACKAGES[target]}.wsgi:app"]
    stack = (ROOT / "compose" / "local" / "stack.py").read_text()
    assert '"--config", "python:shared.gunicorn_conf"' in stack, "local mode no longer runs the containers' command"


@pytest.mark.parametrize("target", sorted(SERVICE_PACKAGES))
def test_each_image_checks_readiness_as_a_fixed_non_root_user(target: str) -> None:
    stage = dockerfile_stages()[target]
    variable = {"gateway": "GATEWAY_PORT", "preprocessing": "PREPROCESSING_PORT", "model": "MODEL_PORT"}[target]
    assert f"os.environ['{variable}'] + '/ready'" in stage["healthcheck"]
    assert stage["user"] == "10001:10001"


@pytest.mark.parametrize("package", ["shared", *sorted(SERVICE_PACKAGES.values())])
def test_image_code_imports_only_what_the_image_holds(package: str) -> None:
    """A service importing another service, or a dev-only library, would crash in its image."""
    names = imports_of(package)
    assert names & FIRST_PARTY <= {package, "shared"}, "services never import each other"
    runtime = set(locked(ROOT / "requirements" / "runtime.txt"))
    distributions = packages_distributions()
    for name in sorted(names - FIRST_PARTY - set(sys.stdlib_module_names) - {"__future__"}):
        provided_by = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(name, [])}
        assert provided_by & runtime, f"{package} imports {name}, which requirements/runtime.txt does not install"


def test_runtime_requirements_are_the_locked_versions() -> None:
    runtime = locked(ROOT / "requirements" / "runtime.txt")
    lock = locked(ROOT / "requirements" / "lock.txt")
    assert runtime, "requirements/runtime.txt pins nothing"
    drifted = {name: (version, lock.get(name)) for name, version in runtime.items() if lock.get(name) != version}
    assert not drifted, f"runtime.txt and lock.txt disagree (run `make lock`): {drifted}"
    assert "--hash=sha256:" in (ROOT / "requirements" / "runtime.txt").read_text()


def test_runtime_requirements_hold_every_dependency_and_no_dev_tool() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = locked(ROOT / "requirements" / "runtime.txt")
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~ ]", requirement)[0]).lower()
        assert name in runtime, f"{name} is a dependency but not in requirements/runtime.txt (run `make lock`)"
    for requirement in project["optional-dependencies"]["dev"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~ ]", requirement)[0]).lower()
        assert name not in runtime, f"dev tool {name} would ship in the images"


def test_dockerignore_keeps_secrets_models_and_venv_out() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "the context is an allow-list"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"requirements/runtime.txt", "pyproject.toml", *FIRST_PARTY}


# --- docker-compose.yml ------------------------------------------------------------------------


def test_model_service_scales(compose_file: dict[str, Any]) -> None:
    """`docker compose up --scale model_service=3`: no fixed name, no host port, reached by service name."""
    model = compose_file["services"]["model_service"]
    assert "container_name" not in model
    assert "ports" not in model
    gateway_env = compose_file["services"]["gateway"]["environment"]
    assert "model_service:8002" in gateway_env["MODEL_URLS"]
    assert "preprocessing:8001" in gateway_env["PREPROCESSING_URLS"]


def test_only_gateway_and_dashboards_are_published(compose_file: dict[str, Any]) -> None:
    published = {name for name, service in compose_file["services"].items() if service.get("ports")}
    assert published == {"gateway", "prometheus", "grafana"}


def test_every_long_running_service_is_limited_checked_and_restarted(compose_file: dict[str, Any]) -> None:
    for name, service in compose_file["services"].items():
        limits = service["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits), name
        image = service["image"]
        assert ":" in image, f"{name}: pin the image"
        assert not image.endswith(":latest"), f"{name}: pin the image"
        if name == "trainer":
            assert service["restart"] == "no"
            assert service["healthcheck"] == {"disable": True}
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name


def test_modelgate_containers_run_production_with_required_secrets(compose_file: dict[str, Any]) -> None:
    for name in ("gateway", "preprocessing", "model_service", "trainer"):
        service = compose_file["services"][name]
        environment = service["environment"]
        assert environment["MODELGATE_ENV"] == "production", name
        assert environment["MODEL_SIGNING_KEY"].startswith("${MODEL_SIGNING_KEY:?"), name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"][0], name
        assert service["image"].endswith(f":${{MODELGATE_TAG:-{project_version()}}}"), name
    assert compose_file["services"]["gateway"]["environment"]["JWT_SECRET"].startswith("${JWT_SECRET:?")
    assert (
        "GRAFANA_ADMIN_PASSWORD:?" in compose_file["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    )


def test_dependencies_wait_for_health_and_for_the_trainer(compose_file: dict[str, Any]) -> None:
    services = compose_file["services"]
    assert services["gateway"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "preprocessing": {"condition": "service_healthy"},
        "model_service": {"condition": "service_healthy"},
    }
    for name in ("preprocessing", "model_service"):
        assert services[name]["depends_on"] == {"trainer": {"condition": "service_completed_successfully"}}
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_registry_is_read_only_where_only_read(compose_file: dict[str, Any]) -> None:
    services = compose_file["services"]
    assert services["preprocessing"]["volumes"] == ["registry:/var/lib/modelgate/models:ro"]
    assert services["model_service"]["volumes"] == ["registry:/var/lib/modelgate/models"]
    assert services["trainer"]["volumes"] == ["registry:/var/lib/modelgate/models"]
    assert "registry" in compose_file["volumes"]


@pytest.mark.parametrize("service", sorted(COMPOSE_SERVICES))
def test_compose_healthchecks_probe_readiness_on_the_service_port(compose_file: dict[str, Any], service: str) -> None:
    test = compose_file["services"][COMPOSE_SERVICES[service]]["healthcheck"]["test"]
    assert f"http://127.0.0.1:{PORTS[service]}/ready" in test[-1]


# --- Kubernetes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_manifests(tools: None) -> list[dict[str, Any]]:
    return kustomize(ROOT / "compose" / "kubernetes" / "base")


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.mark.parametrize("service", sorted(PORTS))
def test_deployments_probe_the_right_routes(base_manifests: list[dict[str, Any]], service: str) -> None:
    deployment = by_kind(base_manifests, "Deployment")[f"modelgate-{service}"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": PORTS[service]}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert container["image"] == f"modelgate-{service}:{project_version()}"


def test_autoscalers_and_disruption_budgets(base_manifests: list[dict[str, Any]]) -> None:
    hpas = by_kind(base_manifests, "HorizontalPodAutoscaler")
    assert set(hpas) == {"modelgate-preprocessing", "modelgate-model"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert "replicas" not in by_kind(base_manifests, "Deployment")[name]["spec"], "the HPA owns replicas"
    assert set(by_kind(base_manifests, "PodDisruptionBudget")) == {f"modelgate-{s}" for s in PORTS}


def test_registry_volume_is_read_only_for_preprocessing(base_manifests: list[dict[str, Any]]) -> None:
    deployments = by_kind(base_manifests, "Deployment")

    def registry_mount(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        pod = deployments[name]["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "registry")
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "registry")
        return volume, mount

    volume, mount = registry_mount("modelgate-preprocessing")
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    assert mount["readOnly"] is True
    volume, mount = registry_mount("modelgate-model")
    assert not volume["persistentVolumeClaim"].get("readOnly")
    assert not mount.get("readOnly")


def test_secrets_are_referenced_never_defined(base_manifests: list[dict[str, Any]]) -> None:
    assert not by_kind(base_manifests, "Secret")
    text = yaml.safe_dump_all(base_manifests)
    assert "secretKeyRef" in text
    assert not re.search(r"(JWT_SECRET|MODEL_SIGNING_KEY)=", text)


def test_production_overlay_keeps_the_base_and_namespaces_it(tools: None) -> None:
    manifests = kustomize(ROOT / "compose" / "kubernetes" / "overlays" / "production")
    namespaced = [m for m in manifests if m["kind"] != "Namespace"]
    assert {m["metadata"].get("namespace") for m in namespaced} == {"modelgate"}
    hpas = by_kind(manifests, "HorizontalPodAutoscaler")
    assert hpas["modelgate-model"]["spec"]["minReplicas"] >= 3


# --- Prometheus and Grafana --------------------------------------------------------------------


def declared_series() -> set[str]:
    """Every series name shared/metrics.py exports (counters with _total, histograms with their parts)."""
    names: set[str] = set()
    for metric in vars(shared.metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        for family in metric.describe():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
            else:
                names.add(family.name)
    return names


def dashboard_queries() -> list[str]:
    queries = []
    for path in sorted((ROOT / "compose" / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            queries.extend(target["expr"] for target in panel.get("targets", []))
    return queries


def rule_queries() -> list[str]:
    rules = yaml.safe_load((ROOT / "compose" / "prometheus" / "rules.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def recorded_series() -> set[str]:
    """Series the recording rules make (modelgate_feature_drift_psi and its intermediate steps)."""
    rules = yaml.safe_load((ROOT / "compose" / "prometheus" / "rules.yml").read_text())
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_only_declared_metrics_are_queried(source: str) -> None:
    queries = rule_queries() if source == "rules" else dashboard_queries()
    used = {name for query in queries for name in re.findall(r"\bmodelgate_[a-z0-9_]+", query)}
    unknown = used - declared_series() - recorded_series()
    assert not unknown, f"{source} query metrics that shared/metrics.py does not declare: {sorted(unknown)}"


def test_dashboard_covers_every_stage_and_signal() -> None:
    queries = "\n".join(dashboard_queries())
    for series in (
        "modelgate_http_requests_total",
        "modelgate_http_request_duration_seconds_bucket",
        "modelgate_upstream_duration_seconds_bucket",
        "modelgate_transform_duration_seconds_bucket",
        "modelgate_inference_duration_seconds_bucket",
        "modelgate_predictions_total",
        "modelgate_ratelimit_decisions_total",
        "modelgate_ratelimit_store_up",
        "modelgate_circuit_open",
        "modelgate_model_ready",
        "modelgate_gateway_batch_requests_count",
    ):
        assert series in queries, f"the dashboard shows nothing of {series}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path, tools: None) -> None:
    """Every panel's query parses (promtool checks them as recording rules, Grafana variables filled in)."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "1m").replace("$model", ".*")}
        for i, q in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [str(BIN / "promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_uses_the_provisioned_datasource() -> None:
    provisioning = yaml.safe_load(
        (ROOT / "compose" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioning["datasources"][0]["uid"]
    text = (ROOT / "compose" / "grafana" / "dashboards" / "modelgate.json").read_text()
    uids = set(re.findall(r'"uid": "([^"]+)"', text)) - {json.loads(text)["uid"]}
    assert uids == {uid}


def test_prometheus_scrapes_every_service_on_its_port(compose_file: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "compose" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, port in PORTS.items():
        [discovery] = jobs[service]["dns_sd_configs"]
        assert discovery["names"] == [COMPOSE_SERVICES[service]]
        assert discovery["port"] == port
        assert COMPOSE_SERVICES[service] in compose_file["services"]
