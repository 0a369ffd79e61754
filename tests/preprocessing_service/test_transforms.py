"""Compiled NumPy transforms against scikit-learn's own fitted transformers, and the fallback to scikit-learn."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, PolynomialFeatures, StandardScaler

from model_service.training import breast_cancer, diabetes, frame_records, penguins
from preprocessing_service.transforms import TRANSFORM_TOLERANCE, Transform, UnknownCategory, compile_step
from shared.contracts import learn_contract
from shared.pipeline import to_dense_float

NAN = float("nan")

#: A small training frame with every kind of feature: number (with gaps), integer, category (with gaps), boolean.
TRAIN = pd.DataFrame(
    {
        "length": [1.5, NAN, 3.0, 4.25, 4.25, 10.0, 7.5, NAN],
        "count": [1, 2, 2, 3, 5, 8, 13, 21],
        "colour": ["red", None, "blue", "red", "green", None, "red", "blue"],
        "size": ["S", "M", "L", "M", "S", "L", "M", "S"],
        "flag": [True, False, True, True, False, False, True, False],
    }
)
ALL = list(TRAIN.columns)
NUMERIC = ["length", "count"]

#: Validated records as the service hands them over: missing values, out-of-range numbers, known categories.
ROWS: list[dict[str, Any]] = [
    {"length": None, "count": 4, "colour": None, "size": "L", "flag": True},
    {"length": 100.0, "count": 40, "colour": "green", "size": "M", "flag": False},
    {"length": -50.0, "count": 0, "colour": "blue", "size": "S", "flag": False},
    {"length": 4.25, "count": 2, "colour": "red", "size": "L", "flag": True},
]
#: The same, plus a colour the encoders never saw.
UNSEEN_ROWS: list[dict[str, Any]] = [*ROWS, {"length": 2.0, "count": 3, "colour": "purple", "size": "M", "flag": True}]


def query_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """``rows`` as a frame with the training dtypes, built independently of the code under test."""
    return pd.DataFrame(rows, columns=columns).astype(TRAIN[columns].dtypes.to_dict())


def model_input(frame: pd.DataFrame, input_format: str) -> Any:
    return frame if input_format == "dataframe" else frame.to_numpy(dtype=np.float64)


def fitted(transformer: Any, columns: list[str], input_format: str = "dataframe") -> Transform:
    """Fit ``transformer`` on ``TRAIN[columns]`` and wrap it as the service does."""
    train = TRAIN[columns]
    transformer.fit(model_input(train, input_format))
    return Transform(transformer, learn_contract(train), input_format)


def sklearn_output(transform: Transform, rows: list[dict[str, Any]]) -> np.ndarray:
    columns = transform.names
    return to_dense_float(
        transform.transformer.transform(model_input(query_frame(rows, columns), transform.input_format))
    )


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)


def assert_compiled_matches(transform: Transform, rows: list[dict[str, Any]] = ROWS) -> np.ndarray:
    assert transform.kind == "compiled", transform.note
    assert transform.note == "compiled"
    out = transform(rows)
    assert_same(out, sklearn_output(transform, rows))
    return out


# --- the demo models ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("demo", "has_missing"),
    [(breast_cancer, False), (penguins, True), (diabetes, False)],
    ids=["breast_cancer", "penguins", "diabetes"],
)
def test_demo_transforms_compile_and_equal_sklearn_on_every_training_row(
    demo: Callable[[], tuple[pd.DataFrame, str, Any]], has_missing: bool
) -> None:
    frame, target, model = demo()
    features, labels = frame.drop(columns=[target]), frame[target]
    model.fit(features, labels)
    transformer = model[:-1]
    transform = Transform(transformer, learn_contract(features), "dataframe")
    records = frame_records(features)
    assert bool(features.isna().to_numpy().any()) is has_missing

    assert transform.kind == "compiled", transform.note
    expected = to_dense_float(transformer.transform(features))
    assert_same(transform(records), expected)
    assert_same(transform.sklearn(records), expected)
    transform.verify(records[:64])
    assert transform.kind == "compiled"


# --- SimpleImputer ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("imputer", "fill"),
    [
        (SimpleImputer(strategy="mean"), float(np.nanmean(TRAIN["length"]))),
        (SimpleImputer(strategy="median"), float(np.nanmedian(TRAIN["length"]))),
        (SimpleImputer(strategy="most_frequent"), 4.25),
        (SimpleImputer(strategy="constant", fill_value=-1.0), -1.0),
    ],
    ids=["mean", "median", "most_frequent", "constant"],
)
def test_numeric_imputer(imputer: SimpleImputer, fill: float) -> None:
    out = assert_compiled_matches(fitted(imputer, NUMERIC))
    assert out[0, 0] == pytest.approx(fill, abs=1e-12)
    assert out[1:, 0].tolist() == [100.0, -50.0, 4.25]
    assert out[:, 1].tolist() == [4.0, 40.0, 0.0, 2.0]


def test_numeric_imputer_leaves_its_input_alone() -> None:
    imputer = SimpleImputer(strategy="median").fit(TRAIN[NUMERIC])
    block = np.array([[NAN, 4.0], [2.0, NAN]])
    out = compile_step(imputer, NUMERIC)(block)
    assert out.tolist() == [[4.25, 4.0], [2.0, 4.0]]
    assert np.isnan(block).tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize(
    ("imputer", "fills"),
    [
        (SimpleImputer(strategy="most_frequent"), ["red", "M"]),
        (SimpleImputer(strategy="constant", fill_value="none"), ["none", "none"]),
    ],
    ids=["most_frequent", "constant"],
)
def test_string_imputer_alone(imputer: SimpleImputer, fills: list[str]) -> None:
    columns = ["colour", "size"]
    imputer.fit(TRAIN[columns])
    step = compile_step(imputer, columns)
    rows = [{"colour": None, "size": "L"}, {"colour": "blue", "size": None}, {"colour": NAN, "size": "S"}]
    block = np.array([[row["colour"], row["size"]] for row in rows], dtype=object)
    expected = imputer.transform(pd.DataFrame(rows, columns=columns).astype("str"))

    out = step(block)
    assert out.tolist() == expected.tolist()
    assert out.tolist() == [[fills[0], "L"], ["blue", fills[1]], [fills[0], "S"]]
    assert block[0, 0] is None, "the caller's block is not modified"


@pytest.mark.parametrize(
    "imputer",
    [SimpleImputer(strategy="most_frequent"), SimpleImputer(strategy="constant", fill_value="none")],
    ids=["most_frequent", "constant"],
)
def test_string_imputer_then_encoder(imputer: SimpleImputer) -> None:
    pipeline = Pipeline([("impute", imputer), ("encode", OneHotEncoder(sparse_output=False))])
    out = assert_compiled_matches(fitted(pipeline, ["colour", "size"]))
    assert out.sum(axis=1).tolist() == [2.0] * len(ROWS)


# --- scalers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("with_mean", "with_std"), [(True, True), (False, True), (True, False), (False, False)])
def test_standard_scaler(with_mean: bool, with_std: bool) -> None:
    out = assert_compiled_matches(fitted(StandardScaler(with_mean=with_mean, with_std=with_std), NUMERIC))
    assert np.isnan(out[0, 0]), "a missing value passes through a scaler, as in scikit-learn"
    if not with_mean and not with_std:
        assert out[1:].tolist() == [[100.0, 40.0], [-50.0, 0.0], [4.25, 2.0]]


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 2)])
def test_minmax_scaler(feature_range: tuple[int, int], clip: bool) -> None:
    out = assert_compiled_matches(fitted(MinMaxScaler(feature_range=feature_range, clip=clip), NUMERIC))
    low, high = feature_range
    finite = out[np.isfinite(out)]
    if clip:
        assert finite.min() == low
        assert finite.max() == high
    else:
        assert finite.min() < low
        assert finite.max() > high
    assert out[3, 0] == pytest.approx(low + (high - low) * (4.25 - 1.5) / (10.0 - 1.5), abs=1e-12)


# --- OneHotEncoder ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse_output", [False, True])
def test_one_hot_ignore_gives_zeros_for_an_unseen_category(sparse_output: bool) -> None:
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=sparse_output)
    transform = fitted(Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]), ["colour"])
    out = assert_compiled_matches(transform, UNSEEN_ROWS)
    assert out.shape == (len(UNSEEN_ROWS), 3)
    assert out[-1].tolist() == [0.0, 0.0, 0.0]
    assert out[:-1].sum(axis=1).tolist() == [1.0] * len(ROWS)


@pytest.mark.parametrize("sparse_output", [False, True])
def test_one_hot_on_strings_integers_and_booleans(sparse_output: bool) -> None:
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=sparse_output)
    out = assert_compiled_matches(fitted(encoder, ["size", "count", "flag"]))
    categories = 3 + TRAIN["count"].nunique() + 2
    assert out.shape == (len(ROWS), categories)
    # count 4, 40 and 0 were never seen: that block is zero, the others have one 1 each
    assert out.sum(axis=1).tolist() == [2.0, 2.0, 2.0, 3.0]


def test_one_hot_error_raises_unknown_category() -> None:
    encoder = OneHotEncoder(handle_unknown="error", sparse_output=False)
    transform = fitted(Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]), ["colour"])
    assert_compiled_matches(transform, ROWS)

    with pytest.raises(UnknownCategory, match="'purple'"):
        transform(UNSEEN_ROWS)
    assert issubclass(UnknownCategory, ValueError), "the service maps ValueError to a 422"
    with pytest.raises(ValueError, match="unknown categor"):
        sklearn_output(transform, UNSEEN_ROWS)


# --- ColumnTransformer and Pipeline -------------------------------------------------------------------


def nested(sparse_output: bool = False, sparse_threshold: float = 0.3) -> ColumnTransformer:
    """The penguins shape: numbers imputed and scaled, categories imputed and encoded."""
    return ColumnTransformer(
        [
            ("numbers", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), NUMERIC),
            (
                "categories",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=sparse_output)),
                    ]
                ),
                ["colour", "size"],
            ),
        ],
        sparse_threshold=sparse_threshold,
    )


COMBINED: dict[str, tuple[Callable[[], Any], list[str], str]] = {
    "by name, remainder drop": (
        lambda: ColumnTransformer(
            [("scale", StandardScaler(), ["count"]), ("encode", OneHotEncoder(), ["size"])], remainder="drop"
        ),
        ALL,
        "dataframe",
    ),
    "by name, remainder passthrough": (
        lambda: ColumnTransformer([("impute", SimpleImputer(), ["length"])], remainder="passthrough"),
        [*NUMERIC, "flag"],
        "dataframe",
    ),
    "by name, remainder an estimator": (
        lambda: ColumnTransformer([("impute", SimpleImputer(), ["length"])], remainder=MinMaxScaler()),
        NUMERIC,
        "dataframe",
    ),
    "passthrough and drop entries": (
        lambda: ColumnTransformer(
            [
                ("keep", "passthrough", ["count", "flag"]),
                ("gone", "drop", ["size"]),
                ("scale", MinMaxScaler(), ["length"]),
            ]
        ),
        ALL,
        "dataframe",
    ),
    "boolean masks": (
        lambda: ColumnTransformer(
            [
                ("scale", StandardScaler(), np.array([False, True, False, False, False])),
                ("encode", OneHotEncoder(), [False, False, False, True, True]),
            ]
        ),
        ALL,
        "dataframe",
    ),
    "integer indices on an array": (
        lambda: ColumnTransformer([("impute", SimpleImputer(), [0]), ("scale", StandardScaler(), [1])]),
        NUMERIC,
        "array",
    ),
    "slice on an array, remainder passthrough": (
        lambda: ColumnTransformer([("scale", MinMaxScaler(), slice(1, 2))], remainder="passthrough"),
        NUMERIC,
        "array",
    ),
    "slice on a frame": (
        lambda: ColumnTransformer([("scale", StandardScaler(), slice(0, 2)), ("encode", OneHotEncoder(), slice(3, 4))]),
        ALL,
        "dataframe",
    ),
    "nested pipelines": (nested, ALL, "dataframe"),
    "sparse output": (lambda: nested(sparse_output=True, sparse_threshold=1.0), ALL, "dataframe"),
    "pipeline with passthrough and None steps": (
        lambda: Pipeline(
            [("nothing", "passthrough"), ("impute", SimpleImputer()), ("none", None), ("s", StandardScaler())]
        ),
        NUMERIC,
        "dataframe",
    ),
    "integer selection after a one-hot step": (
        lambda: Pipeline(
            [
                ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                ("pick", ColumnTransformer([("scale", StandardScaler(), [0, 6])])),
            ]
        ),
        ["count"],
        "array",
    ),
    "name selection after a reordering step": (
        lambda: Pipeline(
            [
                (
                    "reorder",
                    ColumnTransformer(
                        [("c", MinMaxScaler(), ["count"]), ("l", StandardScaler(), ["length"])],
                        verbose_feature_names_out=False,
                    ).set_output(transform="pandas"),
                ),
                ("pick", ColumnTransformer([("l", MinMaxScaler(), ["length"])])),
            ]
        ),
        NUMERIC,
        "dataframe",
    ),
}


@pytest.mark.parametrize("case", list(COMBINED))
def test_combined_transforms_compile_and_equal_sklearn(case: str) -> None:
    build, columns, input_format = COMBINED[case]
    transform = fitted(build(), columns, input_format)
    out = assert_compiled_matches(transform)
    assert out.flags.c_contiguous


def test_sparse_column_transformer_output_is_matched_densely() -> None:
    transform = fitted(nested(sparse_output=True, sparse_threshold=1.0), ALL)
    assert hasattr(transform.transformer.transform(query_frame(ROWS, ALL)), "toarray"), "scikit-learn gives sparse"
    out = assert_compiled_matches(transform)
    assert isinstance(out, np.ndarray)


def test_remainder_passthrough_keeps_the_other_columns_unchanged_at_the_end() -> None:
    transform = fitted(ColumnTransformer([("scale", MinMaxScaler(), ["count"])], remainder="passthrough"), NUMERIC)
    out = assert_compiled_matches(transform)
    np.testing.assert_allclose(out[:, 0], [(4 - 1) / 20, (40 - 1) / 20, (0 - 1) / 20, (2 - 1) / 20], rtol=0, atol=1e-12)
    assert np.isnan(out[0, 1])
    assert out[1:, 1].tolist() == [100.0, -50.0, 4.25]


# --- what falls back to scikit-learn ------------------------------------------------------------------


class SubclassedScaler(StandardScaler):
    """A subclass may override ``transform``: never compiled."""


UNSUPPORTED: dict[str, tuple[Callable[[], Any], list[str], str, str]] = {
    "PolynomialFeatures": (lambda: PolynomialFeatures(degree=2), ["count"], "array", "PolynomialFeatures"),
    "OneHotEncoder(drop='first')": (
        lambda: ColumnTransformer([("encode", OneHotEncoder(drop="first"), ["size"])], remainder="passthrough"),
        ["count", "size"],
        "dataframe",
        "OneHotEncoder(drop=...)",
    ),
    "OneHotEncoder(min_frequency=2)": (
        lambda: OneHotEncoder(min_frequency=2, handle_unknown="infrequent_if_exist"),
        ["count"],
        "dataframe",
        "infrequent",
    ),
    "OneHotEncoder over missing values": (
        lambda: OneHotEncoder(handle_unknown="ignore"),
        ["colour"],
        "dataframe",
        "missing-value category",
    ),
    "SimpleImputer(add_indicator=True)": (
        lambda: SimpleImputer(add_indicator=True),
        NUMERIC,
        "dataframe",
        "SimpleImputer(add_indicator=True)",
    ),
    "SimpleImputer(missing_values=0)": (
        lambda: SimpleImputer(missing_values=0, strategy="median"),
        ["count"],
        "dataframe",
        "missing_values=0",
    ),
    "FunctionTransformer(func)": (
        lambda: FunctionTransformer(np.log1p),
        ["count"],
        "dataframe",
        "FunctionTransformer",
    ),
    "FunctionTransformer(validate=True)": (
        lambda: FunctionTransformer(validate=True),
        ["count"],
        "array",
        "FunctionTransformer",
    ),
    "transformer_weights": (
        lambda: ColumnTransformer(
            [("scale", StandardScaler(), ["count"]), ("impute", SimpleImputer(), ["length"])],
            transformer_weights={"scale": 2.0},
        ),
        NUMERIC,
        "dataframe",
        "transformer_weights",
    ),
    "an unsupported step inside a nested pipeline": (
        lambda: ColumnTransformer(
            [("numbers", Pipeline([("impute", SimpleImputer()), ("square", PolynomialFeatures())]), NUMERIC)]
        ),
        NUMERIC,
        "dataframe",
        "PolynomialFeatures",
    ),
    "a subclass of a supported transformer": (lambda: SubclassedScaler(), NUMERIC, "dataframe", "SubclassedScaler"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_falls_back_to_sklearn(case: str) -> None:
    build, columns, input_format, reason = UNSUPPORTED[case]
    transform = fitted(build(), columns, input_format)
    assert transform.kind == "sklearn"
    assert transform.compiled is None
    assert transform.note.startswith("scikit-learn (not compiled: ")
    assert reason in transform.note
    assert_same(transform(ROWS), sklearn_output(transform, ROWS))


def test_compile_false_runs_sklearn() -> None:
    transformer = nested().fit(TRAIN)
    transform = Transform(transformer, learn_contract(TRAIN), "dataframe", compile=False)
    assert (transform.kind, transform.note) == ("sklearn", "scikit-learn")
    assert_same(transform(ROWS), sklearn_output(transform, ROWS))


def test_transformer_weights_are_applied_by_the_fallback() -> None:
    weighted = fitted(
        ColumnTransformer([("scale", StandardScaler(), ["count"])], transformer_weights={"scale": 2.0}), ["count"]
    )
    plain = fitted(ColumnTransformer([("scale", StandardScaler(), ["count"])]), ["count"])
    np.testing.assert_allclose(weighted(ROWS), 2.0 * plain(ROWS), rtol=0, atol=1e-12)


# --- verify() -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "kept"), [(0.0, True), (TRANSFORM_TOLERANCE / 10, True), (1e-6, False)])
def test_verify_keeps_only_an_agreeing_compiled_form(
    offset: float, kept: bool, caplog: pytest.LogCaptureFixture
) -> None:
    transform = fitted(nested(), ALL)
    compiled = transform.compiled
    assert compiled is not None
    transform.compiled = lambda block: compiled(block) + offset
    shifted = transform.compiled

    with caplog.at_level(logging.WARNING, logger="preprocessing_service.transforms"):
        transform.verify(frame_records(TRAIN))

    assert_same(transform(ROWS), sklearn_output(transform, ROWS) + (offset if kept else 0.0))
    if kept:
        assert transform.compiled is shifted
        assert (transform.kind, transform.note) == ("compiled", "compiled")
        assert not caplog.records
    else:
        assert transform.compiled is None
        assert transform.kind == "sklearn"
        assert (
            transform.note == "scikit-learn (compiled form refused: differs from scikit-learn on the held-out sample)"
        )
        assert [r.getMessage() for r in caplog.records] == ["compiled transform refused"]


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (lambda block: np.zeros((block.shape[0], 1)), "differs from scikit-learn"),
        (lambda block: block[:, 99], "index 99 is out of bounds"),
        (lambda block: np.asarray(block[:, 2], dtype=np.float64), "could not convert"),
    ],
    ids=["wrong shape", "IndexError", "ValueError"],
)
def test_verify_drops_a_compiled_form_that_fails(broken: Callable[[np.ndarray], np.ndarray], reason: str) -> None:
    transform = fitted(nested(), ALL)
    transform.compiled = broken
    transform.verify(ROWS)
    assert transform.kind == "sklearn"
    assert reason in transform.note
    assert_same(transform(ROWS), sklearn_output(transform, ROWS))


def test_verify_without_a_sample_or_compiled_form_changes_nothing() -> None:
    transform = fitted(nested(), ALL)

    def wrong(block: np.ndarray) -> np.ndarray:
        return np.zeros((block.shape[0], 9))

    transform.compiled = wrong
    transform.verify([])
    assert transform.compiled is wrong, "nothing to compare against: an empty sample proves nothing either way"

    fallback = fitted(PolynomialFeatures(), ["count"], "array")
    note = fallback.note
    fallback.verify(ROWS)
    assert (fallback.kind, fallback.note) == ("sklearn", note)


# --- no transformer, and no records -------------------------------------------------------------------


def test_block_is_float_when_all_numeric_else_object_with_float_numbers() -> None:
    numeric = Transform(None, learn_contract(TRAIN[["count", "length"]]), "dataframe")
    block = numeric.block([{"length": None, "count": 3}])
    assert block.dtype == np.float64
    np.testing.assert_array_equal(block, [[3.0, NAN]])

    mixed = Transform(None, learn_contract(TRAIN[["length", "colour", "count", "flag"]]), "dataframe")
    block = mixed.block([{"flag": True, "count": 3, "colour": None, "length": None}])
    assert block.dtype == object
    row = block[0].tolist()
    assert [type(value) for value in row] == [float, type(None), float, bool]
    assert np.isnan(row[0])
    assert row[1:] == [None, 3.0, True]


def test_bare_estimator_is_identity_in_contract_order() -> None:
    contract = learn_contract(TRAIN[["count", "length", "flag"]])
    transform = Transform(None, contract, "dataframe")
    records = [{"flag": True, "length": None, "count": 4}, {"length": 2.5, "count": -1, "flag": False}]

    assert (transform.kind, transform.note) == ("identity", "identity")
    out = transform(records)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[4.0, NAN, 1.0], [-1.0, 2.5, 0.0]])
    np.testing.assert_array_equal(transform.sklearn(records), out)


def test_bare_estimator_all_numeric() -> None:
    transform = Transform(None, learn_contract(TRAIN[["length", "count"]]), "array")
    out = transform([{"count": 3, "length": 1.25}])
    assert out.dtype == np.float64
    assert out.tolist() == [[1.25, 3.0]]


@pytest.mark.parametrize(
    ("transformer", "kind"),
    [(None, "identity"), (nested(), "compiled"), (PolynomialFeatures(), "sklearn")],
    ids=["identity", "compiled", "sklearn"],
)
def test_no_records_give_an_empty_matrix(transformer: Any, kind: str) -> None:
    columns = ["count"] if isinstance(transformer, PolynomialFeatures) else ALL
    if transformer is not None:
        transformer.fit(TRAIN[columns])
    transform = Transform(transformer, learn_contract(TRAIN[columns]), "dataframe")
    assert transform.kind == kind
    out = transform([])
    assert out.shape == (0, 0)
    assert out.dtype == np.float64
