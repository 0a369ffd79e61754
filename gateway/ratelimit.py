"""Per-client rate limits: GCRA in one atomic Redis round trip, on Redis's clock, with a local fallback.

Why not the ``limits`` library: its Redis strategies read the gateway's clock (skew between replicas
shifts every window), offer no GCRA, and answer "allowed?" and "remaining/reset" in separate calls. The
script below is one EVALSHA per request: it reads ``TIME`` inside Redis, updates the client's theoretical
arrival time (TAT) and returns the decision with the numbers for the ``RateLimit-*`` headers, so the limit
is exact across workers and gateway replicas. Keys expire when the bucket is full again.

Concurrent requests of one worker share the round trip (``ScriptPipeline``): while one pipeline of scripts
is in flight, the scripts of the requests that arrive queue up and travel together in the next one. Each
request still runs its own script, atomically, in one round trip; the worker pays redis-py's per-call
overhead (about a sixth of the gateway's CPU when every request made its own call, profiled) once per
pipeline instead of once per request.

When Redis cannot be reached (every call has a short timeout), the gateway either keeps serving under a
per-process fallback limit (``open``, the Kong and Envoy default) or answers 503 (``closed``), and tries
Redis again after a short pause: it recovers by itself. No Flask here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis

from shared.metrics import RATE_LIMIT_DECISIONS, RATE_LIMIT_STORE_ERRORS, RATE_LIMIT_STORE_UP, labelled

log = logging.getLogger(__name__)

# KEYS[1]: the client's key. ARGV[1]: emission interval T (µs). ARGV[2]: burst B (requests at once).
# Returns {allowed (0/1), remaining, reset (µs until full), retry_after (µs until the next one fits)}.
GCRA_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
"""

#: After a Redis failure, seconds before Redis is tried again (requests meanwhile use the fallback).
REDIS_RETRY_SECONDS = 1.0
#: Clients tracked by the per-process fallback limiter.
FALLBACK_MAX_CLIENTS = 10_000


class _Call:
    """One request's script call, waiting in a ``ScriptPipeline``."""

    __slots__ = ("args", "done", "error", "lead", "result", "wake")

    def __init__(self, args: tuple[str, int, int]) -> None:
        self.args = args
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.lead: list[_Call] | None = None
        self.wake = threading.Event()


def _round_trip(connection: Any, packed: list[bytes], count: int, results: list[Any]) -> None:
    """Send ``count`` packed commands and append their replies (a script's own error as its reply)."""
    try:
        connection.send_packed_command(packed, check_health=False)
        for _ in range(count):
            try:
                results.append(connection.read_response())
            except redis.ResponseError as exc:  # this script's own error; the others' replies still follow
                results.append(exc)
    except BaseException:
        connection.disconnect()  # a half-read reply must never be taken for the next batch's
        raise


