"""Record schemas in the one form every Confluent-compatible registry and consumer reads alike.

A record schema is registered, compared and validated as one JSON Schema draft-07 document
without a single ``$ref``: each reference is replaced by what it points at, and a ``$ref`` with
siblings (a conjunction in 2020-12) is merged with them into one schema. Why this form:

- Karapace resolves ``$ref`` through its draft-07 validator, which cannot fetch ``urn:`` ids
  (registration answers 500), and draft-07 ignores the siblings of a ``$ref``;
- both Confluent's and Karapace's compatibility checks compare object schemas property by
  property, but a change below ``allOf``/``anyOf`` only as "subschemas changed", with no reason;
- Kafka Connect and ksqlDB map a flat object schema to a struct, and a combinator to little.

Schema references by subject (Confluent's ``references``) would keep the documents apart, but
every referenced document would be a subject of its own to evolve in step, and a reader would
need the registry to resolve them; an inlined record needs nothing but itself.

Keywords of drafts after 07 that draft-07 validators would silently ignore are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clicktrail.errors import ClicktrailError, Fault

RECORD_DRAFT = "http://json-schema.org/draft-07/schema#"

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_SCHEMA = frozenset(
    {"additionalProperties", "additionalItems", "contains", "propertyNames", "not", "if", "then",
     "else"}
)  # fmt: skip
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_MAPS = ("properties", "patternProperties")
# Only meaningful where they are written: dropped once their references are inlined.
_AUTHORING = frozenset({"$schema", "$id", "$defs", "definitions", "$comment", "$anchor", "self"})
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated"})
_NOT_IN_DRAFT_07 = {
    "dependentRequired": 'use "dependencies" with a list of names',
    "dependentSchemas": 'use "dependencies" with a schema',
    "prefixItems": 'use "items" with a list of schemas',
    "unevaluatedProperties": 'use "additionalProperties" on one object schema',
    "unevaluatedItems": 'use "additionalItems"',
    "minContains": "no draft-07 equivalent",
    "maxContains": "no draft-07 equivalent",
    "$dynamicRef": "no draft-07 equivalent",
    "$dynamicAnchor": "no draft-07 equivalent",
    "$recursiveRef": "no draft-07 equivalent",
    "$recursiveAnchor": "no draft-07 equivalent",
}

Resolve = Callable[[str, str], tuple[Any, str]]


class InlineError(ClicktrailError, ValueError):
    """A schema that cannot be written as one self-contained draft-07 document: a schema of
    ours, so our fault. A ValueError too, as it always was."""

    fault = Fault.INTERNAL


def inline(schema: Any, base: str, resolve: Resolve) -> Any:
    """``schema`` (found in the document ``base``) with every ``$ref`` replaced by its target.

    ``resolve(ref, base)`` returns the schema a reference points at and the id of its document.
    """
    return _Inliner(resolve).schema(schema, base, ())


class _Inliner:
    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve

    def schema(self, node: Any, base: str, trail: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for keyword, value in node.items():
            if keyword in _NOT_IN_DRAFT_07:
                raise InlineError(
                    f"{keyword} is not JSON Schema draft-07, which registries and Kafka Connect "
                    f"judge by ({_NOT_IN_DRAFT_07[keyword]})"
                )
            if keyword in _AUTHORING or keyword == "$ref":
                continue
            if keyword in _SCHEMA or (keyword == "items" and not isinstance(value, list)):
                out[keyword] = self.schema(value, base, trail)
            elif keyword in _SCHEMA_LISTS or (keyword == "items" and isinstance(value, list)):
                out[keyword] = [self.schema(item, base, trail) for item in value]
            elif keyword in _SCHEMA_MAPS:
                out[keyword] = {k: self.schema(v, base, trail) for k, v in value.items()}
            elif keyword == "dependencies":
                out[keyword] = {
                    k: v if isinstance(v, list) else self.schema(v, base, trail)
                    for k, v in value.items()
                }
            else:
                out[keyword] = value
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return out
        target, target_base = self._resolve(ref, base)
        key = f"{target_base}#{ref.partition('#')[2]}"
        if key in trail:
            raise InlineError(f"$ref {ref} refers back to itself: a recursive schema")
        return conjoin(self.schema(target, target_base, (*trail, key)), out)


def conjoin(first: Any, second: Any) -> Any:
    """One schema that accepts what both accept (``allOf: [first, second]``), merged into one
    object schema where that means the same; ``second``'s annotations win."""
    if first is True or first == {}:
        return second
    if second is True or second == {}:
        return first
    if first is False or second is False:
        return False
    if not _mergeable(first, second):
        return {"allOf": [first, second]}
    merged: dict[str, Any] = dict(first)
    for keyword, value in second.items():
        if keyword not in merged or keyword in _ANNOTATIONS:
            merged[keyword] = value
        elif keyword == "properties":
            mine = merged[keyword]
            merged[keyword] = {
                **mine,
                **{n: conjoin(mine[n], s) if n in mine else s for n, s in value.items()},
            }
        elif keyword == "required":
            merged[keyword] = list(dict.fromkeys([*merged[keyword], *value]))
        elif keyword == "type":
            merged[keyword] = _common_types(merged[keyword], value)
        elif keyword == "allOf":
            merged[keyword] = [*merged[keyword], *value]
    return merged


_MERGED = frozenset({"properties", "required", "type", "allOf"}) | _ANNOTATIONS


def _mergeable(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether merging the two keyword by keyword means what ``allOf`` of them means: no
    keyword both give differently (beyond those merged), and no ``additionalProperties`` or
    ``patternProperties`` of one that the other's properties would change the reach of."""
    for keyword in first.keys() & second.keys() - _MERGED:
        if first[keyword] != second[keyword]:
            return False
    for schema, other in ((first, second), (second, first)):
        if "additionalProperties" in schema or "patternProperties" in schema:
            if not set(other.get("properties", {})) <= set(schema.get("properties", {})):
                return False
            patterns = schema.get("patternProperties")
            if other.get("patternProperties", patterns) != patterns:
                return False
    return True


def _common_types(first: str | list[str], second: str | list[str]) -> str | list[str]:
    """The types both allow (an integer is a number)."""
    a = [first] if isinstance(first, str) else list(first)
    b = [second] if isinstance(second, str) else list(second)
    common = [t for t in a if t in b or (t == "integer" and "number" in b)]
    common += [t for t in b if t == "integer" and "number" in a and t not in common]
    if not common:
        raise InlineError(f"a $ref and its siblings allow no common type ({first}, {second})")
    return common[0] if len(common) == 1 else common
