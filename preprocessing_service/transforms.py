"""The model's own fitted transforms, compiled to NumPy so one row costs microseconds, not a DataFrame.

scikit-learn's ``ColumnTransformer`` needs a pandas frame (about 370 µs to build for one row) and checks
its input on every call. For the transformers models use most (``Pipeline``, ``ColumnTransformer``,
``SimpleImputer``, ``StandardScaler``, ``MinMaxScaler``, ``OneHotEncoder``, ``passthrough``/``drop``)
this module reads the fitted parameters once and replays the same arithmetic on plain arrays. A
compiled transform is used only after it reproduced scikit-learn's own output on the version's signed
held-out sample; anything unsupported, or any disagreement, falls back to scikit-learn itself.
Hand-written because no library does this for NumPy (sklearn-onnx targets a different runtime, and an
ONNX session per transform would cost more than the arithmetic here). No Flask here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.pipeline import records_frame, to_dense_float

log = logging.getLogger(__name__)

Step = Callable[[np.ndarray], np.ndarray]
#: Largest difference allowed between a compiled transform and scikit-learn on the parity sample.
TRANSFORM_TOLERANCE = 1e-9


class Unsupported(Exception):
    """The transformer (or one of its parameters) has no compiled form; scikit-learn will run it."""


class UnknownCategory(ValueError):
    """A category the fitted encoder never saw, with ``handle_unknown='error'``."""


def _identity(block: np.ndarray) -> np.ndarray:
    return block


def _as_float(block: np.ndarray) -> np.ndarray:
    if block.dtype == np.float64:
        return block
    return np.asarray(np.where(_missing(block), np.nan, block), dtype=np.float64)


def _missing(block: np.ndarray) -> np.ndarray:
    if block.dtype.kind == "f":
        return np.asarray(np.isnan(block), dtype=bool)
    flat = (value is None or (isinstance(value, float) and value != value) for value in block.ravel().tolist())
    return np.fromiter(flat, dtype=bool, count=block.size).reshape(block.shape)


def _imputer(est: Any) -> Step:
    if getattr(est, "add_indicator", False):
        raise Unsupported("SimpleImputer(add_indicator=True)")
    missing_values = est.missing_values
    if not (missing_values is None or (isinstance(missing_values, float) and missing_values != missing_values)):
        raise Unsupported(f"SimpleImputer(missing_values={missing_values!r})")
    statistics = np.asarray(est.statistics_)
    if statistics.dtype.kind in "fiu":
        if np.isnan(statistics.astype(np.float64)).any():
            raise Unsupported("SimpleImputer dropped an all-missing column")
        fill = statistics.astype(np.float64)

        def numeric(block: np.ndarray) -> np.ndarray:
            values = _as_float(block).copy()
            rows, cols = np.nonzero(np.isnan(values))
            values[rows, cols] = fill[cols]
            return values

        return numeric
    fill_obj = statistics.astype(object)

    def categorical(block: np.ndarray) -> np.ndarray:
        values = block.astype(object, copy=True)
        rows, cols = np.nonzero(_missing(values))
        values[rows, cols] = fill_obj[cols]
        return values

    return categorical


def _standard_scaler(est: Any) -> Step:
    mean = np.asarray(est.mean_, dtype=np.float64) if est.with_mean and est.mean_ is not None else None
    scale = np.asarray(est.scale_, dtype=np.float64) if est.with_std and est.scale_ is not None else None

    def scaled(block: np.ndarray) -> np.ndarray:
        values = _as_float(block)
        if mean is not None:
            values = values - mean
        if scale is not None:
            values = values / scale
        return values

    return scaled


def _minmax_scaler(est: Any) -> Step:
    scale = np.asarray(est.scale_, dtype=np.float64)
    minimum = np.asarray(est.min_, dtype=np.float64)
    low, high = est.feature_range
    clip = bool(getattr(est, "clip", False))

    def scaled(block: np.ndarray) -> np.ndarray:
        values = _as_float(block) * scale + minimum
        return np.clip(values, low, high) if clip else values

    return scaled


def _one_hot(est: Any) -> Step:
    if getattr(est, "drop_idx_", None) is not None:
        raise Unsupported("OneHotEncoder(drop=...)")
    if getattr(est, "_infrequent_enabled", False):
        raise Unsupported("OneHotEncoder with infrequent categories")
    categories = [np.asarray(c, dtype=object) for c in est.categories_]
    for cats in categories:
        if any(c is None or (isinstance(c, float) and c != c) for c in cats):
            raise Unsupported("OneHotEncoder with a missing-value category")
    ignore = est.handle_unknown != "error"
    lookup = [{value: index for index, value in enumerate(cats.tolist())} for cats in categories]
    width = sum(len(c) for c in categories)
    offsets = np.cumsum([0] + [len(c) for c in categories[:-1]])

    def encoded(block: np.ndarray) -> np.ndarray:
        out = np.zeros((block.shape[0], width), dtype=np.float64)
        for column, (table, offset) in enumerate(zip(lookup, offsets, strict=True)):
            for row, value in enumerate(block[:, column].tolist()):
                index = table.get(value)
                if index is None:
                    if not ignore:
                        raise UnknownCategory(f"category {value!r} was not seen when the model was trained")
                    continue
                out[row, offset + index] = 1.0
        return out

    return encoded


def _column_indices(columns: Any, names: list[str]) -> list[int]:
    if isinstance(columns, slice):
        return list(range(len(names)))[columns]
    items = list(np.atleast_1d(columns).tolist()) if not isinstance(columns, list) else columns
    if all(isinstance(c, bool) for c in items) and len(items) == len(names):
        return [i for i, keep in enumerate(items) if keep]
    indices = []
    for column in items:
        if isinstance(column, str):
            if column not in names:
                raise Unsupported(f"column {column!r} is not an input feature")
            indices.append(names.index(column))
        elif isinstance(column, int):
            indices.append(column)
        else:
            raise Unsupported(f"column selector {column!r}")
    return indices


def _column_transformer(est: Any, names: list[str]) -> Step:
    if est.transformer_weights:
        raise Unsupported("ColumnTransformer(transformer_weights=...)")
    parts: list[tuple[list[int], Step]] = []
    for _name, transformer, columns in est.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        indices = _column_indices(columns, names)
        if not indices:
            continue
        sub_names = [names[i] for i in indices]
        parts.append((indices, compile_step(transformer, sub_names)))

    def combined(block: np.ndarray) -> np.ndarray:
        outputs = [_as_float(step(block[:, indices])) for indices, step in parts]
        return np.hstack(outputs) if outputs else np.empty((block.shape[0], 0))

    return combined


def _names_out(est: Any, names: list[str]) -> list[str]:
    """The output columns of a fitted step, so the next step of a Pipeline selects the right ones."""
    try:
        return [str(name) for name in est.get_feature_names_out(names)]
    except (AttributeError, ValueError, TypeError) as exc:
        raise Unsupported(f"cannot follow the columns through {type(est).__name__}") from exc


def compile_step(est: Any, names: list[str]) -> Step:
    """A NumPy function equal to ``est.transform`` on a 2-D block whose columns are ``names``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

    if isinstance(est, str):
        if est == "passthrough":
            return _identity
        raise Unsupported(f"transformer {est!r}")
    if type(est) is FunctionTransformer and est.func is None and not est.validate:
        # What a fitted ColumnTransformer holds for 'passthrough' (its entries and remainder="passthrough").
        return _identity
    if type(est) is Pipeline:
        active = [step for _, step in est.steps if step not in (None, "passthrough")]
        steps: list[Step] = []
        for position, fitted in enumerate(active):
            steps.append(compile_step(fitted, names))
            if position < len(active) - 1:
                # A later step (a ColumnTransformer) selects among this step's output columns, not the input's.
                names = _names_out(fitted, names)

        def chained(block: np.ndarray) -> np.ndarray:
            for step in steps:
                block = step(block)
            return block

        return chained
    if type(est) is ColumnTransformer:
        return _column_transformer(est, names)
    if type(est) is SimpleImputer:
        return _imputer(est)
    if type(est) is StandardScaler:
        return _standard_scaler(est)
    if type(est) is MinMaxScaler:
        return _minmax_scaler(est)
    if type(est) is OneHotEncoder:
        return _one_hot(est)
    raise Unsupported(type(est).__name__)