class ScriptPipeline:
    """Runs the GCRA script for concurrent callers, several per round trip (group commit).

    A caller that finds no pipeline in flight sends everything queued; the others wait on their own event
    until the carrier hands them their result, or hands one of them the next batch to carry. Every call
    keeps redis-py's socket timeouts, so a waiter is always woken.
    """

    def __init__(self, client: redis.Redis, script: str, wait_seconds: float) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._busy = False
        self._connection: Any = None

    def __call__(self, key: str, interval_us: int, burst: int) -> Any:
        """The script's reply for one key, or the ``redis.RedisError`` its call raised."""
        call = _Call((key, interval_us, burst))
        with self._lock:
            self._queue.append(call)
            batch = None
            if not self._busy:
                self._busy = True
                batch, self._queue = self._queue, []
        while True:
            if batch is not None:
                try:
                    self._carry(batch)
                finally:
                    self._pass_on()
                batch = None
            if call.done:
                if call.error is not None:
                    raise call.error
                return call.result
            try:
                woken = call.wake.wait(self.wait_seconds)
            except BaseException:  # killed while waiting (a worker shutting down): others must not wait on us
                self._abandon(call)
                raise
            with self._lock:
                call.wake.clear()
                if call.lead is not None:
                    batch, call.lead = call.lead, None
                    continue
                if not call.done and not woken:
                    if call in self._queue:
                        self._queue.remove(call)
                    raise redis.TimeoutError("no answer from the rate-limit store in time")

    def _abandon(self, call: _Call) -> None:
        """Take a call that will not wait any longer out of the queue, and pass on a batch it was handed."""
        with self._lock:
            if call in self._queue:
                self._queue.remove(call)
            lead, call.lead = call.lead, None
            if lead is None:
                return
            others = [c for c in lead if c is not call]
            if others:
                others[0].lead = others
                others[0].wake.set()
                return
        self._pass_on()

    def _pass_on(self) -> None:
        with self._lock:
            if self._queue:
                batch, self._queue = self._queue, []
                batch[0].lead = batch
                batch[0].wake.set()
            else:
                self._busy = False

    def _carry(self, batch: list[_Call]) -> None:
        results: list[Any]
        try:
            results = self._send(batch)
            forgotten = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
            if forgotten:
                self.client.script_load(self.script)  # a restarted or flushed Redis forgot it
                # Only the calls that did not run go again: the others already counted.
                for index, result in zip(forgotten, self._send([batch[i] for i in forgotten]), strict=True):
                    results[index] = result
        except redis.RedisError as exc:
            results = [exc] * len(batch)
        except Exception as exc:  # noqa: BLE001 - whatever broke, every waiter must be woken with it
            results = [redis.RedisError(f"{type(exc).__name__}: {exc}")] * len(batch)
        except BaseException:  # killed mid-trip: wake everyone with an error, then go down
            self._finish(batch, [redis.RedisError("the rate-limit call was interrupted")] * len(batch))
            raise
        self._finish(batch, results)

    @staticmethod
    def _finish(batch: list[_Call], results: list[Any]) -> None:
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                call.error = result
            else:
                call.result = result
            call.done = True
            call.wake.set()

    def _send(self, batch: list[_Call]) -> list[Any]:
        """One round trip on the pipeline's own connection: only the carrier uses it, one batch at a time,
        which spares redis-py's pool checkout, health check and retry layers on every request."""
        reused = self._connection is not None
        if self._connection is None:
            pool = self.client.connection_pool
            self._connection = pool.connection_class(**pool.connection_kwargs)
        connection = self._connection
        packed = connection.pack_commands([("EVALSHA", self.sha, 1, *call.args) for call in batch])
        results: list[Any] = []
        try:
            _round_trip(connection, packed, len(batch), results)
        except redis.ConnectionError:
            if not reused or results:
                raise
            # A kept connection that Redis closed meanwhile (a restart, an idle timeout): no reply came back,
            # so nothing ran; once more on a new connection, as redis-py's own client would.
            _round_trip(connection, packed, len(batch), results)
        return results

    def close(self) -> None:
        """Close the pipeline's connection."""
        if self._connection is not None:
            self._connection.disconnect()


@dataclass(frozen=True)
class Quota:
    """A limit of ``requests`` per ``period`` seconds, with ``burst`` allowed at once."""

    requests: int
    period: float
    burst: int

    @property
    def interval_us(self) -> int:
        """Microseconds between two requests at the steady rate."""
        return max(1, int(self.period * 1_000_000 / self.requests))


