"""Schema evolution rules: each new version must accept every event the previous one accepted.

Within a SchemaVer MODEL (``1-0-0`` -> ``1-0-1`` -> ``1-1-0``) a new version must be backward
compatible with the one before; a change meant to break compatibility starts a new MODEL
(``2-0-0``), which old clients keep ignoring by naming ``1-x-x`` in ``context.schema``.

The rules are those of Confluent-compatible registries under BACKWARD (Confluent's and
Karapace's JSON Schema checks), so that what passes here registers there. They compare the
record schemas (``clicktrail.inline``: self-contained, no ``$ref``), location by location, and
turn on each object's *content model*:

- open (no ``additionalProperties``): any property may already carry any value, so a new
  property is refused (even one whose schema accepts anything, as Karapace refuses it); a
  removed one is free;
- closed (``additionalProperties: false``): a new optional property is compatible; a removed
  or renamed one is refused (events that carry it would be);
- partially open (``additionalProperties`` a schema, or ``patternProperties``): a new or
  removed property is compared with the schema that covered it.

Also incompatible: a new required field, or an optional one made required; a narrowed type; a
tightened constraint (bounds, lengths, pattern, format, multipleOf, uniqueItems, additional
properties restricted); a restricted or shrunk enum, a new or changed const; a changed
composition (anyOf, oneOf, not, ...) that cannot be proven looser. Compatible: loosened
constraints, new enum values, documentation. What cannot be proven compatible is reported.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from clicktrail.schemas import SchemaCatalogueError, SchemaVer, build_records, read_catalogue

_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "multipleOf", "contentEncoding", "contentMediaType")
_BRANCHES = ("anyOf", "oneOf")
_COMPOSITE = (
    "not", "if", "then", "else", "dependencies", "patternProperties", "propertyNames",
    "contains", "additionalItems",
)  # fmt: skip
_IGNORED = frozenset(
    {"$schema", "$id", "$comment", "self", "title", "description", "examples", "default",
     "deprecated", "readOnly", "writeOnly"}
)  # fmt: skip
_MAX_DEPTH = 64


@dataclass
class Effective:
    """Everything a location's schema demands, its conjuncts merged."""

    types: set[str] | None = None
    properties: dict[str, list[Any]] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)
    exact: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    enum: list[str] | None = None
    const: list[str] = field(default_factory=list)
    # additionalProperties other than true; False closes the object.
    additional: list[Any] = field(default_factory=list)
    patterns: dict[str, list[Any]] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)
    # anyOf / oneOf occurrences, in order: the keyword and its branches.
    branches: list[tuple[str, list[Any]]] = field(default_factory=list)
    composite: set[str] = field(default_factory=set)
    unique_items: bool = False
    rejects_all: bool = False

    @property
    def closed(self) -> bool:
        return any(schema is False for schema in self.additional)

    @property
    def open(self) -> bool:
        return not self.additional and not self.patterns

    def covering(self, name: str) -> list[Any]:
        """The schemas that applied to a property of this name before it had its own."""
        for pattern, schemas in self.patterns.items():
            if re.search(pattern, name):
                return schemas
        return self.additional


