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

Cost on the request path: one vectorised NumPy step per request puts its values into a per-version array;
a thread moves the array to the Prometheus counters every ``DRIFT_FLUSH_SECONDS`` (a counter increment per
touched bin, off the request path), and once more when the worker exits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shared.metrics import FEATURE_REFERENCE, FEATURE_VALUES

log = logging.getLogger(__name__)


class FeatureBins:
    """The reference bins of one version's contract, and the values counted into them since the last flush.

    Bin labels: ``"0"`` to ``"9"`` for the deciles of a number (values below the lowest training value count
    in the first bin, above the highest in the last, as ``numpy.histogram`` drew them), the category itself
    for a category. Missing values and features without a reference (booleans, free text) are not counted.
    """

    def __init__(self, model: str, version: int, contract: Mapping[str, Any]) -> None:
        self.model = model
        self.version = version
        features = list(contract["features"])
        slots: list[tuple[str, str, float]] = []  # (feature, bin, training share) per counted bin
        numeric: list[tuple[int, str, list[float]]] = []  # (column in contract order, name, interior edges)
        categories: list[tuple[str, dict[str, int]]] = []  # (name, value -> slot)
        for column, feature in enumerate(features):
            reference = feature.get("reference") or {}
            if feature["type"] in ("number", "integer"):
                edges = [float(e) for e in reference.get("edges") or []]
                fractions = [float(f) for f in reference.get("fractions") or []]
                if len(edges) < 2 or len(fractions) != len(edges) - 1:
                    continue
                numeric.append((column, feature["name"], edges[1:-1]))
                slots.extend((feature["name"], str(b), share) for b, share in enumerate(fractions))
            elif feature["type"] == "category" and reference.get("frequencies"):
                lookup: dict[str, int] = {}
                for value, share in reference["frequencies"].items():
                    lookup[str(value)] = len(slots)
                    slots.append((feature["name"], str(value), float(share)))
                # Records carry the value the model was fitted on, which may be a padded spelling.
                for clean, fitted in (feature.get("model_values") or {}).items():
                    if clean in lookup:
                        lookup[str(fitted)] = lookup[clean]
                categories.append((feature["name"], lookup))
        self.slots = slots
        self.size = len(slots)
        self._columns = np.array([column for column, _, _ in numeric], dtype=np.intp)
        self._numeric_names = [name for _, name, _ in numeric]
        # Slot of each number's first bin, and its interior edges padded with +inf into one matrix, so one
        # comparison finds the bin of every value of every number at once.
        first_slot: dict[str, int] = {}
        for index, (feature, _, _) in enumerate(slots):
            first_slot.setdefault(feature, index)
        self._starts = np.array([first_slot[name] for name in self._numeric_names], dtype=np.intp)
        width = max((len(edges) for _, _, edges in numeric), default=0)
        self._edges = np.full((len(numeric), width), np.inf)
        for row, (_, _, edges) in enumerate(numeric):
            self._edges[row, : len(edges)] = edges
        self._categories = categories
        self._pending = np.zeros(self.size, dtype=np.int64)
        self._lock = threading.Lock()
        # Every bin's series exists from the start (at 0): a bin no live value reaches is exactly the one
        # that weighs in the index, and Prometheus can only weigh a series it has.
        self._children = [FEATURE_VALUES.labels(model, str(version), f, b) for f, b, _ in slots]
        for feature, bin_label, share in slots:
            FEATURE_REFERENCE.labels(model, str(version), feature, bin_label).set(share)

    def _numeric_slots(self, block: np.ndarray) -> np.ndarray:
        """Slot of each finite value of ``block`` (rows x this contract's numbers, in their order)."""
        if block.size == 0:
            return np.empty(0, dtype=np.intp)
        bins = (block[:, :, None] >= self._edges[None, :, :]).sum(axis=2)
        slots: np.ndarray = bins + self._starts
        finite = np.isfinite(block)
        return slots.ravel() if finite.all() else slots[finite]

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
        if self._numeric_names:
            names = self._numeric_names
            rows = [[record.get(name) for name in names] for record in records]
            block = np.array(rows, dtype=np.float64)  # None becomes NaN, which is not counted
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

    def stop(self) -> None:
        """Stop the thread and flush what is left (at worker exit)."""
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
