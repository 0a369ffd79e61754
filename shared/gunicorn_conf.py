"""The gunicorn configuration every modelgate service runs with, in containers and in local mode alike.

    gunicorn --config python:shared.gunicorn_conf model_service.wsgi:app

``MODELGATE_SERVICE`` (gateway, preprocessing or model) picks the port variable; everything else comes
from the environment with defaults sized for a small host. The model and preprocessing services run
``gthread`` workers: each holds a few threads, so keep-alive connections from the gateway are reused
instead of pinning a sync worker. The gateway, which only waits on Redis and its upstreams, runs gevent.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from shared.logging import gunicorn_logconfig

SERVICE = os.environ.get("MODELGATE_SERVICE", "model")
_PORT_VARIABLES = {
    "gateway": ("GATEWAY_PORT", 8000),
    "preprocessing": ("PREPROCESSING_PORT", 8001),
    "model": ("MODEL_PORT", 8002),
}
if SERVICE not in _PORT_VARIABLES:
    raise SystemExit(
        f"modelgate: invalid setting MODELGATE_SERVICE: {SERVICE!r} is not one of {sorted(_PORT_VARIABLES)}"
    )
_port_variable, _default_port = _PORT_VARIABLES[SERVICE]


def _int(variable: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(variable)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"modelgate: invalid setting {variable}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SystemExit(f"modelgate: invalid setting {variable}: {value} is not between {low} and {high}")
    return value


port = _int(_port_variable, _default_port, 1, 65535)
bind = [f"{os.environ.get('BIND_HOST', '127.0.0.1')}:{port}"]
# The gateway only waits (on Redis, on its upstreams, on its batches): gevent serves a request for about
# 40% of gthread's CPU (220 against 575 microseconds for a minimal Flask app, measured here), and it is the
# busiest process. The model and preprocessing services compute, and keep gthread's pooled keep-alive.
# gunicorn's own workers, answering HTTP protocol errors in problem+json (shared.gunicorn_workers).
worker_class = "shared.gunicorn_gevent.GeventWorker" if SERVICE == "gateway" else "shared.gunicorn_workers.ThreadWorker"
# Two workers each. A single gevent gateway worker fills its batches better (one event loop sees every
# connection) but caps the gateway at one core: measured here, it lost a third on 100-row requests and at
# 64 connections, and pinned the upstreams' keep-alive traffic on one of their workers.
workers = _int("WEB_CONCURRENCY", 2, 1, 64)
threads = _int("GUNICORN_THREADS", 4, 1, 256)
# Concurrent connections per gateway worker (gevent); beyond it, connections wait in the listen backlog.
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 1000, 1, 100_000)
# A worker that stays silent this long is killed and replaced; model loading runs in a thread, so it
# never holds the worker's heartbeat (a stopping worker waits for a load in progress within it).
timeout = _int("GUNICORN_TIMEOUT", 30, 5, 600)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 20, 1, 600)
# Also the gevent worker's deadline for reading a request's headers: 0 would leave it none, so 1 is the least.
keepalive = _int("GUNICORN_KEEPALIVE", 5, 1, 300)
backlog = 2048
# Each worker loads its own copy of the models after the fork: onnxruntime sessions are not fork-safe.
preload_app = False
accesslog = None
errorlog = "-"
_level = (os.environ.get("LOG_LEVEL") or "INFO").strip().upper()
if _level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise SystemExit(f"modelgate: invalid setting LOG_LEVEL: {_level!r} is not DEBUG, INFO, WARNING, ERROR or CRITICAL")
loglevel = _level.lower()
logconfig_dict = gunicorn_logconfig(SERVICE, _level)


class ServiceLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger without its access log: each service writes its own (``shared.service``), with the
    request id. With a ``logconfig_dict`` set, gunicorn would otherwise format every request's access
    fields only for the ``gunicorn.access`` logger to drop them (about 5% of a worker's CPU, profiled)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Nothing: the service's own access log covers every request."""

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """gunicorn's debug lines, except the request bytes it adds to one (they can hold a token)."""
        if isinstance(msg, str) and msg.startswith("Ignored premature client disconnection"):
            msg, args = "Ignored premature client disconnection", ()
        super().debug(msg, *args, **kwargs)


logger_class = ServiceLogger
proc_name = f"modelgate-{SERVICE}"
# gunicorn 27's control socket would live under $HOME, read-only in our containers; nothing uses it.
control_socket_disable = True
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# Two cores per host: numeric libraries must not start a thread per core in every worker.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# Prometheus multiprocess mode: one folder per service instance, emptied when the master starts.
_metrics_dir = Path(
    os.environ.get("PROMETHEUS_MULTIPROC_DIR") or Path(tempfile.gettempdir()) / f"modelgate-metrics-{SERVICE}-{port}"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)


def on_starting(server: Any) -> None:
    """Start from an empty metrics folder: samples of a previous run must not be added to this one."""
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in _metrics_dir.glob("*.db"):
        stale.unlink(missing_ok=True)


def worker_exit(server: Any, worker: Any) -> None:
    """Run the app's exit callbacks (``app.extensions["modelgate.on_exit"]``) while the worker can still import.

    gunicorn calls this in the worker after its last request and before Python shuts down; from then on
    Python refuses some imports and stops daemon threads wherever they are. Each callback gets the seconds
    it may take: within the graceful timeout (the master kills the worker after it) and the heartbeat
    timeout (no heartbeat is sent from here). A second stop signal (SIGTERM then SIGINT, Ctrl-C twice, the
    master's SIGQUIT or its heartbeat SIGABRT) would raise ``SystemExit`` in the middle of a callback, so
    those are ignored while they run; the master's SIGKILL stays the backstop.
    """
    app = getattr(worker, "wsgi", None)
    callbacks = list(getattr(app, "extensions", {}).get("modelgate.on_exit", ()))
    if not callbacks:
        return
    cfg = worker.cfg
    budget = max(0.0, min(float(cfg.graceful_timeout) - 1.0, float(cfg.timeout) - 1.0))
    for stop_signal in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGABRT):
        signal.signal(stop_signal, signal.SIG_IGN)
    for callback in callbacks:
        try:
            callback(budget)
        except Exception:  # the worker is leaving either way; say why it left untidily
            logging.getLogger("modelgate.shutdown").exception("exit callback failed")


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
