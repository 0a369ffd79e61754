"""``make bench``: wrk against a freshly started modelgate stack and a single-app baseline, in the same run.

For a logistic-regression Pipeline and a 100-tree forest (both on the 30 breast-cancer features), single
and 100-row predicts at 16 and 64 connections go to (a) the whole modelgate stack through the gateway,
JWT auth and Redis rate limiting included, and (b) the baseline: one Flask app, gunicorn with 4 sync
workers, the scikit-learn Pipeline called per request (``tests/load/baseline_app.py``). Bodies rotate over
hundreds of different rows, so no cache could stand in for inference. Each gunicorn worker's CPU time is
sampled around every run to show how evenly keep-alive traffic spreads. The report (machine, versions,
commands, throughput, p50/p99, ratios against the baseline of the same run) goes to docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
JWT_SECRET = "benchmark-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
SIGNING_KEY = "benchmark-signing-key-0123456789abcdefghijklmnopqrstuvwxyz"


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own local URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"bench: {url} not ready after {timeout:.0f}s")


def wait_listening(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    raise SystemExit(f"bench: nothing listens on port {port} after {timeout:.0f}s")


def train(workdir: Path) -> dict[str, Any]:
    """Register both bench models into a fresh registry and save the same fitted Pipelines for the baseline."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from model_service.registry import Registry
    from model_service.training import breast_cancer, register_model

    registry = Registry(workdir / "models", SIGNING_KEY.encode())
    baseline = workdir / "baseline"
    baseline.mkdir()
    frame, target, logistic = breast_cancer()
    forest = Pipeline(
        [("scale", StandardScaler()), ("classify", RandomForestClassifier(n_estimators=100, random_state=0))]
    )
    runtimes = {}
    for name, model in (("bench-logistic", logistic), ("bench-forest", forest)):
        metadata = register_model(registry, name, model, frame, target, fit=True, source="benchmark")
        runtimes[name] = metadata["onnx"]["runtime"]
        joblib.dump(model, baseline / f"{name}.joblib")
    rows = frame.drop(columns=[target]).to_dict(orient="records")
    return {"rows": rows, "runtimes": runtimes}


