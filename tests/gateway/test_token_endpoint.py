"""``POST /v1/auth/token`` (OAuth2 client credentials), the clients file and client-secret hashes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from werkzeug.test import TestResponse

from gateway import create_app
from gateway.clients import ClientsFileError, load_clients
from shared.config import SettingsError
from shared.tokens import check_secret_hash, hash_secret
from tests.gateway.conftest import SECRET, FakeServer, Reply, bearer, gateway_settings, state_of

TTL = 600
#: client id -> (secret, scopes, tier)
CLIENTS = {
    "ci-bot": ("ci-bot-secret-value", ["predict"], "default"),
    "ops.team": ("ops:secret%with/odd chars", ["predict", "admin"], "gold"),
}


@pytest.fixture(scope="module")
def clients_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clients") / "clients.json"
    entries = [
        {"client_id": cid, "secret_hash": hash_secret(secret), "scopes": scopes, "tier": tier}
        for cid, (secret, scopes, tier) in CLIENTS.items()
    ]
    path.write_text(json.dumps({"clients": entries}))
    return path


@pytest.fixture
def app(make_app: Callable[..., Flask], clients_file: Path) -> Flask:
    return make_app(
        clients_file=clients_file,
        token_ttl_seconds=TTL,
        rate_limit="1000/minute",
        rate_limit_tiers="gold=7/minute",
    )


def basic(client_id: str, secret: str) -> dict[str, str]:
    """HTTP Basic as RFC 6749 §2.3.1 asks: id and secret form-urlencoded first."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def post_form(app: Flask, data: dict[str, str], headers: dict[str, str] | None = None, **kw: Any) -> TestResponse:
    return app.test_client().post("/v1/auth/token", data=data, headers=headers or {}, **kw)


def assert_oauth_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    assert body["error"] == code
    assert body["status"] == status
    return body


def decode_with_gateway(app: Flask, token: str) -> dict[str, Any]:
    """Verify with the gateway's own Authenticator, then read the claims."""
    principal = state_of(app).auth.authenticate(f"Bearer {token}")
    return principal.claims


