"""The feature contract: what a model version expects of each raw input feature, learned from training data.

A contract is plain JSON, stored in the version's signed ``metadata.json``::

    {"features": [{"name": "bill_length_mm", "type": "number", "required": true, "nullable": true,
                   "range": {"min": 32.1, "max": 59.6},
                   "reference": {"edges": [...], "fractions": [...]}}, ...]}

Types: ``number`` (float), ``integer``, ``boolean``, ``category`` (strings from a closed set, listed in
``categories``) and ``string`` (free text). ``reference`` is the training distribution (decile ``edges``
for numbers, or their ``values`` when there are few; ``frequencies`` for categories) that drift detection
compares live traffic against. A category whose training values carried stray whitespace lists them in
``model_values`` (clean value -> the value the model was fitted on), so the clean value a client sends
reaches the model as the model knows it. The fingerprint is a hash of everything that decides what the
model receives, so a request built for one contract is recognised as such by a model version with another
(the training/serving skew guard).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: A text column with at most this many distinct values is a category; more makes it free text.
MAX_CATEGORIES = 200
#: Decile bins for a numeric feature's reference distribution.
REFERENCE_BINS = 10
#: A whole-numbered feature with at most this many distinct training values (each seen at least 5 times on
#: average) gets one reference bin per value: deciles would merge values (a 0/1 feature would get a single
#: bin). Not fractional ones: a value between two training values would count as unseen.
MAX_DISCRETE_VALUES = 20


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _numeric_reference(values: pd.Series) -> dict[str, Any]:
    """Training distribution of a number: its values and their shares if few, else decile edges and shares.

    Edges are stored at full precision, exactly as the shares were counted against them: a rounded edge
    would move every training value it passes into the next bin, and the live counts with it.
    """
    import numpy as np

    present = values.dropna()
    if present.dtype.kind == "f" and present.dtype.itemsize < 8:
        # float32 0.1 widens to 0.10000000149011612; clients send 0.1. Take each value as it prints.
        data = np.array([float(str(v)) for v in present.to_numpy(dtype=np.float32)], dtype=float)
    else:
        data = present.to_numpy(dtype=float)
    if data.size == 0:
        return {"edges": [], "fractions": []}
    distinct, counts = np.unique(data, return_counts=True)
    whole = bool(np.all(distinct == np.floor(distinct)))
    if whole and distinct.size <= MAX_DISCRETE_VALUES and data.size >= 5 * distinct.size:
        return {
            "values": [float(v) for v in distinct],
            "fractions": [round(float(c) / data.size, 6) for c in counts],
        }
    edges = np.unique(np.quantile(data, np.linspace(0.0, 1.0, REFERENCE_BINS + 1)))
    if edges.size < 2:
        return {"edges": [float(edges[0]), float(edges[0])], "fractions": [1.0]}
    counts, _ = np.histogram(data, bins=edges)
    return {
        "edges": [float(e) for e in edges],
        "fractions": [round(float(c) / data.size, 6) for c in counts],
    }


def learn_feature(name: str, values: pd.Series) -> dict[str, Any]:
    """The contract entry for one training column."""
    import numpy as np
    from pandas.api import types as ptypes

    nullable = bool(values.isna().any())
    entry: dict[str, Any] = {"name": str(name), "required": True, "nullable": nullable}
    present = values.dropna()
    if ptypes.is_bool_dtype(values.dtype) or (
        present.size > 0 and all(isinstance(v, bool | np.bool_) for v in present.tolist())
    ):
        entry["type"] = "boolean"
    elif ptypes.is_integer_dtype(values.dtype):
        entry["type"] = "integer"
    elif ptypes.is_numeric_dtype(values.dtype):
        entry["type"] = "number"
    else:
        raw = present.astype(str)
        strings = raw.str.strip()
        distinct = sorted(set(strings))
        if len(distinct) <= MAX_CATEGORIES:
            entry["type"] = "category"
            entry["categories"] = distinct
            # Training values with stray whitespace: clients send the clean value, the model gets the value
            # it was fitted on (the most frequent spelling, if several; registration refuses that case).
            spelled = raw[raw != strings]
            padded: dict[str, str] = {}
            if spelled.size:
                for clean, counts in raw.groupby(strings.to_numpy()).value_counts().groupby(level=0):
                    # Most frequent spelling; on a tie the clean one, then the first in sort order.
                    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0][1] != clean, item[0][1]))
                    value = str(ranked[0][0][1])
                    if value != clean:
                        padded[str(clean)] = value
            if padded:
                entry["model_values"] = dict(sorted(padded.items()))
            counts = strings.value_counts(normalize=True)
            entry["reference"] = {"frequencies": {k: round(float(counts[k]), 6) for k in distinct}}
        else:
            entry["type"] = "string"
        return entry
    if entry["type"] != "boolean" and present.size:
        entry["range"] = {"min": _finite(present.min()), "max": _finite(present.max())}
        entry["reference"] = _numeric_reference(values)
    return entry


def whitespace_clashes(frame: pd.DataFrame) -> list[str]:
    """Text columns where two training values differ only in surrounding whitespace (``"Dream"``, ``" Dream"``):
    the model learned them apart, but a client cannot say which one it means."""
    clashes = []
    for column in frame.columns:
        values = frame[column].dropna()
        if values.size and values.map(lambda v: isinstance(v, str)).all():
            raw = values.astype(str)
            if raw.groupby(raw.str.strip().to_numpy()).nunique().max() > 1:
                clashes.append(str(column))
    return clashes


def learn_contract(frame: pd.DataFrame) -> dict[str, Any]:
    """The feature contract of a training frame (target column already removed), in column order."""
    return {"features": [learn_feature(str(column), frame[column]) for column in frame.columns]}


def fingerprint(contract: dict[str, Any]) -> str:
    """sha256 over what decides the model's input: names, order, types, nullability and categories."""
    essential = [
        {key: feature.get(key) for key in ("name", "type", "required", "nullable", "categories", "model_values")}
        for feature in contract["features"]
    ]
    return hashlib.sha256(json.dumps(essential, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def feature_names(contract: dict[str, Any]) -> list[str]:
    """The features of a contract, in the order the model was trained with."""
    return [feature["name"] for feature in contract["features"]]
