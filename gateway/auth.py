"""JWT verification and scopes. Algorithms come from configuration only, never from the token header.

Every ``/v1`` and ``/v2`` route except ``/v1/auth/token`` needs ``Authorization: Bearer <JWT>`` with
``sub``, ``exp``, ``aud`` and ``iss``; ``scope`` lists ``predict`` and/or ``admin``. A bad token is a 401
with ``WWW-Authenticate: Bearer error="invalid_token"``; a good one without the scope a 403 with
``error="insufficient_scope"``. Tokens are never logged, and no error message echoes one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.config import GatewaySettings
from shared.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

#: Verified tokens remembered per worker (by sha256), so a reused token is not verified again.
VERIFIED_CACHE_SIZE = 4096
#: Longest Authorization header considered; anything longer is refused without parsing.
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified token."""

    subject: str
    scopes: frozenset[str]
    tier: str
    claims: dict[str, Any]


def invalid_token(description: str) -> Unauthorized:
    """A 401 whose challenge tells the client its token was refused, and why (never the token itself)."""
    challenge = f'Bearer error="invalid_token", error_description="{description}"'
    return Unauthorized(description, headers={"WWW-Authenticate": challenge})


def missing_token() -> Unauthorized:
    """A 401 for a request that sent no bearer token at all."""
    return Unauthorized(
        "a bearer token is required (Authorization: Bearer <JWT>)", headers={"WWW-Authenticate": "Bearer"}
    )


def insufficient_scope(scope: str) -> Forbidden:
    """A 403 naming the scope the route needs."""
    challenge = f'Bearer error="insufficient_scope", scope="{scope}"'
    return Forbidden(f"this route needs the {scope!r} scope", headers={"WWW-Authenticate": challenge})


class JWKSKeys:
    """Signing keys from a JWKS URL, through PyJWT's client: the key set is cached for ``cache_seconds``,
    and a token with an unknown ``kid`` triggers a refetch at most once per ``cooldown_seconds``, so
    made-up kids cannot hammer the key server."""

    def __init__(self, url: str, cache_seconds: float, cooldown_seconds: float, timeout: float = 2.0) -> None:
        self.client = jwt.PyJWKClient(
            url, cache_keys=True, lifespan=cache_seconds, timeout=timeout, cooldown_duration=cooldown_seconds
        )
        self.cooldown = cooldown_seconds
        # PyJWT's cooldown starts only after a successful fetch; while the key server is down, wait here.
        self._unreachable_until = 0.0

    def key_for(self, token: str) -> Any:
        """The verification key for ``token``'s ``kid``."""
        if time.monotonic() < self._unreachable_until:
            raise invalid_token("signing keys unavailable")
        try:
            return self.client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError:
            self._unreachable_until = time.monotonic() + min(self.cooldown, 5.0)
            raise invalid_token("signing keys unavailable") from None
        except (jwt.PyJWKClientError, jwt.PyJWTError):
            raise invalid_token("unknown signing key") from None


class Authenticator:
    """Verifies bearer tokens with the configured algorithms, audience, issuer, leeway and keys."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.algorithms = settings.algorithms()
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_seconds
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.public_key = settings.jwt_public_key_file.read_text() if settings.jwt_public_key_file else None
        self._verified: OrderedDict[bytes, tuple[Principal, float, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.jwks = (
            JWKSKeys(settings.jwks_url, settings.jwks_cache_seconds, settings.jwks_refetch_cooldown_seconds)
            if settings.jwks_url
            else None
        )

    def _key(self, token: str, algorithm: str) -> Any:
        if algorithm.startswith("HS"):
            return self.secret
        if self.public_key is not None:
            return self.public_key
        if self.jwks is not None:
            return self.jwks.key_for(token)
        raise invalid_token("no key for this algorithm")  # pragma: no cover - settings forbid it

    def authenticate(self, header: str | None) -> Principal:
        """The principal of an ``Authorization`` header value, or a 401.

        A token verified once is remembered (by its sha256, at most ``VERIFIED_CACHE_SIZE`` of them) until
        its ``exp``: clients reuse a token for many requests, and the signature check is a large share of
        the gateway's own work. Expiry and not-before are checked again on every use.
        """
        if not header:
            raise missing_token()
        if len(header) > MAX_TOKEN_LENGTH:
            raise invalid_token("token too long")
        digest = hashlib.sha256(header.encode()).digest()
        remembered = self._verified.get(digest)
        if remembered is not None:
            principal, not_before, expires = remembered
            now = time.time()
            if not_before - self.leeway <= now < expires + self.leeway:
                return principal
            with self._lock:
                self._verified.pop(digest, None)
        principal = self._verify(header)
        claims = principal.claims
        not_before = float(claims["nbf"]) if isinstance(claims.get("nbf"), int | float) else float("-inf")
        with self._lock:
            self._verified[digest] = (principal, not_before, float(claims["exp"]))
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return principal

    def _verify(self, header: str) -> Principal:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise invalid_token("expected 'Bearer <token>'")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise invalid_token("malformed token") from None
        if algorithm not in self.algorithms:
            raise invalid_token("token algorithm not accepted")
        try:
            claims = jwt.decode(
                token,
                self._key(token, algorithm),
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["sub", "exp", "aud", "iss"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise invalid_token("token expired") from None
        except jwt.InvalidAudienceError:
            raise invalid_token("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise invalid_token("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise invalid_token(f"missing claim {exc.claim}") from None
        except jwt.ImmatureSignatureError:
            raise invalid_token("token not yet valid") from None
        except jwt.InvalidSignatureError:
            raise invalid_token("bad signature") from None
        except (jwt.PyJWTError, TypeError):
            # TypeError: PyJWT's answer when a JWKS key is of another type than the token's alg (RSA key, ES256).
            raise invalid_token("invalid token") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            raise invalid_token("invalid subject")
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        tier = claims.get("tier")
        return Principal(subject, scopes, tier if isinstance(tier, str) else "default", claims)

    @staticmethod
    def require(principal: Principal, scope: str) -> None:
        """403 unless ``principal`` holds ``scope``."""
        if scope not in principal.scopes:
            raise insufficient_scope(scope)
