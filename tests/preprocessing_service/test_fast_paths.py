"""The fast paths of the preprocessing service give exactly what the careful path gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preprocessing_service.versions import Preprocessor, Preprocessors
from shared.errors import ModelgateError
from tests.conftest import SIGNING_KEY

DIABETES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def diabetes(demo_registry_root: Path) -> Preprocessor:
    store = Preprocessors(demo_registry_root, SIGNING_KEY, unknown="raise", compile_transforms=True, capacity=4)
    return store.get("diabetes", 1)


def careful(preprocessor: Preprocessor, body: Any) -> Any:
    """The record-by-record path: the matrix loader switched off for one call."""
    saved = preprocessor.matrix_load
    preprocessor.matrix_load = None
    try:
        return outcome(preprocessor, body)
    finally:
        preprocessor.matrix_load = saved


def outcome(preprocessor: Preprocessor, body: Any) -> Any:
    try:
        result = preprocessor.run(body, 1000)
    except ModelgateError as exc:
        return ("error", exc.status)
    except Exception as exc:
        return ("error", type(exc).__name__)
    return (result.features.tolist(), result.ids, result.warnings)


VALUES = (
    st.integers(-400, 400)
    | st.floats(-1e3, 1e3, allow_nan=False)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**60), 2**60)
    | st.just(None)
    | st.just("5")
    | st.booleans()
)
INSTANCE = st.fixed_dictionaries(
    dict.fromkeys(DIABETES, VALUES),
    optional={"id": st.none() | st.integers() | st.text(max_size=130) | st.floats(), "extra": st.integers()},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(instances=st.lists(INSTANCE, min_size=1, max_size=4))
def test_the_matrix_path_equals_the_careful_path(diabetes: Preprocessor, instances: list[dict[str, Any]]) -> None:
    body = {"instances": instances}
    assert outcome(diabetes, body) == careful(diabetes, body)


def test_the_matrix_path_is_taken_for_plain_numbers(diabetes: Preprocessor) -> None:
    rows = [{name: float(i + j) for j, name in enumerate(DIABETES)} | {"id": i} for i in range(3)]
    assert diabetes.matrix_load is not None
    loaded = diabetes.matrix_load(rows)
    assert loaded is not None
    matrix, ids = loaded
    assert matrix.shape == (3, 10)
    assert ids == [0, 1, 2]
    fast = diabetes.run({"instances": rows}, 1000)
    slow = careful(diabetes, {"instances": rows})
    np.testing.assert_array_equal(fast.features, np.asarray(slow[0]))
