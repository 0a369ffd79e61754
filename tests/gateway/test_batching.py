"""Adaptive batching in the gateway: requests share trips only when it is safe, and each gets its own answer."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from gateway.batching import SOLO, Batcher, Entry
from gateway.upstreams import UpstreamUnavailable
from shared.errors import GatewayTimeout, Relayed


class Upstreams:
    """Stands in for the transform+infer trip (the HTTP part is covered by the route tests): echoes each
    instance's ``x`` as its prediction, slowly, and records every trip."""

    def __init__(self, delay: float = 0.05, fail: BaseException | None = None) -> None:
        self.delay = delay
        self.fail = fail
        self.trips: list[list[Any]] = []
        self.request_ids: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(
        self, name: str, version: int, body: bytes, request_id: str, deadline: float, request_ids: list[str]
    ) -> Any:
        instances = orjson.loads(body)["instances"]
        with self.lock:
            self.trips.append(instances)
            self.request_ids.append(request_ids)
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if any(i.get("bad") for i in instances):
            raise Relayed(422, "Unprocessable Entity", "bad instance", "validation-error", {"instances": {}})
        parameters = {
            "instance_ids": [i.get("id") for i in instances],
            "warnings": [
                {"instance": n, "field": "x", "message": "odd"} for n, i in enumerate(instances) if i["x"] < 0
            ],
        }
        result = {
            "outputs": [
                {
                    "name": "label",
                    "shape": [len(instances)],
                    "datatype": "BYTES",
                    "data": [str(i["x"]) for i in instances],
                },
                {
                    "name": "probabilities",
                    "shape": [len(instances), 2],
                    "datatype": "FP64",
                    "data": [p for i in instances for p in (i["x"] / 100, 1 - i["x"] / 100)],
                },
            ]
        }
        return parameters, result


def entry(*xs: int, bad: bool = False, deadline: float = 5.0) -> Entry:
    instances = [{"x": x, "id": f"id-{x}", **({"bad": True} if bad else {})} for x in xs]
    return Entry(instances, orjson.dumps({"instances": instances}), f"req-{xs[0]}", time.monotonic() + deadline)


def run_concurrently(batcher: Batcher, entries: list[Entry]) -> list[Any]:
    results: list[Any] = [None] * len(entries)

    def go(index: int) -> None:
        try:
            results[index] = batcher.submit("m", 1, entries[index])
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(entries))]
    for thread in threads:
        thread.start()
        time.sleep(0.002)  # arrive one after another, as requests do
    for thread in threads:
        thread.join()
    return results


def test_an_idle_lane_sends_at_once_with_the_original_body() -> None:
    upstream = Upstreams(delay=0.0)
    one = entry(7)
    started = time.monotonic()
    parameters, result = Batcher(upstream, max_rows=100, max_inflight=1).submit("m", 1, one)
    assert time.monotonic() - started < 0.05
    assert upstream.trips == [one.instances]
    assert result["outputs"][0]["data"] == ["7"]
    assert parameters["instance_ids"] == ["id-7"]


def test_concurrent_requests_share_trips_and_each_gets_its_own_rows() -> None:
    upstream = Upstreams(delay=0.05)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    entries = [entry(n, n + 100) for n in range(1, 9)]
    results = run_concurrently(batcher, entries)
    assert len(upstream.trips) < len(entries)  # some requests travelled together
    assert sorted(len(trip) for trip in upstream.trips) != [2] * len(entries)
    for n, (parameters, result) in zip(range(1, 9), results, strict=True):
        labels, probabilities = result["outputs"]
        assert labels["data"] == [str(n), str(n + 100)]
        assert labels["shape"] == [2]
        assert probabilities["shape"] == [2, 2]
        assert probabilities["data"] == [n / 100, 1 - n / 100, (n + 100) / 100, 1 - (n + 100) / 100]
        assert parameters["instance_ids"] == [f"id-{n}", f"id-{n + 100}"]


