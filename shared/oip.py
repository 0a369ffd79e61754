"""Open Inference Protocol (KServe v2) REST bodies: parsing infer requests, encoding tensors.

Pure functions over plain data (no Flask), shared by the preprocessing service, which builds infer
requests, and the model service, which answers them. Malformed bodies raise ``InferenceInputError``
(400) whose message names the offending input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from shared.errors import InferenceInputError

#: Protocol datatype -> NumPy dtype. BYTES holds strings (JSON has no raw bytes).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": object,
}
#: Most dimensions a tensor may declare, and most elements it may hold.
MAX_DIMS = 8
MAX_ELEMENTS = 10_000_000


@dataclass
class InferInput:
    """One input tensor: ``data`` is a NumPy array already reshaped to ``shape``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """A parsed infer request."""

    inputs: list[InferInput]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None

    def input(self, name: str) -> InferInput | None:
        """The input called ``name``, if the request has one."""
        return next((tensor for tensor in self.inputs if tensor.name == name), None)


def _flatten(data: Any, name: str) -> list[Any]:
    """Row-major flattening of nested lists; scalars stand for themselves."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        try:
            item = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        if isinstance(item, list):
            if len(stack) >= MAX_DIMS:
                raise InferenceInputError(f"input {name!r}: data is nested deeper than {MAX_DIMS} levels")
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


_PLAIN_NUMBERS = frozenset({int, float})


def _fast_numbers(data: Any, datatype: str, expected: int) -> np.ndarray | None:
    """The common case at C speed: a flat or 2-D list of finite plain numbers for a float tensor.

    Anything else (nulls, bools, strings, deeper nesting, a count that does not fit, huge numbers)
    returns None, and the element-by-element path below finds and words the problem.
    """
    if datatype not in ("FP32", "FP64") or type(data) is not list or not data:
        return None
    if type(data[0]) is list:
        if set(map(type, data)) != {list}:
            return None
        flat = list(chain.from_iterable(data))
    else:
        flat = data
    if len(flat) != expected or not _PLAIN_NUMBERS.issuperset(map(type, flat)):
        return None
    try:
        array = np.asarray(flat, dtype=np.float64)
    except OverflowError:
        return None
    if not np.isfinite(array).all():
        return None
    if datatype == "FP32":
        with np.errstate(over="ignore"):
            narrowed = array.astype(np.float32)
        if not np.isfinite(narrowed).all():
            return None
        return narrowed
    return array


def _coerce(values: list[Any], datatype: str, name: str) -> np.ndarray:
    if datatype == "BYTES":
        for value in values:
            if value is not None and not isinstance(value, str):
                raise InferenceInputError(f"input {name!r}: BYTES data must be strings, got {type(value).__name__}")
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    if datatype == "BOOL":
        if any(not isinstance(value, bool) for value in values):
            raise InferenceInputError(f"input {name!r}: BOOL data must be true or false")
        return np.asarray(values, dtype=np.bool_)
    integer = datatype.startswith(("INT", "UINT"))
    for value in values:
        if value is None:
            if integer:
                raise InferenceInputError(f"input {name!r}: null is not an integer")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InferenceInputError(f"input {name!r}: {datatype} data must be numbers, got {type(value).__name__}")
        if integer and isinstance(value, float) and not value.is_integer():
            raise InferenceInputError(f"input {name!r}: {value!r} is not an integer")
        if isinstance(value, float) and not math.isfinite(value):
            raise InferenceInputError(f"input {name!r}: numbers must be finite")
    dtype = DATATYPES[datatype]
    if integer:
        info = np.iinfo(dtype)
        if any(not info.min <= value <= info.max for value in values):
            raise InferenceInputError(f"input {name!r}: value out of range for {datatype}")
        return np.asarray(values, dtype=dtype)
    # null in a floating tensor is a missing value (NaN), which imputing pipelines expect.
    try:
        # Too large for FP16/FP32 casts to inf with a RuntimeWarning; the check below refuses it.
        with np.errstate(over="ignore"):
            array = np.asarray([math.nan if value is None else value for value in values], dtype=dtype)
    except OverflowError:
        raise InferenceInputError(f"input {name!r}: number too large for {datatype}") from None
    if not np.isfinite(array[~np.isnan(array)]).all():
        raise InferenceInputError(f"input {name!r}: number too large for {datatype}")
    return array


def parse_input(raw: Any, index: int) -> InferInput:
    """Validate one request input tensor and build its array."""
    if not isinstance(raw, dict):
        raise InferenceInputError(f"inputs[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InferenceInputError(f"inputs[{index}] needs a non-empty string 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a list or an object is unhashable
        raise InferenceInputError(f"input {name!r}: datatype must be one of {', '.join(DATATYPES)}")
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMS
        or any(isinstance(dim, bool) or not isinstance(dim, int) or dim < 0 for dim in shape)
    ):
        raise InferenceInputError(f"input {name!r}: shape must be a list of 1 to {MAX_DIMS} non-negative integers")
    # Zero dimensions are left out of this bound: numpy refuses a shape whose other dimensions overflow.
    if math.prod(dim for dim in shape if dim) > MAX_ELEMENTS:
        raise InferenceInputError(f"input {name!r}: more than {MAX_ELEMENTS} elements")
    expected = math.prod(shape)
    if "data" not in raw:
        raise InferenceInputError(f"input {name!r}: 'data' is required")
    fast = _fast_numbers(raw["data"], datatype, expected)
    if fast is not None:
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InferenceInputError(f"input {name!r}: parameters must be an object")
        return InferInput(
            name=name, datatype=datatype, shape=tuple(shape), data=fast.reshape(shape), parameters=parameters
        )
    values = _flatten(raw["data"], name)
    if len(values) != expected:
        raise InferenceInputError(f"input {name!r}: shape {shape} needs {expected} elements, data has {len(values)}")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InferenceInputError(f"input {name!r}: parameters must be an object")
    array = _coerce(values, datatype, name).reshape(shape)
    return InferInput(name=name, datatype=datatype, shape=tuple(shape), data=array, parameters=parameters)


def parse_infer_request(body: Any) -> InferRequest:
    """Parse and validate an infer request body."""
    if not isinstance(body, dict):
        raise InferenceInputError("the infer request must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferenceInputError("'inputs' must be a non-empty list of tensors")
    parsed = [parse_input(raw, index) for index, raw in enumerate(inputs)]
    names = [tensor.name for tensor in parsed]
    if len(set(names)) != len(names):
        raise InferenceInputError("input names must be unique")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceInputError("'id' must be a string")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InferenceInputError("'parameters' must be an object")
    outputs = body.get("outputs")
    wanted: list[str] | None = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise InferenceInputError("'outputs' must be a list of objects with a 'name'")
        wanted = [o["name"] for o in outputs]
    return InferRequest(inputs=parsed, id=request_id, parameters=parameters, outputs=wanted)


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a NumPy array."""
    if array.dtype == object or array.dtype.kind in "US":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if dtype is not object and array.dtype == np.dtype(dtype):
            return name
    raise TypeError(f"no protocol datatype for {array.dtype}")


def encode_tensor(name: str, array: np.ndarray, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response (or request) tensor: name, shape, datatype and row-major flat data."""
    datatype = datatype_of(array)
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data: list[Any] = [value if isinstance(value, str) or value is None else str(value) for value in flat.tolist()]
    elif array.dtype.kind == "f" and np.isnan(flat).any():
        # NaN has no JSON form: a missing value is null, as in requests.
        data = [None if value != value else value for value in flat.tolist()]
    else:
        data = flat.tolist()
    tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
    if parameters:
        tensor["parameters"] = parameters
    return tensor
