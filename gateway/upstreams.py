"""One client per upstream service: pooled keep-alive, round robin, ejection, a circuit breaker, deadlines.

    UpstreamError (ModelgateError)
    ├── UpstreamUnavailable (503, Retry-After)   no address could be reached, or the circuit is open
    ├── UpstreamTimeout (504)                   the request's deadline passed while waiting
    └── UpstreamBadResponse (502)               the upstream answered, but not in a usable way

Built on urllib3's connection pools (about half the client CPU of requests per call, measured here).
Each address has its own pool; calls go round robin over the addresses that are not ejected. An address
that fails ``eject_after`` times in a row is skipped for ``eject_seconds``. A call is retried on another
address only when the connection could not be made or was dropped before any response (upstream calls
are idempotent: transforms and inference have no side effects), and always within the request's one
deadline. When every address keeps failing, the upstream's circuit opens: calls fail at once with 503
and ``Retry-After`` until a trial call succeeds. Every ``requests_per_connection``-th call on an address
asks the upstream to close the connection afterwards, so pooled connections are re-made and spread over
the upstream's workers instead of pinning all traffic on the one that accepted them first. No Flask here.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from shared.errors import BadGateway, GatewayTimeout, ModelgateError, ServiceUnavailable
from shared.metrics import CIRCUIT_OPEN, UPSTREAM_LATENCY, UPSTREAM_REQUESTS

log = logging.getLogger(__name__)


class UpstreamError(ModelgateError):
    """Base of the upstream errors (never raised as such)."""


class UpstreamUnavailable(ServiceUnavailable):
    """No address of the upstream could be reached, or its circuit is open."""

    slug = "upstream-unavailable"

    def __init__(self, upstream: str, reason: str, retry_after: float) -> None:
        super().__init__(
            f"the {upstream} service is unavailable: {reason}",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )


class UpstreamTimeout(GatewayTimeout):
    """The request's deadline passed while waiting for the upstream."""

    def __init__(self, upstream: str) -> None:
        super().__init__(f"the {upstream} service did not answer within the request deadline")


class UpstreamBadResponse(BadGateway):
    """The upstream answered with something the gateway cannot use."""

    slug = "upstream-bad-response"


