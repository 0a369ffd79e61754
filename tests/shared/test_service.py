"""``init_service`` and ``read_json`` through the Flask test client: body checks, request ids, access log."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.errors import PROBLEM_JSON
from shared.health import Check
from shared.logging import request_id_var
from tests.shared.helpers import MAX_BODY, build_app

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def problem_of(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert body["type"] == f"urn:modelgate:problem:{slug}"
    assert body["status"] == status
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body  # type: ignore[no-any-return]


def post_streamed(client: FlaskClient, path: str, body: bytes) -> Any:
    """POST without Content-Length, as gunicorn presents a chunked body (``wsgi.input_terminated``)."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_read_json_returns_the_parsed_body_in_its_own_key_order(client: FlaskClient) -> None:
    response = client.post(
        "/echo", data=b'{"b": [1, 2.5, null, true], "a": "\\u00e9"}', content_type="application/json"
    )
    assert response.status_code == 200
    assert response.get_json() == {"got": {"b": [1, 2.5, None, True], "a": "é"}}
    # init_service makes responses compact and keeps key order (clients see the order views chose).
    assert response.get_data(as_text=True).startswith('{"got":{"b":[1,2.5,null,true],"a":')


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/problem+json", "Application/JSON"],
)
def test_json_media_types_are_accepted(client: FlaskClient, content_type: str) -> None:
    response = client.post("/echo", data=b"[1]", content_type=content_type)
    assert response.status_code == 200
    assert response.get_json() == {"got": [1]}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{oops", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
        (b'{"a": 1} extra', "not valid JSON"),
        (b"NaN", "NaN is not a JSON number"),
        (b"[1, Infinity]", "Infinity is not a JSON number"),
        (b'{"x": -Infinity}', "-Infinity is not a JSON number"),
        (b'"\xff\xfe"', "not UTF-8"),
        (b'{"a": "\xc3\x28"}', "not UTF-8"),
    ],
)
def test_malformed_bodies_are_400(client: FlaskClient, body: bytes, reason: str) -> None:
    problem = problem_of(client.post("/echo", data=body, content_type="application/json"), 400, "malformed-json")
    assert reason in problem["detail"]
    assert problem["title"] == "Bad Request"


