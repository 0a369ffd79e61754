"""Issuing JWTs: the gateway's token endpoint and ``modelgate token`` both sign tokens this one way."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from pydantic import SecretStr

from shared.config import CommonSettings, SettingsError

#: Scopes modelgate knows: ``predict`` for inference and reads, ``admin`` for the admin routes.
SCOPES = ("predict", "admin")


def issue_token(
    *,
    secret: bytes | str,
    subject: str,
    scopes: list[str],
    audience: str,
    issuer: str,
    ttl_seconds: int,
    tier: str | None = None,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A signed JWT with ``sub``, ``scope``, ``aud``, ``iss``, ``iat``, ``exp``, ``jti`` (and ``tier``)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "aud": audience,
        "iss": issuer,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if tier:
        claims["tier"] = tier
    return jwt.encode(claims, secret, algorithm=algorithm)


# --- client secrets (OAuth2 client credentials) -----------------------------------------------------

#: scrypt cost: ~50 ms and 16 MiB per check, so a leaked clients file resists guessing.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt:N:r:p:<salt>:<hash>`` (base64) of a client secret, for the clients file."""
    import base64
    import hashlib
    import os

    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return ":".join(
        [
            "scrypt",
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def check_secret_hash(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a ``hash_secret`` value (constant-time comparison)."""
    import base64
    import binascii
    import hashlib
    import hmac

    try:
        scheme, n, r, p, salt, digest = stored.split(":")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        computed = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError, OverflowError, binascii.Error):  # TypeError: n or p negative or huge
        return False
    return hmac.compare_digest(computed, expected)


class TokenSettings(CommonSettings):
    """What signing a token needs (``modelgate token``): the HS256 key, audience, issuer."""

    jwt_secret: SecretStr | None = None
    jwt_audience: str = "modelgate"
    jwt_issuer: str = "modelgate"

    def secret(self) -> str:
        """The signing key, or a one-line refusal."""
        if self.jwt_secret is None:
            raise SettingsError("modelgate: invalid setting JWT_SECRET: not set (needed to sign tokens)")
        return self.jwt_secret.get_secret_value()
