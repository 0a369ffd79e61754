"""Open Inference Protocol bodies: parsing infer requests into arrays, refusing what does not fit, encoding."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.errors import InferenceInputError
from shared.oip import (
    DATATYPES,
    MAX_DIMS,
    MAX_ELEMENTS,
    InferRequest,
    datatype_of,
    encode_tensor,
    parse_infer_request,
)


def tensor(data: Any, shape: Any = None, datatype: Any = "FP64", name: Any = "x", **extra: Any) -> dict[str, Any]:
    """One request input; ``shape`` defaults to the flat length of a flat list."""
    if shape is None:
        shape = [len(data)] if isinstance(data, list) else [1]
    return {"name": name, "datatype": datatype, "shape": shape, "data": data, **extra}


def parse_one(*args: Any, **kwargs: Any) -> np.ndarray:
    return parse_infer_request({"inputs": [tensor(*args, **kwargs)]}).inputs[0].data


def refused(body: Any, match: str) -> None:
    with pytest.raises(InferenceInputError, match=match) as caught:
        parse_infer_request(body)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([1, 2, 3, 4, 5, 6], id="flat"),
        pytest.param([[1, 2, 3], [4, 5, 6]], id="nested"),
        pytest.param([[1.0, 2], [3, 4.0], [5, 6]], id="nested-other-way"),
    ],
)
def test_flat_and_nested_data_are_reshaped_row_major(data: list[Any]) -> None:
    request = parse_infer_request({"inputs": [tensor(data, shape=[2, 3])]})
    (tensor_,) = request.inputs
    assert tensor_.shape == (2, 3)
    assert tensor_.data.shape == (2, 3)
    assert tensor_.data.dtype == np.float64
    assert tensor_.data.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_a_full_request_keeps_id_parameters_outputs_and_each_input() -> None:
    body = {
        "id": "req-1",
        "parameters": {"explain": False},
        "outputs": [{"name": "probabilities"}, {"name": "label", "parameters": {"binary_data": False}}],
        "inputs": [
            tensor([[1.5, None], [3.0, 4.0]], shape=[2, 2], datatype="FP32", name="numeric", parameters={"a": 1}),
            tensor([["Dream"], [None]], shape=[2, 1], datatype="BYTES", name="island"),
            tensor([True, False], datatype="BOOL", name="flag"),
        ],
    }
    request = parse_infer_request(body)
    assert isinstance(request, InferRequest)
    assert request.id == "req-1"
    assert request.parameters == {"explain": False}
    assert request.outputs == ["probabilities", "label"]
    assert [t.name for t in request.inputs] == ["numeric", "island", "flag"]
    numeric = request.input("numeric")
    assert numeric is not None
    assert numeric.parameters == {"a": 1}
    assert numeric.data.dtype == np.float32
    assert numeric.data[0, 0] == 1.5
    assert math.isnan(numeric.data[0, 1])  # null in a floating tensor is a missing value
    island = request.input("island")
    assert island is not None
    assert island.data.dtype == object
    assert island.data.tolist() == [["Dream"], [None]]
    assert request.input("flag").data.tolist() == [True, False]  # type: ignore[union-attr]
    assert request.input("absent") is None


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("INT8", [-128, 0, 127], np.int8),
        ("UINT8", [0, 255], np.uint8),
        ("INT16", [-32768, 32767], np.int16),
        ("UINT16", [65535], np.uint16),
        ("INT32", [-(2**31), 2**31 - 1], np.int32),
        ("UINT32", [2**32 - 1], np.uint32),
        ("INT64", [-(2**63), 2**63 - 1], np.int64),
        ("UINT64", [0, 2**64 - 1], np.uint64),
        ("INT32", [3.0, -2.0], np.int32),  # integral floats are integers
        ("FP16", [0.5, 65504.0], np.float16),
        ("FP32", [1, 2.5, -(2.0**127)], np.float32),
        ("FP64", [1e308, -1e-308, 0], np.float64),
        ("BOOL", [True, False], np.bool_),
        ("BYTES", ["a", "", None, "é"], object),
    ],
)
def test_each_datatype_builds_its_dtype_at_its_limits(datatype: str, data: list[Any], expected: Any) -> None:
    array = parse_one(data, datatype=datatype)
    assert array.dtype == np.dtype(expected)
    assert array.tolist() == data


@pytest.mark.parametrize(
    ("datatype", "data", "match"),
    [
        ("FP64", [1.0, True], "must be numbers, got bool"),
        ("FP32", [False], "must be numbers, got bool"),
        ("FP64", ["1.5"], "must be numbers, got str"),
        ("FP64", [[1.0], {"v": 1}], "must be numbers, got dict"),
        ("INT64", [1.5], "1.5 is not an integer"),
        ("INT32", [True], "must be numbers, got bool"),
        ("INT32", ["7"], "must be numbers, got str"),
        ("INT32", [None], "null is not an integer"),
        ("INT8", [128], "out of range for INT8"),
        ("INT8", [-129], "out of range for INT8"),
        ("UINT8", [-1], "out of range for UINT8"),
        ("UINT64", [2**64], "out of range for UINT64"),
        ("INT64", [2**63], "out of range for INT64"),
        ("INT64", [float(2**63)], "out of range for INT64"),
        ("INT64", [10**400], "out of range for INT64"),
        ("INT64", [1e300], "out of range for INT64"),
        ("INT64", [float("inf")], "not an integer"),
        ("INT64", [float("nan")], "not an integer"),
        ("FP64", [float("inf")], "must be finite"),
        ("FP64", [float("-inf")], "must be finite"),
        ("FP64", [float("nan")], "must be finite"),
        ("FP64", [json.loads("1e400")], "must be finite"),
        ("FP64", [10**400], "too large for FP64"),
        ("FP64", [-(10**400)], "too large for FP64"),
        ("FP32", [1e39], "too large for FP32"),
        ("FP32", [10**39], "too large for FP32"),
        ("FP16", [70000], "too large for FP16"),
        ("FP16", [-65520.0], "too large for FP16"),
        ("BOOL", [1, 0], "must be true or false"),
        ("BOOL", [True, None], "must be true or false"),
        ("BYTES", ["a", 1], "must be strings, got int"),
        ("BYTES", [True], "must be strings, got bool"),
    ],
)
def test_values_that_do_not_fit_the_datatype_are_refused(datatype: str, data: list[Any], match: str) -> None:
    refused({"inputs": [tensor(data, datatype=datatype, name="feat")]}, rf"^input 'feat': .*{match}")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        pytest.param(tensor([1, 2, 3], shape=[2]), r"shape \[2\] needs 2 elements, data has 3", id="too-much-data"),
        pytest.param(tensor([[1, 2], [3, 4]], shape=[2, 3]), "needs 6 elements, data has 4", id="too-little-data"),
        pytest.param(tensor([], shape=[1]), "needs 1 elements, data has 0", id="no-data"),
        pytest.param(tensor([1, 2], shape=[-1, -2]), "shape must be", id="negative-dims"),
        pytest.param(tensor([1], shape=[-1]), "shape must be", id="negative-dim"),
        pytest.param(tensor([1], shape=[True]), "shape must be", id="bool-dim"),
        pytest.param(tensor([1], shape=[1.0]), "shape must be", id="float-dim"),
        pytest.param(tensor([1], shape=["1"]), "shape must be", id="string-dim"),
        pytest.param(tensor([1], shape=[]), "shape must be", id="no-dims"),
        pytest.param(tensor([1], shape=[1] * (MAX_DIMS + 1)), "shape must be", id="too-many-dims"),
        pytest.param(tensor([1], shape=3), "shape must be", id="shape-not-a-list"),
        pytest.param(tensor([1], shape=[MAX_ELEMENTS + 1]), "more than", id="too-many-elements"),
        pytest.param(tensor([], shape=[0, 10**20]), "more than", id="empty-but-huge"),
        pytest.param(tensor([], shape=[0, 2**62, 2**62]), "more than", id="empty-but-overflowing"),
        pytest.param(tensor([1], datatype="FLOAT"), "datatype must be one of", id="unknown-datatype"),
        pytest.param(tensor([1], datatype="fp32"), "datatype must be one of", id="lowercase-datatype"),
        pytest.param({"name": "x", "shape": [1], "data": [1]}, "datatype must be one of", id="no-datatype"),
        pytest.param(tensor([1], datatype=[]), "datatype must be one of", id="list-datatype"),
        pytest.param(tensor([1], datatype={}), "datatype must be one of", id="object-datatype"),
        pytest.param({"name": "x", "datatype": "FP32", "shape": [1]}, "'data' is required", id="no-data-member"),
        pytest.param(tensor([1], parameters=[1]), "parameters must be an object", id="bad-parameters"),
    ],
)
def test_malformed_tensors_are_refused_naming_the_input(raw: dict[str, Any], match: str) -> None:
    refused({"inputs": [raw]}, rf"^input 'x': .*{match}")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (tensor([1], name=""), r"inputs\[0\] needs a non-empty string 'name'"),
        (tensor([1], name=7), r"inputs\[0\] needs a non-empty string 'name'"),
        ([1, 2], r"inputs\[0\] must be an object"),
        ("x", r"inputs\[0\] must be an object"),
    ],
)
def test_inputs_without_a_name_are_refused_by_position(raw: Any, match: str) -> None:
    refused({"inputs": [raw]}, match)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param([], "must be a JSON object", id="list"),
        pytest.param("inputs", "must be a JSON object", id="string"),
        pytest.param(None, "must be a JSON object", id="null"),
        pytest.param({}, "'inputs' must be a non-empty list", id="no-inputs"),
        pytest.param({"inputs": []}, "'inputs' must be a non-empty list", id="empty-inputs"),
        pytest.param({"inputs": {"name": "x"}}, "'inputs' must be a non-empty list", id="inputs-object"),
        pytest.param({"inputs": [tensor([1]), tensor([2])]}, "input names must be unique", id="duplicate-names"),
        pytest.param({"inputs": [tensor([1])], "id": 5}, "'id' must be a string", id="numeric-id"),
        pytest.param({"inputs": [tensor([1])], "parameters": [1]}, "'parameters' must be an object", id="parameters"),
        pytest.param({"inputs": [tensor([1])], "outputs": "label"}, "'outputs' must be a list", id="outputs-string"),
        pytest.param({"inputs": [tensor([1])], "outputs": [{"id": "label"}]}, "'outputs' must be", id="output-no-name"),
        pytest.param({"inputs": [tensor([1])], "outputs": ["label"]}, "'outputs' must be", id="output-not-object"),
    ],
)
def test_malformed_requests_are_refused(body: Any, match: str) -> None:
    refused(body, match)


def nested(depth: int, leaf: Any = 1.0) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_data_as_deep_as_the_most_dimensions_is_accepted() -> None:
    array = parse_one(nested(MAX_DIMS), shape=[1] * MAX_DIMS)
    assert array.shape == (1,) * MAX_DIMS
    assert array.item() == 1.0


@pytest.mark.parametrize("depth", [MAX_DIMS + 1, MAX_DIMS + 2, 50, 100_000])
def test_data_nested_too_deeply_is_refused(depth: int) -> None:
    refused({"inputs": [tensor(nested(depth), shape=[1])]}, f"nested deeper than {MAX_DIMS} levels")


def test_a_scalar_stands_for_one_element() -> None:
    assert parse_one(2.5, shape=[1]).tolist() == [2.5]


def test_zero_element_tensors_are_allowed() -> None:
    array = parse_one([], shape=[0, 4], datatype="FP32")
    assert array.shape == (0, 4)
    assert array.dtype == np.float32


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.array([[1.5, -2.25], [3.0, 4.0]], dtype=np.float32), id="fp32"),
        pytest.param(np.array([[0.1, 1e-300, 1e300]]), id="fp64"),
        pytest.param(np.array([1.5, -2.0], dtype=np.float16), id="fp16"),
        pytest.param(np.array([[1, 2, 3]], dtype=np.int64), id="int64"),
        pytest.param(np.array([0, 2**64 - 1], dtype=np.uint64), id="uint64"),
        pytest.param(np.array([-128, 127], dtype=np.int8), id="int8"),
        pytest.param(np.array([[True], [False]]), id="bool"),
        pytest.param(np.array(["Adelie", "Gentoo"], dtype=object), id="object-strings"),
        pytest.param(np.array([["a", None]], dtype=object), id="object-with-null"),
    ],
)
def test_encode_tensor_round_trips_through_json_and_parse(array: np.ndarray) -> None:
    encoded = encode_tensor("out", array, {"classes": ["a", "b"]})
    assert encoded["name"] == "out"
    assert encoded["shape"] == list(array.shape)
    assert encoded["parameters"] == {"classes": ["a", "b"]}
    assert len(encoded["data"]) == array.size  # flat, row-major
    wire = json.loads(json.dumps({"inputs": [encoded]}, allow_nan=False))
    parsed = parse_infer_request(wire).inputs[0]
    assert parsed.datatype == encoded["datatype"]
    assert parsed.data.dtype == array.dtype
    assert parsed.data.shape == array.shape
    assert parsed.data.tolist() == array.tolist()


@pytest.mark.parametrize(
    ("array", "datatype", "data"),
    [
        (np.array(["x", "yz"]), "BYTES", ["x", "yz"]),  # numpy unicode strings
        (np.array([1, "b"], dtype=object), "BYTES", ["1", "b"]),
        (np.array([[1, 2], [3, 4]], dtype=np.int32), "INT32", [1, 2, 3, 4]),
    ],
)
def test_encode_tensor_flattens_and_names_the_datatype(array: np.ndarray, datatype: str, data: list[Any]) -> None:
    encoded = encode_tensor("t", array)
    assert encoded == {"name": "t", "shape": list(array.shape), "datatype": datatype, "data": data}


def test_datatype_of_refuses_dtypes_outside_the_protocol() -> None:
    with pytest.raises(TypeError, match="complex128"):
        datatype_of(np.array([1 + 2j]))
    assert {datatype_of(np.zeros(1, dtype=d)) for d in DATATYPES.values() if d is not object} == set(DATATYPES) - {
        "BYTES"
    }


# --- property: whatever JSON-like value arrives, the parser answers with a request or a 400 ------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, -(10**400), 65520, 1e39, 1.5])
    | st.floats()  # NaN and infinities included: Python's json produces them from NaN/1e400
    | st.text(max_size=4)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=16,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` four times in five, else ``bad``: most examples get past the first check."""
    return st.integers(0, 4).flatmap(lambda n: bad if n == 4 else good)