def test_deeply_nested_json_is_400_not_a_crash(service_name: str) -> None:
    client = build_app(service_name, {}, max_body_bytes=1_000_000).test_client()
    depth = 200_000
    response = client.post("/echo", data=b"[" * depth + b"]" * depth, content_type="application/json")
    assert problem_of(response, 400, "malformed-json")["detail"] == "the body is nested too deeply"


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        ("text/plain", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("application/jsonp", "application/jsonp"),
        ("application/xml", "application/xml"),
        (None, "none"),
    ],
)
def test_non_json_media_type_is_415(client: FlaskClient, content_type: str | None, shown: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/echo", data=b'{"a": 1}', headers=headers)
    problem = problem_of(response, 415, "unsupported-media-type")
    assert problem["detail"] == f"expected Content-Type application/json, got {shown}"


@pytest.mark.parametrize("encoding", ["gzip", "br", " Deflate "])
def test_a_compressed_body_is_415_not_a_utf8_error(client: FlaskClient, encoding: str) -> None:
    response = client.post(
        "/echo", data=b"\x1f\x8b\x08\x00", headers={"Content-Type": "application/json", "Content-Encoding": encoding}
    )
    problem = problem_of(response, 415, "unsupported-media-type")
    assert problem["detail"] == f"Content-Encoding {encoding.strip().lower()!r} is not supported: send JSON as is"


def test_identity_encoding_is_plain_json(client: FlaskClient) -> None:
    response = client.post(
        "/echo", data=b'{"a": 1}', headers={"Content-Type": "application/json", "Content-Encoding": "identity"}
    )
    assert response.status_code == 200


def test_body_over_the_limit_with_content_length_is_413(client: FlaskClient) -> None:
    body = b'"' + b"x" * MAX_BODY + b'"'
    response = client.post("/echo", data=body, content_type="application/json")
    problem = problem_of(response, 413, "payload-too-large")
    assert str(MAX_BODY) in problem["detail"]


def test_body_over_the_limit_without_content_length_is_413(client: FlaskClient) -> None:
    # Werkzeug stops reading a streamed body at MAX_CONTENT_LENGTH without raising: a truncated body
    # must still be reported as too large, not parsed (or refused as malformed) from its first bytes.
    response = post_streamed(client, "/echo", b'"' + b"x" * (3 * MAX_BODY) + b'"')
    problem_of(response, 413, "payload-too-large")


def test_streamed_body_whose_prefix_is_valid_json_is_still_413(client: FlaskClient) -> None:
    response = post_streamed(client, "/echo", b"[1]" + b" " * (2 * MAX_BODY))
    problem_of(response, 413, "payload-too-large")


def test_streamed_body_under_the_limit_is_read_whole(client: FlaskClient) -> None:
    payload = b'{"text": "' + b"y" * (MAX_BODY // 2) + b'"}'
    response = post_streamed(client, "/echo", payload)
    assert response.status_code == 200
    assert response.get_json() == {"got": {"text": "y" * (MAX_BODY // 2)}}


@pytest.mark.parametrize("streamed", [False, True])
def test_a_view_may_set_a_smaller_limit(client: FlaskClient, streamed: bool) -> None:
    body = b'"' + b"z" * 200 + b'"'  # under the app's limit, over the view's 100 bytes
    if streamed:
        response = post_streamed(client, "/small-echo", body)
    else:
        response = client.post("/small-echo", data=body, content_type="application/json")
    problem = problem_of(response, 413, "payload-too-large")
    assert "100" in problem["detail"]
    small = client.post("/small-echo", data=b'"ok"', content_type="application/json")
    assert small.get_json() == {"got": "ok"}


@pytest.mark.parametrize(
    "client_id",
    ["abcdefgh", "req-2024.01.01:42-x", "A" * 128, "0123456789abcdef0123456789abcdef"],
)
def test_well_formed_request_id_is_echoed(client: FlaskClient, client_id: str) -> None:
    ok = client.get("/items/7", headers={"X-Request-ID": client_id})
    assert ok.headers["X-Request-ID"] == client_id
    missing = client.get("/nowhere", headers={"X-Request-ID": client_id})
    assert problem_of(missing, 404, "not-found")["request_id"] == client_id  # and the header, checked there


@pytest.mark.parametrize(
    "client_id",
    [
        "",
        "short",
        "has spaces in it",
        'quote"d-request-id',
        "it's-a-request-id",
        "A" * 129,
        "abcdefgh\r\nSet-Cookie: session=stolen",
        "abcdefgh\n",
        "abc\x00defghij",
        "ünïcödé-request",
        "../../etc/passwd",
    ],
)
def test_malformed_request_id_is_replaced(client: FlaskClient, client_id: str) -> None:
    # Passed through the WSGI environ: the test client itself refuses control bytes in header values.
    response = client.get("/nowhere", environ_overrides={"HTTP_X_REQUEST_ID": client_id})
    replaced = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(replaced)
    assert "Set-Cookie" not in response.headers
    assert problem_of(response, 404, "not-found")["request_id"] == replaced


def test_each_request_without_an_id_gets_a_fresh_one(client: FlaskClient) -> None:
    ids = {client.get("/items/1").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5
    assert all(HEX_ID.fullmatch(i) for i in ids)


def test_request_id_does_not_leak_out_of_the_request(client: FlaskClient) -> None:
    client.get("/items/1", headers={"X-Request-ID": "leaky-request-id"})
    assert request_id_var.get() == "-"


def test_access_log_names_the_route_template(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelgate.access"):
        client.get("/items/41", headers={"X-Request-ID": "access-log-id-1"})
        client.get("/health")
        client.get("/metrics")
    records = [r for r in caplog.records if r.name == "modelgate.access"]
    assert len(records) == 1  # /health and /metrics are not access-logged
    record = records[0]
    assert record.__dict__["route"] == "/items/<int:item_id>"
    assert record.__dict__["path"] == "/items/41"
    assert record.__dict__["method"] == "GET"
    assert record.__dict__["status"] == 200
    assert record.__dict__["duration_ms"] >= 0
    assert request_id_var.get() == "-"


def test_init_service_sets_the_body_limit_and_names_the_service(service_name: str) -> None:
    app = build_app(service_name, {"x": Check(True)}, max_body_bytes=4096)
    assert app.config["MAX_CONTENT_LENGTH"] == 4096
    assert app.extensions["modelgate.service"] == service_name
