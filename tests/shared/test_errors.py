"""The one error vocabulary, rendered as problem+json by one handler, through a real Flask app."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.errors import (
    PROBLEM_JSON,
    InvalidName,
    ModelgateError,
    ModelNotFound,
    UnsupportedMediaType,
    problem,
)
from shared.logging import request_id_var
from tests.shared.helpers import LEAKED

PROBLEM_KEYS = {"type", "title", "status", "detail", "request_id"}


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """The common shape of every error response; returns the body for further checks."""
    assert response.status_code == status
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert body.keys() - {"errors", "error"} == PROBLEM_KEYS
    assert body["type"] == f"urn:modelgate:problem:{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("kind", "status", "slug", "title", "detail", "headers"),
    [
        ("bad-request", 400, "bad-request", "Bad Request", "the thing is wrong", {}),
        ("unauthorized", 401, "unauthorized", "Unauthorized", "no token", {"WWW-Authenticate": "Bearer"}),
        ("forbidden", 403, "forbidden", "Forbidden", "needs admin", {}),
        ("model-not-found", 404, "model-not-found", "Not Found", "version 3 of model 'iris' not found", {}),
        ("conflict", 409, "conflict", "Conflict", "built for another contract", {}),
        ("rate-limited", 429, "rate-limited", "Too Many Requests", "slow down", {"Retry-After": "7"}),
        (
            "not-ready",
            503,
            "model-not-ready",
            "Service Unavailable",
            "version 2 of model 'iris' is not ready: not loaded yet",
            {"Retry-After": "5"},
        ),
        ("gateway-timeout", 504, "upstream-timeout", "Gateway Timeout", "upstream took too long", {}),
        ("werkzeug-teapot", 418, "http-error", "I'm a teapot", "short and stout", {}),
    ],
)
def test_client_facing_errors_keep_status_title_detail_and_headers(
    client: FlaskClient, kind: str, status: int, slug: str, title: str, detail: str, headers: dict[str, str]
) -> None:
    response = client.get(f"/raise/{kind}")
    body = assert_problem(response, status, slug)
    assert body["title"] == title
    assert body["detail"] == detail
    assert "errors" not in body
    assert "error" not in body  # only /v2 responses carry the OIP member
    for name, value in headers.items():
        assert response.headers[name] == value


def test_unprocessable_entity_carries_per_field_errors(client: FlaskClient) -> None:
    body = assert_problem(client.get("/raise/unprocessable"), 422, "validation-error")
    assert body["errors"] == {"age": ["too old"]}
    assert body["detail"] == "bad features"


def test_marshmallow_validation_error_becomes_422_with_field_messages(client: FlaskClient) -> None:
    response = client.post("/people", json={"age": "old"})
    body = assert_problem(response, 422, "validation-error")
    assert set(body["errors"]) == {"name", "age"}
    assert body["errors"]["name"] == ["Missing data for required field."]
    assert body["errors"]["age"] == ["Not a valid integer."]


def test_marshmallow_schema_level_message_is_filed_under_schema(client: FlaskClient) -> None:
    body = assert_problem(client.get("/raise/marshmallow-schema"), 422, "validation-error")
    assert body["errors"] == {"_schema": ["the batch as a whole is wrong"]}


def test_valid_marshmallow_input_is_not_an_error(client: FlaskClient) -> None:
    response = client.post("/people", json={"name": "Ada", "age": 36})
    assert response.status_code == 200
    assert response.get_json() == {"name": "Ada", "age": 36}


@pytest.mark.parametrize("kind", ["runtime", "key", "artifact", "werkzeug-500"])
@pytest.mark.parametrize("prefix", ["", "/v2"])
def test_internal_errors_are_generic_500_without_traceback_or_exception_text(
    client: FlaskClient, kind: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="shared.errors"):
        response = client.get(f"{prefix}/raise/{kind}")
    body = assert_problem(response, 500, "internal-error")
    assert body["title"] == "Internal Server Error"
    assert body["detail"] == "internal error"
    assert "errors" not in body
    text = response.get_data(as_text=True)
    for leak in (LEAKED, "hunter2", "Traceback", "RuntimeError", "KeyError", "ArtifactError", ".py"):
        assert leak not in text
    if prefix:
        assert body["error"] == "internal error"


def test_unexpected_exception_traceback_goes_to_the_log(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="shared.errors"):
        client.get("/raise/runtime")
    logged = [r for r in caplog.records if r.name == "shared.errors" and r.exc_info]
    assert len(logged) == 1
    assert isinstance(logged[0].exc_info[1], RuntimeError)  # type: ignore[index]


def test_unknown_route_is_404_naming_the_path(client: FlaskClient) -> None:
    body = assert_problem(client.get("/no/such/thing"), 404, "not-found")
    assert body["detail"] == "no such route: GET /no/such/thing"


def test_wrong_method_is_405_with_allow_header(client: FlaskClient) -> None:
    response = client.delete("/echo")
    body = assert_problem(response, 405, "method-not-allowed")
    assert response.headers["Allow"] == "POST"  # no automatic OPTIONS (PROVIDE_AUTOMATIC_OPTIONS is off)
    assert "DELETE" in body["detail"]
    assert "POST" in body["detail"]


def test_wrong_method_on_get_route_lists_get_and_head(client: FlaskClient) -> None:
    response = client.post("/items/1")
    assert_problem(response, 405, "method-not-allowed")
    assert {m.strip() for m in response.headers["Allow"].split(",")} == {"GET", "HEAD"}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/raise/model-not-found", 404),
        ("GET", "/v2/raise/not-ready", 503),
        ("GET", "/v2/no-such-route", 404),
        ("PUT", "/v2/echo", 405),
        ("POST", "/v2/echo", 400),
    ],
)
def test_v2_errors_also_carry_the_oip_error_member(client: FlaskClient, method: str, path: str, status: int) -> None:
    response = client.open(path, method=method, data=b"{oops", content_type="application/json")
    assert response.status_code == status
    body = response.get_json(force=True)
    assert body["error"] == body["detail"]
    assert body.keys() - {"error"} == PROBLEM_KEYS


def test_problem_body_takes_the_request_id_from_the_context() -> None:
    token = request_id_var.set("req-12345678")
    try:
        body = problem(404, "Not Found", "gone", "not-found")
    finally:
        request_id_var.reset(token)
    assert body == {
        "type": "urn:modelgate:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "gone",
        "request_id": "req-12345678",
    }
    assert problem(422, "U", "d", "validation-error", {"a": ["b"]})["errors"] == {"a": ["b"]}


def test_error_classes_build_their_own_messages() -> None:
    assert ModelNotFound("iris").detail == "model 'iris' not found"
    assert ModelNotFound("iris", 2).detail == "version 2 of model 'iris' not found"
    assert UnsupportedMediaType(None).detail == "expected Content-Type application/json, got none"
    assert UnsupportedMediaType("text/plain").status == 415
    assert ModelgateError().detail == "Internal Server Error"
    long = InvalidName("model name", "x" * 500, "^[a-z]+$")
    assert long.status == 404
    assert "x" * 78 not in long.detail  # a hostile value is shortened before it is echoed
    assert "^[a-z]+$" in long.detail
