"""Live feature distributions beside the training reference: the counts drift detection is computed from.

A version's contract carries the training distribution of each number (decile bins, ``reference.edges``) and
each category (``reference.frequencies``). The preprocessing service counts every value it accepts into the
same bins, as ``modelgate_feature_values_total{model, version, feature, bin}``, and exports the training
shares as ``modelgate_feature_reference_fraction``. Prometheus turns the two into the population stability
index, ``modelgate_feature_drift_psi``, over a sliding hour (a recording rule in
``compose/prometheus/rules.yml``).

Why the index is not computed here: each gunicorn worker, and each replica, sees only its share of the
traffic. Counters add up exactly across all of them; an index computed per process would not, and a
window kept in Redis would put a round trip on every request for a number Prometheus already has the
means to compute.

Cost on the request path: a few vectorised NumPy steps put a request's values into a per-version array
(10 to 20 us for one row, 35 to 70 us for 100, measured on the demo models); a thread moves the array to the
Prometheus counters every ``DRIFT_FLUSH_SECONDS`` (a counter increment per touched bin, off the request
path), and once more when the worker exits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shared.metrics import FEATURE_REFERENCE, FEATURE_VALUES

log = logging.getLogger(__name__)


#: Up to this many rows, one broadcast comparison bins every number at once; above it, a binary search per
#: column is cheaper (the comparison grows with rows x features x bins).
BROADCAST_ROWS = 32
#: The bin of a number whose training values were few, for a live value that was not among them.
OTHER = "other"


def _value_label(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))


class FeatureBins:
    """The reference bins of one version's contract, and the values counted into them since the last flush.

    Bin labels: ``"0"`` to ``"9"`` for the deciles of a number (values below the lowest training value count
    in the first bin, above the highest in the last, as ``numpy.histogram`` drew them); the value itself for a
    number with few training values (``"1"``, ``"0.5"``), and ``"other"`` for a value training never had;
    the category itself for a category. Missing values and features without a reference (booleans, free
    text) are not counted.
    """

    def __init__(self, model: str, version: int, contract: Mapping[str, Any]) -> None:
        self.model = model
        self.version = version
        slots: list[tuple[str, str, float]] = []  # (feature, bin, training share) per counted bin
        columns: list[int] = []  # contract column of each counted number, in order
        names: list[str] = []
        binned: list[tuple[int, int, np.ndarray]] = []  # (number index, first slot, interior edges)
        listed: list[tuple[int, int, np.ndarray, int]] = []  # (number index, first slot, values, other slot)
        categories: list[tuple[str, dict[str, int]]] = []  # (name, value -> slot)
        for column, feature in enumerate(contract["features"]):
            reference = feature.get("reference") or {}
            name = feature["name"]
            fractions = [float(f) for f in reference.get("fractions") or []]
            if feature["type"] in ("number", "integer") and reference.get("values"):
                values = [float(v) for v in reference["values"]]
                if len(values) != len(fractions):
                    continue
                listed.append((len(names), len(slots), np.array(values), len(slots) + len(values)))
                integer = feature["type"] == "integer"
                slots.extend(
                    (name, _value_label(v, integer), share) for v, share in zip(values, fractions, strict=True)
                )
                slots.append((name, OTHER, 0.0))
            elif feature["type"] in ("number", "integer"):
                edges = [float(e) for e in reference.get("edges") or []]
                if len(edges) < 2 or len(fractions) != len(edges) - 1:
                    continue
                binned.append((len(names), len(slots), np.array(edges[1:-1])))
                slots.extend((name, str(b), share) for b, share in enumerate(fractions))
            elif feature["type"] == "category" and reference.get("frequencies"):
                lookup: dict[str, int] = {}
                for value, share in reference["frequencies"].items():
                    lookup[str(value)] = len(slots)
                    slots.append((name, str(value), float(share)))
                # Records carry the value the model was fitted on, which may be a padded spelling.
                for clean, fitted in (feature.get("model_values") or {}).items():
                    if clean in lookup:
                        lookup[str(fitted)] = lookup[clean]
                categories.append((name, lookup))
                continue
            else:
                continue
            columns.append(column)
            names.append(name)
        self.slots = slots
        self.size = len(slots)
        self._columns = np.array(columns, dtype=np.intp)
        self._numeric_names = names
        self._categories = categories
        # Decile numbers: interior edges, one row each, padded with +inf (never reached) for the broadcast.
        self._binned = [interior for _, _, interior in binned]
        self._binned_at = np.array([at for at, _, _ in binned], dtype=np.intp)
        self._binned_starts = np.array([start for _, start, _ in binned], dtype=np.intp)
        self._edges = np.full((len(binned), max((e.size for e in self._binned), default=0)), np.inf)
        for row, interior in enumerate(self._binned):
            self._edges[row, : interior.size] = interior
        # Numbers with listed values: the values, one row each, padded with +inf one column beyond the
        # longest, so the position a value would take is always a valid index.
        self._listed = [known for _, _, known, _ in listed]
        self._listed_at = np.array([at for at, _, _, _ in listed], dtype=np.intp)
        self._listed_starts = np.array([start for _, start, _, _ in listed], dtype=np.intp)
        self._listed_other = np.array([other for _, _, _, other in listed], dtype=np.intp)
        self._values = np.full((len(listed), max((v.size for v in self._listed), default=0) + 1), np.inf)
        for row, known in enumerate(self._listed):
            self._values[row, : known.size] = known
        self._rows = np.arange(len(listed))
        self._pending = np.zeros(self.size, dtype=np.int64)
        self._lock = threading.Lock()
        # Every bin's series exists from the start (at 0): a bin no live value reaches is exactly the one
        # that weighs in the index, and Prometheus can only weigh a series it has.
        self._children = [FEATURE_VALUES.labels(model, str(version), f, b) for f, b, _ in slots]
        for feature_name, bin_label, share in slots:
            FEATURE_REFERENCE.labels(model, str(version), feature_name, bin_label).set(share)

    def _numeric_slots(self, block: np.ndarray) -> np.ndarray:
        """Slot of each finite value of ``block`` (rows x this contract's counted numbers, in their order)."""
        if block.size == 0:
            return np.empty(0, dtype=np.intp)
        broadcast = block.shape[0] <= BROADCAST_ROWS
        found = []
        if self._binned:
            part = block[:, self._binned_at]
            if broadcast:
                bins = (part[:, :, None] >= self._edges[None, :, :]).sum(axis=2)
            else:
                bins = np.column_stack(
                    [np.searchsorted(edges, part[:, i], side="right") for i, edges in enumerate(self._binned)]
                )
            found.append((part, bins + self._binned_starts))
        if self._listed:
            part = block[:, self._listed_at]
            if broadcast:
                at = (part[:, :, None] > self._values[None, :, :]).sum(axis=2)
            else:
                at = np.column_stack([np.searchsorted(values, part[:, i]) for i, values in enumerate(self._listed)])
            known = self._values[self._rows, at] == part
            found.append((part, np.where(known, at + self._listed_starts, self._listed_other)))
        slots = []
        for part, part_slots in found:
            finite = np.isfinite(part)
            slots.append(part_slots.ravel() if finite.all() else part_slots[finite])
        return np.concatenate(slots) if len(slots) > 1 else slots[0]

    def observe_matrix(self, raw: np.ndarray) -> None:
        """Count the rows of a validated float matrix whose columns are the contract's features in order."""
        if not self.size or raw.shape[0] == 0:
            return
        self._add(self._numeric_slots(raw[:, self._columns]))

    def observe_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Count validated records (feature name -> value, as the schema loaded them)."""
        if not self.size or not records:
            return
        found = []
        names = self._numeric_names
        if names and len(records) <= BROADCAST_ROWS:  # one array from rows: cheapest for a few wide rows
            block = np.array([[record.get(name) for name in names] for record in records], dtype=np.float64)
            found.append(self._numeric_slots(block))  # None became NaN, which is not counted
        elif names:  # a column at a time: cheapest for many rows
            block = np.empty((len(records), len(names)))
            for index, name in enumerate(names):
                block[:, index] = np.array([record.get(name) for record in records], dtype=np.float64)
            found.append(self._numeric_slots(block))
        for name, lookup in self._categories:
            slots = [lookup.get(record.get(name)) for record in records]  # type: ignore[arg-type]
            found.append(np.array([s for s in slots if s is not None], dtype=np.intp))
        self._add(np.concatenate(found) if len(found) > 1 else found[0])

    def _add(self, slots: np.ndarray) -> None:
        if slots.size:
            counts = np.bincount(slots, minlength=self.size)
            with self._lock:
                self._pending += counts

    def pending(self) -> np.ndarray:
        """A copy of the counts not yet flushed (for tests and the exit flush)."""
        with self._lock:
            return self._pending.copy()

    def flush(self) -> int:
        """Move the counted values to the Prometheus counters; returns how many values moved."""
        with self._lock:
            pending = self._pending
            if not pending.any():
                return 0
            self._pending = np.zeros(self.size, dtype=np.int64)
        for slot in np.flatnonzero(pending):
            self._children[slot].inc(int(pending[slot]))
        return int(pending.sum())


class DriftRecorder:
    """The ``FeatureBins`` of every version this process has loaded, flushed by one background thread.

    A version dropped from the preprocessors' cache keeps its bins here (a few hundred integers), so a
    reload counts on where it left off and nothing counted is lost.
    """

    def __init__(self, flush_seconds: float) -> None:
        self.flush_seconds = flush_seconds
        self._bins: dict[tuple[str, int], FeatureBins] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def bins(self, model: str, version: int, contract: Mapping[str, Any]) -> FeatureBins:
        """The bins of one version, made on first use (and the flush thread started, in this process)."""
        key = (model, version)
        with self._lock:
            found = self._bins.get(key)
            if found is None:
                found = self._bins[key] = FeatureBins(model, version, contract)
            if self._thread is None:  # started in the worker that counts, after gunicorn's fork
                self._thread = threading.Thread(target=self._run, name="drift-flush", daemon=True)
                self._thread.start()
            return found

    def flush(self) -> int:
        """Flush every version now; returns how many values moved."""
        with self._lock:
            every = list(self._bins.values())
        moved = 0
        for bins in every:
            try:
                moved += bins.flush()
            except Exception:  # a metrics file error must not stop the other versions
                log.exception("drift counts could not be flushed", extra={"model": bins.model, "version": bins.version})
        return moved

    def stop(self, wait: float = 5.0) -> None:
        """Stop the thread, let a flush it has begun end (up to ``wait`` seconds), and flush what is left.

        At worker exit: the thread may hold counts it took but has not yet written; returning before it
        has would let the process end with them.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=wait)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
