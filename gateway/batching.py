"""Adaptive batching: concurrent predict requests for one model version share one trip through the upstreams.

Each hop costs a few hundred microseconds of CPU on both ends, more than the model itself. Within a
gateway worker, requests for the same (model, version) queue in a lane. When none of the lane's batches
is travelling, the first waiting request takes everything queued (up to ``max_rows`` instances) and
carries it as one transform call and one infer call, then hands each request its own slice of the
answer. While one is travelling, requests queue for the next; a further batch (up to ``max_inflight``)
leaves before it is back only when the queue already holds a full one, which is what large requests
need. Nothing waits on a timer: an idle lane sends a request at once, and batches grow only while
earlier ones are in flight, so latency at low load is unchanged and the number of upstream calls stops
growing with load (group commit, as Triton and MLServer batch inside one server). Fewer, fuller trips
matter most when the host is busy: every trip costs CPU in three processes.

If a shared trip comes back with a client error (one request's instances broke the contract), every
request of that batch is sent again alone, so each gets exactly its own answer. Upstream outages are
reported to every request of the batch. Each request keeps its own deadline while it waits. No Flask here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.upstreams import UpstreamBadResponse
from shared.errors import GatewayTimeout, ModelgateError, Relayed
from shared.metrics import BATCH_SIZE

#: Marks a request that must be sent again on its own.
SOLO = object()

Send = Callable[[str, int, bytes, str, float, list[str]], tuple[dict[str, Any], dict[str, Any]]]


@dataclass(eq=False)
class Entry:
    """One waiting request."""

    instances: list[Any]
    raw_body: bytes
    request_id: str
    deadline: float
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    #: Set when this request is woken: its answer is in, or it must carry ``lead`` (a batch) itself.
    wake: threading.Event = field(default_factory=threading.Event)
    lead: list[Entry] | None = None


@dataclass
class Lane:
    """The queue of one (model, version) in this worker."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: list[Entry] = field(default_factory=list)
    #: Instances in ``pending``.
    rows: int = 0
    inflight: int = 0


def _instances_text(entry: Entry) -> bytes:
    """The JSON text of a request's instances, to join into a batch's body.

    A body that parsed as exactly ``{"instances": [...]}`` is cut from its own bytes (from its first ``[`` to
    its last ``]``) when the key appears once and unescaped: then the one key holds no ``[`` and nothing but
    ``}`` follows the array. Anything else (a repeated key, which JSON parsers resolve to the last one, or
    any backslash) is encoded again from what was parsed, so a batch always carries exactly the instances
    each request was checked and counted with.
    """
    raw = entry.raw_body
    if raw.count(b"instances") == 1 and b"\\" not in raw:
        return raw[raw.index(b"[") + 1 : raw.rindex(b"]")].strip()
    return orjson.dumps(entry.instances)[1:-1]