#: Values that fit each datatype (the parser must still range-check and refuse some of them).
FITTING: dict[str, st.SearchStrategy[Any]] = {
    "BOOL": st.booleans(),
    "BYTES": st.text(max_size=3) | st.none(),
    **{name: st.integers() | st.floats().filter(float.is_integer) for name in DATATYPES if "INT" in name},
    **{name: st.floats() | st.integers() | st.none() for name in ("FP16", "FP32", "FP64")},
}


@st.composite
def tensors(draw: st.DrawFn) -> Any:
    """Mostly well-formed tensors with an adversarial part, so coercion (not only the first checks) runs."""
    datatype = draw(mostly(st.sampled_from(sorted(DATATYPES)), JSON))
    fitting = FITTING.get(datatype, SCALARS) if isinstance(datatype, str) else SCALARS
    flat = draw(st.lists(mostly(fitting, SCALARS), max_size=6))
    good_shape = st.just([len(flat)]) | st.just([1, len(flat)])
    bad_shape = JSON | st.lists(st.sampled_from([-1, 0, 1, 2, 3, 10**20, 2**62, True]), max_size=MAX_DIMS + 1)
    body = {
        "name": draw(mostly(st.sampled_from(["x", "y", "z", "w"]), JSON)),
        "datatype": datatype,
        "shape": draw(mostly(good_shape, bad_shape)),
        "data": draw(mostly(st.just(flat) | st.just([flat]), JSON)),
    }
    if draw(st.booleans()):
        body["parameters"] = draw(mostly(st.just({"a": 1}), JSON))
    if draw(st.integers(0, 9)) == 9:
        del body[draw(st.sampled_from(sorted(body)))]
    return body


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    """Infer requests, mostly of well-formed tensors; sometimes any JSON value at all."""
    if draw(st.integers(0, 9)) == 9:
        return draw(JSON)
    body: dict[str, Any] = {"inputs": draw(mostly(st.lists(tensors(), min_size=1, max_size=3), JSON))}
    for member in ("id", "parameters", "outputs"):
        if draw(st.booleans()):
            body[member] = draw(JSON)
    return body


