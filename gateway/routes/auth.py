"""``POST /v1/auth/token``: the OAuth2 client-credentials grant (RFC 6749 §4.4).

Client credentials come as HTTP Basic (preferred) or as ``client_id``/``client_secret`` form fields;
the body is ``application/x-www-form-urlencoded`` (JSON is accepted too). The answer is a short-lived
JWT carrying the client's scopes (or the subset asked for with ``scope``) and its rate-limit tier.
Errors carry OAuth2's ``error`` code inside the usual problem+json body. Attempts are rate-limited per
remote address, so client secrets cannot be guessed at speed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from flask import Blueprint, Response, g, jsonify, request

from gateway import gateway
from shared.errors import BadRequest, TooManyRequests, Unauthorized
from shared.service import read_json, request_body
from shared.tokens import issue_token

bp = Blueprint("auth", __name__, url_prefix="/v1/auth")


def oauth_error(code: str, description: str) -> BadRequest:
    """A 400 with OAuth2's error code."""
    return BadRequest(description, extra={"error": code})


def invalid_client() -> Unauthorized:
    """A 401 for unknown clients or wrong secrets (the same answer for both)."""
    return Unauthorized(
        "client authentication failed",
        headers={"WWW-Authenticate": 'Basic realm="modelgate"'},
        extra={"error": "invalid_client"},
    )


def _params() -> dict[str, Any]:
    if request.mimetype == "application/x-www-form-urlencoded":
        request_body()  # read within the idle timeout, framing checked; the form is parsed from the cached bytes
        return dict(request.form.items())
    body = read_json()
    if not isinstance(body, dict):
        raise oauth_error("invalid_request", "the body must be a form or a JSON object")
    return body


def _credentials(params: dict[str, Any]) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client() from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise invalid_client()
        return unquote(client_id), unquote(secret)
    given_id, given_secret = params.get("client_id"), params.get("client_secret")
    if not isinstance(given_id, str) or not isinstance(given_secret, str):
        raise invalid_client()
    return given_id, given_secret


@bp.post("/token")
def token() -> Response:
    """Exchange client credentials for an access token."""
    state = gateway()
    # Counted under the client's address, in a key space no token subject can reach (see RateLimiter.key).
    decision = state.limiter.hit(request.remote_addr or "unknown", namespace="address")
    g.ratelimit = decision
    if not decision.allowed:
        raise TooManyRequests(f"too many token requests; retry in {decision.retry_after_seconds} s")
    params = _params()
    if params.get("grant_type") != "client_credentials":
        raise oauth_error("unsupported_grant_type", "grant_type must be client_credentials")
    client_id, secret = _credentials(params)
    if len(client_id) > 64 or len(secret) > 1024:
        raise invalid_client()
    client = state.clients.authenticate(client_id, secret)
    if client is None:
        raise invalid_client()
    asked = params.get("scope")
    scopes = list(client.scopes)
    if asked is not None:
        wanted = str(asked).split()
        if not set(wanted) <= set(client.scopes):
            raise oauth_error("invalid_scope", f"this client may ask for: {' '.join(client.scopes)}")
        scopes = wanted
    settings = state.settings
    secret_key = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret_key is None or "HS256" not in settings.algorithms():
        raise oauth_error("unsupported_grant_type", "this gateway does not issue tokens (HS256 with JWT_SECRET only)")
    access_token = issue_token(
        secret=secret_key,
        subject=client.client_id,
        scopes=scopes,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        ttl_seconds=settings.token_ttl_seconds,
        tier=client.tier,
    )
    response = jsonify(
        access_token=access_token,
        token_type="Bearer",  # noqa: S106 - the OAuth2 token type, not a password
        expires_in=settings.token_ttl_seconds,
        scope=" ".join(scopes),
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
