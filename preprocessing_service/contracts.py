"""A model version's feature contract as a marshmallow schema (validation) and as a JSON Schema (docs).

Rules for values, declared here once:

* ``number`` takes a JSON number (not a string, not true/false), finite; ``integer`` a JSON number with
  no fractional part; ``boolean`` only ``true``/``false``.
* ``category`` and ``string`` take a JSON string; surrounding whitespace is stripped before a category is
  matched, so ``" Dream "`` is ``Dream`` and a stray space never reaches the model as an unknown value.
* ``null`` is accepted only for features that had missing values in training; every feature is required.
* Each instance may carry ``id`` (a string or integer, at most 128 characters), echoed back and never used
  as a feature (unless the model has a feature called ``id``).
* Unknown fields are refused (``unknown="raise"``) or dropped (``unknown="exclude"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import chain
from operator import itemgetter
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

INSTANCE_ID = "id"
MAX_ID_LENGTH = 128
MAX_STRING_LENGTH = 10_000


class Number(fields.Field):
    """A finite JSON number; strings and booleans are refused rather than coerced."""

    def __init__(self, *, integer: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.integer = integer

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"Not a number: got {_kind(value)}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("Not a finite number.")
        if isinstance(value, int) and abs(value) > 2**53:
            raise ValidationError("Number too large.")
        if self.integer:
            if isinstance(value, float) and not value.is_integer():
                raise ValidationError("Not an integer.")
            if abs(value) > 2**53:  # 1e300 is a whole float too; as an int64 feature it would overflow
                raise ValidationError("Number too large.")
            return int(value)
        return float(value)


class StrictBoolean(fields.Field):
    """Only JSON ``true`` or ``false``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"Not a boolean: got {_kind(value)}.")
        return value


class Text(fields.Field):
    """A JSON string with surrounding whitespace stripped; for categories, one of the allowed values."""

    def __init__(
        self, *, choices: list[str] | None = None, model_values: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.choices = set(choices) if choices is not None else None
        self.model_values = model_values or {}
        self.shown = ", ".join(choices[:20]) + (", ..." if choices and len(choices) > 20 else "") if choices else ""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(f"Not a string: got {_kind(value)}.")
        if len(value) > MAX_STRING_LENGTH:
            raise ValidationError(f"Longer than {MAX_STRING_LENGTH} characters.")
        stripped = value.strip()
        if self.choices is not None and stripped not in self.choices:
            shown = stripped if len(stripped) <= 40 else stripped[:37] + "..."
            raise ValidationError(f"{shown!r} is not one of: {self.shown}.")
        return self.model_values.get(stripped, stripped)


class InstanceId(fields.Field):
    """The optional per-instance ``id``: a string or an integer, echoed back."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError("Must be a string or an integer.")
        if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
            raise ValidationError(f"Longer than {MAX_ID_LENGTH} characters.")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def feature_field(feature: dict[str, Any]) -> fields.Field:
    """The marshmallow field for one contract feature."""
    common: dict[str, Any] = {
        "required": bool(feature.get("required", True)),
        "allow_none": bool(feature["nullable"]),
        "data_key": str(feature["name"]),
    }
    kind = feature["type"]
    if kind == "number":
        return Number(**common)
    if kind == "integer":
        return Number(integer=True, **common)
    if kind == "boolean":
        return StrictBoolean(**common)
    if kind == "category":
        return Text(choices=list(feature["categories"]), model_values=feature.get("model_values"), **common)
    return Text(**common)


class _Instance(Schema):
    """Fields live under neutral attribute names and read their feature's name as ``data_key``.

    Declared under the feature's own name, marshmallow would load ``Sepal.Length`` as
    ``{"Sepal": {"Length": ...}}`` and take a feature called ``Meta`` for the schema's options.
    """

    @post_load
    def _feature_names(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {self.load_fields[key].data_key or key: value for key, value in data.items()}


def instance_schema(contract: dict[str, Any], name: str, unknown: str = "raise") -> Schema:
    """A marshmallow schema instance for one instance of ``contract``."""
    declared: dict[str, fields.Field] = {
        f"feature_{index}": feature_field(feature) for index, feature in enumerate(contract["features"])
    }
    if not any(feature["name"] == INSTANCE_ID for feature in contract["features"]):
        declared["instance_id"] = InstanceId(required=False, allow_none=True, data_key=INSTANCE_ID)
    schema_class = _Instance.from_dict(declared, name=f"Instance_{name}")
    return schema_class(unknown=RAISE if unknown == "raise" else EXCLUDE)


class TransformRequest(Schema):
    """The request envelope: ``{"instances": [ {...}, ... ]}`` (the instances are checked separately)."""

    instances = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1))

    class Meta:
        unknown = RAISE


_JSON_TYPES = {"number": "number", "integer": "integer", "boolean": "boolean", "category": "string", "string": "string"}


def json_schema(contract: dict[str, Any], *, title: str, example: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one instance, with the contract's ranges as documentation."""
    properties: dict[str, Any] = {}
    for feature in contract["features"]:
        json_type: Any = _JSON_TYPES[feature["type"]]
        prop: dict[str, Any] = {"type": [json_type, "null"] if feature["nullable"] else json_type}
        if feature["type"] == "category":
            prop["enum"] = list(feature["categories"]) + ([None] if feature["nullable"] else [])
            prop["description"] = "surrounding whitespace is ignored"
        if "range" in feature:
            low, high = feature["range"]["min"], feature["range"]["max"]
            prop["description"] = (
                f"observed in training: {low} to {high}; values outside are accepted and reported as warnings"
            )
        properties[feature["name"]] = prop
    names = [f["name"] for f in contract["features"]]
    if INSTANCE_ID not in properties:
        properties[INSTANCE_ID] = {
            "type": ["string", "integer", "null"],
            "maxLength": MAX_ID_LENGTH,
            "description": "optional; echoed back, never a feature",
        }
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": [f["name"] for f in contract["features"] if f.get("required", True)],
        "additionalProperties": False,
        "x-feature-order": names,
    }
    if example is not None:
        schema["examples"] = [example]
    return schema


