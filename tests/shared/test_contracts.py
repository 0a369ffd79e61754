"""The feature contract learned from a training frame, and its fingerprint (the skew guard)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.contracts import MAX_CATEGORIES, REFERENCE_BINS, feature_names, fingerprint, learn_contract


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "bill_mm": [39.1, np.nan, 40.3, 36.7, 39.3, 38.9, 39.2, 34.1, 42.0, 37.8],
            "year": [2007, 2007, 2008, 2008, 2008, 2009, 2009, 2009, 2009, 2007],
            "male": [True, False, True, True, False, False, True, False, True, False],
            "island": [
                " Torgersen",
                "Biscoe ",
                "Dream",
                "Biscoe",
                " Dream ",
                "Biscoe",
                None,
                "Torgersen",
                "Biscoe",
                "Dream",
            ],
        }
    )


def by_name(contract: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {feature["name"]: feature for feature in contract["features"]}


def test_types_nullability_and_order(frame: pd.DataFrame) -> None:
    contract = learn_contract(frame)
    assert feature_names(contract) == ["bill_mm", "year", "male", "island"]
    features = by_name(contract)
    assert {name: f["type"] for name, f in features.items()} == {
        "bill_mm": "number",
        "year": "integer",
        "male": "boolean",
        "island": "category",
    }
    assert {name: f["nullable"] for name, f in features.items()} == {
        "bill_mm": True,
        "year": False,
        "male": False,
        "island": True,
    }
    assert all(f["required"] is True for f in features.values())


def test_categories_are_stripped_sorted_and_distinct(frame: pd.DataFrame) -> None:
    island = by_name(learn_contract(frame))["island"]
    assert island["categories"] == ["Biscoe", "Dream", "Torgersen"]
    frequencies = island["reference"]["frequencies"]
    assert list(frequencies) == island["categories"]
    assert frequencies == pytest.approx({"Biscoe": 4 / 9, "Dream": 3 / 9, "Torgersen": 2 / 9}, abs=1e-6)
    assert sum(frequencies.values()) == pytest.approx(1.0, abs=1e-5)
    assert "range" not in island


def test_numeric_range_ignores_missing_values(frame: pd.DataFrame) -> None:
    features = by_name(learn_contract(frame))
    assert features["bill_mm"]["range"] == {"min": 34.1, "max": 42.0}
    assert features["year"]["range"] == {"min": 2007, "max": 2009}
    assert "range" not in features["male"]
    assert "reference" not in features["male"]
    assert "categories" not in features["bill_mm"]


@pytest.mark.parametrize("column", ["bill_mm", "year"])
def test_numeric_reference_is_a_distribution_over_the_range(frame: pd.DataFrame, column: str) -> None:
    feature = by_name(learn_contract(frame))[column]
    reference = feature["reference"]
    edges, fractions = reference["edges"], reference["fractions"]
    assert len(fractions) == len(edges) - 1
    assert len(fractions) <= REFERENCE_BINS
    assert edges == sorted(edges)
    assert edges[0] == feature["range"]["min"]
    assert edges[-1] == feature["range"]["max"]
    assert all(f >= 0 for f in fractions)
    assert sum(fractions) == pytest.approx(1.0, abs=1e-5)


def test_reference_deciles_follow_the_data() -> None:
    values = pd.Series(np.arange(1000, dtype=float))
    reference = by_name(learn_contract(pd.DataFrame({"x": values})))["x"]["reference"]
    assert len(reference["edges"]) == REFERENCE_BINS + 1
    assert reference["fractions"] == pytest.approx([0.1] * REFERENCE_BINS, abs=1e-3)


def test_constant_and_empty_numeric_columns() -> None:
    frame = pd.DataFrame({"const": [3.5, 3.5, 3.5], "empty": [np.nan, np.nan, np.nan]})
    features = by_name(learn_contract(frame))
    assert features["const"]["reference"] == {"edges": [3.5, 3.5], "fractions": [1.0]}
    assert features["const"]["range"] == {"min": 3.5, "max": 3.5}
    assert features["empty"]["type"] == "number"
    assert features["empty"]["nullable"] is True
    assert "range" not in features["empty"]


def test_many_distinct_strings_are_free_text() -> None:
    frame = pd.DataFrame({"comment": [f"note {i}" for i in range(MAX_CATEGORIES + 1)]})
    feature = by_name(learn_contract(frame))["comment"]
    assert feature["type"] == "string"
    assert "categories" not in feature
    at_limit = by_name(learn_contract(frame.iloc[:MAX_CATEGORIES]))["comment"]
    assert at_limit["type"] == "category"
    assert len(at_limit["categories"]) == MAX_CATEGORIES


def test_the_contract_is_plain_json(frame: pd.DataFrame) -> None:
    contract = learn_contract(frame)
    assert json.loads(json.dumps(contract, allow_nan=False)) == contract


def test_fingerprint_is_stable(frame: pd.DataFrame) -> None:
    first = fingerprint(learn_contract(frame))
    assert fingerprint(learn_contract(frame.copy())) == first
    # As stored in (and read back from) a version's metadata.json.
    assert fingerprint(json.loads(json.dumps(learn_contract(frame)))) == first
    assert len(first) == 64
    assert int(first, 16) >= 0


def _with(frame: pd.DataFrame, **columns: Any) -> pd.DataFrame:
    return frame.assign(**columns)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda f: _with(f, island=f["island"].replace("Dream", "Gull")), id="new-category"),
        pytest.param(
            lambda f: _with(f, island=f["island"].str.strip().replace("Torgersen", "Biscoe")), id="lost-category"
        ),
        pytest.param(lambda f: _with(f, year=f["year"].astype(float)), id="integer-to-number"),
        pytest.param(lambda f: _with(f, male=f["male"].astype(int)), id="boolean-to-integer"),
        pytest.param(lambda f: _with(f, bill_mm=f["bill_mm"].fillna(40.0)), id="no-longer-nullable"),
        pytest.param(lambda f: f.rename(columns={"year": "years"}), id="renamed"),
        pytest.param(lambda f: f[["year", "bill_mm", "male", "island"]], id="reordered"),
        pytest.param(lambda f: f.drop(columns="male"), id="dropped"),
    ],
)
def test_fingerprint_changes_with_what_the_model_receives(frame: pd.DataFrame, change: Any) -> None:
    assert fingerprint(learn_contract(change(frame))) != fingerprint(learn_contract(frame))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda f: _with(f, bill_mm=f["bill_mm"] * 1.5), id="numeric-values-shift"),
        pytest.param(lambda f: _with(f, year=f["year"] + 10), id="integer-range-moves"),
        pytest.param(
            lambda f: _with(f, island=["Biscoe"] * 7 + ["Dream", "Torgersen", None]), id="category-frequencies"
        ),
    ],
)
def test_fingerprint_ignores_the_reference_distribution(frame: pd.DataFrame, change: Any) -> None:
    changed = learn_contract(change(frame))
    original = learn_contract(frame)
    assert changed != original  # the distribution (or range) did change ...
    assert fingerprint(changed) == fingerprint(original)  # ... but not what the model receives


def test_a_boolean_column_with_missing_values_stays_boolean() -> None:
    import pandas as pd

    from shared.contracts import learn_feature

    entry = learn_feature("flag", pd.Series([True, None, False], dtype=object))
    assert entry["type"] == "boolean"
    assert entry["nullable"] is True


def test_padded_training_values_are_remembered_for_the_model() -> None:
    from shared.contracts import learn_feature, whitespace_clashes

    padded = learn_feature("island", pd.Series([" Torgersen ", " Torgersen ", "Dream"]))
    assert padded["categories"] == ["Dream", "Torgersen"]
    assert padded["model_values"] == {"Torgersen": " Torgersen "}
    tie = learn_feature("island", pd.Series([" Dream", "Dream", "Biscoe "]))
    assert tie["model_values"] == {"Biscoe": "Biscoe "}  # "Dream" is spelled clean as often as not
    assert "model_values" not in learn_feature("island", pd.Series(["Dream", "Biscoe"]))
    frame = pd.DataFrame({"island": [" Dream", "Dream"], "sex": ["male", "female"], "x": [1.0, 2.0]})
    assert whitespace_clashes(frame) == ["island"]