@dataclass
class Response:
    """An upstream's answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or 502."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("an upstream answered with a body that is not JSON") from None


@dataclass
class Address:
    """One upstream address with its connection pool and health."""

    url: str
    pool: urllib3.HTTPConnectionPool
    failures: int = 0
    ejected_until: float = 0.0
    calls: itertools.count = field(default_factory=itertools.count)


def _model_not_ready(response: Response) -> bool:
    """A 503 that is the model service's "this version is not ready", not the service failing."""
    return b"urn:modelgate:problem:model-not-ready" in response.body[:512]


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> one trial call after ``open_seconds``."""

    def __init__(self, name: str, threshold: int, open_seconds: float) -> None:
        self.name = name
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_running = False
        self._lock = threading.Lock()

    def before(self) -> None:
        """Raise 503 while open; let one trial call through once the open period is over."""
        with self._lock:
            if self.opened_at is None:
                return
            waited = time.monotonic() - self.opened_at
            if waited < self.open_seconds or self.trial_running:
                raise UpstreamUnavailable(self.name, "circuit open", max(1.0, self.open_seconds - waited))
            self.trial_running = True

    def release(self) -> None:
        """End a call that reached no verdict (its deadline passed before any attempt): a later call may try."""
        with self._lock:
            self.trial_running = False

    def success(self) -> None:
        with self._lock:
            if self.opened_at is not None:
                log.info("circuit closed", extra={"upstream": self.name})
                CIRCUIT_OPEN.labels(self.name).set(0)
            self.failures = 0
            self.opened_at = None
            self.trial_running = False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            self.trial_running = False
            if self.opened_at is not None or self.failures >= self.threshold:
                if self.opened_at is None:
                    log.error("circuit opened", extra={"upstream": self.name, "failures": self.failures})
                self.opened_at = time.monotonic()
                CIRCUIT_OPEN.labels(self.name).set(1)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        return "open" if time.monotonic() - self.opened_at < self.open_seconds else "half-open"


class Upstream:
    """The client of one upstream service (several addresses)."""

    def __init__(
        self,
        name: str,
        urls: list[str],
        *,
        connect_timeout: float,
        pool_size: int,
        requests_per_connection: int,
        eject_after: int,
        eject_seconds: float,
        circuit_threshold: int,
        circuit_open_seconds: float,
    ) -> None:
        self.name = name
        self.connect_timeout = connect_timeout
        self.requests_per_connection = requests_per_connection
        self.eject_after = eject_after
        self.eject_seconds = eject_seconds
        self.breaker = CircuitBreaker(name, circuit_threshold, circuit_open_seconds)
        self.addresses = []
        for url in urls:
            parts = urlsplit(url)
            pool = urllib3.HTTPConnectionPool(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                maxsize=pool_size,
                block=False,
                retries=False,
                timeout=urllib3.Timeout(connect=connect_timeout, read=5.0),
            )
            self.addresses.append(Address(url, pool))
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._probed: tuple[float, dict[str, Any]] | None = None
        CIRCUIT_OPEN.labels(name).set(0)

    def _order(self) -> list[Address]:
        """Addresses to try, starting from the next in round robin, ejected ones last."""
        start = next(self._next) % len(self.addresses)
        rotated = self.addresses[start:] + self.addresses[:start]
        now = time.monotonic()
        healthy = [a for a in rotated if a.ejected_until <= now]
        return healthy + [a for a in rotated if a.ejected_until > now]

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float,
        idempotent: bool = True,
    ) -> Response:
        """One call, within ``deadline`` (a ``time.monotonic()`` instant). Raises an ``UpstreamError``.

        A connection that could not be made is always tried on the next address. A connection dropped after
        the request went out is tried again only for ``idempotent`` calls (transforms, inference, reads):
        an admin operation must never run twice.
        """
        self.breaker.before()
        started = time.monotonic()
        last_reason = "no address"
        for address in self._order():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            send = dict(headers)
            if next(address.calls) % self.requests_per_connection == self.requests_per_connection - 1:
                send["Connection"] = "close"
            timeout = urllib3.Timeout(connect=min(self.connect_timeout, remaining), read=remaining)
            try:
                raw = address.pool.urlopen(
                    method,
                    path,
                    body=body,
                    headers=send,
                    timeout=timeout,
                    retries=False,
                    redirect=False,
                    preload_content=True,
                    assert_same_host=False,
                )
            except ReadTimeoutError:
                # The upstream got the request and is still working: do not send it again elsewhere.
                self._failed(address)
                self.breaker.failure()  # also ends a half-open trial, which would otherwise hold the circuit open
                UPSTREAM_REQUESTS.labels(self.name, "timeout").inc()
                UPSTREAM_LATENCY.labels(self.name).observe(time.monotonic() - started)
                raise UpstreamTimeout(self.name) from None
            except (NewConnectionError, ConnectTimeoutError) as exc:
                last_reason = "connection refused" if isinstance(exc, NewConnectionError) else "connect timeout"
                self._failed(address)
                continue
            except ProtocolError:
                self._failed(address)
                if not idempotent:
                    self.breaker.failure()
                    UPSTREAM_REQUESTS.labels(self.name, "dropped").inc()
                    raise UpstreamBadResponse(
                        f"the {self.name} service dropped the connection; the operation may or may not have run"
                    ) from None
                last_reason = "connection dropped"
                continue
            except HTTPError as exc:
                last_reason = type(exc).__name__
                self._failed(address)
                continue
            address.failures = 0
            address.ejected_until = 0.0
            response = Response(raw.status, {k.lower(): v for k, v in raw.headers.items()}, raw.data)
            UPSTREAM_LATENCY.labels(self.name).observe(time.monotonic() - started)
            UPSTREAM_REQUESTS.labels(self.name, f"{raw.status // 100}xx").inc()
            if response.status in (500, 502, 504) or (response.status == 503 and not _model_not_ready(response)):
                self.breaker.failure()
            else:
                # Alive and answering, including "this model is not ready" (a client can ask for that one on
                # purpose: it must not open the circuit for everyone else).
                self.breaker.success()
            return response
        UPSTREAM_LATENCY.labels(self.name).observe(time.monotonic() - started)
        if deadline - time.monotonic() <= 0:
            UPSTREAM_REQUESTS.labels(self.name, "timeout").inc()
            if last_reason == "no address":
                self.breaker.release()
            else:
                self.breaker.failure()
            raise UpstreamTimeout(self.name)
        self.breaker.failure()
        UPSTREAM_REQUESTS.labels(self.name, "unavailable").inc()
        raise UpstreamUnavailable(self.name, last_reason, self.breaker.open_seconds if self.breaker.opened_at else 1.0)

    def _failed(self, address: Address) -> None:
        with self._lock:
            address.failures += 1
            if address.failures >= self.eject_after and len(self.addresses) > 1:
                if address.ejected_until <= time.monotonic():
                    log.warning("address ejected", extra={"upstream": self.name, "address": address.url})
                address.ejected_until = time.monotonic() + self.eject_seconds

    def probe(self, path: str = "/ready", timeout: float = 1.0, cache_seconds: float = 1.0) -> dict[str, Any]:
        """Readiness of each address (for the gateway's /ready), cached ``cache_seconds``: the route needs
        no token, so it must not turn into a stream of calls upstream. Addresses appear as ``name[i]``,
        never as URLs."""
        now = time.monotonic()
        with self._lock:
            if self._probed is not None and now - self._probed[0] < cache_seconds:
                return self._probed[1]
        results = {}
        for index, address in enumerate(self.addresses):
            try:
                raw = address.pool.urlopen(
                    "GET", path, timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False
                )
                results[f"{self.name}[{index}]"] = raw.status == 200
            except HTTPError:
                results[f"{self.name}[{index}]"] = False
        answer = {"addresses": results, "circuit": self.breaker.state}
        with self._lock:
            self._probed = (time.monotonic(), answer)
        return answer