class Process:
    """A process group we started, and its log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        with log.open("wb") as handle:
            self.popen = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.log = log

    def workers(self) -> list[Any]:
        import psutil

        try:
            return list(psutil.Process(self.popen.pid).children())
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)


def cpu_by_worker(processes: list[Process]) -> dict[str, list[float]]:
    """user+system CPU seconds of every gunicorn worker, by service."""
    sample: dict[str, list[float]] = {}
    for process in processes:
        times = []
        for worker in process.workers():
            try:
                cpu = worker.cpu_times()
                times.append(cpu.user + cpu.system)
            except Exception:
                times.append(0.0)
        sample[process.name] = times
    return sample


def lua_script(path: Path, url_path: str, bodies: list[str], token: str | None) -> None:
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    lines.append("local bodies = {")
    lines.extend("  " + json.dumps(body) + "," for body in bodies)
    lines.append("}")
    lines.append("local i = 0")
    lines.append("request = function()")
    lines.append("  i = i % #bodies + 1")
    lines.append(f'  return wrk.format(nil, "{url_path}", nil, bodies[i])')
    lines.append("end")
    path.write_text("\n".join(lines) + "\n")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(base_url: str, script: Path, connections: int, duration: int) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        base_url,
    ]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for percentile in ("50", "99"):
        match = re.search(rf"^\s+{percentile}(?:\.000)?%\s+(\S+)", output, re.M)
        result[f"p{percentile}"] = _ms(match.group(1)) if match else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:.*", output)
    result["errors"] = int(errors.group(1)) if errors else 0
    result["socket_errors"] = socket_errors.group(0) if socket_errors else ""
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmark.md")
    parser.add_argument("--models", default="bench-logistic,bench-forest", help="which models to run")
    parser.add_argument("--rows", default="1,100", help="batch sizes to run (1 and/or 100)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved baseline/modelgate runs per cell; medians are reported"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (make bench installs Debian's wrk)")
    connections = [int(c) for c in args.connections.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="modelgate-bench-"))
    print(f"bench: training the two models into {workdir}", flush=True)
    trained = train(workdir)
    rows = trained["rows"]

    from shared.tokens import issue_token
    from tests.conftest import RedisServer, free_port

    redis_server = RedisServer(workdir)
    ports = {"model": free_port(), "preprocessing": free_port(), "gateway": free_port(), "baseline": free_port()}
    env = dict(
        os.environ,
        MODELGATE_ENV="local",
        MODELGATE_LOCAL_SECRETS=str(workdir / "local.env"),
        MODEL_REGISTRY=str(workdir / "models"),
        MODEL_SIGNING_KEY=SIGNING_KEY,
        JWT_SECRET=JWT_SECRET,
        REDIS_URL=redis_server.url,
        RATE_LIMIT="1000000/second",
        LOG_LEVEL="WARNING",
        MODEL_URLS=f"http://127.0.0.1:{ports['model']}",
        PREPROCESSING_URLS=f"http://127.0.0.1:{ports['preprocessing']}",
    )
    stack: list[Process] = []
    for service, app, variable in (
        ("model", "model_service.wsgi:app", "MODEL_PORT"),
        ("preprocessing", "preprocessing_service.wsgi:app", "PREPROCESSING_PORT"),
        ("gateway", "gateway.wsgi:app", "GATEWAY_PORT"),
    ):
        service_env = dict(
            env,
            MODELGATE_SERVICE=service,
            **{variable: str(ports[service])},
            PROMETHEUS_MULTIPROC_DIR=str(workdir / f"metrics-{service}"),
        )
        stack.append(
            Process(
                service,
                [str(BIN / "gunicorn"), "--config", "python:shared.gunicorn_conf", app],
                service_env,
                workdir / f"{service}.log",
            )
        )
    baseline_env = dict(
        os.environ, BASELINE_MODELS=str(workdir / "baseline"), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"
    )
    baseline = Process(
        "baseline",
        [
            str(BIN / "gunicorn"),
            "-w",
            "4",
            "-b",
            f"127.0.0.1:{ports['baseline']}",
            "--log-level",
            "warning",
            "tests.load.baseline_app:app",
        ],
        baseline_env,
        workdir / "baseline.log",
    )
    results: list[dict[str, Any]] = []
    urls = {
        "modelgate": f"http://127.0.0.1:{ports['gateway']}",
        "baseline": f"http://127.0.0.1:{ports['baseline']}",
    }
    try:
        for name in ("model", "preprocessing", "gateway"):
            wait_ready(f"http://127.0.0.1:{ports[name]}/ready")
        wait_listening(ports["baseline"])
        time.sleep(2)
        token = issue_token(
            secret=JWT_SECRET,
            subject="bench",
            scopes=["predict"],
            audience="modelgate",
            issuer="modelgate",
            ttl_seconds=7200,
        )
        singles = [json.dumps({"instances": [row]}) for row in rows[:500]]
        batches = [json.dumps({"instances": rows[i : i + 100]}) for i in range(0, 460, 23)]
        chosen_rows = {"1": ("1 row", singles), "100": ("100 rows", batches)}
        for model in args.models.split(","):
            for batch, bodies in (chosen_rows[r] for r in args.rows.split(",")):
                for conns in connections:
                    scripts = {}
                    for system in ("baseline", "modelgate"):
                        scripts[system] = workdir / f"{system}.lua"
                        if system == "modelgate":
                            lua_script(scripts[system], f"/v1/models/{model}/predict", bodies, token)
                        else:
                            lua_script(scripts[system], f"/predict/{model}", bodies, None)
                        run_wrk(urls[system], scripts[system], conns, 2)  # warm-up
                    rounds: dict[str, list[dict[str, Any]]] = {"baseline": [], "modelgate": []}
                    for number in range(args.rounds):
                        # Back to back, in alternating order: a slow spell of the shared machine hits both.
                        order = ("baseline", "modelgate") if number % 2 == 0 else ("modelgate", "baseline")
                        for system in order:
                            before = cpu_by_worker(stack)
                            outcome = run_wrk(urls[system], scripts[system], conns, args.duration)
                            after = cpu_by_worker(stack)
                            outcome["worker_cpu"] = {
                                service: [
                                    round(a - b, 2) for a, b in zip(after[service], before[service], strict=False)
                                ]
                                for service in after
                            }
                            rounds[system].append(outcome)
                            print(
                                f"bench: {system:<9} {model:<15} {batch:<8} c={conns:<3} round {number + 1}  "
                                f"{outcome['rps']:8.1f} req/s  p50 {outcome['p50']:7.2f} ms  "
                                f"p99 {outcome['p99']:7.2f} ms  errors {outcome['errors']}",
                                flush=True,
                            )
                    ratios = [
                        ours["rps"] / base["rps"] if base["rps"] else float("nan")
                        for base, ours in zip(rounds["baseline"], rounds["modelgate"], strict=True)
                    ]
                    for system, outcomes in rounds.items():
                        results.append(
                            {
                                "model": model,
                                "rows": batch,
                                "connections": conns,
                                "system": system,
                                "rps": statistics.median(o["rps"] for o in outcomes),
                                "p50": statistics.median(o["p50"] for o in outcomes),
                                "p99": statistics.median(o["p99"] for o in outcomes),
                                "errors": sum(o["errors"] for o in outcomes),
                                "ratio": statistics.median(ratios),
                                "ratios": ratios,
                                "worker_cpu": {
                                    service: [
                                        round(sum(values), 1)
                                        for values in zip(*(o["worker_cpu"][service] for o in outcomes), strict=False)
                                    ]
                                    for service in outcomes[0]["worker_cpu"]
                                },
                            }
                        )
    finally:
        for process in [*stack, baseline]:
            process.stop()
        redis_server.stop()
    write_report(args.report, results, trained["runtimes"], args.duration, connections, args.rounds)
    print(f"bench: report written to {args.report}")
    return 0


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    packages = ("scikit-learn", "onnxruntime", "numpy", "flask", "gunicorn", "gevent", "redis", "pycurl", "pyjwt")
    for package in packages:
        found[package] = version(package)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    found["wrk"] = (wrk.stdout or wrk.stderr).split("[")[0].replace("wrk", "").strip()
    return found


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def write_report(
    path: Path,
    results: list[dict[str, Any]],
    runtimes: dict[str, str],
    duration: int,
    connections: list[int],
    rounds: int,
) -> None:
    lines = [
        "# Benchmark",
        "",
        f"Run {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} with `make bench` "
        f"(`.venv/bin/python tests/load/bench.py --duration {duration} --rounds {rounds}`).",
        "",
        f"- Machine: {machine()}; wrk shares the cores with every server.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        "- Models: a StandardScaler + LogisticRegression Pipeline and a StandardScaler + 100-tree RandomForest "
        "Pipeline, both on the 30 breast-cancer features; modelgate serves them through "
        + ", ".join(f"{k}: {v}" for k, v in runtimes.items())
        + ".",
        "- modelgate: gateway, preprocessing and model service, each gunicorn with the project's config "
        "(two gevent workers in the gateway, two gthread workers of 4 threads in the others), JWT verification "
        "and Redis rate limiting on every request, adaptive batching in the gateway"
        + "".join(
            f", {name}={os.environ[name]}" for name in ("WEB_CONCURRENCY", "BATCH_INFLIGHT") if os.environ.get(name)
        )
        + ".",
        "- Baseline: one Flask app, gunicorn with 4 sync workers, the Pipeline called per request on a pandas "
        "frame, no auth (`tests/load/baseline_app.py`).",
        f"- Each cell: after a 2 s warm-up of each, {rounds} rounds of `wrk -t2 -c<connections> -d{duration}s "
        "--latency` against the baseline and modelgate back to back, in alternating order; the table shows the "
        "median of each figure, and the ratio is the median of the rounds' ratios (the machine is shared: one "
        "run of either can be a quarter off). Bodies rotate over 500 single rows or 20 different 100-row batches.",
        "",
        "| model | rows | connections | baseline req/s | modelgate req/s | ratio "
        "| baseline p50 / p99 ms | modelgate p50 / p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keyed = {(r["model"], r["rows"], r["connections"], r["system"]): r for r in results}
    for model in ("bench-logistic", "bench-forest"):
        for rows in ("1 row", "100 rows"):
            for conns in connections:
                base = keyed.get((model, rows, conns, "baseline"))
                ours = keyed.get((model, rows, conns, "modelgate"))
                if not base or not ours:
                    continue
                ratio = ours["ratio"]
                lines.append(
                    f"| {model} | {rows} | {conns} | {base['rps']:.0f} | {ours['rps']:.0f} | {ratio:.2f}x | "
                    f"{base['p50']:.1f} / {base['p99']:.1f} | {ours['p50']:.1f} / {ours['p99']:.1f} | "
                    f"{base['errors'] + ours['errors']} |"
                )
    lines += [
        "",
        "Targets (issue 4): single-row throughput at least the baseline's on the logistic regression and "
        "twice it on the forest, p99 under 50 ms at 16 connections.",
        "",
    ]
    for model, floor in (("bench-logistic", 1.0), ("bench-forest", 2.0)):
        base = keyed.get((model, "1 row", 16, "baseline"))
        ours = keyed.get((model, "1 row", 16, "modelgate"))
        if base and ours and base["rps"]:
            ratio = ours["ratio"]
            each = ", ".join(f"{r:.2f}x" for r in ours["ratios"])
            lines.append(
                f"- {model}, 1 row, 16 connections: {ratio:.2f}x the baseline (rounds: {each}; target {floor:.0f}x: "
                f"{'met' if ratio >= floor else 'not met'}); p99 {ours['p99']:.1f} ms "
                f"(target 50 ms: {'met' if ours['p99'] < 50 else 'not met'})."
            )
    lines += ["", "Worker CPU seconds over a cell's modelgate runs (how evenly keep-alive traffic spread):", ""]
    lines += ["| model | rows | connections | gateway | preprocessing | model |", "|---|---|---|---|---|---|"]
    for result in results:
        if result["system"] != "modelgate":
            continue
        cpu = result.get("worker_cpu", {})
        lines.append(
            f"| {result['model']} | {result['rows']} | {result['connections']} | "
            + " | ".join(" / ".join(f"{v:.1f}" for v in cpu.get(s, [])) for s in ("gateway", "preprocessing", "model"))
            + " |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