def test_warnings_are_renumbered_for_each_request() -> None:
    upstream = Upstreams(delay=0.05)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    entries = [entry(1), entry(2, -3), entry(-4), entry(5)]
    results = run_concurrently(batcher, entries)
    assert [p["warnings"] for p, _ in results] == [
        [],
        [{"instance": 1, "field": "x", "message": "odd"}],
        [{"instance": 0, "field": "x", "message": "odd"}],
        [],
    ]


def test_trips_never_exceed_max_rows() -> None:
    upstream = Upstreams(delay=0.03)
    batcher = Batcher(upstream, max_rows=5, max_inflight=1)
    results = run_concurrently(batcher, [entry(n, n, n) for n in range(1, 10)])
    assert all(len(trip) <= 5 for trip in upstream.trips)
    assert all(not isinstance(r, BaseException) for r in results)


class Concurrency(Upstreams):
    """Also records how many trips were travelling at once."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.now = 0
        self.most = 0

    def __call__(self, *args: Any) -> Any:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().__call__(*args)
        finally:
            with self.lock:
                self.now -= 1


def test_small_requests_wait_for_the_trip_in_flight_instead_of_starting_another() -> None:
    """Two trips may travel, but one-row requests never fill a batch: they ride the next trip together."""
    upstream = Concurrency(delay=0.25)  # long enough for all eight to arrive while the first travels
    batcher = Batcher(upstream, max_rows=100, max_inflight=2)
    results = run_concurrently(batcher, [entry(n) for n in range(1, 9)])
    assert all(not isinstance(r, BaseException) for r in results)
    assert upstream.most == 1
    assert len(upstream.trips) == 2  # the first alone, the other seven together
    assert sorted(len(trip) for trip in upstream.trips) == [1, 7]


def test_a_full_batch_in_the_queue_leaves_without_waiting_up_to_max_inflight() -> None:
    upstream = Concurrency(delay=0.1)
    batcher = Batcher(upstream, max_rows=4, max_inflight=2)
    results = run_concurrently(batcher, [entry(n, n + 10) for n in range(1, 8)])
    assert all(not isinstance(r, BaseException) for r in results)
    assert upstream.most == 2  # a queued full batch did not wait for the first trip
    assert all(len(trip) <= 4 for trip in upstream.trips)
    assert sum(len(trip) for trip in upstream.trips) == 14


def test_a_client_error_in_a_shared_trip_sends_everyone_alone() -> None:
    upstream = Upstreams(delay=0.05)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    entries = [entry(1), entry(2), entry(3, bad=True), entry(4), entry(5)]
    results = run_concurrently(batcher, entries)
    assert any(r is SOLO for r in results), "the bad request must have shared a trip for this test to mean anything"
    for index, outcome in enumerate(results):
        if index == 2:  # the bad one: sent back to go alone, or refused on its own
            assert outcome is SOLO or isinstance(outcome, Relayed)
        else:  # a good one: sent back to go alone, or answered; never given the bad one's error
            assert outcome is SOLO or isinstance(outcome, tuple)


def test_an_upstream_outage_reaches_every_request_of_the_trip() -> None:
    failure = UpstreamUnavailable("model", "connection refused", 1.0)
    batcher = Batcher(Upstreams(delay=0.05, fail=failure), max_rows=100, max_inflight=1)
    results = run_concurrently(batcher, [entry(n) for n in range(1, 6)])
    assert all(result is failure for result in results)


def test_a_waiting_request_gives_up_at_its_own_deadline() -> None:
    upstream = Upstreams(delay=0.6)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    slow = entry(1, deadline=5.0)
    impatient = entry(2, deadline=0.2)
    results: dict[str, Any] = {}

    def first() -> None:
        results["slow"] = batcher.submit("m", 1, slow)

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.05)  # the first trip is in flight; the second request queues behind it
    started = time.monotonic()
    with pytest.raises(GatewayTimeout):
        batcher.submit("m", 1, impatient)
    assert time.monotonic() - started < 0.4
    thread.join()
    assert results["slow"][1]["outputs"][0]["data"] == ["1"]
    assert [len(trip) for trip in upstream.trips] == [1]  # the impatient request never travelled


def test_a_shared_trip_carries_each_request_s_instances_as_sent() -> None:
    """The batch body is spliced from the requests' own bodies, whatever their spacing or key escapes."""
    upstream = Upstreams(delay=0.05)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    instances = [[{"x": 1, "id": "a[1]"}], [{"x": 2, "id": "]"}, {"x": 3, "id": "[["}], [{"x": 4, "id": "é"}]]
    bodies = [
        b'{"instances": [{"x": 1, "id": "a[1]"}]}',
        b' {\n "\\u0069nstances" :\t[ {"x":2,"id":"]"} , {"x":3,"id":"[["} ]\n}\n ',
        '{"instances":[{"x":4,"id":"é"}]}'.encode(),
    ]
    entries = [
        Entry(found, body, f"req-{n}", time.monotonic() + 5)
        for n, (found, body) in enumerate(zip(instances, bodies, strict=True))
    ]
    for body, found in zip(bodies, instances, strict=True):
        assert orjson.loads(body) == {"instances": found}  # what the route parsed before batching
    results = run_concurrently(batcher, entries)
    assert upstream.trips[1] == [i for found in instances[1:] for i in found]
    for found, (parameters, _) in zip(instances, results, strict=True):
        assert parameters["instance_ids"] == [i["id"] for i in found]


