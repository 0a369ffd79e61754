"""JSON logs, one line per event, each carrying the service name, level and the current request id."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The id of the request being handled in this thread (or "-" outside a request).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

#: A client-supplied X-Request-ID is kept only if it matches this (no spaces, quotes or control bytes).
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def new_request_id() -> str:
    """A fresh request id: 32 hex digits."""
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """Keep a well-formed client id, otherwise generate one."""
    if candidate and REQUEST_ID_PATTERN.fullmatch(candidate):
        return candidate
    return new_request_id()


class ContextFilter(logging.Filter):
    """Stamps every record with the service name and the current request id."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def json_formatter() -> JsonFormatter:
    """The one formatter all modelgate processes use (gunicorn's own logs included)."""
    return JsonFormatter(
        _FORMAT,
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record of this process to stdout as one JSON object per line."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Werkzeug's request log would duplicate ours and print raw request lines; gunicorn's access log is off too.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def gunicorn_logconfig(service: str, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for gunicorn's master and workers, in the same JSON shape."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter, "service": service}},
        "formatters": {"json": {"()": json_formatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
        },
    }
