"""JSON Schema compatibility as Confluent Schema Registry judges it, for the registry double.

Written from Confluent's published rules ("Schema Evolution and Compatibility", JSON Schema:
the difference types of ``io.confluent.kafka.schemaregistry.json.diff`` and which of them are
compatible), not from Clicktrail's checker, so that a disagreement between the two shows.

A schema is first read as Confluent's parser (everit) reads it: one typed schema (object,
array, string, number, boolean, null), an enum, a const, a not, a combination (allOf, anyOf,
oneOf), the empty schema or the false schema. A ``type`` list is an anyOf of one schema per
type; keywords of several of those kinds in one object are an allOf of them. Then the old
("original") and new ("update") schemas are compared and every difference named with
Confluent's type; BACKWARD compatibility holds when each one is in the compatible set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Confluent's compatible difference types (the strict policy, the default).
COMPATIBLE = frozenset(
    """ID_CHANGED DESCRIPTION_CHANGED TITLE_CHANGED DEFAULT_CHANGED SCHEMA_REMOVED TYPE_EXTENDED
    MAX_LENGTH_INCREASED MAX_LENGTH_REMOVED MIN_LENGTH_DECREASED MIN_LENGTH_REMOVED PATTERN_REMOVED
    MAXIMUM_INCREASED MAXIMUM_REMOVED MINIMUM_DECREASED MINIMUM_REMOVED EXCLUSIVE_MAXIMUM_INCREASED
    EXCLUSIVE_MAXIMUM_REMOVED EXCLUSIVE_MINIMUM_DECREASED EXCLUSIVE_MINIMUM_REMOVED
    MULTIPLE_OF_REDUCED MULTIPLE_OF_REMOVED REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED
    REQUIRED_ATTRIBUTE_REMOVED DEPENDENCY_ARRAY_NARROWED DEPENDENCY_ARRAY_REMOVED
    DEPENDENCY_SCHEMA_REMOVED MAX_PROPERTIES_INCREASED MAX_PROPERTIES_REMOVED
    MIN_PROPERTIES_DECREASED MIN_PROPERTIES_REMOVED ADDITIONAL_PROPERTIES_ADDED
    ADDITIONAL_PROPERTIES_EXTENDED PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL
    REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL
    OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL
    PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
    PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL MAX_ITEMS_INCREASED MAX_ITEMS_REMOVED
    MIN_ITEMS_DECREASED MIN_ITEMS_REMOVED UNIQUE_ITEMS_REMOVED ADDITIONAL_ITEMS_ADDED
    ADDITIONAL_ITEMS_EXTENDED ENUM_ARRAY_EXTENDED COMBINED_TYPE_EXTENDED PRODUCT_TYPE_NARROWED
    SUM_TYPE_EXTENDED NOT_TYPE_NARROWED""".split()  # noqa: SIM905
)

_OBJECT = ("properties", "required", "additionalProperties", "patternProperties",
           "minProperties", "maxProperties", "dependencies", "propertyNames")  # fmt: skip
_ARRAY = ("items", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains")
_STRING = ("minLength", "maxLength", "pattern", "format")
_NUMBER = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_COMBINERS = ("allOf", "anyOf", "oneOf")


@dataclass(frozen=True)
class Difference:
    kind: str
    path: str

    @property
    def compatible(self) -> bool:
        return self.kind in COMPATIBLE


@dataclass(frozen=True)
class Parsed:
    """A schema as the parser types it: ``kind`` and its keywords (or subschemas)."""

    kind: str  # empty, false, object, array, string, number, boolean, null, enum, const, not, combined
    raw: Any
    criterion: str = ""
    parts: tuple[Any, ...] = ()
    integer: bool = False


def parse(schema: Any) -> Parsed:
    if schema is True or (isinstance(schema, dict) and not _assertions(schema)):
        return Parsed("empty", schema if isinstance(schema, dict) else {})
    if schema is False:
        return Parsed("false", schema)
    parts: list[Any] = []
    types = schema.get("type")
    typed = {k: v for k, v in schema.items() if k not in (*_COMBINERS, "enum", "const", "not")}
    if isinstance(types, list) and len(types) > 1:
        parts.append({"anyOf": [{**typed, "type": t} for t in types]})
    elif types is not None:
        parts.append({**typed, "type": types[0] if isinstance(types, list) else types})
    else:
        for kind, keywords in (("object", _OBJECT), ("array", _ARRAY), ("string", _STRING),
                               ("number", _NUMBER)):  # fmt: skip
            if any(k in schema for k in keywords):
                parts.append({**{k: v for k, v in typed.items() if k in keywords}, "type": kind})
    for keyword in ("enum", "const", "not", *_COMBINERS):
        if keyword in schema:
            parts.append({keyword: schema[keyword]})
    if len(parts) > 1:
        return Parsed("combined", schema, "allOf", tuple(parts))
    single = parts[0]
    for keyword in _COMBINERS:
        if keyword in single:
            return Parsed("combined", schema, keyword, tuple(single[keyword]))
    if "enum" in single:
        return Parsed("enum", single)
    if "const" in single:
        return Parsed("const", single)
    if "not" in single:
        return Parsed("not", single)
    kind = single["type"]
    if kind == "integer":
        return Parsed("number", {**schema, **single}, integer=True)
    return Parsed(kind, {**schema, **single})


def _assertions(schema: dict[str, Any]) -> set[str]:
    return set(schema) - {"$schema", "$id", "title", "description", "default", "examples",
                          "$comment", "self", "definitions", "$defs"}  # fmt: skip


def compare(original: Any, update: Any, path: str = "#") -> list[Difference]:
    out: list[Difference] = []
    _compare(parse(original), parse(update), path, out)
    return out


def incompatibilities(original: Any, update: Any) -> list[Difference]:
    return [d for d in compare(original, update) if not d.compatible]


def _compare(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    if original.kind != "combined" and update.kind == "combined":
        if len(update.parts) == 1 and _try(original, parse(update.parts[0]), path, out):
            return
        if update.criterion in ("anyOf", "oneOf"):
            for part in update.parts:
                if _try(original, parse(part), path, out):
                    out.append(Difference("SUM_TYPE_EXTENDED", path))
                    return
    elif original.kind == "combined" and update.kind != "combined":
        if len(original.parts) == 1 and _try(parse(original.parts[0]), update, path, out):
            return
        if original.criterion == "allOf":
            for part in original.parts:
                if _try(parse(part), update, path, out):
                    out.append(Difference("PRODUCT_TYPE_NARROWED", path))
                    return
    if original.kind != update.kind:
        if original.kind == "false" or update.kind == "empty":
            return
        out.append(Difference("TYPE_CHANGED", path))
        return
    compare_kind = _BY_KIND.get(original.kind)
    if compare_kind is not None:
        compare_kind(original, update, path, out)


def _try(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> bool:
    found: list[Difference] = []
    _compare(original, update, path, found)
    if all(d.compatible for d in found):
        out.extend(found)
        return True
    return False


def _bounds(
    original: dict[str, Any], update: dict[str, Any], path: str, out: list[Difference],
    keyword: str, name: str,
) -> None:  # fmt: skip
    """maxLength, minimum, ...: ADDED, REMOVED, INCREASED or DECREASED."""
    before, after = original.get(keyword), update.get(keyword)
    if before == after:
        return
    if before is None:
        kind = "ADDED"
    elif after is None:
        kind = "REMOVED"
    else:
        kind = "INCREASED" if after > before else "DECREASED"
    out.append(Difference(f"{name}_{kind}", f"{path}/{keyword}"))


def _string(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    a, b = original.raw, update.raw
    _bounds(a, b, path, out, "maxLength", "MAX_LENGTH")
    _bounds(a, b, path, out, "minLength", "MIN_LENGTH")
    if a.get("pattern") != b.get("pattern"):
        kind = "ADDED" if "pattern" not in a else "REMOVED" if "pattern" not in b else "CHANGED"
        out.append(Difference(f"PATTERN_{kind}", f"{path}/pattern"))


def _number(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    a, b = original.raw, update.raw
    for keyword, name in (("maximum", "MAXIMUM"), ("minimum", "MINIMUM"),
                          ("exclusiveMaximum", "EXCLUSIVE_MAXIMUM"),
                          ("exclusiveMinimum", "EXCLUSIVE_MINIMUM")):  # fmt: skip
        _bounds(a, b, path, out, keyword, name)
    before, after = a.get("multipleOf"), b.get("multipleOf")
    if before != after:
        if before is None:
            kind = "ADDED"
        elif after is None:
            kind = "REMOVED"
        elif after % before == 0:
            kind = "EXPANDED"
        elif before % after == 0:
            kind = "REDUCED"
        else:
            kind = "CHANGED"
        out.append(Difference(f"MULTIPLE_OF_{kind}", f"{path}/multipleOf"))
    if original.integer != update.integer:
        out.append(Difference("TYPE_EXTENDED" if original.integer else "TYPE_NARROWED", path))


def _enum(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    before, after = _values(original.raw["enum"]), _values(update.raw["enum"])
    if before != after:
        kind = "EXTENDED" if before <= after else "NARROWED" if after <= before else "CHANGED"
        out.append(Difference(f"ENUM_ARRAY_{kind}", f"{path}/enum"))


def _const(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    if original.raw["const"] != update.raw["const"]:
        out.append(Difference("ENUM_ARRAY_CHANGED", f"{path}/const"))


def _values(values: list[Any]) -> set[str]:
    return {repr(v) for v in values}


def _not(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    # not X -> not Y is compatible when Y -> X is (the negation reverses the direction).
    found = compare(update.raw["not"], original.raw["not"], f"{path}/not")
    narrowed = all(d.compatible for d in found)
    out.append(Difference("NOT_TYPE_NARROWED" if narrowed else "NOT_TYPE_EXTENDED", f"{path}/not"))


def _combined(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    if original.criterion != update.criterion:
        singletons = len(original.parts) == 1 and len(update.parts) == 1
        if update.criterion == "anyOf" or singletons:
            out.append(Difference("COMBINED_TYPE_EXTENDED", path))
        else:
            out.append(Difference("COMBINED_TYPE_CHANGED", path))
            return
    if len(original.parts) < len(update.parts):
        extended = "PRODUCT_TYPE_EXTENDED" if update.criterion == "allOf" else "SUM_TYPE_EXTENDED"
        out.append(Difference(extended, path))
    elif len(original.parts) > len(update.parts):
        narrowed = "PRODUCT_TYPE_NARROWED" if original.criterion == "allOf" else "SUM_TYPE_NARROWED"
        out.append(Difference(narrowed, path))
    # Pair each original subschema with an update subschema it is compatible with (a matching
    # as large as the smaller side); without one, the combination changed incompatibly.
    compatible: dict[int, dict[int, list[Difference]]] = {}
    for i, a in enumerate(original.parts):
        for j, b in enumerate(update.parts):
            found = compare(a, b, f"{path}/{original.criterion}/{i}")
            if all(d.compatible for d in found):
                compatible.setdefault(i, {})[j] = found
    matching = _match(compatible)
    for i, j in matching.items():
        out.extend(compatible[i][j])
    if len(matching) < min(len(original.parts), len(update.parts)):
        out.append(Difference("COMBINED_TYPE_SUBSCHEMAS_CHANGED", path))


def _match(edges: dict[int, dict[int, Any]]) -> dict[int, int]:
    """A maximum bipartite matching (augmenting paths): original index -> update index."""
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges.get(i, {}):
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in edges:
        augment(i, set())
    return {i: j for j, i in owner.items()}


def _array(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    a, b = original.raw, update.raw
    before, after = a.get("items"), b.get("items")
    if before is None and after is not None:
        out.append(Difference("SCHEMA_ADDED", f"{path}/items"))
    elif before is not None and after is None:
        out.append(Difference("SCHEMA_REMOVED", f"{path}/items"))
    elif before is not None:
        _compare(parse(before), parse(after), f"{path}/items", out)
    _bounds(a, b, path, out, "maxItems", "MAX_ITEMS")
    _bounds(a, b, path, out, "minItems", "MIN_ITEMS")
    if bool(a.get("uniqueItems")) != bool(b.get("uniqueItems")):
        out.append(
            Difference(
                "UNIQUE_ITEMS_REMOVED" if a.get("uniqueItems") else "UNIQUE_ITEMS_ADDED",
                f"{path}/uniqueItems",
            )
        )


def _object(original: Parsed, update: Parsed, path: str, out: list[Difference]) -> None:
    a, b = original.raw, update.raw
    a_props, b_props = a.get("properties", {}), b.get("properties", {})
    a_required, b_required = set(a.get("required", [])), set(b.get("required", []))
    for name in a_props:
        if name in b_props:
            was, now = name in a_required, name in b_required
            if was and not now:
                out.append(Difference("REQUIRED_ATTRIBUTE_REMOVED", f"{path}/required/{name}"))
            elif now and not was:
                kind = "WITH_DEFAULT_ADDED" if _has_default(b_props[name]) else "ADDED"
                out.append(Difference(f"REQUIRED_ATTRIBUTE_{kind}", f"{path}/required/{name}"))
    for name in {*a_props, *b_props}:
        where = f"{path}/properties/{name}"
        if name not in b_props:  # removed: judged by the update's content model
            if _open(b):
                out.append(Difference("PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL", where))
            elif (covering := _covering(b, name)) is not None:
                found = compare(a_props[name], covering, where)
                out.extend(found)
                covered = all(d.compatible for d in found)
                out.append(Difference(
                    f"PROPERTY_REMOVED_{'IS' if covered else 'NOT'}_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", where
                ))  # fmt: skip
            elif a_props[name] is False:
                out.append(
                    Difference("PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL", where)
                )
            else:
                out.append(Difference("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", where))
        elif name not in a_props:  # added: judged by the original's content model
            required, default = name in b_required, _has_default(b_props[name])
            if _open(a):
                if parse(b_props[name]).kind == "empty":
                    kind = "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL"
                elif required:
                    kind = f"REQUIRED_PROPERTY_{'WITH_DEFAULT_' if default else ''}ADDED_TO_OPEN_CONTENT_MODEL"
                else:
                    kind = "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"
                out.append(Difference(kind, where))
                continue
            if (covering := _covering(a, name)) is not None:
                found = compare(covering, b_props[name], where)
                out.extend(found)
                covered = all(d.compatible for d in found)
                out.append(Difference(
                    f"PROPERTY_ADDED_{'IS' if covered else 'NOT'}_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", where
                ))  # fmt: skip
            if required:
                kind = f"REQUIRED_PROPERTY_{'WITH_DEFAULT_' if default else ''}ADDED_TO_UNOPEN_CONTENT_MODEL"
            else:
                kind = "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"
            out.append(Difference(kind, where))
        else:
            _compare(parse(a_props[name]), parse(b_props[name]), where, out)
    before, after = a.get("additionalProperties", True), b.get("additionalProperties", True)
    where = f"{path}/additionalProperties"
    if (before is not False) != (after is not False):
        out.append(
            Difference(
                "ADDITIONAL_PROPERTIES_ADDED"
                if after is not False
                else "ADDITIONAL_PROPERTIES_REMOVED",
                where,
            )
        )
    elif before is True and isinstance(after, dict):
        out.append(Difference("ADDITIONAL_PROPERTIES_NARROWED", where))
    elif isinstance(before, dict) and after is True:
        out.append(Difference("ADDITIONAL_PROPERTIES_EXTENDED", where))
    elif isinstance(before, dict) and isinstance(after, dict):
        _compare(parse(before), parse(after), where, out)
    _bounds(a, b, path, out, "maxProperties", "MAX_PROPERTIES")
    _bounds(a, b, path, out, "minProperties", "MIN_PROPERTIES")


def _open(schema: dict[str, Any]) -> bool:
    """Open content model: additional properties allowed with no schema, and no patterns."""
    return schema.get("additionalProperties", True) is True and not schema.get("patternProperties")


def _covering(schema: dict[str, Any], name: str) -> Any | None:
    """The schema a partially open content model gives a property of this name, if any."""
    for pattern, covering in (schema.get("patternProperties") or {}).items():
        if re.search(pattern, name):
            return covering
    additional = schema.get("additionalProperties", True)
    return additional if isinstance(additional, dict) else None


def _has_default(schema: Any) -> bool:
    return isinstance(schema, dict) and "default" in schema


_BY_KIND = {
    "string": _string,
    "number": _number,
    "enum": _enum,
    "const": _const,
    "not": _not,
    "combined": _combined,
    "object": _object,
    "array": _array,
}
