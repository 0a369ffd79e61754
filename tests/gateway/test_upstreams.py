"""``gateway.upstreams.Upstream`` against real HTTP servers: balancing, ejection, retries, circuit, deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.upstreams import Response, Upstream, UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from tests.gateway.conftest import FakeServer, Reply, dead_url

OK = Reply(200, {"ok": True})
#: Slack for "returns within the deadline": thread start-up and a loaded CI machine, not a second hop.
MARGIN = 0.25


@pytest.fixture
def make_upstream() -> Iterator[Callable[..., Upstream]]:
    """``make_upstream(urls, **options)`` -> an Upstream with test-sized defaults; pools closed afterwards."""
    made: list[Upstream] = []

    def make(urls: list[str], **options: Any) -> Upstream:
        values: dict[str, Any] = {
            "connect_timeout": 0.5,
            "pool_size": 4,
            "requests_per_connection": 1000,
            "eject_after": 3,
            "eject_seconds": 30.0,
            "circuit_threshold": 100,
            "circuit_open_seconds": 30.0,
        }
        values.update(options)
        upstream = Upstream("test-upstream", urls, **values)
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        for address in upstream.addresses:
            address.connections.close()


def call(upstream: Upstream, *, within: float = 2.0, deadline: float | None = None, path: str = "/x") -> Response:
    return upstream.request(
        "GET",
        path,
        body=None,
        headers={"X-Request-ID": "test-request-id"},
        deadline=deadline if deadline is not None else time.monotonic() + within,
    )


def test_round_robin_balances_two_addresses(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    a, b = start_server(OK), start_server(OK)
    upstream = make_upstream([a.url, b.url])

    answers = [call(upstream) for _ in range(10)]

    assert [r.status for r in answers] == [200] * 10
    assert (len(a.requests), len(b.requests)) == (5, 5)


def test_answers_come_back_as_they_are(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(422, {"errors": {"x": ["bad"]}}, headers={"X-Upstream": "yes"}))
    upstream = make_upstream([server.url])

    answer = call(upstream, path="/v1/thing?q=1")

    assert answer.status == 422
    assert answer.json() == {"errors": {"x": ["bad"]}}
    assert answer.headers["x-upstream"] == "yes"
    assert server.requests[0].path == "/v1/thing?q=1"
    assert server.requests[0].headers["x-request-id"] == "test-request-id"


def test_a_body_that_is_not_json_is_a_bad_gateway(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(200, b"<html>oops</html>", content_type="text/html"))

    with pytest.raises(UpstreamBadResponse) as bad:
        call(make_upstream([server.url])).json()

    assert bad.value.status == 502


def test_a_dead_address_is_skipped_and_ejected(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    live = start_server(OK)
    upstream = make_upstream([dead_url(), live.url], eject_after=2, eject_seconds=0.6)
    dead = upstream.addresses[0]

    answers = [call(upstream) for _ in range(10)]

    assert [r.status for r in answers] == [200] * 10  # refused connections were retried on the live one
    assert len(live.requests) == 10
    assert dead.failures == 2  # tried on calls 1 and 3, then ejected and not tried again
    assert dead.ejected_until > time.monotonic()

    time.sleep(0.65)
    call(upstream)
    call(upstream)
    assert dead.failures == 3  # after eject_seconds it is given another chance (and fails again)


def test_an_ejected_address_sees_no_connection_until_eject_seconds_pass(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    dropper, live = start_server(Reply(drop=True)), start_server(OK)
    upstream = make_upstream([dropper.url, live.url], eject_after=2, eject_seconds=0.6)

    for _ in range(4):
        call(upstream)
    assert dropper.connections == 2
    for _ in range(10):
        assert call(upstream).status == 200
    assert dropper.connections == 2  # ejected: not even connected to

    time.sleep(0.65)
    call(upstream)
    call(upstream)
    assert dropper.connections == 3


def test_refused_connections_are_retried_on_the_next_address(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    live = start_server(OK)
    upstream = make_upstream([dead_url(), dead_url(), live.url])

    assert call(upstream).status == 200
    assert len(live.requests) == 1


def test_a_dropped_connection_is_retried_on_the_next_address(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    dropper, live = start_server(Reply(drop=True)), start_server(OK)
    upstream = make_upstream([dropper.url, live.url])

    assert call(upstream).status == 200
    assert len(dropper.requests) == 1
    assert len(live.requests) == 1


def test_a_read_timeout_is_not_retried(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    hanging, live = start_server(Reply(delay=5.0)), start_server(OK)
    upstream = make_upstream([hanging.url, live.url])

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as timed_out:
        call(upstream, within=0.4)
    elapsed = time.monotonic() - started

    assert timed_out.value.status == 504
    assert 0.35 <= elapsed < 0.4 + MARGIN
    assert len(hanging.requests) == 1
    assert live.requests == []  # the request may be running upstream: never sent twice


def test_every_address_dead_is_503_with_retry_after(make_upstream: Callable[..., Upstream]) -> None:
    upstream = make_upstream([dead_url(), dead_url()])

    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as unavailable:
        call(upstream)

    assert time.monotonic() - started < 0.5
    assert unavailable.value.status == 503
    assert int(unavailable.value.headers["Retry-After"]) >= 1
    assert "connection refused" in unavailable.value.detail


def test_the_deadline_is_honoured_across_calls(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    slow = start_server(Reply(200, {"ok": True}, delay=0.3))
    upstream = make_upstream([slow.url])
    started = time.monotonic()
    deadline = started + 0.5

    assert call(upstream, deadline=deadline).status == 200
    with pytest.raises(UpstreamTimeout):
        call(upstream, deadline=deadline)  # 0.3 s more would pass the shared deadline

    assert time.monotonic() - started < 0.5 + MARGIN
    assert len(slow.requests) == 2


def test_a_spent_deadline_sends_nothing(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(OK)
    upstream = make_upstream([server.url])

    with pytest.raises(UpstreamTimeout):
        call(upstream, deadline=time.monotonic() - 0.01)

    assert server.requests == []


def test_head_answers_at_once_and_the_connection_stays_usable(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    """A HEAD answer has a Content-Length but no body: waiting for one would hold the call to its deadline."""
    server = start_server(OK)
    upstream = make_upstream([server.url])

    started = time.monotonic()
    head = upstream.request("HEAD", "/x", body=None, headers={}, deadline=time.monotonic() + 2)
    after = call(upstream)

    assert time.monotonic() - started < 0.5
    assert (head.status, head.body, int(head.headers["content-length"])) == (200, b"", len(b'{"ok": true}'))
    assert after.json() == {"ok": True}
    assert [r.method for r in server.requests] == ["HEAD", "GET"]
    assert server.connections == 1


def test_a_call_that_waited_past_its_deadline_sends_nothing(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    """Under gevent a call waits for a thread: the deadline counts from the request, not from that thread."""
    server = start_server(OK)
    upstream = make_upstream([server.url])
    connections = upstream.addresses[0].connections
    real = connections._perform

    def late(handle: Any, connect_timeout: float, deadline: float) -> Any:
        time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)  # every thread was busy until then
        return real(handle, connect_timeout, deadline)

    connections._perform = late  # type: ignore[method-assign]
    with pytest.raises(UpstreamTimeout):
        call(upstream, within=0.1)

    assert server.requests == []
    assert upstream.addresses[0].failures == 0  # the address did nothing wrong
    assert upstream.breaker.state == "closed"


def test_every_nth_request_asks_for_connection_close(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(OK)
    upstream = make_upstream([server.url], requests_per_connection=3)

    for _ in range(9):
        call(upstream)

    closing = [i for i, r in enumerate(server.requests) if r.headers.get("connection", "").lower() == "close"]
    assert closing == [2, 5, 8]
    assert server.connections == 3  # so pooled connections are re-made and spread over workers


# --- circuit breaker -----------------------------------------------------------------------------


def test_circuit_opens_on_upstream_503s_fails_fast_and_closes_after_a_good_trial(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(503, {"title": "not ready"}))
    upstream = make_upstream([server.url], circuit_threshold=3, circuit_open_seconds=0.4)

    assert [call(upstream).status for _ in range(3)] == [503] * 3
    assert upstream.breaker.state == "open"
    requests, connections = len(server.requests), server.connections

    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as open_circuit:
        call(upstream)
    assert time.monotonic() - started < 0.2
    assert "circuit open" in open_circuit.value.detail
    assert int(open_circuit.value.headers["Retry-After"]) >= 1
    assert (len(server.requests), server.connections) == (requests, connections)  # nothing attempted

    server.default = OK
    time.sleep(0.45)
    assert call(upstream).status == 200  # the trial call
    assert upstream.breaker.state == "closed"
    assert [call(upstream).status for _ in range(3)] == [200] * 3


def test_a_failed_trial_opens_the_circuit_again(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(503, {}))
    upstream = make_upstream([server.url], circuit_threshold=2, circuit_open_seconds=0.3)
    for _ in range(2):
        call(upstream)

    time.sleep(0.35)
    assert call(upstream).status == 503  # the trial, answered badly
    seen = len(server.requests)
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        call(upstream)
    assert len(server.requests) == seen


def test_unreachable_addresses_open_the_circuit(make_upstream: Callable[..., Upstream]) -> None:
    upstream = make_upstream([dead_url()], circuit_threshold=2, circuit_open_seconds=5.0)

    reasons = []
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable) as unavailable:
            call(upstream)
        reasons.append(unavailable.value.detail)

    assert ["circuit open" in r for r in reasons] == [False, False, True]
    assert 4 <= int(unavailable.value.headers["Retry-After"]) <= 5


def test_a_trial_that_times_out_does_not_leave_the_circuit_stuck_open(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(503, {}))
    upstream = make_upstream([server.url], circuit_threshold=2, circuit_open_seconds=0.3)
    for _ in range(2):
        call(upstream)
    time.sleep(0.35)

    server.default = Reply(200, {}, delay=2.0)
    with pytest.raises(UpstreamTimeout):
        call(upstream, within=0.2)  # the trial hangs
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        call(upstream)  # a failed trial opens the circuit again

    server.default = OK
    time.sleep(0.35)
    assert call(upstream).status == 200  # a new trial is let through, and it heals the circuit
    assert upstream.breaker.state == "closed"


def test_a_trial_whose_deadline_was_already_spent_leaves_the_next_call_free_to_try(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(503, {}))
    upstream = make_upstream([server.url], circuit_threshold=2, circuit_open_seconds=0.3)
    for _ in range(2):
        call(upstream)
    time.sleep(0.35)
    server.default = OK

    with pytest.raises(UpstreamTimeout):
        call(upstream, deadline=time.monotonic() - 0.01)  # took the trial slot, attempted nothing

    assert call(upstream).status == 200
    assert upstream.breaker.state == "closed"


def test_timeouts_count_towards_opening_the_circuit(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(200, {}, delay=2.0))
    upstream = make_upstream([server.url], circuit_threshold=2, circuit_open_seconds=5.0)

    for _ in range(2):
        with pytest.raises(UpstreamTimeout):
            call(upstream, within=0.15)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        call(upstream, within=0.15)

    assert time.monotonic() - started < 0.1  # a hanging upstream now fails fast instead of holding workers
    assert len(server.requests) == 2


def test_client_errors_do_not_open_the_circuit(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    server = start_server(Reply(422, {"errors": {}}))
    upstream = make_upstream([server.url], circuit_threshold=2)

    assert [call(upstream).status for _ in range(5)] == [422] * 5
    assert upstream.breaker.state == "closed"


def test_an_admin_call_dropped_after_sending_is_never_sent_again(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    dropper, other = start_server(Reply(drop=True)), start_server(OK)
    upstream = make_upstream([dropper.url, other.url])
    with pytest.raises(UpstreamBadResponse, match="may or may not have run"):
        upstream.request(
            "POST", "/v1/models/m/rollback", body=b"{}", headers={}, deadline=time.monotonic() + 2, idempotent=False
        )
    assert len(dropper.requests) == 1
    assert other.requests == []  # a rollback must not run twice


def test_a_model_that_is_not_ready_does_not_open_the_circuit(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    not_ready = Reply(503, {"type": "urn:modelgate:problem:model-not-ready", "title": "Service Unavailable"})
    server = start_server(not_ready)
    upstream = make_upstream([server.url], circuit_threshold=2)
    for _ in range(5):  # a client asking again and again for a broken version
        assert call(upstream).status == 503
    assert upstream.breaker.state == "closed"
    server.routes.clear()
    server.default = Reply(503, {"type": "urn:modelgate:problem:unavailable"})
    for _ in range(2):
        call(upstream)
    assert upstream.breaker.state == "open"  # the service itself failing still opens it


def test_an_upstream_answering_500_opens_the_circuit(
    make_upstream: Callable[..., Upstream], start_server: Callable[..., FakeServer]
) -> None:
    upstream = make_upstream([start_server(Reply(500, {})).url], circuit_threshold=3)
    for _ in range(3):
        call(upstream)
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        call(upstream)
