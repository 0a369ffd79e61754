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
    assert config("gateway") == {"worker_class": "gevent", "workers": 2, "threads": 4, "logger": "ServiceLogger"}


@pytest.mark.parametrize("service", ["model", "preprocessing"])
def test_the_computing_services_run_two_gthread_workers_by_default(service: str) -> None:
    found = config(service)
    assert (found["worker_class"], found["workers"], found["threads"]) == ("gthread", 2, 4)


def test_web_concurrency_sets_the_worker_count_of_any_service() -> None:
    assert config("gateway", WEB_CONCURRENCY="3")["workers"] == 3
    assert config("model", WEB_CONCURRENCY="1", GUNICORN_THREADS="8")["threads"] == 8


def test_a_silly_worker_count_stops_gunicorn_with_the_variable_named() -> None:
    code = "import shared.gunicorn_conf"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "MODELGATE_SERVICE": "gateway", "WEB_CONCURRENCY": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "WEB_CONCURRENCY" in result.stderr