InstanceLoader = Callable[[list[Any]], "list[dict[str, Any]] | None"]


def fast_loader(contract: dict[str, Any], unknown: str = "raise") -> InstanceLoader:
    """A plain-Python twin of ``instance_schema(...).load(many=True)`` for instances that are valid.

    marshmallow costs about 8 µs a field; a 30-feature row would spend more time in validation than in
    the whole model. This loader applies the same rules in one loop and returns exactly what the schema
    returns, or None at the first problem; the caller then runs the schema, which is what writes the
    per-field messages. The two are kept identical by a property test.
    """
    features = [
        (
            f["name"],
            f["type"],
            bool(f["nullable"]),
            frozenset(f["categories"]) if f["type"] == "category" else None,
            f.get("model_values") or {},
        )
        for f in contract["features"]
    ]
    id_is_feature = any(f["name"] == INSTANCE_ID for f in contract["features"])
    allowed = frozenset(f["name"] for f in contract["features"]) | ({INSTANCE_ID} if not id_is_feature else set())
    refuse_unknown = unknown == "raise"
    limit = 2**53
    isfinite = math.isfinite

    def load(instances: list[Any]) -> list[dict[str, Any]] | None:
        records: list[dict[str, Any]] = []
        for instance in instances:
            if type(instance) is not dict:
                return None
            if refuse_unknown and not allowed.issuperset(instance):
                return None
            record: dict[str, Any] = {}
            for name, kind, nullable, categories, model_values in features:
                if name not in instance:
                    return None
                value = instance[name]
                if value is None:
                    if not nullable:
                        return None
                    record[name] = None
                    continue
                kind_of = type(value)
                if kind == "number" or kind == "integer":
                    if kind_of is float:
                        if not isfinite(value):
                            return None
                    elif kind_of is not int:
                        return None
                    if kind == "integer":
                        if (kind_of is float and not value.is_integer()) or abs(value) > limit:
                            return None
                        record[name] = int(value)
                    else:
                        if kind_of is int and abs(value) > limit:
                            return None
                        record[name] = float(value)
                elif kind == "boolean":
                    if kind_of is not bool:
                        return None
                    record[name] = value
                else:
                    if kind_of is not str or len(value) > MAX_STRING_LENGTH:
                        return None
                    stripped = value.strip()
                    if categories is not None and stripped not in categories:
                        return None
                    record[name] = model_values.get(stripped, stripped) if model_values else stripped
            if not id_is_feature and INSTANCE_ID in instance:
                given = instance[INSTANCE_ID]
                if given is not None:
                    kind_of = type(given)
                    if kind_of is str:
                        if len(given) > MAX_ID_LENGTH:
                            return None
                    elif kind_of is not int:
                        return None
                record[INSTANCE_ID] = given
            records.append(record)
        return records

    return load


MatrixLoader = Callable[[list[Any]], "tuple[Any, list[Any]] | None"]


def fast_matrix_loader(contract: dict[str, Any], unknown: str = "raise") -> MatrixLoader | None:
    """For contracts whose features are all numbers: valid instances straight to a float matrix.

    Returns ``(matrix, ids)`` with the features in contract order, or None whenever anything is unusual
    (a null, a non-number, a huge value, a fractional integer, an odd id); the caller then takes the
    record-by-record path, which gives the same answer or the precise 422. No contract with text or
    boolean features gets one (returns None).
    """
    import numpy as np

    if not contract["features"] or any(f["type"] not in ("number", "integer") for f in contract["features"]):
        return None
    names = [f["name"] for f in contract["features"]]
    integer_columns = [i for i, f in enumerate(contract["features"]) if f["type"] == "integer"]
    id_is_feature = INSTANCE_ID in names
    allowed = frozenset(names) | ({INSTANCE_ID} if not id_is_feature else set())
    refuse_unknown = unknown == "raise"
    pick = itemgetter(*names)
    numbers = frozenset({int, float})
    limit = float(2**53)

    def load(instances: list[Any]) -> tuple[Any, list[Any]] | None:
        if not instances or set(map(type, instances)) != {dict}:
            return None
        if refuse_unknown and not all(map(allowed.issuperset, instances)):
            return None
        try:
            rows = list(map(pick, instances))
        except KeyError:
            return None
        if len(names) == 1:
            rows = [(row,) for row in rows]
        if not numbers.issuperset(map(type, chain.from_iterable(rows))):
            return None
        try:
            matrix = np.array(rows, dtype=np.float64)
        except OverflowError:
            return None
        if not np.isfinite(matrix).all() or (np.abs(matrix) > limit).any():
            return None
        if integer_columns:
            block = matrix[:, integer_columns]
            if not (block == np.floor(block)).all():
                return None
        if id_is_feature:
            return matrix, [None] * len(instances)
        ids = [instance.get(INSTANCE_ID) for instance in instances]
        for given in ids:
            kind_of = type(given)
            if not (given is None or kind_of is int or (kind_of is str and len(given) <= MAX_ID_LENGTH)):
                return None
        return matrix, ids

    return load