@settings(max_examples=200, deadline=None, database=None)
@given(body=bodies())
# Bodies that once escaped as something other than InferenceInputError:
@example(body={"inputs": [{"name": "x", "datatype": [], "shape": [0], "data": []}]})
@example(body={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1e39]}]})
@example(body={"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [70000]}]})
@example(body={"inputs": [{"name": "x", "datatype": "FP64", "shape": [0, 10**20], "data": []}]})
def test_any_json_value_gives_a_request_or_an_inference_input_error(body: Any) -> None:
    try:
        request = parse_infer_request(body)
    except InferenceInputError:
        return  # a 400 naming the problem: one of the two allowed answers
    assert isinstance(request, InferRequest)
    for parsed in request.inputs:
        assert parsed.data.shape == parsed.shape
        assert parsed.datatype in DATATYPES


def test_missing_values_encode_as_null_not_nan() -> None:
    import json

    import numpy as np

    from shared.oip import encode_tensor

    tensor = encode_tensor("prediction", np.asarray([1.5, np.nan]))
    assert tensor["data"] == [1.5, None]
    json.dumps(tensor, allow_nan=False)  # valid JSON


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.integers(-(2**70), 2**70) | st.floats(width=64) | st.none() | st.booleans(), min_size=3, max_size=3
        ),
        min_size=1,
        max_size=4,
    ),
    nested=st.booleans(),
    datatype=st.sampled_from(["FP32", "FP64"]),
)
def test_the_fast_number_path_agrees_with_the_careful_one(rows: list[list[Any]], nested: bool, datatype: str) -> None:
    from shared.oip import _coerce, _fast_numbers

    data: Any = rows if nested else [v for row in rows for v in row]
    expected = len(rows) * 3
    fast = _fast_numbers(data, datatype, expected)
    try:
        careful = _coerce([v for row in rows for v in row], datatype, "x")
    except InferenceInputError:
        assert fast is None
        return
    if fast is not None:
        assert fast.dtype == careful.dtype
        np.testing.assert_array_equal(fast, careful)