class Batcher:
    """Merges concurrent requests per model version; ``send`` does one real trip through the upstreams."""

    def __init__(self, send: Send, *, max_rows: int, max_inflight: int) -> None:
        self.send = send
        self.max_rows = max_rows
        self.max_inflight = max_inflight
        self._lanes: dict[tuple[str, int], Lane] = {}
        self._lanes_lock = threading.Lock()

    def _lane(self, key: tuple[str, int]) -> Lane:
        lane = self._lanes.get(key)
        if lane is None:
            with self._lanes_lock:
                lane = self._lanes.setdefault(key, Lane())
        return lane

    def submit(self, name: str, version: int, entry: Entry) -> Any:
        """The answer to ``entry`` as ``(parameters, infer response)`` for its rows, or SOLO.

        A request that finds a free slot carries the queue itself; the others sleep on their own event
        until a finishing carrier either hands them their answer or hands one of them the next batch.
        Only the threads concerned are woken.
        """
        lane = self._lane((name, version))
        with lane.lock:
            lane.pending.append(entry)
            lane.rows += len(entry.instances)
            batch = None
            if lane.inflight == 0 or (lane.inflight < self.max_inflight and self._full(lane)):
                lane.inflight += 1
                batch = self._take(lane)
        while True:
            if batch is not None:
                try:
                    self._carry(name, version, batch)
                finally:
                    self._pass_on(lane)
                if entry.done:
                    return self._outcome(entry)
                batch = None
            remaining = entry.deadline - time.monotonic()
            woken = remaining > 0 and entry.wake.wait(remaining)
            with lane.lock:
                entry.wake.clear()
                if entry.lead is not None:
                    batch, entry.lead = entry.lead, None
                    if time.monotonic() < entry.deadline:
                        continue
                    # Too late to carry it ourselves: hand the batch to a request in it that still has time.
                    now = time.monotonic()
                    others = [e for e in batch if e is not entry and e.deadline > now]
                    if others:
                        others[0].lead = others
                        others[0].wake.set()
                    elif lane.pending:
                        lane.pending[0].lead = self._take(lane)
                        lane.pending[0].wake.set()
                    else:
                        lane.inflight -= 1
                    raise GatewayTimeout("the request deadline passed while it waited for its batch")
                if entry.done:
                    return self._outcome(entry)
                if not woken:
                    if entry in lane.pending:
                        lane.pending.remove(entry)
                        lane.rows -= len(entry.instances)
                    raise GatewayTimeout("the request deadline passed while it waited for its batch")

    def _pass_on(self, lane: Lane) -> None:
        """After a trip: give the queued requests to one of them to carry, or free the slot."""
        with lane.lock:
            if lane.pending:
                carrier = lane.pending[0]
                carrier.lead = self._take(lane)
                carrier.wake.set()
            else:
                lane.inflight -= 1

    def _full(self, lane: Lane) -> bool:
        """Whether the queue holds at least one whole batch."""
        return lane.rows >= self.max_rows

    def _take(self, lane: Lane) -> list[Entry]:
        """Everything queued, oldest first, up to ``max_rows`` instances (always at least one request)."""
        batch: list[Entry] = []
        rows = 0
        while lane.pending and (not batch or rows + len(lane.pending[0].instances) <= self.max_rows):
            queued = lane.pending.pop(0)
            lane.rows -= len(queued.instances)
            batch.append(queued)
            rows += len(queued.instances)
        return batch

    def _carry(self, name: str, version: int, batch: list[Entry]) -> None:
        BATCH_SIZE.observe(len(batch))
        # No request waits past its own deadline, so the trip gets the earliest of them.
        deadline = min(e.deadline for e in batch)
        if len(batch) == 1:
            body = batch[0].raw_body
        else:
            body = b'{"instances":[' + b",".join(_instances_text(e) for e in batch) + b"]}"
        try:
            # Every request's id travels with the trip, so each appears in the upstreams' logs.
            request_ids = [e.request_id for e in batch]
            parameters, result = self.send(name, version, body, batch[0].request_id, deadline, request_ids)
        except Relayed as exc:
            if len(batch) > 1 and 400 <= exc.relayed_status < 500:
                for entry in batch:
                    entry.result = SOLO
                self._finish(batch)
                return
            self._fail(batch, exc)
            return
        except ModelgateError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 - whatever broke, every waiter must be woken with it
            self._fail(batch, exc)
            return
        try:
            self._split(batch, parameters, result)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self._fail(batch, UpstreamBadResponse(f"an upstream answer could not be split: {type(exc).__name__}"))
            return
        self._finish(batch)

    def _split(self, batch: list[Entry], parameters: dict[str, Any], result: dict[str, Any]) -> None:
        if len(batch) == 1:
            batch[0].result = (parameters, result)
            return
        ids = parameters.get("instance_ids") or []
        warnings = [w for w in parameters.get("warnings") or [] if isinstance(w, dict)]
        start = 0
        for entry in batch:
            stop = start + len(entry.instances)
            outputs = []
            for tensor in result["outputs"]:
                width = 1
                for dim in tensor["shape"][1:]:
                    width *= int(dim)
                sliced = dict(
                    tensor,
                    shape=[stop - start, *tensor["shape"][1:]],
                    data=tensor["data"][start * width : stop * width],
                )
                outputs.append(sliced)
            own = dict(parameters)
            own["instance_ids"] = ids[start:stop]
            own["warnings"] = [
                dict(w, instance=int(w["instance"]) - start)
                for w in warnings
                if start <= int(w.get("instance", -1)) < stop
            ]
            entry.result = (own, dict(result, outputs=outputs))
            start = stop

    def _fail(self, batch: list[Entry], error: BaseException) -> None:
        for entry in batch:
            entry.error = error
        self._finish(batch)

    def _finish(self, batch: list[Entry]) -> None:
        for entry in batch:
            entry.done = True
            entry.wake.set()

    @staticmethod
    def _outcome(entry: Entry) -> Any:
        if entry.error is not None:
            raise entry.error
        return entry.result
