"""GCRA rate limiting in a real Redis: exact bursts, headers, tiers, keys, processes, clock and outages."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from gateway import ratelimit
from gateway.ratelimit import Decision, Quota, RateLimiter, _Call
from tests.conftest import RedisServer
from tests.gateway.conftest import FakeServer, Reply, bearer, make_token, state_of

ROOT = Path(__file__).resolve().parents[2]
KEY = re.compile(r"^modelgate:rl:(sub|address):[0-9a-f]{32}$")


@pytest.fixture
def make_limiter(redis_url: str) -> Iterator[Callable[..., RateLimiter]]:
    """``make_limiter(default=Quota, **tiers)`` -> a RateLimiter on the shared Redis (or ``url=``)."""
    limiters: list[RateLimiter] = []

    def make(
        default: Quota,
        *,
        url: str = redis_url,
        fallback: Quota | None = None,
        failure_mode: str = "open",
        timeout: float = 0.1,
        wait_seconds: float = 1.0,
        **tiers: Quota,
    ) -> RateLimiter:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0
        )
        fallback = fallback or Quota(2, 60.0, 2)
        limiter = RateLimiter(client, {"default": default, **tiers}, fallback, failure_mode, wait_seconds=wait_seconds)
        limiters.append(limiter)
        return limiter

    yield make
    for limiter in limiters:
        limiter.close()


@pytest.fixture
def upstream(start_server: Callable[..., FakeServer]) -> FakeServer:
    """A model service answering ``GET /v1/models``: the protected route these tests call."""
    server = start_server()
    server.on("GET", "/v1/models", Reply(200, {"models": []}))
    return server


def hits(limiter: RateLimiter, subject: str, count: int, tier: str = "default") -> list[Decision]:
    return [limiter.hit(subject, tier) for _ in range(count)]


def store_up(app: Flask) -> float:
    """``modelgate_ratelimit_store_up`` as ``/metrics`` shows it."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    match = re.search(r"^modelgate_ratelimit_store_up (\S+)$", text, re.MULTILINE)
    assert match, "the gauge is exported"
    return float(match.group(1))


# --- GCRA arithmetic -----------------------------------------------------------------------------


@pytest.mark.parametrize("burst", [1, 3, 10])
def test_exactly_burst_requests_in_a_row_are_allowed(make_limiter: Callable[..., RateLimiter], burst: int) -> None:
    limiter = make_limiter(Quota(burst, 60.0, burst))

    decisions = hits(limiter, "alice", burst + 3)

    assert [d.allowed for d in decisions] == [True] * burst + [False] * 3
    assert [d.remaining for d in decisions[:burst]] == list(range(burst - 1, -1, -1))
    assert {d.source for d in decisions} == {"redis"}
    assert all(d.limit == burst for d in decisions)


def test_reset_and_retry_after_follow_the_emission_interval(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(Quota(2, 60.0, 2))  # one request per 30 s, two at once

    first, second, limited = hits(limiter, "alice", 3)

    assert (first.reset_seconds, second.reset_seconds) == (30, 60)  # seconds until the bucket is full again
    assert first.retry_after_seconds == second.retry_after_seconds == 0
    assert not limited.allowed
    assert limited.reset_seconds == 60
    assert 29 <= limited.retry_after_seconds <= 30  # the next slot opens one interval after the first hit
    assert limited.headers() == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
        "Retry-After": str(limited.retry_after_seconds),
    }
    assert "Retry-After" not in first.headers()