def backward_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why record schema ``new`` may refuse an event ``old`` accepted: a line per change, empty
    if none. Both are self-contained documents (no ``$ref``), as a registry holds them."""
    changes: list[str] = []
    _compare([old], [new], "", changes, 0)
    return list(dict.fromkeys(changes))


def _compare(
    old_nodes: list[Any], new_nodes: list[Any], path: str, out: list[str], depth: int
) -> None:
    if depth > _MAX_DEPTH:
        return
    old, new = _effective(old_nodes), _effective(new_nodes)
    at = path or "/"
    if new.rejects_all and not old.rejects_all:
        out.append(f"{at}: now rejects every value")
        return
    if new.types is not None:
        if old.types is None:
            out.append(f"{at}: type now restricted to {', '.join(sorted(new.types))}")
        elif lost := old.types - new.types:
            out.append(f"{at}: type narrowed, no longer accepts {', '.join(sorted(lost))}")
    for name in sorted(new.required - old.required):
        if name in old.properties:
            out.append(
                f"{path}/{name}: now required (events written for the old version may lack it)"
            )
        else:
            out.append(
                f"{path}/{name}: new required field (events written for the old version lack it)"
            )
    _compare_properties(old, new, path, out, depth)
    for keyword, value in new.lower.items():
        if keyword not in old.lower or value > old.lower[keyword]:
            out.append(
                f"{at}: {keyword} tightened to {value} (was {old.lower.get(keyword, 'unset')})"
            )
    for keyword, value in new.upper.items():
        if keyword not in old.upper or value < old.upper[keyword]:
            out.append(
                f"{at}: {keyword} tightened to {value} (was {old.upper.get(keyword, 'unset')})"
            )
    for keyword, values in new.exact.items():
        if values - old.exact.get(keyword, set()):
            out.append(f"{at}: {keyword} added or changed to {', '.join(sorted(values))}")
    if new.unique_items and not old.unique_items:
        out.append(f"{at}: uniqueItems now required")
    if new.enum is not None:
        if old.enum is None:
            out.append(f"{at}: now restricted to an enum")
        elif removed := sorted(set(old.enum) - set(new.enum)):
            out.append(f"{at}: enum no longer allows {', '.join(removed)}")
    if set(new.const) - set(old.const):
        out.append(f"{at}: const added or changed")
    if new.additional and not old.additional:
        if new.closed:
            out.append(f"{at}: additional properties no longer allowed")
        else:
            out.append(f"{at}: additional properties now restricted")
    elif new.additional and not old.closed:
        _compare(old.additional, new.additional, f"{path}/*", out, depth + 1)
    if new.items and not old.items:
        out.append(f"{at}: array items now restricted")
    elif new.items:
        _compare(old.items, new.items, f"{path}[]", out, depth + 1)
    _compare_branches(old, new, path, out, depth)
    for composite in sorted(new.composite - old.composite):
        out.append(
            f"{at}: {composite.split(':', 1)[0]} added or changed; compatibility cannot be proven"
        )


def _compare_properties(
    old: Effective, new: Effective, path: str, out: list[str], depth: int
) -> None:
    """Properties in both are compared; one added or removed is judged by the content model
    that covered it before (added) or covers it now (removed)."""
    for name in sorted(set(old.properties) & set(new.properties)):
        _compare(old.properties[name], new.properties[name], f"{path}/{name}", out, depth + 1)
    for name in sorted(set(new.properties) - set(old.properties)):
        if old.open:
            out.append(
                f"{path}/{name}: added to an open object (no additionalProperties: false): "
                f"events written for the old version may carry {name} with any value"
            )
        elif not old.closed:
            _compare(old.covering(name), new.properties[name], f"{path}/{name}", out, depth + 1)
    for name in sorted(set(old.properties) - set(new.properties)):
        if new.closed:
            out.append(
                f"{path}/{name}: field removed or renamed, and the object is closed "
                "(additionalProperties: false): events that carry it would be refused"
            )
        elif not new.open:
            _compare(old.properties[name], new.covering(name), f"{path}/{name}", out, depth + 1)


def _compare_branches(
    old: Effective, new: Effective, path: str, out: list[str], depth: int
) -> None:
    """anyOf/oneOf with the same shape are compared branch by branch: if no branch got
    narrower, neither did their union. Any other change cannot be proven compatible."""
    shape = [(keyword, len(branches)) for keyword, branches in new.branches]
    if shape == [(keyword, len(branches)) for keyword, branches in old.branches]:
        for (_, old_branches), (_, new_branches) in zip(old.branches, new.branches, strict=True):
            for old_branch, new_branch in zip(old_branches, new_branches, strict=True):
                _compare([old_branch], [new_branch], path, out, depth + 1)
    elif shape:
        keywords = ", ".join(sorted({keyword for keyword, _ in new.branches}))
        out.append(f"{path or '/'}: {keywords} changed; compatibility cannot be proven")


def _effective(nodes: list[Any]) -> Effective:
    result = Effective()
    for schema in _conjuncts(nodes, 0):
        if schema is False:
            result.rejects_all = True
            continue
        if not isinstance(schema, dict):
            continue
        for keyword, value in schema.items():
            _merge(result, keyword, value)
    return result


def _conjuncts(nodes: list[Any], depth: int) -> list[Any]:
    """The schemas that all apply at one location: the nodes and their allOf members."""
    flat: list[Any] = []
    for schema in nodes:
        flat.append(schema)
        if isinstance(schema, dict) and depth <= _MAX_DEPTH:
            flat.extend(_conjuncts(schema.get("allOf") or [], depth + 1))
    return flat


def _merge(result: Effective, keyword: str, value: Any) -> None:
    if keyword in _IGNORED or keyword == "allOf":
        return
    if keyword == "type":
        types = set(value if isinstance(value, list) else [value])
        if "number" in types:
            types.add("integer")
        result.types = types if result.types is None else result.types & types
    elif keyword == "properties":
        for name, subschema in value.items():
            result.properties.setdefault(name, []).append(subschema)
    elif keyword == "required":
        result.required |= set(value)
    elif keyword in _LOWER:
        result.lower[keyword] = max(value, result.lower.get(keyword, value))
    elif keyword in _UPPER:
        result.upper[keyword] = min(value, result.upper.get(keyword, value))
    elif keyword in _EXACT:
        result.exact[keyword].add(str(value))
    elif keyword == "uniqueItems":
        result.unique_items = result.unique_items or bool(value)
    elif keyword == "enum":
        values = [_canonical(v) for v in value]
        result.enum = values if result.enum is None else [v for v in result.enum if v in values]
    elif keyword == "const":
        result.const.append(_canonical(value))
    elif keyword == "additionalProperties":
        if value is not True and value != {}:
            result.additional.append(value)
    elif keyword == "patternProperties":
        for pattern, subschema in value.items():
            result.patterns.setdefault(pattern, []).append(subschema)
        result.composite.add(f"{keyword}:{_canonical(value)}")
    elif keyword == "items":
        result.items.append(value)
    elif keyword in _BRANCHES:
        result.branches.append((keyword, list(value)))
    else:
        # Anything else (not, if, dependencies, unknown keywords) must stay exactly as it was.
        result.composite.add(f"{keyword}:{_canonical(value)}")


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class Step:
    """One version step of one record schema and what it changed incompatibly."""

    kind: str
    name: str
    old: SchemaVer
    new: SchemaVer
    changes: list[str]

    @property
    def new_model(self) -> bool:
        return self.new.model != self.old.model


_OPEN_HINT = (
    "an open object cannot gain properties in a registry either: publish the schema closed "
    '("additionalProperties": false) as a new MODEL, then add optional properties to it'
)


@dataclass
class CatalogueReport:
    root: Path
    schemas: int = 0
    problems: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(step.changes for step in self.steps)

    def render(self) -> str:
        lines = [f"schema catalogue {self.root}: {self.schemas} schema file(s)"]
        lines += [f"  ERROR {problem}" for problem in self.problems]
        for step in self.steps:
            label = f"{step.kind}/{step.name} {step.old} -> {step.new}"
            if step.new_model:
                lines.append(f"  new   {label}: a new MODEL, free to break compatibility")
            elif step.changes:
                lines.append(f"  FAIL  {label} is not backward compatible:")
                lines += [f"          {change}" for change in step.changes]
            else:
                lines.append(f"  ok    {label}")
        failed = [step for step in self.steps if step.changes]
        if self.ok:
            lines.append("every version is backward compatible with the one before it")
        elif failed:
            lines.append(
                f"{len(failed)} incompatible version step(s): keep the old version's promises, "
                f"or publish the change as a new MODEL (e.g. {failed[0].new.model + 1}-0-0) if "
                "it is meant to break them"
            )
            if any("added to an open object" in c for step in self.steps for c in step.changes):
                lines.append(_OPEN_HINT)
        return "\n".join(lines)


def check_catalogue(root: Path) -> CatalogueReport:
    """Load the catalogue and check every record schema's version steps within each MODEL."""
    report = CatalogueReport(root)
    try:
        docs = read_catalogue(root)
        records = list(build_records(docs))
    except SchemaCatalogueError as exc:
        report.problems.append(str(exc))
        return report
    report.schemas = len(docs)
    lines: dict[tuple[str, str], dict[SchemaVer, dict[str, Any]]] = defaultdict(dict)
    for kind, name, version, document in records:
        lines[(kind, name)][version] = document
    for (kind, name), versions in sorted(lines.items()):
        for old, new in itertools.pairwise(sorted(versions)):
            same_model = new.model == old.model
            changes = backward_changes(versions[old], versions[new]) if same_model else []
            report.steps.append(Step(kind, name, old, new, changes))
    return report