@dataclass(frozen=True)
class Decision:
    """One rate-limit decision and what the response headers say about it."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int
    source: str  # "redis", "fallback" or "unavailable"

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers, plus an integer ``Retry-After`` when limited."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(max(0, self.reset_seconds)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.retry_after_seconds))
        return headers


def _seconds(microseconds: float) -> int:
    return math.ceil(microseconds / 1_000_000)


class LocalLimiter:
    """The same GCRA, in this process's memory: the fallback while Redis is away."""

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> tuple[bool, int, float, float]:
        """(allowed, remaining, reset µs, retry-after µs) for one request of ``key``."""
        now = time.monotonic() * 1_000_000
        interval = self.quota.interval_us
        tolerance = interval * self.quota.burst
        with self._lock:
            tat = max(self._tats.get(key, now), now)
            new_tat = tat + interval
            allow_at = new_tat - tolerance
            if allow_at > now:
                return False, 0, tat - now, allow_at - now
            self._tats[key] = new_tat
            self._tats.move_to_end(key)
            while len(self._tats) > FALLBACK_MAX_CLIENTS:
                self._tats.popitem(last=False)
            return True, int((now - allow_at) // interval), new_tat - now, 0.0


class RateLimiter:
    """Decides whether a client may make one more request."""

    def __init__(
        self,
        client: redis.Redis,
        tiers: dict[str, Quota],
        fallback: Quota,
        failure_mode: str = "open",
        prefix: str = "modelgate:rl:",
        wait_seconds: float = 1.0,
    ) -> None:
        self.redis = client
        self.tiers = tiers
        self.failure_mode = failure_mode
        self.prefix = prefix
        self.fallback = LocalLimiter(fallback)
        self._script = ScriptPipeline(client, GCRA_SCRIPT, wait_seconds)
        self._down_until = 0.0
        RATE_LIMIT_STORE_UP.set(1)

    def quota(self, tier: str) -> Quota:
        """The quota of a tier (unknown tiers get the default)."""
        return self.tiers.get(tier, self.tiers["default"])

    def key(self, subject: str, namespace: str = "sub") -> str:
        """The Redis key of a client: hashed, so any ``sub`` makes a short, safe key. Token subjects and
        addresses (the token endpoint) live in separate namespaces: no ``sub`` can share an address's bucket."""
        return self.prefix + namespace + ":" + hashlib.sha256(subject.encode()).hexdigest()[:32]

    def hit(self, subject: str, tier: str = "default", namespace: str = "sub") -> Decision:
        """Count one request of ``subject`` and decide."""
        quota = self.quota(tier)
        if time.monotonic() >= self._down_until:
            try:
                result: Any = self._script(self.key(subject, namespace), quota.interval_us, quota.burst)
            except redis.RedisError as exc:
                self._mark_down(exc)
            else:
                if self._down_until:
                    log.info("rate-limit store reachable again")
                    self._down_until = 0.0
                    RATE_LIMIT_STORE_UP.set(1)
                allowed, remaining, reset_us, retry_us = (int(v) for v in result)
                labelled(RATE_LIMIT_DECISIONS, "allowed" if allowed else "limited").inc()
                return Decision(
                    bool(allowed), quota.requests, remaining, _seconds(reset_us), _seconds(retry_us), "redis"
                )
        if self.failure_mode == "closed":
            RATE_LIMIT_DECISIONS.labels("unavailable").inc()
            return Decision(False, quota.requests, 0, 0, math.ceil(REDIS_RETRY_SECONDS), "unavailable")
        local = self.fallback.hit(namespace + ":" + subject)
        RATE_LIMIT_DECISIONS.labels("fallback_allowed" if local[0] else "fallback_limited").inc()
        limit = self.fallback.quota.requests
        return Decision(local[0], limit, local[1], _seconds(local[2]), _seconds(local[3]), "fallback")

    def _mark_down(self, exc: Exception) -> None:
        RATE_LIMIT_STORE_ERRORS.inc()
        RATE_LIMIT_STORE_UP.set(0)
        if not self._down_until:
            log.error("rate-limit store unreachable", extra={"error": type(exc).__name__})
        self._down_until = time.monotonic() + REDIS_RETRY_SECONDS

    def close(self) -> None:
        """Close every connection to Redis."""
        self._script.close()
        self.redis.close()

    def ping(self) -> bool:
        """Whether Redis answers now (for readiness)."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False
