"""The gateway's HTTP routes, one module per resource, and the guard every protected route goes through."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from gateway import gateway
from shared.errors import ServiceUnavailable, TooManyRequests

F = TypeVar("F", bound=Callable[..., Any])


def deadline() -> float:
    """The ``time.monotonic()`` instant by which this request must be answered (one for every hop)."""
    if "deadline" not in g:
        g.deadline = time.monotonic() + gateway().settings.request_deadline_seconds
    return float(g.deadline)


def guarded(scope: str) -> Callable[[F], F]:
    """Authenticate the bearer token (401), count the request against the caller's limit (429), then
    check the scope (403). Runs before the body is read, so an anonymous client never gets further."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            deadline()
            state = gateway()
            principal = state.auth.authenticate(request.headers.get("Authorization"))
            g.principal = principal
            decision = state.limiter.hit(principal.subject, principal.tier)
            g.ratelimit = decision
            if not decision.allowed:
                if decision.source == "unavailable":
                    raise ServiceUnavailable(
                        "the rate-limit store is unavailable",
                        headers={"Retry-After": str(decision.retry_after_seconds)},
                    )
                raise TooManyRequests(
                    f"rate limit of {decision.limit} requests exceeded; retry in {decision.retry_after_seconds} s"
                )
            state.auth.require(principal, scope)
            return view(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return decorate