def test_one_more_request_fits_after_one_emission_interval(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(Quota(4, 1.0, 2))  # 250 ms between requests, two at once

    assert [d.allowed for d in hits(limiter, "alice", 3)] == [True, True, False]
    time.sleep(0.3)
    assert [d.allowed for d in hits(limiter, "alice", 2)] == [True, False]


def test_limited_requests_do_not_use_up_the_quota(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(Quota(4, 1.0, 1))

    assert [d.allowed for d in hits(limiter, "alice", 20)] == [True] + [False] * 19
    time.sleep(0.3)
    assert limiter.hit("alice").allowed  # nineteen refusals did not push the next slot back


def test_subjects_are_limited_independently(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(Quota(2, 60.0, 2))

    assert [d.allowed for d in hits(limiter, "alice", 3)] == [True, True, False]
    assert [d.allowed for d in hits(limiter, "bob", 3)] == [True, True, False]
    assert not limiter.hit("alice").allowed


def test_tiers_pick_their_own_quota_and_unknown_tiers_get_the_default(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(Quota(2, 60.0, 2), gold=Quota(5, 60.0, 5))

    assert sum(d.allowed for d in hits(limiter, "rich", 8, tier="gold")) == 5
    assert sum(d.allowed for d in hits(limiter, "plain", 8)) == 2
    assert sum(d.allowed for d in hits(limiter, "made-up", 8, tier="platinum")) == 2
    assert limiter.hit("rich", "gold").limit == 5


def test_keys_expire_and_odd_subjects_make_short_hashed_keys(
    make_limiter: Callable[..., RateLimiter], shared_redis: RedisServer
) -> None:
    limiter = make_limiter(Quota(2, 60.0, 2))
    odd = "ü" * 400 + ' \n\r*?[]{}:"\x00'

    decision = limiter.hit(odd)
    limiter.hit("alice")

    client = shared_redis.client()
    try:
        keys = sorted(k.decode() for k in client.keys("*"))
        assert len(keys) == 2
        assert all(KEY.fullmatch(k) for k in keys)
        assert limiter.key(odd) in keys
        ttl_ms = client.pttl(limiter.key(odd))
        assert 0 < ttl_ms <= decision.reset_seconds * 1000 + 1
    finally:
        client.close()


def test_the_script_reads_redis_time_not_the_local_clock(
    make_limiter: Callable[..., RateLimiter], shared_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = make_limiter(Quota(3, 60.0, 3))  # interval 20 s
    assert [d.allowed for d in hits(limiter, "alice", 4)] == [True, True, True, False]

    ten_years = 10 * 365 * 86400.0
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + ten_years)

    # A limiter on the local clock would see ten years pass and let alice in again.
    assert not limiter.hit("alice").allowed
    assert [d.allowed for d in hits(limiter, "bob", 4)] == [True, True, True, False]
    client = shared_redis.client()
    try:
        seconds, micros = client.time()
        redis_now_us = seconds * 1_000_000 + micros
        bob_tat_us = int(client.get(limiter.key("bob")))
    finally:
        client.close()
    # Bob's theoretical arrival time is three intervals after Redis's now, not ten years ahead.
    assert 0 < bob_tat_us - redis_now_us <= 3 * 20_000_000


def test_exact_across_processes(redis_url: str) -> None:
    """Three processes, each with its own limiter and eight threads, hammer one sub: exactly B get through."""
    burst, processes, requests, threads = 40, 3, 150, 8
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.gateway.hammer",
                redis_url,
                "shared-sub",
                str(burst),
                str(requests),
                str(threads),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # start together
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        summaries = []
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0
            summaries.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    assert all(s["sources"] == ["redis"] for s in summaries)
    assert sum(s["allowed"] for s in summaries) == burst


def test_concurrent_calls_share_round_trips_and_each_gets_its_own_decision(
    make_limiter: Callable[..., RateLimiter], shared_redis: RedisServer
) -> None:
    """Sixteen threads, ten subjects with a burst of three: each subject gets exactly three, whatever the
    pipelines looked like, and fewer pipelines than calls went out (the round trips were shared)."""
    limiter = make_limiter(Quota(3, 60.0, 3))
    sent: list[int] = []
    send = limiter._script._send

    def counting(batch: list[Any]) -> list[Any]:
        sent.append(len(batch))
        time.sleep(0.002)  # a slower store: later callers queue behind this round trip
        return send(batch)

    limiter._script._send = counting  # type: ignore[method-assign]
    subjects = [f"user-{i % 10}" for i in range(200)]
    with ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(limiter.hit, subjects))

    allowed = Counter(s for s, d in zip(subjects, decisions, strict=True) if d.allowed)
    assert allowed == {f"user-{i}": 3 for i in range(10)}
    assert all(d.source == "redis" for d in decisions)
    assert sum(sent) == 200
    assert len(sent) < 200
    assert max(sent) > 1


def test_a_redis_that_forgot_the_script_is_given_it_again(
    make_limiter: Callable[..., RateLimiter], shared_redis: RedisServer
) -> None:
    limiter = make_limiter(Quota(2, 60.0, 2))
    assert limiter.hit("alice").source == "redis"
    client = shared_redis.client()
    try:
        client.script_flush()
    finally:
        client.close()

    decisions = hits(limiter, "alice", 2)

    assert [(d.allowed, d.source) for d in decisions] == [(True, "redis"), (False, "redis")]


def test_only_the_calls_redis_did_not_run_are_sent_again_after_a_script_flush(
    make_limiter: Callable[..., RateLimiter], shared_redis: RedisServer
) -> None:
    """A pipeline where some scripts ran and some found the script gone: the ones that ran count once."""
    limiter = make_limiter(Quota(10, 60.0, 10))
    pipeline = limiter._script
    send = pipeline._send
    flushed = False

    def flush_midway(batch: list[Any]) -> list[Any]:
        """As if another client's SCRIPT FLUSH landed between the pipeline's two scripts."""
        nonlocal flushed
        if flushed:
            return send(batch)
        flushed = True
        ran = send(batch[:1])
        client = shared_redis.client()
        try:
            client.script_flush()
        finally:
            client.close()
        return [*ran, *send(batch[1:])]

    pipeline._send = flush_midway  # type: ignore[method-assign]

    batch = [_Call((limiter.key("alice"), 6_000_000, 10)), _Call((limiter.key("bob"), 6_000_000, 10))]
    pipeline._carry(batch)

    assert [c.error for c in batch] == [None, None]
    assert [c.result[1] for c in batch] == [9, 9]  # remaining: each counted exactly once


def test_a_store_error_reaches_every_waiting_caller(make_limiter: Callable[..., RateLimiter]) -> None:
    """Every request queued behind a failing round trip is woken with the error at once and falls back
    (not after its own wait runs out: that is 30 s here)."""
    limiter = make_limiter(Quota(100, 60.0, 100), fallback=Quota(1000, 60.0, 1000), wait_seconds=30.0)

    def failing(batch: list[Any]) -> list[Any]:
        time.sleep(0.01)
        raise redis.ConnectionError("gone")

    limiter._script._send = failing  # type: ignore[method-assign]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(limiter.hit, [f"user-{i}" for i in range(8)]))

    assert time.monotonic() - started < 5.0
    assert [d.source for d in decisions] == ["fallback"] * 8
    assert all(d.allowed for d in decisions)


# --- through the app -----------------------------------------------------------------------------


def test_headers_on_allowed_and_limited_responses(make_app: Callable[..., Flask], upstream: FakeServer) -> None:
    app = make_app(model_urls=upstream.url, rate_limit="3/minute")
    client = app.test_client()
    token = make_token(sub="header-test")

    responses = [client.get("/v1/models", headers=bearer(token)) for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Limit"] for r in responses] == ["3"] * 4
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert [r.headers["RateLimit-Reset"] for r in responses] == ["20", "40", "60", "60"]
    assert all("Retry-After" not in r.headers for r in responses[:3])
    limited = responses[3]
    assert limited.mimetype == "application/problem+json"
    assert re.fullmatch(r"\d+", limited.headers["Retry-After"])
    assert 19 <= int(limited.headers["Retry-After"]) <= 20
    assert len(upstream.requests) == 3  # the limited one never reached the upstream


def test_burst_setting_and_tier_claim_through_the_app(make_app: Callable[..., Flask], upstream: FakeServer) -> None:
    app = make_app(model_urls=upstream.url, rate_limit="2/minute", rate_limit_tiers="gold=4/minute, free=1/minute")
    client = app.test_client()

    def statuses(token: str, n: int) -> list[int]:
        return [client.get("/v1/models", headers=bearer(token)).status_code for _ in range(n)]

    assert statuses(make_token(sub="g", tier="gold"), 5) == [200] * 4 + [429]
    assert statuses(make_token(sub="f", tier="free"), 2) == [200, 429]
    assert statuses(make_token(sub="d"), 3) == [200, 200, 429]
    assert statuses(make_token(sub="u", tier="unknown-tier"), 3) == [200, 200, 429]
    gold = client.get("/v1/models", headers=bearer(make_token(sub="g2", tier="gold")))
    assert gold.headers["RateLimit-Limit"] == "4"


def test_rate_limit_burst_overrides_the_quota_at_once(make_app: Callable[..., Flask], upstream: FakeServer) -> None:
    app = make_app(model_urls=upstream.url, rate_limit="60/minute", rate_limit_burst=2)
    client = app.test_client()
    token = make_token(sub="bursty")

    assert [client.get("/v1/models", headers=bearer(token)).status_code for _ in range(3)] == [200, 200, 429]


# --- Redis outages -------------------------------------------------------------------------------


def test_redis_outage_open_mode_falls_back_and_recovers(
    make_app: Callable[..., Flask], upstream: FakeServer, redis_server: RedisServer
) -> None:
    app = make_app(
        model_urls=upstream.url,
        redis_url=redis_server.url,
        rate_limit="100/minute",
        rate_limit_fallback="2/minute",
        rate_limit_failure_mode="open",
    )
    client = app.test_client()
    token = make_token(sub="outage")
    assert client.get("/v1/models", headers=bearer(token)).headers["RateLimit-Limit"] == "100"
    assert store_up(app) == 1.0

    redis_server.stop()
    timed = []
    for _ in range(3):
        started = time.monotonic()
        response = client.get("/v1/models", headers=bearer(token))
        timed.append(time.monotonic() - started)
        assert response.headers["RateLimit-Limit"] == "2"  # the fallback quota decided
    assert [r < 0.5 for r in timed] == [True] * 3
    assert response.status_code == 429  # two allowed by the fallback, the third limited
    assert store_up(app) == 0.0
    assert state_of(app).limiter.hit("someone-else").source == "fallback"

    redis_server.start()
    time.sleep(ratelimit.REDIS_RETRY_SECONDS + 0.1)
    back = client.get("/v1/models", headers=bearer(token))
    assert back.status_code == 200
    assert back.headers["RateLimit-Limit"] == "100"
    assert state_of(app).limiter.hit("someone-else").source == "redis"
    assert store_up(app) == 1.0
    check = redis_server.client()
    try:
        assert check.exists(state_of(app).limiter.key("outage"))  # counted in Redis again
    finally:
        check.close()


def test_redis_outage_closed_mode_answers_503(
    make_app: Callable[..., Flask], upstream: FakeServer, redis_server: RedisServer
) -> None:
    app = make_app(model_urls=upstream.url, redis_url=redis_server.url, rate_limit_failure_mode="closed")
    redis_server.stop()

    started = time.monotonic()
    response = app.test_client().get("/v1/models", headers=bearer(make_token()))

    assert time.monotonic() - started < 0.5
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert upstream.requests == []


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP port that accepts connections but never answers: a Redis that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    finally:
        sock.close()


def test_a_hanging_redis_does_not_slow_requests(make_limiter: Callable[..., RateLimiter], silent_redis: str) -> None:
    limiter = make_limiter(Quota(100, 60.0, 100), url=silent_redis, fallback=Quota(3, 60.0, 3), timeout=0.1)

    durations, decisions = [], []
    for _ in range(5):
        started = time.monotonic()
        decisions.append(limiter.hit("alice"))
        durations.append(time.monotonic() - started)

    assert max(durations) < 0.5
    assert [d.source for d in decisions] == ["fallback"] * 5
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert decisions[0].limit == 3


def test_token_subjects_never_share_a_bucket_with_an_address(
    make_limiter: Callable[..., RateLimiter], shared_redis: RedisServer
) -> None:
    limiter = make_limiter(Quota(1, 60.0, 1))
    assert limiter.hit("127.0.0.1", namespace="address").allowed
    assert limiter.hit("127.0.0.1").allowed  # a token whose sub is the same text has its own bucket
    assert not limiter.hit("127.0.0.1", namespace="address").allowed
    assert limiter.key("x") != limiter.key("x", namespace="address")
