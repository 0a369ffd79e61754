"""Bearer-token authentication: HS256, RS256/ES256 with a key file or JWKS, scopes, and what never leaks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from gateway.auth import MAX_TOKEN_LENGTH, Authenticator
from shared.errors import Unauthorized
from tests.gateway.conftest import (
    AUDIENCE,
    ISSUER,
    SECRET,
    FakeServer,
    Reply,
    bearer,
    dead_url,
    gateway_settings,
    make_token,
)

MODELS = {"models": [{"name": "iris"}]}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {"sub": "alice", "scope": "predict", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 300}
    values.update(overrides)
    return values


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] | None) -> str:
    """A JWT assembled by hand, for tokens PyJWT refuses to make (unsigned, HMAC keyed with a PEM)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b64url(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


@pytest.fixture
def models_server(start_server: Callable[..., FakeServer]) -> FakeServer:
    """A model service that lists models, so a token wrongly accepted would show as a 200."""
    server = start_server()
    server.on("GET", "/v1/models", Reply(200, MODELS))
    return server


@pytest.fixture
def app(make_app: Callable[..., Flask], models_server: FakeServer) -> Flask:
    return make_app(model_urls=models_server.url)


def assert_invalid_token(response: Any) -> None:
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response.get_json()["status"] == 401


# --- HS256 ---------------------------------------------------------------------------------------


def test_valid_hs256_token_with_predict_scope_passes(app: Flask, models_server: FakeServer) -> None:
    response = app.test_client().get("/v1/models", headers=bearer(make_token()))

    assert response.status_code == 200
    assert response.get_json() == MODELS
    assert models_server.paths() == ["/v1/models"]


def test_principal_carries_subject_scopes_and_tier() -> None:
    principal = Authenticator(gateway_settings()).authenticate(
        f"Bearer {make_token(sub='bob', scope='predict admin', tier='gold')}"
    )

    assert principal.subject == "bob"
    assert principal.scopes == frozenset({"predict", "admin"})
    assert principal.tier == "gold"


def test_no_authorization_header_gets_a_plain_bearer_challenge(app: Flask, models_server: FakeServer) -> None:
    response = app.test_client().get("/v1/models")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.mimetype == "application/problem+json"
    assert models_server.requests == []


def _long_valid_token() -> str:
    token = make_token(padding="p" * MAX_TOKEN_LENGTH)
    assert len(token) > MAX_TOKEN_LENGTH
    return token


#: Authorization header values the gateway must refuse with 401 invalid_token (each builds its value).
INVALID_HEADERS: dict[str, Callable[[], str]] = {
    "basic-scheme": lambda: "Basic " + base64.b64encode(b"alice:secret").decode(),
    "basic-scheme-with-valid-jwt": lambda: f"Basic {make_token()}",
    "empty-token": lambda: "Bearer ",
    "only-spaces": lambda: "Bearer      ",
    "garbage": lambda: "Bearer not-a-jwt",
    "garbage-three-parts": lambda: "Bearer a.b.c",
    "two-tokens": lambda: f"Bearer {make_token()} {make_token()}",
    "alg-none-unsigned": lambda: "Bearer " + forge({"alg": "none", "typ": "JWT"}, claims(), None),
    "alg-None-unsigned": lambda: "Bearer " + forge({"alg": "None", "typ": "JWT"}, claims(), None),
    "hs256-with-signature-stripped": lambda: "Bearer " + make_token().rsplit(".", 1)[0] + ".",
    "other-secret": lambda: (
        "Bearer " + make_token(key="another-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef")
    ),
    "expired-beyond-leeway": lambda: "Bearer " + make_token(ttl=-60),
    "nbf-in-the-future": lambda: "Bearer " + make_token(nbf=int(time.time()) + 120),
    "wrong-audience": lambda: "Bearer " + make_token(audience="someone-else"),
    "wrong-issuer": lambda: "Bearer " + make_token(issuer="https://evil.example"),
    "missing-sub": lambda: "Bearer " + make_token(drop=("sub",)),
    "missing-exp": lambda: "Bearer " + make_token(drop=("exp",)),
    "missing-aud": lambda: "Bearer " + make_token(drop=("aud",)),
    "missing-iss": lambda: "Bearer " + make_token(drop=("iss",)),
    "integer-sub": lambda: "Bearer " + forge({"alg": "HS256", "typ": "JWT"}, claims(sub=123), _hs256(SECRET)),
    "empty-sub": lambda: "Bearer " + make_token(sub=""),
    "overlong-sub": lambda: "Bearer " + make_token(sub="s" * 300),
    "header-too-long-garbage": lambda: "Bearer " + "a" * (MAX_TOKEN_LENGTH + 1),
    "header-too-long-valid-token": lambda: "Bearer " + _long_valid_token(),
    "hs512-not-configured": lambda: "Bearer " + make_token(algorithm="HS512"),
}


def _hs256(key: str | bytes) -> Callable[[bytes], bytes]:
    raw = key.encode() if isinstance(key, str) else key
    return lambda data: hmac.new(raw, data, hashlib.sha256).digest()


@pytest.mark.parametrize("case", sorted(INVALID_HEADERS))
def test_bad_tokens_get_401_invalid_token(app: Flask, models_server: FakeServer, case: str) -> None:
    header = INVALID_HEADERS[case]()

    response = app.test_client().get("/v1/models", headers={"Authorization": header})

    assert_invalid_token(response)
    assert models_server.requests == []
    token = header.partition(" ")[2].strip()
    if token:
        assert token not in response.get_data(as_text=True)
        assert token not in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("leeway", "seconds_past_expiry", "accepted"),
    [(10.0, 5, True), (10.0, 30, False), (0.0, 5, False), (60.0, 45, True)],
)
def test_expiry_tolerates_the_configured_leeway(leeway: float, seconds_past_expiry: int, accepted: bool) -> None:
    auth = Authenticator(gateway_settings(jwt_leeway_seconds=leeway))
    header = f"Bearer {make_token(ttl=-seconds_past_expiry)}"

    if accepted:
        assert auth.authenticate(header).subject == "alice"
    else:
        with pytest.raises(Unauthorized) as refused:
            auth.authenticate(header)
        assert 'error_description="token expired"' in refused.value.headers["WWW-Authenticate"]


