"""JSON logs: one object per line, stamped with service and request id; request id acceptance."""

from __future__ import annotations

import json
import logging
import logging.config
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from shared.logging import (
    REQUEST_ID_PATTERN,
    accept_request_id,
    configure_logging,
    gunicorn_logconfig,
    new_request_id,
    request_id_var,
)

REQUIRED = {"time", "level", "service", "logger", "message", "request_id"}
HEX_ID = re.compile(r"^[0-9a-f]{32}$")

ReadLines = Callable[[], list[dict[str, Any]]]


def _own_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """Handlers that are not pytest's per-phase capture handlers."""
    return [h for h in logger.handlers if not type(h).__module__.startswith("_pytest")]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root, werkzeug and gunicorn loggers back as they were."""
    names = ["", "werkzeug", "gunicorn.error", "gunicorn.access"]
    saved = {
        name: (logging.getLogger(name).level, _own_handlers(logging.getLogger(name)), logging.getLogger(name).propagate)
        for name in names
    }
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in _own_handlers(logger):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def parse_lines(out: str) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON object."""
    lines = out.splitlines()
    assert out.endswith("\n") or not out
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) for entry in parsed)
    return parsed


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str], restore_logging: None) -> ReadLines:
    """A reader of the captured stdout's JSON lines; a test calls ``configure_logging`` itself, since the
    handler binds to ``sys.stdout`` as it is at that moment (the test's capture)."""
    return lambda: parse_lines(capsys.readouterr().out)


def test_every_record_is_one_json_line_with_the_required_fields(json_lines: ReadLines) -> None:
    configure_logging("gateway", "DEBUG")
    log = logging.getLogger("modelgate.test")
    log.info("plain")
    log.warning('multi\nline with "quotes" and \r\n a CRLF')
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed with %s", "args")
    entries = json_lines()
    assert len(entries) == 3
    for entry in entries:
        assert entry.keys() >= REQUIRED
        assert entry["service"] == "gateway"
        assert entry["logger"] == "modelgate.test"
        assert entry["request_id"] == "-"
        datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S%z")
    assert [e["level"] for e in entries] == ["INFO", "WARNING", "ERROR"]
    assert entries[1]["message"] == 'multi\nline with "quotes" and \r\n a CRLF'
    assert entries[2]["message"] == "failed with args"
    assert "ValueError: boom" in entries[2]["exc_info"]


def test_request_id_comes_from_the_context(json_lines: ReadLines) -> None:
    configure_logging("gateway", "DEBUG")
    log = logging.getLogger("modelgate.test")
    token = request_id_var.set("req-abcdef-42")
    try:
        log.info("inside")
    finally:
        request_id_var.reset(token)
    log.info("outside")
    inside, outside = json_lines()
    assert inside["request_id"] == "req-abcdef-42"
    assert outside["request_id"] == "-"


def test_an_explicit_request_id_wins_over_the_context(json_lines: ReadLines) -> None:
    configure_logging("gateway", "DEBUG")
    token = request_id_var.set("from-the-context")
    try:
        logging.getLogger("modelgate.test").info("relayed", extra={"request_id": "from-upstream-1"})
    finally:
        request_id_var.reset(token)
    (entry,) = json_lines()
    assert entry["request_id"] == "from-upstream-1"


def test_extra_fields_are_top_level_members(json_lines: ReadLines) -> None:
    configure_logging("gateway", "DEBUG")
    logging.getLogger("modelgate.access").info("request", extra={"route": "/items/<id>", "status": 200})
    (entry,) = json_lines()
    assert entry["route"] == "/items/<id>"
    assert entry["status"] == 200


def test_level_is_applied_and_werkzeug_is_quieted(json_lines: ReadLines) -> None:
    configure_logging("model", "WARNING")
    logging.getLogger("modelgate.test").info("hidden")
    logging.getLogger("modelgate.test").warning("shown")
    logging.getLogger("werkzeug").info("GET / HTTP/1.1 200")
    entries = json_lines()
    assert [(e["message"], e["service"]) for e in entries] == [("shown", "model")]
    assert logging.getLogger("werkzeug").level == logging.WARNING


def test_configure_logging_replaces_earlier_handlers(json_lines: ReadLines) -> None:
    configure_logging("first", "INFO")
    configure_logging("second", "INFO")
    logging.getLogger("modelgate.test").info("once")
    entries = json_lines()
    assert [e["service"] for e in entries] == ["second"]


def test_gunicorn_logconfig_gives_the_same_json_shape(json_lines: ReadLines) -> None:
    logging.config.dictConfig(gunicorn_logconfig("preprocessing", "INFO"))
    token = request_id_var.set("gunicorn-req-1")
    try:
        logging.getLogger("gunicorn.error").info("Booting worker")
        logging.getLogger("gunicorn.access").info("GET / 200")  # the access log is off (WARNING)
        logging.getLogger("modelgate.test").info("app line")
    finally:
        request_id_var.reset(token)
    entries = json_lines()
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("gunicorn.error", "Booting worker"),
        ("modelgate.test", "app line"),
    ]
    for entry in entries:
        assert entry.keys() >= REQUIRED
        assert entry["service"] == "preprocessing"
        assert entry["request_id"] == "gunicorn-req-1"


@pytest.mark.parametrize(
    "candidate",
    [
        "abcdefgh",
        "0123456789abcdef0123456789abcdef",
        "3f2c1a9e-7b6d-4c5e-8f90-a1b2c3d4e5f6",
        "trace:span.01-x-y",
        "A" * 128,
    ],
)
def test_well_formed_request_ids_are_kept(candidate: str) -> None:
    assert accept_request_id(candidate) == candidate


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        "",
        "abcdefg",  # too short
        "A" * 129,  # too long
        "has a space",
        "tab\there-12",
        'quote"quote',
        "single'quote",
        "abcdefgh\n",
        "abcdefgh\r\nX-Injected: 1",
        "\nabcdefgh",
        "nul\x00byte-id",
        "semi;colon-id",
        "slash/../path",
        "ünïcödé-id-1",
        "\uff41\uff42\uff43\uff44\uff45\uff46\uff47\uff48",  # fullwidth letters
        "١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "<script>alert(1)</script>",
    ],
)
def test_malformed_request_ids_are_replaced(candidate: str | None) -> None:
    replaced = accept_request_id(candidate)
    assert replaced != candidate
    assert HEX_ID.fullmatch(replaced)
    assert REQUEST_ID_PATTERN.fullmatch(replaced)  # a generated id would itself be accepted if relayed


def test_new_request_ids_are_unique_hex() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(HEX_ID.fullmatch(i) for i in ids)