@pytest.mark.parametrize(
    ("how", "client_id"),
    [
        ("form+basic", "ci-bot"),
        ("form+body", "ci-bot"),
        ("json+basic", "ops.team"),
        ("json+body", "ops.team"),
        ("form+basic", "ops.team"),  # a secret with ':' '%' '/' ' ' survives the Basic encoding
    ],
)
def test_grant_issues_a_token_the_gateway_accepts(app: Flask, how: str, client_id: str) -> None:
    secret, scopes, tier = CLIENTS[client_id]
    client = app.test_client()
    if how == "form+basic":
        response = client.post(
            "/v1/auth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
        )
    elif how == "form+body":
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        response = client.post("/v1/auth/token", data=form)
    elif how == "json+basic":
        response = client.post(
            "/v1/auth/token", json={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
        )
    else:
        body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        response = client.post("/v1/auth/token", json=body)

    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    answer = response.get_json()
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == TTL
    assert answer["scope"] == " ".join(scopes)
    claims = decode_with_gateway(app, answer["access_token"])
    assert claims["sub"] == client_id
    assert claims["scope"].split() == scopes
    assert claims["tier"] == tier
    assert claims["exp"] == claims["iat"] + TTL
    assert jwt.get_unverified_header(answer["access_token"])["alg"] == "HS256"


def test_issued_token_opens_protected_routes_with_the_clients_tier(
    app: Flask, start_server: Callable[..., FakeServer], make_app: Callable[..., Flask], clients_file: Path
) -> None:
    model = start_server()
    model.on("GET", "/v1/models", Reply(200, {"models": []}))
    gateway = make_app(
        clients_file=clients_file, model_urls=model.url, rate_limit="1000/minute", rate_limit_tiers="gold=7/minute"
    )
    secret = CLIENTS["ops.team"][0]
    token = post_form(gateway, {"grant_type": "client_credentials"}, basic("ops.team", secret)).get_json()[
        "access_token"
    ]

    response = gateway.test_client().get("/v1/models", headers=bearer(token))

    assert response.status_code == 200
    assert response.headers["RateLimit-Limit"] == "7"  # the gold tier, from the token's tier claim


@pytest.mark.parametrize(
    ("client_id", "asked", "granted"),
    [
        ("ops.team", "predict", "predict"),
        ("ops.team", "admin", "admin"),
        ("ops.team", "admin predict", "admin predict"),
    ],
)
def test_scope_can_be_narrowed(app: Flask, client_id: str, asked: str, granted: str) -> None:
    secret = CLIENTS[client_id][0]

    response = post_form(app, {"grant_type": "client_credentials", "scope": asked}, basic(client_id, secret))

    assert response.status_code == 200
    assert response.get_json()["scope"] == granted
    assert decode_with_gateway(app, response.get_json()["access_token"])["scope"] == granted


@pytest.mark.parametrize("asked", ["admin", "predict admin", "root", "predict superuser"])
def test_scope_cannot_be_widened(app: Flask, asked: str) -> None:
    response = post_form(
        app, {"grant_type": "client_credentials", "scope": asked}, basic("ci-bot", "ci-bot-secret-value")
    )

    assert_oauth_error(response, 400, "invalid_scope")
    assert "access_token" not in response.get_json()


#: Requests that must fail client authentication, each as (form fields, headers).
BAD_CREDENTIALS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "wrong-secret-basic": ({}, basic("ci-bot", "not-the-secret")),
    "wrong-secret-body": ({"client_id": "ci-bot", "client_secret": "not-the-secret"}, {}),
    "unknown-client": ({}, basic("nobody", "ci-bot-secret-value")),
    "no-credentials": ({}, {}),
    "id-without-secret": ({"client_id": "ci-bot"}, {}),
    "basic-not-base64": ({}, {"Authorization": "Basic !!!not base64!!!"}),
    "basic-without-colon": ({}, {"Authorization": "Basic " + base64.b64encode(b"ci-bot").decode()}),
    "basic-not-utf8": ({}, {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode()}),
    "overlong-client-id": ({}, basic("c" * 65, "x")),
    "overlong-secret": ({}, basic("ci-bot", "s" * 1025)),
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
def test_bad_client_credentials_get_401_invalid_client(app: Flask, case: str) -> None:
    fields, headers = BAD_CREDENTIALS[case]

    response = post_form(app, {"grant_type": "client_credentials", **fields}, headers)

    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "access_token" not in response.get_json()


def test_wrong_and_unknown_client_answers_are_identical(app: Flask) -> None:
    wrong = post_form(app, {"grant_type": "client_credentials"}, basic("ci-bot", "nope")).get_json()
    unknown = post_form(app, {"grant_type": "client_credentials"}, basic("nobody", "nope")).get_json()

    for body in (wrong, unknown):
        body.pop("request_id")
    assert wrong == unknown  # an attacker cannot tell which ids exist


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "", None])
def test_other_grant_types_are_refused(app: Flask, grant_type: str | None) -> None:
    fields = {"scope": "predict"} if grant_type is None else {"grant_type": grant_type}

    response = post_form(app, fields, basic("ci-bot", "ci-bot-secret-value"))

    assert_oauth_error(response, 400, "unsupported_grant_type")


def test_a_body_that_is_neither_form_nor_json_is_415(app: Flask) -> None:
    response = app.test_client().post(
        "/v1/auth/token",
        data="grant_type=client_credentials",
        content_type="text/plain",
        headers=basic("ci-bot", "ci-bot-secret-value"),
    )

    assert response.status_code == 415


def test_json_body_that_is_not_an_object_is_400(app: Flask) -> None:
    response = app.test_client().post(
        "/v1/auth/token", json=["client_credentials"], headers=basic("ci-bot", "ci-bot-secret-value")
    )

    assert_oauth_error(response, 400, "invalid_request")


def test_token_endpoint_is_rate_limited_per_remote_address(make_app: Callable[..., Flask], clients_file: Path) -> None:
    app = make_app(clients_file=clients_file, rate_limit="3/minute")
    client = app.test_client()
    attacker = {"REMOTE_ADDR": "203.0.113.7"}

    guesses = [
        client.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials"},
            headers=basic("ci-bot", f"guess-{i}"),
            environ_base=attacker,
        )
        for i in range(4)
    ]

    assert [r.status_code for r in guesses] == [401, 401, 401, 429]
    limited = guesses[-1]
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit-Limit"] == "3"
    assert limited.headers["RateLimit-Remaining"] == "0"
    # Another address is counted on its own.
    other = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials"},
        headers=basic("ci-bot", "ci-bot-secret-value"),
        environ_base={"REMOTE_ADDR": "198.51.100.9"},
    )
    assert other.status_code == 200


