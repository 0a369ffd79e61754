"""A feature contract as a marshmallow schema (what the service accepts) and as a JSON Schema (what it documents)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from marshmallow import ValidationError

from preprocessing_service.contracts import (
    MAX_ID_LENGTH,
    MAX_STRING_LENGTH,
    TransformRequest,
    instance_schema,
    json_schema,
)

INF, NAN = math.inf, math.nan
ISLANDS = ["Biscoe", "Dream", "Torgersen"]

CONTRACT: dict[str, Any] = {
    "features": [
        {"name": "weight", "type": "number", "required": True, "nullable": False, "range": {"min": 1.5, "max": 9.5}},
        {"name": "depth", "type": "number", "required": True, "nullable": True},
        {"name": "legs", "type": "integer", "required": True, "nullable": False, "range": {"min": 0, "max": 8}},
        {"name": "tagged", "type": "boolean", "required": True, "nullable": False},
        {"name": "island", "type": "category", "required": True, "nullable": False, "categories": ISLANDS},
        {"name": "sex", "type": "category", "required": True, "nullable": True, "categories": ["female", "male"]},
        {"name": "notes", "type": "string", "required": True, "nullable": True},
    ]
}
NAMES = [feature["name"] for feature in CONTRACT["features"]]
NULLABLE = ["depth", "sex", "notes"]
NOT_NULLABLE = [name for name in NAMES if name not in NULLABLE]
VALID: dict[str, Any] = {
    "weight": 4.5,
    "depth": None,
    "legs": 2,
    "tagged": True,
    "island": "Dream",
    "sex": "male",
    "notes": "fine",
}


def load(unknown: str = "raise", **changes: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = instance_schema(CONTRACT, "test", unknown).load({**VALID, **changes})
    return loaded


def errors(instance: Any, contract: dict[str, Any] = CONTRACT, unknown: str = "raise") -> Any:
    with pytest.raises(ValidationError) as caught:
        instance_schema(contract, "test", unknown).load(instance)
    return caught.value.messages


def errors_with(**changes: Any) -> Any:
    return errors({**VALID, **changes})


def test_a_valid_instance_loads_as_is() -> None:
    loaded = load()
    assert loaded == VALID
    assert type(loaded["weight"]) is float
    assert type(loaded["legs"]) is int
    assert type(instance_schema(CONTRACT, "penguins_v3")).__name__ == "Instance_penguins_v3"


# --- numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected", "kind"),
    [
        ("weight", 3, 3.0, float),
        ("weight", 2.25, 2.25, float),
        ("weight", -1e300, -1e300, float),
        ("weight", 2**53, float(2**53), float),
        ("weight", -(2**53), -float(2**53), float),
        ("legs", 7, 7, int),
        ("legs", 2.0, 2, int),
        ("legs", -3.0, -3, int),
        ("legs", 2**53, 2**53, int),
        ("legs", float(2**53), 2**53, int),
        ("depth", 0, 0.0, float),
    ],
)
def test_numbers_accepted(name: str, value: Any, expected: float, kind: type) -> None:
    loaded = load(**{name: value})[name]
    assert loaded == expected
    assert type(loaded) is kind


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("weight", "1.5", "Not a number: got string."),
        ("weight", "", "Not a number: got string."),
        ("weight", True, "Not a number: got boolean."),
        ("weight", False, "Not a number: got boolean."),
        ("weight", [1.5], "Not a number: got array."),
        ("weight", {"value": 1.5}, "Not a number: got object."),
        ("depth", "NaN", "Not a number: got string."),
        ("weight", INF, "Not a finite number."),
        ("weight", -INF, "Not a finite number."),
        ("weight", NAN, "Not a finite number."),
        ("depth", NAN, "Not a finite number."),
        ("weight", 2**53 + 1, "Number too large."),
        ("weight", -(2**53) - 1, "Number too large."),
        ("weight", 10**400, "Number too large."),
        ("legs", 1.5, "Not an integer."),
        ("legs", -0.25, "Not an integer."),
        ("legs", "2", "Not a number: got string."),
        ("legs", True, "Not a number: got boolean."),
        ("legs", INF, "Not a finite number."),
        ("legs", NAN, "Not a finite number."),
        ("legs", 2**53 + 1, "Number too large."),
        ("legs", float(2**60), "Number too large."),
        ("legs", 1e300, "Number too large."),
        ("legs", -1e300, "Number too large."),
    ],
)
def test_numbers_refused(name: str, value: Any, message: str) -> None:
    assert errors_with(**{name: value}) == {name: [message]}


# --- booleans -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_booleans_accepted(value: bool) -> None:
    assert load(tagged=value)["tagged"] is value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "Not a boolean: got int."),
        (1, "Not a boolean: got int."),
        (1.0, "Not a boolean: got float."),
        ("true", "Not a boolean: got string."),
        ("false", "Not a boolean: got string."),
        ([True], "Not a boolean: got array."),
        ({}, "Not a boolean: got object."),
    ],
)
def test_booleans_refused(value: Any, message: str) -> None:
    assert errors_with(tagged=value) == {"tagged": [message]}


# --- categories and strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Dream", "Dream"),
        (" Dream", "Dream"),
        ("Dream ", "Dream"),
        ("\tTorgersen\n", "Torgersen"),
        ("  Biscoe \r\n", "Biscoe"),
        ("\u00a0Biscoe\u2003", "Biscoe"),
    ],
)
def test_category_surrounding_whitespace_is_stripped(value: str, expected: str) -> None:
    assert load(island=value)["island"] == expected


@pytest.mark.parametrize("value", ["dream", "DREAM", "Dre am", "Dream\u200b", "", "   ", "Mars"])
def test_unknown_category_refused_with_the_allowed_values(value: str) -> None:
    shown = value.strip()
    assert errors_with(island=value) == {"island": [f"{shown!r} is not one of: Biscoe, Dream, Torgersen."]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1, "Not a string: got int."),
        (True, "Not a string: got boolean."),
        (2.5, "Not a string: got float."),
        (["Dream"], "Not a string: got array."),
        ({"island": "Dream"}, "Not a string: got object."),
    ],
)
@pytest.mark.parametrize("name", ["island", "notes"])
def test_text_refuses_non_strings(name: str, value: Any, message: str) -> None:
    assert errors_with(**{name: value}) == {name: [message]}


def test_long_values_and_long_category_lists_are_shortened_in_the_message() -> None:
    many = [f"c{i:02d}" for i in range(25)]
    contract = {"features": [{"name": "code", "type": "category", "nullable": False, "categories": many}]}
    value = "x" * 50

    (message,) = errors({"code": f"  {value}  "}, contract)["code"]

    assert message == f"{'x' * 37 + '...'!r} is not one of: {', '.join(many[:20])}, ...."
    assert instance_schema(contract, "test").load({"code": " c24 "}) == {"code": "c24"}


def test_free_text_is_stripped_and_bounded() -> None:
    assert load(notes="  any text at all\n")["notes"] == "any text at all"
    assert load(notes="x" * MAX_STRING_LENGTH)["notes"] == "x" * MAX_STRING_LENGTH
    assert errors_with(notes="x" * (MAX_STRING_LENGTH + 1)) == {
        "notes": [f"Longer than {MAX_STRING_LENGTH} characters."]
    }


# --- null and missing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NULLABLE)
def test_null_accepted_where_nullable(name: str) -> None:
    assert load(**{name: None})[name] is None


@pytest.mark.parametrize("name", NOT_NULLABLE)
def test_null_refused_where_not_nullable(name: str) -> None:
    assert errors_with(**{name: None}) == {name: ["Field may not be null."]}


@pytest.mark.parametrize("name", NAMES)
def test_every_feature_is_required(name: str) -> None:
    instance = {key: value for key, value in VALID.items() if key != name}
    assert errors(instance) == {name: ["Missing data for required field."]}


def test_a_feature_marked_not_required_may_be_absent() -> None:
    contract = {
        "features": [
            {"name": "a", "type": "number", "required": False, "nullable": False},
            {"name": "b", "type": "number", "nullable": False},
        ]
    }
    assert instance_schema(contract, "test").load({"b": 1}) == {"b": 1.0}
    assert errors({"a": 1}, contract) == {"b": ["Missing data for required field."]}


# --- the instance id ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["row-1", "", "x" * MAX_ID_LENGTH, 0, 17, -4, 2**70, None])
def test_id_accepted_and_returned(value: Any) -> None:
    loaded = load(id=value)
    assert loaded["id"] == value
    assert type(loaded["id"]) is type(value)
    assert "id" not in load(), "no id sent, none invented"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "Must be a string or an integer."),
        (False, "Must be a string or an integer."),
        (1.5, "Must be a string or an integer."),
        (1.0, "Must be a string or an integer."),
        (["row-1"], "Must be a string or an integer."),
        ({"id": 1}, "Must be a string or an integer."),
        ("x" * (MAX_ID_LENGTH + 1), f"Longer than {MAX_ID_LENGTH} characters."),
    ],
)
def test_id_refused(value: Any, message: str) -> None:
    assert errors_with(id=value) == {"id": [message]}


def test_a_feature_called_id_is_a_feature() -> None:
    contract = {"features": [{"name": "id", "type": "number", "nullable": False}]}
    assert instance_schema(contract, "test").load({"id": 3}) == {"id": 3.0}
    assert errors({"id": "row-1"}, contract) == {"id": ["Not a number: got string."]}
    assert errors({}, contract) == {"id": ["Missing data for required field."]}


@pytest.mark.parametrize(
    "names",
    [["Sepal.Length", "Sepal.Width"], ["a", "a.b"], ["Meta", "load", "fields", "validate", "opts", "id"]],
    ids=["dotted", "dotted prefix", "schema attributes"],
)
def test_any_feature_name_loads_under_its_own_name(names: list[str]) -> None:
    contract = {"features": [{"name": name, "type": "integer", "nullable": False} for name in names]}
    instance = {name: index for index, name in enumerate(names)}
    assert instance_schema(contract, "test").load(instance) == instance
    assert instance_schema(contract, "test").load([instance], many=True) == [instance]
    assert errors({**instance, names[-1]: "x", "other": 1}, contract) == {
        names[-1]: ["Not a number: got string."],
        "other": ["Unknown field."],
    }
    assert errors({}, contract) == {name: ["Missing data for required field."] for name in names}


def test_features_named_like_schema_methods_are_features() -> None:
    contract = {
        "features": [
            {"name": name, "type": "integer", "nullable": False} for name in ("load", "fields", "validate", "Meta")
        ]
    }
    schema = instance_schema(contract, "test")
    assert schema.load({"load": 1, "fields": 2, "validate": 3, "Meta": 4}) == {
        "load": 1,
        "fields": 2,
        "validate": 3,
        "Meta": 4,
    }
    assert errors({"load": 1, "fields": 2, "validate": "3", "Meta": 4}, contract) == {
        "validate": ["Not a number: got string."]
    }


# --- unknown fields and batches -----------------------------------------------------------------------


def test_unknown_fields_raise_by_default() -> None:
    assert errors({**VALID, "colour": "red", "Island": "Dream"}) == {
        "colour": ["Unknown field."],
        "Island": ["Unknown field."],
    }
    assert errors({**VALID, "colour": "red"}, unknown="raise") == {"colour": ["Unknown field."]}


def test_unknown_fields_excluded_when_asked() -> None:
    assert load(unknown="exclude", colour="red", id="a") == {**VALID, "id": "a"}
    # exclusion drops unknown keys only; a bad known value is still refused
    assert errors({**VALID, "colour": "red", "legs": 1.5}, unknown="exclude") == {"legs": ["Not an integer."]}


def test_many_errors_are_keyed_by_instance_index() -> None:
    instances = [
        VALID,
        {**VALID, "weight": "heavy", "island": "Mars"},
        VALID,
        {key: value for key, value in VALID.items() if key != "tagged"} | {"extra": 1},
    ]
    with pytest.raises(ValidationError) as caught:
        instance_schema(CONTRACT, "test").load(instances, many=True)
    assert caught.value.messages == {
        1: {"weight": ["Not a number: got string."], "island": ["'Mars' is not one of: Biscoe, Dream, Torgersen."]},
        3: {"tagged": ["Missing data for required field."], "extra": ["Unknown field."]},
    }


def test_many_valid_instances_load_in_order() -> None:
    second = {**VALID, "island": " Biscoe ", "id": 2}
    loaded = instance_schema(CONTRACT, "test").load([VALID, second], many=True)
    assert loaded == [VALID, {**VALID, "island": "Biscoe", "id": 2}]


# --- the request envelope -----------------------------------------------------------------------------


def test_envelope_accepts_a_non_empty_list_of_anything_but_null() -> None:
    body = {"instances": [VALID, 1, "x", []]}
    assert TransformRequest().load(body) == body, "instances are checked by the instance schema, not here"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, {"instances": ["Missing data for required field."]}),
        ({"instances": []}, {"instances": ["Shorter than minimum length 1."]}),
        ({"instances": VALID}, {"instances": ["Not a valid list."]}),
        ({"instances": "x"}, {"instances": ["Not a valid list."]}),
        ({"instances": None}, {"instances": ["Field may not be null."]}),
        ({"instances": [VALID, None]}, {"instances": {1: ["Field may not be null."]}}),
        ({"instances": [VALID], "parameters": {}}, {"parameters": ["Unknown field."]}),
        ([VALID], {"_schema": ["Invalid input type."]}),
        (None, {"_schema": ["Invalid input type."]}),
    ],
    ids=["missing", "empty", "object", "string", "null", "null instance", "extra key", "bare list", "no body"],
)
def test_envelope_refused(body: Any, expected: dict[str, list[str]]) -> None:
    with pytest.raises(ValidationError) as caught:
        TransformRequest().load(body)
    assert caught.value.messages == expected


# --- the JSON Schema ----------------------------------------------------------------------------------

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
JSON_TYPES = {"null", "boolean", "object", "array", "number", "integer", "string"}
#: Keywords of the 2020-12 vocabularies the generated schema may use (annotations included).
KEYWORDS = {
    "$schema",
    "title",
    "description",
    "examples",
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "maxLength",
}


def check_meta(schema: Any, root: bool = True) -> None:
    """A structural check of a schema against the parts of the 2020-12 meta-schema it uses."""
    assert isinstance(schema, dict)
    if root:
        assert schema["$schema"] == DRAFT_2020_12
    else:
        assert "$schema" not in schema
    unknown = {key for key in schema if key not in KEYWORDS and not key.startswith("x-")}
    assert not unknown, f"not 2020-12 keywords: {unknown}"
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert kinds
        assert len(set(kinds)) == len(kinds)
        assert set(kinds) <= JSON_TYPES
    if "enum" in schema:
        assert isinstance(schema["enum"], list)
        assert schema["enum"]
    for key in ("title", "description"):
        if key in schema:
            assert isinstance(schema[key], str)
    if "examples" in schema:
        assert isinstance(schema["examples"], list)
    if "maxLength" in schema:
        assert type(schema["maxLength"]) is int
        assert schema["maxLength"] >= 0
    if "required" in schema:
        assert isinstance(schema["required"], list)
        assert all(isinstance(name, str) for name in schema["required"])
        assert len(set(schema["required"])) == len(schema["required"])
    if "additionalProperties" in schema:
        additional = schema["additionalProperties"]
        assert isinstance(additional, bool) or check_meta(additional, root=False) is None
    for sub in schema.get("properties", {}).values():
        check_meta(sub, root=False)


def is_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if kind == "number":
        return not isinstance(value, bool) and isinstance(value, int | float)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def violations(schema: dict[str, Any], instance: Any, path: str = "") -> list[str]:
    """What ``instance`` breaks of the keywords above (a minimal 2020-12 validator, no $ref, no combinators)."""
    found: list[str] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(is_type(instance, kind) for kind in kinds):
            return [f"{path}: not of type {kinds}"]
    if "enum" in schema and not any(json_equal(instance, option) for option in schema["enum"]):
        found.append(f"{path}: not in enum")
    if "maxLength" in schema and isinstance(instance, str) and len(instance) > schema["maxLength"]:
        found.append(f"{path}: too long")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        found += [f"{path}/{name}: required" for name in schema.get("required", []) if name not in instance]
        for name, value in instance.items():
            if name in properties:
                found += violations(properties[name], value, f"{path}/{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}/{name}: additional property")
    return found


@pytest.fixture
def schema() -> dict[str, Any]:
    return json_schema(CONTRACT, title="penguins version 3", example=VALID)


def test_json_schema_is_a_2020_12_schema(schema: dict[str, Any]) -> None:
    check_meta(schema)
    assert schema["title"] == "penguins version 3"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == NAMES
    assert schema["x-feature-order"] == NAMES
    assert list(schema["properties"]) == [*NAMES, "id"]
    assert schema["examples"] == [VALID]


def test_json_schema_properties(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    assert {name: properties[name]["type"] for name in NAMES} == {
        "weight": "number",
        "depth": ["number", "null"],
        "legs": "integer",
        "tagged": "boolean",
        "island": "string",
        "sex": ["string", "null"],
        "notes": ["string", "null"],
    }
    assert properties["island"]["enum"] == ISLANDS
    assert properties["sex"]["enum"] == ["female", "male", None]
    assert [name for name in NAMES if "enum" in properties[name]] == ["island", "sex"]
    assert "whitespace" in properties["island"]["description"]
    assert re.search(r"1\.5 to 9\.5", properties["weight"]["description"])
    assert re.search(r"\b0 to 8\b", properties["legs"]["description"])
    assert properties["id"]["type"] == ["string", "integer", "null"]
    assert properties["id"]["maxLength"] == MAX_ID_LENGTH


def test_json_schema_example_validates(schema: dict[str, Any]) -> None:
    assert [violations(schema, example) for example in schema["examples"]] == [[]]


GOOD = [
    VALID,
    {**VALID, "legs": 2.0, "depth": 3, "sex": None, "notes": None},
    {**VALID, "id": "row-1"},
    {**VALID, "id": 7},
    {**VALID, "island": "Torgersen", "tagged": False},
]
BAD = {
    "number as a string": {**VALID, "weight": "4.5"},
    "boolean for a number": {**VALID, "weight": True},
    "fraction for an integer": {**VALID, "legs": 1.5},
    "integer for a boolean": {**VALID, "tagged": 1},
    "number for a category": {**VALID, "island": 1},
    "unknown category": {**VALID, "island": "Mars"},
    "category in the wrong case": {**VALID, "island": "dream"},
    "null where not nullable": {**VALID, "island": None},
    "null number where not nullable": {**VALID, "weight": None},
    "extra field": {**VALID, "colour": "red"},
    "missing field": {key: value for key, value in VALID.items() if key != "legs"},
    "long id": {**VALID, "id": "x" * (MAX_ID_LENGTH + 1)},
    "boolean id": {**VALID, "id": True},
    "fractional id": {**VALID, "id": 1.5},
}


@pytest.mark.parametrize("instance", GOOD)
def test_json_schema_and_marshmallow_accept_the_same_good_instances(
    schema: dict[str, Any], instance: dict[str, Any]
) -> None:
    assert violations(schema, instance) == []
    instance_schema(CONTRACT, "test").load(instance)


@pytest.mark.parametrize("case", list(BAD))
def test_json_schema_and_marshmallow_refuse_the_same_bad_instances(schema: dict[str, Any], case: str) -> None:
    instance = BAD[case]
    assert violations(schema, instance)
    assert errors(instance)


def test_json_schema_without_an_example_or_with_an_id_feature() -> None:
    contract = {
        "features": [
            {"name": "id", "type": "integer", "nullable": False},
            {"name": "note", "type": "string", "nullable": False, "required": False},
        ]
    }
    schema = json_schema(contract, title="t", example=None)
    check_meta(schema)
    assert "examples" not in schema
    assert schema["properties"] == {"id": {"type": "integer"}, "note": {"type": "string"}}
    assert schema["required"] == ["id"]
    assert violations(schema, {"id": 3}) == []
    assert violations(schema, {"id": "row-1"}) == ["/id: not of type ['integer']"]


# --- the fast loader is the schema's exact twin ---------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from preprocessing_service.contracts import fast_loader  # noqa: E402

TWIN_CONTRACT = {
    "features": [
        {"name": "x", "type": "number", "required": True, "nullable": False},
        {"name": "n", "type": "integer", "required": True, "nullable": True},
        {"name": "flag", "type": "boolean", "required": True, "nullable": False},
        {"name": "colour", "type": "category", "required": True, "nullable": True, "categories": ["blue", "red"]},
        {"name": "note", "type": "string", "required": True, "nullable": False},
    ]
}
TWIN_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["blue", " red ", "\\tblue", "Blue", "", "x" * 10_001, "red"])
    | st.text(max_size=5)
    | st.lists(st.integers(), max_size=2)
)
TWIN_INSTANCE = st.dictionaries(
    st.sampled_from(["x", "n", "flag", "colour", "note", "id", "extra"]), TWIN_VALUES, min_size=3, max_size=7
)
# Mostly valid instances, so the "both accept" branch is exercised as much as the "both refuse" one.
NEARLY_VALID = st.fixed_dictionaries(
    {
        "x": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**54), 2**54),
        "n": st.none() | st.integers(-(2**54), 2**54) | st.floats(allow_nan=False).map(float),
        "flag": st.booleans(),
        "colour": st.none() | st.sampled_from(["blue", " red ", "red\n", "Red"]),
        "note": st.text(max_size=8),
    },
    optional={"id": st.none() | st.integers() | st.text(max_size=130), "extra": st.integers()},
)


@settings(max_examples=1500, deadline=None)
@given(
    instances=st.lists(TWIN_INSTANCE | TWIN_VALUES, min_size=1, max_size=3),
    unknown=st.sampled_from(["raise", "exclude"]),
)
def test_fast_loader_agrees_with_the_schema(instances: list[Any], unknown: str) -> None:
    from marshmallow import ValidationError as MarshmallowError

    fast = fast_loader(TWIN_CONTRACT, unknown)(instances)
    try:
        expected = instance_schema(TWIN_CONTRACT, "twin", unknown).load(instances, many=True)
    except MarshmallowError:
        assert fast is None
        return
    assert fast is not None, instances
    assert fast == expected
    assert [type(v) for r in fast for v in r.values()] == [type(v) for r in expected for v in r.values()]


def test_fast_loader_accepts_a_typical_valid_instance() -> None:
    loaded = fast_loader(TWIN_CONTRACT)([{"x": 1, "n": 2.0, "flag": True, "colour": " red ", "note": " hi ", "id": 7}])
    assert loaded == [{"x": 1.0, "n": 2, "flag": True, "colour": "red", "note": "hi", "id": 7}]
    assert type(loaded[0]["x"]) is float
