"""Settings of the gateway (environment variables, validated at start-up)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.config import CommonSettings, check_secret

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256")


def parse_rate(text: str) -> tuple[int, float]:
    """``"120/minute"`` -> (120, 60.0). Raises ValueError for anything else."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{text!r} is not a rate like 120/minute (units: second, minute, hour, day)")
    return int(match.group(1)), _PERIODS[match.group(2)]


def parse_tiers(text: str) -> dict[str, tuple[int, float]]:
    """``"gold=1200/minute,free=30/minute"`` -> {name: (requests, period seconds)}. Raises ValueError."""
    tiers = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, rate = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name.strip()):
            raise ValueError(f"{item!r} is not tier=rate")
        tiers[name.strip()] = parse_rate(rate)
    return tiers


def parse_urls(text: str) -> list[str]:
    """Comma-separated ``http://host:port`` addresses; at least one."""
    urls = [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
    if not urls:
        raise ValueError("needs at least one http://host:port address")
    for url in urls:
        if not re.fullmatch(r"http://[A-Za-z0-9._\-\[\]:]+(:\d{1,5})?", url):
            raise ValueError(f"{url!r} is not an http://host:port address")
    return urls


class GatewaySettings(CommonSettings):
    """``GATEWAY_PORT``, authentication, rate limits and upstreams."""

    gateway_port: int = Field(default=8000, ge=1, le=65535)

    # --- authentication ---
    jwt_secret: SecretStr | None = None
    #: Accepted signing algorithms, comma-separated; the token header never chooses.
    jwt_algorithms: str = "HS256"
    jwt_audience: str = "modelgate"
    jwt_issuer: str = "modelgate"
    #: Clock skew tolerated on exp/nbf/iat, in seconds.
    jwt_leeway_seconds: float = Field(default=10.0, ge=0.0, le=300.0)
    #: PEM public key for RS*/ES*/PS* tokens.
    jwt_public_key_file: Path | None = None
    #: JWKS endpoint for RS*/ES* tokens (keys cached; unknown kids refetch at most once per cooldown).
    jwks_url: str | None = None
    jwks_cache_seconds: float = Field(default=300.0, ge=1.0)
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0.0)
    #: OAuth2 client-credentials clients (JSON file, secrets stored as scrypt hashes).
    clients_file: Path | None = None
    #: Lifetime of tokens issued by POST /v1/auth/token, in seconds.
    token_ttl_seconds: int = Field(default=900, ge=30, le=86400)

    # --- rate limiting ---
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Socket timeout of every Redis call, in seconds: a slow Redis must not slow the gateway.
    redis_timeout_seconds: float = Field(default=0.1, gt=0.0, le=5.0)
    rate_limit: str = "120/minute"
    #: Requests allowed at once on top of the steady rate (default: the whole quota).
    rate_limit_burst: int | None = Field(default=None, ge=1)
    #: Per-client tiers, e.g. ``gold=1200/minute,free=30/minute``; a token's ``tier`` claim picks one.
    rate_limit_tiers: str = ""
    #: When Redis is unreachable: ``open`` serves under a per-process fallback limit, ``closed`` answers 503.
    rate_limit_failure_mode: Literal["open", "closed"] = "open"
    rate_limit_fallback: str = "60/minute"

    # --- upstreams ---
    preprocessing_urls: str = "http://127.0.0.1:8001"
    model_urls: str = "http://127.0.0.1:8002"
    #: One deadline for the whole request, across both hops, in seconds.
    request_deadline_seconds: float = Field(default=5.0, gt=0.0, le=120.0)
    upstream_connect_timeout_seconds: float = Field(default=0.5, gt=0.0, le=30.0)
    #: Pooled keep-alive connections per upstream address.
    upstream_pool_size: int = Field(default=16, ge=1, le=1024)
    #: A pooled connection is closed after this many requests, so new ones spread over upstream workers.
    upstream_requests_per_connection: int = Field(default=100, ge=1)
    #: Consecutive failures before an address is ejected, and for how long.
    upstream_eject_after: int = Field(default=3, ge=1)
    upstream_eject_seconds: float = Field(default=10.0, gt=0.0)
    #: Consecutive failures (all addresses) that open an upstream's circuit, and how long it stays open.
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_open_seconds: float = Field(default=5.0, gt=0.0)
    #: Seconds a model's deployment (which version serves) is cached.
    deployment_cache_seconds: float = Field(default=1.0, ge=0.0)
    #: Adaptive batching: concurrent predicts for one model version share a trip of at most this many
    #: instances (0 turns batching off), with at most ``BATCH_INFLIGHT`` trips per version per worker; a trip
    #: beyond the first leaves early only when a full batch is waiting.
    batch_max_rows: int = Field(default=256, ge=0, le=100_000)
    batch_inflight: int = Field(default=2, ge=1, le=64)
    #: A classifier answer under this confidence is flagged ``review_required``.
    review_threshold: float = Field(default=0.6, ge=0.0, le=1.0)

    @field_validator("rate_limit", "rate_limit_fallback")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("rate_limit_tiers")
    @classmethod
    def _tiers(cls, value: str) -> str:
        parse_tiers(value)
        return value

    @field_validator("preprocessing_urls", "model_urls")
    @classmethod
    def _urls(cls, value: str) -> str:
        parse_urls(value)
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _algorithms(cls, value: str) -> str:
        names = [a.strip().upper() for a in value.split(",") if a.strip()]
        unknown = [a for a in names if a not in ALGORITHMS]
        if not names or unknown:
            raise ValueError(f"unknown or missing algorithms {unknown or value!r}; choose from {', '.join(ALGORITHMS)}")
        return ",".join(names)

    @model_validator(mode="after")
    def _keys(self) -> GatewaySettings:
        algorithms = self.algorithms()
        if any(a.startswith("HS") for a in algorithms):
            if self.modelgate_env == "production":
                check_secret("JWT_SECRET", self.jwt_secret)
            elif self.jwt_secret is None:
                raise ValueError("JWT_SECRET: not set (needed for HS* tokens)")
        if any(not a.startswith("HS") for a in algorithms) and not (self.jwt_public_key_file or self.jwks_url):
            raise ValueError("JWT_PUBLIC_KEY_FILE: RS*/ES*/PS* algorithms need a public key file or JWKS_URL")
        if self.jwt_public_key_file is not None and not self.jwt_public_key_file.is_file():
            raise ValueError(f"JWT_PUBLIC_KEY_FILE: {self.jwt_public_key_file} is not a file")
        if self.clients_file is not None and not self.clients_file.is_file():
            raise ValueError(f"CLIENTS_FILE: {self.clients_file} is not a file")
        return self

    def algorithms(self) -> list[str]:
        """The accepted JWT algorithms."""
        return self.jwt_algorithms.split(",")

    def tiers(self) -> dict[str, tuple[int, float]]:
        """Tier name -> (requests, period seconds); ``default`` is ``RATE_LIMIT``."""
        return {"default": parse_rate(self.rate_limit), **parse_tiers(self.rate_limit_tiers)}