def test_nbf_within_the_leeway_is_accepted() -> None:
    auth = Authenticator(gateway_settings(jwt_leeway_seconds=10.0))

    assert auth.authenticate(f"Bearer {make_token(nbf=int(time.time()) + 3)}").subject == "alice"


def test_scheme_is_case_insensitive_and_surrounding_space_ignored() -> None:
    auth = Authenticator(gateway_settings())

    assert auth.authenticate(f"  bearer   {make_token()}  ").subject == "alice"


# --- RS256 / ES256 with a public key file ----------------------------------------------------------


@pytest.fixture
def rsa_pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "jwt-public.pem"
    path.write_bytes(public_pem(rsa_key))
    return path


def test_rs256_token_verified_with_a_public_key_file(rsa_key: rsa.RSAPrivateKey, rsa_pem_file: Path) -> None:
    auth = Authenticator(gateway_settings(jwt_algorithms="RS256", jwt_public_key_file=rsa_pem_file, jwt_secret=None))

    principal = auth.authenticate(f"Bearer {make_token(key=rsa_key, algorithm='RS256', sub='rsa-user')}")

    assert principal.subject == "rsa-user"


def test_es256_token_verified_with_a_public_key_file(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(public_pem(ec_key))
    auth = Authenticator(gateway_settings(jwt_algorithms="ES256", jwt_public_key_file=path, jwt_secret=None))

    assert auth.authenticate(f"Bearer {make_token(key=ec_key, algorithm='ES256', sub='ec-user')}").subject == "ec-user"


@pytest.mark.parametrize("algorithms", ["RS256", "HS256,RS256"])
def test_algorithm_confusion_hs256_keyed_with_the_public_pem_is_refused(
    rsa_key: rsa.RSAPrivateKey, rsa_pem_file: Path, algorithms: str
) -> None:
    auth = Authenticator(gateway_settings(jwt_algorithms=algorithms, jwt_public_key_file=rsa_pem_file))
    forged = forge({"alg": "HS256", "typ": "JWT"}, claims(scope="predict admin"), _hs256(public_pem(rsa_key)))

    with pytest.raises(Unauthorized) as refused:
        auth.authenticate(f"Bearer {forged}")

    assert refused.value.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_hs256_token_is_refused_when_only_rs256_is_configured(rsa_pem_file: Path) -> None:
    auth = Authenticator(gateway_settings(jwt_algorithms="RS256", jwt_public_key_file=rsa_pem_file))

    with pytest.raises(Unauthorized) as refused:
        auth.authenticate(f"Bearer {make_token()}")

    assert "token algorithm not accepted" in refused.value.headers["WWW-Authenticate"]


@pytest.mark.parametrize("signer", ["other-rsa-key", "ec-key"])
def test_rs256_configured_refuses_tokens_signed_by_other_keys(
    rsa_pem_file: Path,
    other_rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    signer: str,
) -> None:
    auth = Authenticator(gateway_settings(jwt_algorithms="RS256,ES256", jwt_public_key_file=rsa_pem_file))
    token = (
        make_token(key=other_rsa_key, algorithm="RS256")
        if signer == "other-rsa-key"
        else make_token(key=ec_key, algorithm="ES256")
    )

    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {token}")


# --- JWKS ----------------------------------------------------------------------------------------


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        document = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        document["alg"] = "RS256"
    else:
        document = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        document["alg"] = "ES256"
    return {**document, "kid": kid, "use": "sig"}


@pytest.fixture
def jwks_server(
    start_server: Callable[..., FakeServer], rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> FakeServer:
    server = start_server()
    server.on("GET", "/jwks.json", Reply(200, {"keys": [jwk(rsa_key, "rsa-1"), jwk(ec_key, "ec-1")]}))
    return server


def jwks_auth(server: FakeServer, cooldown: float = 30.0) -> Authenticator:
    return Authenticator(
        gateway_settings(
            jwt_algorithms="RS256,ES256",
            jwt_secret=None,
            jwks_url=f"{server.url}/jwks.json",
            jwks_refetch_cooldown_seconds=cooldown,
        )
    )


def test_jwks_tokens_with_a_known_kid_verify(
    jwks_server: FakeServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    auth = jwks_auth(jwks_server)
    rs = make_token(key=rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}, sub="rs")
    es = make_token(key=ec_key, algorithm="ES256", headers={"kid": "ec-1"}, sub="es")

    assert auth.authenticate(f"Bearer {rs}").subject == "rs"
    assert auth.authenticate(f"Bearer {es}").subject == "es"
    assert auth.authenticate(f"Bearer {rs}").subject == "rs"
    assert jwks_server.paths() == ["/jwks.json"]  # fetched once, then cached


@pytest.mark.parametrize(
    "case",
    ["kid-of-another-key-type", "right-kid-wrong-key", "no-kid"],
)
def test_jwks_refuses_tokens_that_do_not_match_their_key(
    jwks_server: FakeServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    case: str,
) -> None:
    auth = jwks_auth(jwks_server)
    token = {
        "kid-of-another-key-type": lambda: make_token(key=ec_key, algorithm="ES256", headers={"kid": "rsa-1"}),
        "right-kid-wrong-key": lambda: make_token(key=other_rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}),
        "no-kid": lambda: make_token(key=rsa_key, algorithm="RS256"),
    }[case]()

    with pytest.raises(Unauthorized) as refused:
        auth.authenticate(f"Bearer {token}")

    assert refused.value.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_unknown_kids_do_not_refetch_more_than_once_per_cooldown(
    jwks_server: FakeServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    cooldown = 0.5
    auth = jwks_auth(jwks_server, cooldown=cooldown)
    assert auth.authenticate(f"Bearer {make_token(key=rsa_key, algorithm='RS256', headers={'kid': 'rsa-1'})}")
    assert len(jwks_server.requests) == 1

    for _ in range(20):
        token = make_token(key=rsa_key, algorithm="RS256", headers={"kid": secrets.token_hex(8)})
        with pytest.raises(Unauthorized) as refused:
            auth.authenticate(f"Bearer {token}")
        assert "unknown signing key" in refused.value.headers["WWW-Authenticate"]
    assert len(jwks_server.requests) == 1  # all twenty inside the cooldown

    # A rotated key appears; after the cooldown one refetch finds it, and then the cooldown holds again.
    rotated = {"keys": [jwk(rsa_key, "rsa-1"), jwk(other_rsa_key, "rsa-2")]}
    jwks_server.on("GET", "/jwks.json", Reply(200, rotated))
    time.sleep(cooldown + 0.1)
    new_key_token = make_token(key=other_rsa_key, algorithm="RS256", headers={"kid": "rsa-2"}, sub="rotated")
    assert auth.authenticate(f"Bearer {new_key_token}").subject == "rotated"
    assert len(jwks_server.requests) == 2
    for _ in range(20):
        with pytest.raises(Unauthorized):
            auth.authenticate(
                f"Bearer {make_token(key=rsa_key, algorithm='RS256', headers={'kid': secrets.token_hex(8)})}"
            )
    assert len(jwks_server.requests) == 2


@pytest.mark.parametrize("where", ["answers-500", "nothing-listening"])
def test_an_unusable_jwks_endpoint_is_a_401_not_a_crash(
    rsa_key: rsa.RSAPrivateKey, start_server: Callable[..., FakeServer], where: str
) -> None:
    url = start_server(Reply(500, {"error": "down"})).url if where == "answers-500" else dead_url()
    auth = Authenticator(gateway_settings(jwt_algorithms="RS256", jwt_secret=None, jwks_url=f"{url}/jwks.json"))

    with pytest.raises(Unauthorized) as refused:
        auth.authenticate(f"Bearer {make_token(key=rsa_key, algorithm='RS256', headers={'kid': 'rsa-1'})}")

    assert "signing keys unavailable" in refused.value.headers["WWW-Authenticate"]


# --- scopes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "scope", "needed"),
    [
        ("POST", "/v1/admin/models/iris/deploy", "predict", "admin"),
        ("POST", "/v1/admin/models/iris/rollback", "predict", "admin"),
        ("GET", "/v1/models", "admin", "predict"),
        ("POST", "/v2/models/iris/infer", "", "predict"),
    ],
)
def test_valid_token_without_the_scope_gets_403(
    app: Flask, models_server: FakeServer, method: str, path: str, scope: str, needed: str
) -> None:
    response = app.test_client().open(path, method=method, headers=bearer(make_token(scope=scope)), json={"version": 1})

    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == f'Bearer error="insufficient_scope", scope="{needed}"'
    assert models_server.requests == []


def test_admin_scope_reaches_the_admin_route(app: Flask, models_server: FakeServer) -> None:
    models_server.on("POST", "/v1/models/iris/deploy", Reply(200, {"deployed": {"version": 2, "canary": None}}))

    response = app.test_client().post(
        "/v1/admin/models/iris/deploy", headers=bearer(make_token(scope="admin")), json={"version": 2}
    )

    assert response.status_code == 200
    assert models_server.paths() == ["/v1/models/iris/deploy"]


# --- logs ----------------------------------------------------------------------------------------


def test_tokens_never_appear_in_the_log(
    capsys: pytest.CaptureFixture[str], make_app: Callable[..., Flask], models_server: FakeServer
) -> None:
    app = make_app(model_urls=models_server.url, log_level="DEBUG")  # built now, so it logs to capsys
    client = app.test_client()
    refused = make_token(audience="not-us")
    accepted = make_token()

    assert client.get("/v1/models", headers=bearer(refused)).status_code == 401
    assert client.get("/v1/models", headers=bearer(accepted)).status_code == 200

    output = capsys.readouterr().out
    statuses = [json.loads(line).get("status") for line in output.splitlines() if '"modelgate.access"' in line]
    assert statuses == [401, 200]  # the log was captured, so its silence about tokens means something
    for token in (refused, accepted):
        assert token not in output
        assert token.rsplit(".", 1)[1] not in output  # not even the signature


def test_a_remembered_token_is_still_refused_once_it_expires() -> None:
    import time as clock

    import jwt as pyjwt

    from gateway.auth import Authenticator
    from gateway.config import GatewaySettings
    from shared.errors import Unauthorized as Refused

    secret = "remembered-token-secret-0123456789abcdefghij"
    settings = GatewaySettings(jwt_secret=secret, jwt_leeway_seconds=0, model_signing_key="k" * 40)
    authenticator = Authenticator(settings)
    now = int(clock.time())
    claims = {"sub": "short", "aud": "modelgate", "iss": "modelgate", "exp": now + 2, "scope": "predict"}
    token = pyjwt.encode(claims, secret, algorithm="HS256")
    assert authenticator.authenticate(f"Bearer {token}").subject == "short"
    assert authenticator.authenticate(f"Bearer {token}").subject == "short"  # from memory
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(Refused):
        authenticator.authenticate(f"Bearer {forged}")  # another string: verified, and refused
    clock.sleep(now + 2.2 - clock.time())
    with pytest.raises(Refused, match="expired"):
        authenticator.authenticate(f"Bearer {token}")
