"""The gateway: authenticates, rate-limits and routes every request to the preprocessing and model services."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, Response, current_app, g

from gateway.auth import Authenticator
from gateway.clients import ClientRegistry, load_clients
from gateway.config import GatewaySettings, parse_rate, parse_urls
from gateway.ratelimit import Quota, RateLimiter
from gateway.routing import Router
from gateway.upstreams import Upstream
from shared.config import SettingsError, load_settings
from shared.health import Check
from shared.logging import configure_logging
from shared.service import init_service

SERVICE = "gateway"


@dataclass
class Gateway:
    """Everything a gateway worker holds, hung on the app as ``extensions["modelgate.gateway"]``."""

    settings: GatewaySettings
    auth: Authenticator
    clients: ClientRegistry
    limiter: RateLimiter
    router: Router


def gateway() -> Gateway:
    """The current app's gateway state."""
    state: Gateway = current_app.extensions["modelgate.gateway"]
    return state


def _quota(rate: str, burst: int | None) -> Quota:
    requests, period = parse_rate(rate)
    return Quota(requests, period, burst or requests)


def build(settings: GatewaySettings) -> Gateway:
    """Clients for Redis and the upstreams, the authenticator and the router, from settings."""
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        retry_on_timeout=False,
        health_check_interval=0,
    )
    tiers = {
        name: Quota(requests, period, settings.rate_limit_burst or requests)
        for name, (requests, period) in settings.tiers().items()
    }
    limiter = RateLimiter(
        client,
        tiers,
        _quota(settings.rate_limit_fallback, None),
        settings.rate_limit_failure_mode,
        # A request may wait for the pipeline in flight and then its own: each is at most a connect, a
        # script load and two calls, every one bounded by the Redis timeout.
        wait_seconds=12 * settings.redis_timeout_seconds + 0.1,
    )

    def upstream(name: str, urls: str) -> Upstream:
        return Upstream(
            name,
            parse_urls(urls),
            connect_timeout=settings.upstream_connect_timeout_seconds,
            pool_size=settings.upstream_pool_size,
            requests_per_connection=settings.upstream_requests_per_connection,
            eject_after=settings.upstream_eject_after,
            eject_seconds=settings.upstream_eject_seconds,
            circuit_threshold=settings.circuit_failure_threshold,
            circuit_open_seconds=settings.circuit_open_seconds,
        )

    router = Router(
        upstream("preprocessing", settings.preprocessing_urls),
        upstream("model", settings.model_urls),
        cache_seconds=settings.deployment_cache_seconds,
        review_threshold=settings.review_threshold,
        batch_max_rows=settings.batch_max_rows,
        batch_inflight=settings.batch_inflight,
    )
    try:
        clients = load_clients(settings.clients_file) if settings.clients_file else {}
    except ValueError as exc:
        raise SettingsError(f"modelgate: invalid setting CLIENTS_FILE: {exc}") from None
    return Gateway(settings, Authenticator(settings), ClientRegistry(clients), limiter, router)


def create_app(settings: GatewaySettings | None = None) -> Flask:
    """Build the gateway."""
    settings = settings or load_settings(GatewaySettings)
    configure_logging(SERVICE, settings.log_level)
    app = Flask(__name__)
    state = build(settings)
    app.extensions["modelgate.gateway"] = state

    def readiness() -> dict[str, Check]:
        checks: dict[str, Check] = {}
        redis_up = state.limiter.ping()
        checks["redis"] = Check(
            redis_up or settings.rate_limit_failure_mode == "open",
            ""
            if redis_up
            else f"unreachable; limiting per process (RATE_LIMIT_FAILURE_MODE={settings.rate_limit_failure_mode})",
        )
        for upstream in (state.router.preprocessing, state.router.model):
            probe = upstream.probe()
            checks[upstream.name] = Check(any(probe["addresses"].values()), "", probe)
        return checks

    init_service(app, SERVICE, readiness, settings)

    @app.after_request
    def _ratelimit_headers(response: Response) -> Response:
        decision = g.get("ratelimit")
        if decision is not None:
            for key, value in decision.headers().items():
                response.headers[key] = value
        return response

    from gateway.routes import admin, auth, docs, models, oip, predict

    for module in (auth, predict, models, oip, admin, docs):
        app.register_blueprint(module.bp)
    return app
