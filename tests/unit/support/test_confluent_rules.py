"""The registry double's judge on the cases Confluent documents for JSON Schema (content models,
types, enums, required, combinations), so that the double itself can be trusted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.confluent_rules import compare, incompatibilities


def obj(additional: Any = None, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if additional is not None:
        schema["additionalProperties"] = additional
    return schema


STRING, INTEGER, NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "number"}


@pytest.mark.parametrize(
    ("original", "update", "kinds"),
    [
        # Open content model: any property may already hold anything.
        (obj(a=STRING), obj(a=STRING, b=STRING), {"OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"}),
        (obj(a=STRING), obj(a=STRING, b={}), set()),
        (obj(a=STRING, b=STRING), obj(a=STRING), set()),
        # Closed: a new optional property is safe, a removed one is not.
        (obj(False, a=STRING), obj(False, a=STRING, b=STRING), set()),
        (obj(False, a=STRING, b=STRING), obj(False, a=STRING), {"PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL"}),
        (
            obj(False, a=STRING),
            {**obj(False, a=STRING, b=STRING), "required": ["b"]},
            {"REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"},
        ),
        # Partially open: the new property is judged against the schema that covered it.
        (obj(STRING, a=STRING), obj(STRING, a=STRING, b=STRING), set()),
        (
            obj(STRING, a=STRING),
            obj(STRING, a=STRING, b=INTEGER),
            {"TYPE_CHANGED", "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"},
        ),
        (
            {**obj(False, a=STRING), "patternProperties": {"^i_": INTEGER}},
            {**obj(False, a=STRING, i_count=INTEGER), "patternProperties": {"^i_": INTEGER}},
            set(),
        ),
        # Types, enums, required.
        (obj(a=NUMBER), obj(a=INTEGER), {"TYPE_NARROWED"}),
        (obj(a=INTEGER), obj(a=NUMBER), set()),
        (obj(a=STRING), obj(a={"type": ["string", "null"]}), set()),
        (obj(a={"type": ["string", "null"]}), obj(a=STRING), {"TYPE_CHANGED"}),
        (obj(a={"enum": ["x"]}), obj(a={"enum": ["x", "y"]}), set()),
        (obj(a={"enum": ["x", "y"]}), obj(a={"enum": ["x"]}), {"ENUM_ARRAY_NARROWED"}),
        (obj(a=STRING), {**obj(a=STRING), "required": ["a"]}, {"REQUIRED_ATTRIBUTE_ADDED"}),
        (obj(a={"type": "string", "maxLength": 5}), obj(a={"type": "string", "maxLength": 3}), {"MAX_LENGTH_DECREASED"}),
        (obj(a={"type": "number", "minimum": 1}), obj(a={"type": "number", "minimum": 0}), set()),
        (obj(True), obj(False), {"ADDITIONAL_PROPERTIES_REMOVED"}),
        (obj(a={"anyOf": [STRING]}), obj(a={"anyOf": [STRING, INTEGER]}), set()),
        (obj(a={"anyOf": [STRING, INTEGER]}), obj(a={"anyOf": [STRING]}), {"SUM_TYPE_NARROWED"}),
    ],
)  # fmt: skip
def test_confluents_documented_verdicts(
    original: dict[str, Any], update: dict[str, Any], kinds: set[str]
) -> None:
    assert {d.kind for d in incompatibilities(original, update)} == kinds


def test_differences_name_where_they_are() -> None:
    found = compare(obj(False, a=obj(False, b=NUMBER)), obj(False, a=obj(False, b=INTEGER)))

    assert [(d.kind, d.path) for d in found] == [("TYPE_NARROWED", "#/properties/a/properties/b")]