class Transform:
    """Raw records -> the final estimator's input matrix, compiled where proven equal, else scikit-learn."""

    def __init__(self, transformer: Any | None, contract: dict[str, Any], input_format: str, compile: bool = True):
        self.transformer = transformer
        self.contract = contract
        self.input_format = input_format
        self.names = [f["name"] for f in contract["features"]]
        self._numeric = [f["type"] in ("number", "integer") for f in contract["features"]]
        self.all_numeric = all(self._numeric)
        self.compiled: Step | None = None
        self.note = "identity" if transformer is None else "scikit-learn"
        if transformer is not None and compile:
            try:
                self.compiled = compile_step(transformer, self.names)
                self.note = "compiled"
            except Unsupported as exc:
                self.note = f"scikit-learn (not compiled: {exc})"

    @property
    def kind(self) -> str:
        """``compiled``, ``sklearn`` or ``identity``: what runs per request."""
        if self.transformer is None:
            return "identity"
        return "compiled" if self.compiled is not None else "sklearn"

    def block(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Records as a 2-D array in contract order: float when every feature is numeric, else object."""
        if self.all_numeric:
            out = np.empty((len(records), len(self.names)), dtype=np.float64)
            for row, record in enumerate(records):
                for column, name in enumerate(self.names):
                    value = record.get(name)
                    out[row, column] = np.nan if value is None else value
            return out
        obj = np.empty((len(records), len(self.names)), dtype=object)
        for row, record in enumerate(records):
            for column, name in enumerate(self.names):
                value = record.get(name)
                obj[row, column] = (np.nan if value is None else float(value)) if self._numeric[column] else value
        return obj

    def sklearn(self, records: list[dict[str, Any]]) -> np.ndarray:
        """scikit-learn's own transform (builds a pandas frame: the slow, reference path)."""
        frame = records_frame(records, self.contract)
        data: Any = frame if self.input_format == "dataframe" else frame.to_numpy(dtype=np.float64)
        if self.transformer is None:
            return to_dense_float(data)
        return to_dense_float(self.transformer.transform(data))

    def __call__(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Transform validated records; the compiled path when there is one."""
        if not records:
            return np.empty((0, 0))
        if self.transformer is None:
            return to_dense_float(self.block(records))
        if self.compiled is not None:
            return np.ascontiguousarray(_as_float(self.compiled(self.block(records))))
        return self.sklearn(records)

    def from_matrix(self, raw: np.ndarray) -> np.ndarray:
        """Transform a float matrix of raw features in contract order (all-numeric contracts only)."""
        if self.transformer is None:
            return np.ascontiguousarray(raw)
        if self.compiled is None:
            raise Unsupported("no compiled transform")
        return np.ascontiguousarray(_as_float(self.compiled(raw)))

    def verify(self, sample: list[dict[str, Any]]) -> None:
        """Keep the compiled path only if it equals scikit-learn on ``sample``; otherwise fall back."""
        if self.compiled is None or not sample:
            return
        try:
            reference = self.sklearn(sample)
            candidate = _as_float(self.compiled(self.block(sample)))
            if candidate.shape != reference.shape or not np.allclose(
                candidate, reference, rtol=0, atol=TRANSFORM_TOLERANCE, equal_nan=True
            ):
                raise Unsupported("differs from scikit-learn on the held-out sample")
        except (Unsupported, ValueError, TypeError, IndexError) as exc:
            self.compiled = None
            self.note = f"scikit-learn (compiled form refused: {exc})"
            log.warning("compiled transform refused", extra={"reason": str(exc)})
