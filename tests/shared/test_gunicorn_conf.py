"""The gunicorn configuration every service runs with: worker class and count per service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def config(service: str, **env: str) -> dict[str, object]:
    """The settings ``shared.gunicorn_conf`` computes for ``service`` in a clean process."""
    code = (
        "import json, shared.gunicorn_conf as c; "
        "print(json.dumps({'worker_class': c.worker_class, 'workers': c.workers, 'threads': c.threads, "
        "'logger': c.logger_class.__name__}))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "GUNICORN_THREADS")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "MODELGATE_SERVICE": service, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_the_gateway_runs_gevent_workers() -> None:
    assert config("gateway") == {
        "worker_class": "shared.gunicorn_gevent.GeventWorker",
        "workers": 2,
        "threads": 4,
        "logger": "ServiceLogger",
    }


@pytest.mark.parametrize("service", ["model", "preprocessing"])
def test_the_computing_services_run_two_gthread_workers_by_default(service: str) -> None:
    found = config(service)
    assert (found["worker_class"], found["workers"], found["threads"]) == ("shared.gunicorn_workers.ThreadWorker", 2, 4)


def test_web_concurrency_sets_the_worker_count_of_any_service() -> None:
    assert config("gateway", WEB_CONCURRENCY="3")["workers"] == 3
    assert config("model", WEB_CONCURRENCY="1", GUNICORN_THREADS="8")["threads"] == 8


@pytest.mark.parametrize(
    ("variable", "value"),
    [("WEB_CONCURRENCY", "0"), ("GUNICORN_KEEPALIVE", "0")],  # keep-alive 0: gevent reads headers without a deadline
)
def test_a_silly_value_stops_gunicorn_with_the_variable_named(variable: str, value: str) -> None:
    code = "import shared.gunicorn_conf"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "MODELGATE_SERVICE": "gateway", variable: value},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert variable in result.stderr


def _run_as_model_service(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a clean process configured as the model service (importing the config sets process-wide
    variables: ports, the metrics folder)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "MODELGATE_SERVICE": "model"},
        capture_output=True,
        text=True,
        check=True,
    )


def test_worker_exit_runs_every_callback_within_the_timeouts_with_stop_signals_ignored() -> None:
    # In a clean process: importing the config sets process-wide variables (ports, metrics folder).
    code = """
import logging, signal, types
import shared.gunicorn_conf as c
ran = []
def broken(budget):
    raise RuntimeError("boom")
app = types.SimpleNamespace(extensions={"modelgate.on_exit": [ran.append, broken, ran.append]})
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)
logging.getLogger("modelgate.shutdown").addHandler(Keep())
c.worker_exit(None, types.SimpleNamespace())  # a worker that failed before loading its app: nothing to do
untouched = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
c.worker_exit(None, types.SimpleNamespace(wsgi=app, cfg=types.SimpleNamespace(graceful_timeout=20, timeout=8)))
stops = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGABRT)
ignored = [signal.getsignal(s) is signal.SIG_IGN for s in stops]
print(ran, [r.getMessage() for r in records], records[0].exc_info[0].__name__, untouched, all(ignored))
"""
    result = _run_as_model_service(code)
    # Every callback ran despite the failing one, each with the heartbeat timeout's budget (8 s less one).
    assert result.stdout.split() == ["[7.0,", "7.0]", "['exit", "callback", "failed']", "RuntimeError", "True", "True"]


def test_errors_gunicorn_answers_itself_are_problem_json_and_a_bad_response_header_is_the_servers() -> None:
    from gunicorn.http import errors

    from shared.gunicorn_errors import problem_response

    status, raw, request_id = problem_response(errors.LimitRequestHeaders("too many"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status == 431
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert f"X-Request-ID: {request_id}".encode() in head
    assert json.loads(body)["type"] == "urn:modelgate:problem:request-header-fields-too-large"
    assert problem_response(errors.InvalidRequestLine("GET /?token=secret"))[0] == 400
    assert b"secret" not in problem_response(errors.InvalidRequestLine("GET /?token=secret"))[1]
    # The application's bad header subclasses a client error in gunicorn, but it is the server's fault.
    assert problem_response(errors.InvalidResponseHeaderName("Bad Name"))[0] == 500
    assert problem_response(RuntimeError("boom"))[0] == 500


def test_the_premature_disconnection_debug_line_drops_the_request_bytes() -> None:
    code = """
import logging, types
import shared.gunicorn_conf as c
from gunicorn.config import Config
seen = []
logger = c.ServiceLogger(Config())
logger.error_log.setLevel(logging.DEBUG)
logger.error_log.handlers[:] = []
class Keep(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
logger.error_log.addHandler(Keep())
logger.debug("Ignored premature client disconnection. %s", "No more data after: b'Authorization: Bearer secret'")
logger.debug("other %s", "kept")
print(seen)
"""
    result = _run_as_model_service(code)
    assert result.stdout.strip() == "['Ignored premature client disconnection', 'other kept']"