def test_no_tokens_are_issued_without_hs256(make_app: Callable[..., Flask], clients_file: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = tmp_path / "ec.pem"
    pem.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    app = make_app(clients_file=clients_file, jwt_algorithms="ES256", jwt_public_key_file=pem)

    response = post_form(app, {"grant_type": "client_credentials"}, basic("ci-bot", "ci-bot-secret-value"))

    assert_oauth_error(response, 400, "unsupported_grant_type")


# --- the clients file ------------------------------------------------------------------------------

GOOD_ENTRY = {"client_id": "good", "secret_hash": hash_secret("good-secret", salt=b"0123456789abcdef")}

#: A second entry that is wrong, and a word the error message must contain.
BAD_ENTRIES: dict[str, tuple[Any, str]] = {
    "id-with-space": ({**GOOD_ENTRY, "client_id": "has space"}, "client_id"),
    "id-empty": ({**GOOD_ENTRY, "client_id": ""}, "client_id"),
    "id-too-long": ({**GOOD_ENTRY, "client_id": "c" * 65}, "client_id"),
    "id-not-string": ({**GOOD_ENTRY, "client_id": 42}, "client_id"),
    "plaintext-secret": ({"client_id": "plain", "secret_hash": "hunter2-plaintext"}, "secret_hash"),
    "missing-secret": ({"client_id": "plain"}, "secret_hash"),
    "unknown-scope": ({**GOOD_ENTRY, "client_id": "x", "scopes": ["predict", "root"]}, "scopes"),
    "scopes-not-list": ({**GOOD_ENTRY, "client_id": "x", "scopes": "predict"}, "scopes"),
    "tier-not-string": ({**GOOD_ENTRY, "client_id": "x", "tier": 3}, "tier"),
    "duplicate-id": (dict(GOOD_ENTRY), "duplicate client_id 'good'"),
    "not-an-object": (["good"], "is not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_load_clients_names_the_bad_entry(tmp_path: Path, case: str) -> None:
    entry, expected = BAD_ENTRIES[case]
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [GOOD_ENTRY, entry]}))

    with pytest.raises(ClientsFileError) as refused:
        load_clients(path)

    message = str(refused.value)
    assert "clients[1]" in message
    assert expected in message
    assert "hunter2" not in message  # a plaintext secret is never echoed
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{not json", "clients.json"), ('{"users": []}', "expected"), ('["clients"]', "expected")],
)
def test_load_clients_rejects_malformed_documents(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "clients.json"
    path.write_text(content)

    with pytest.raises(ClientsFileError, match=expected):
        load_clients(path)


def test_load_clients_reads_a_good_file(clients_file: Path) -> None:
    clients = load_clients(clients_file)

    assert sorted(clients) == sorted(CLIENTS)
    assert clients["ops.team"].scopes == ("predict", "admin")
    assert clients["ops.team"].tier == "gold"
    assert check_secret_hash(CLIENTS["ops.team"][0], clients["ops.team"].secret_hash)


def test_gateway_refuses_to_start_with_a_bad_clients_file(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [{"client_id": "x", "secret_hash": "plaintext"}]}))

    with pytest.raises(SettingsError) as refused:
        create_app(gateway_settings(clients_file=path, jwt_secret=SECRET))

    assert str(refused.value).startswith("modelgate: invalid setting CLIENTS_FILE:")
    assert "clients[0]" in str(refused.value)


# --- secret hashes -------------------------------------------------------------------------------

STORED = hash_secret("right", salt=b"fedcba9876543210")
_, _N, _R, _P, SALT, DIGEST = STORED.split(":")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt",
        "scrypt:16384:8:1",
        f"bcrypt:{_N}:{_R}:{_P}:{SALT}:{DIGEST}",
        f"scrypt:x:{_R}:{_P}:{SALT}:{DIGEST}",
        f"scrypt:1000:{_R}:{_P}:{SALT}:{DIGEST}",  # n not a power of two
        f"scrypt:-16384:{_R}:{_P}:{SALT}:{DIGEST}",
        f"scrypt:{'9' * 30}:{_R}:{_P}:{SALT}:{DIGEST}",  # n beyond any C integer
        f"scrypt:{2**40}:{_R}:{_P}:{SALT}:{DIGEST}",  # far more memory than allowed
        f"scrypt:{_N}:0:{_P}:{SALT}:{DIGEST}",
        f"scrypt:{_N}:{_R}:-1:{SALT}:{DIGEST}",
        f"scrypt:{_N}:{_R}:{_P}:!!!:{DIGEST}",
        f"scrypt:{_N}:{_R}:{_P}:{SALT}:",
        f"scrypt:{_N}:{_R}:{_P}:{SALT}:é",
        f"{STORED}:extra",
    ],
)
def test_check_secret_hash_rejects_malformed_hashes_without_raising(stored: str) -> None:
    assert check_secret_hash("right", stored) is False


def test_check_secret_hash_accepts_only_the_right_secret() -> None:
    assert check_secret_hash("right", STORED) is True
    assert check_secret_hash("wrong", STORED) is False
    assert check_secret_hash("right", hash_secret("right")) is True  # random salt
    assert hash_secret("right") != hash_secret("right")