def test_a_body_with_a_repeated_key_travels_as_it_was_parsed() -> None:
    """JSON parsers keep a repeated key's last value: the batch must carry exactly those instances, or one
    client's rows would shift onto another's answers."""
    upstream = Upstreams(delay=0.05)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    bodies = [
        b'{"instances": [{"x": 1, "id": "first"}]}',
        b'{"instances": [{"x": 2, "id": "x1"}, {"x": 3, "id": "x2"}], "instances": [{"x": 4, "id": "sneaky"}]}',
        b'{"instances": [{"x": 5, "id": "victim"}]}',
        b'{"instances": [{"x": 6, "id": "same-text-as-a-value: instances"}]}',
    ]
    entries = []
    for n, body in enumerate(bodies):
        parsed = orjson.loads(body)
        assert list(parsed) == ["instances"]  # what the predict route checks before a body may share a trip
        entries.append(Entry(parsed["instances"], body, f"req-{n}", time.monotonic() + 5))

    results = run_concurrently(batcher, entries)

    assert [p["instance_ids"] for p, _ in results] == [
        ["first"],
        ["sneaky"],
        ["victim"],
        [entries[3].instances[0]["id"]],
    ]
    assert [r["outputs"][0]["data"] for _, r in results] == [["1"], ["4"], ["5"], ["6"]]


def test_lanes_are_per_model_version() -> None:
    upstream = Upstreams(delay=0.05)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    done: list[Any] = []
    threads = [threading.Thread(target=lambda v=v: done.append(batcher.submit("m", v, entry(v)))) for v in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(trip) for trip in upstream.trips) == [1, 1, 1]


def test_every_request_id_travels_with_its_trip() -> None:
    upstream = Upstreams(delay=0.05)
    batcher = Batcher(upstream, max_rows=100, max_inflight=1)
    entries = [entry(n) for n in range(1, 7)]
    run_concurrently(batcher, entries)
    assert sorted(i for ids in upstream.request_ids for i in ids) == sorted(e.request_id for e in entries)
    for trip, ids in zip(upstream.trips, upstream.request_ids, strict=True):
        assert [f"req-{i['x']}" for i in trip] == ids


def test_a_trip_never_outlives_the_earliest_deadline_in_it() -> None:
    seen: list[float] = []

    def send(name: str, version: int, body: bytes, request_id: str, deadline: float, ids: list[str]) -> Any:
        seen.append(deadline)
        time.sleep(0.3)
        return Upstreams(delay=0.0)(name, version, body, request_id, deadline, ids)

    batcher = Batcher(send, max_rows=100, max_inflight=1)
    first, patient, hurried = entry(1, deadline=5.0), entry(2, deadline=5.0), entry(3, deadline=2.0)
    run_concurrently(batcher, [first, patient, hurried])  # the last two queue behind the first trip
    assert len(seen) == 2
    assert seen[0] == first.deadline
    assert seen[1] == hurried.deadline  # the shared trip takes the earliest deadline of its requests
