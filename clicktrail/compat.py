"""Schema evolution rules: each new version must accept every event the previous one accepted.

Within a SchemaVer MODEL (``1-0-0`` -> ``1-0-1`` -> ``1-1-0``) a new version must be backward
compatible with the one before; a change meant to break compatibility starts a new MODEL
(``2-0-0``), which old clients keep ignoring by naming ``1-x-x`` in ``context.schema``.

Incompatible (reported): a new required field; a removed (or renamed) field; a narrowed type; a
tightened constraint (bounds, lengths, pattern, format, multipleOf, uniqueItems, no more
additional properties); a restricted or shrunk enum, a new or changed const; a changed
composition (anyOf, oneOf, not, ...) that cannot be proven looser. Compatible: new optional
fields, loosened constraints, new enum values, documentation.

The check is conservative: ``$ref`` and ``allOf`` are flattened into one effective schema per
location and compared keyword by keyword, so what it cannot prove compatible it reports.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from clicktrail.schemas import SchemaCatalogueError, SchemaDoc, build_records, read_catalogue

_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")
_EXACT = ("pattern", "format", "multipleOf", "contentEncoding", "contentMediaType")
_BRANCHES = ("anyOf", "oneOf")
_COMPOSITE = (
    "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
    "patternProperties", "propertyNames", "contains", "prefixItems", "unevaluatedProperties",
    "unevaluatedItems",
)  # fmt: skip
_IGNORED = frozenset(
    {"$schema", "$id", "$defs", "$anchor", "$comment", "self", "title", "description",
     "examples", "default", "deprecated", "readOnly", "writeOnly"}
)  # fmt: skip
_MAX_DEPTH = 64

Node = tuple[Any, str]  # a schema and the $id of the document it sits in


@dataclass
class Effective:
    """Everything a location's schema demands, its conjuncts merged."""

    types: set[str] | None = None
    properties: dict[str, list[Node]] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)
    exact: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    enum: list[str] | None = None
    const: list[str] = field(default_factory=list)
    additional: list[Node] = field(default_factory=list)
    items: list[Node] = field(default_factory=list)
    # anyOf / oneOf occurrences, in order: the keyword and its branches.
    branches: list[tuple[str, list[Node]]] = field(default_factory=list)
    composite: set[str] = field(default_factory=set)
    unique_items: bool = False
    rejects_all: bool = False


class _Resolver:
    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        self._documents = documents

    def resolve(self, ref: str, base: str) -> Node:
        uri, _, fragment = ref.partition("#")
        uri = uri or base
        if uri not in self._documents:
            raise SchemaCatalogueError(f"{base}: $ref to unknown {uri}")
        node: Any = self._documents[uri]
        for part in [p for p in fragment.split("/") if p]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, uri


def backward_changes(
    old: dict[str, Any], new: dict[str, Any], documents: dict[str, dict[str, Any]]
) -> list[str]:
    """Why ``new`` may reject an event ``old`` accepted: one line per change, empty if none.

    ``documents`` holds, by ``$id``, every document either one refers to.
    """
    resolver = _Resolver({**documents, old["$id"]: old, new["$id"]: new})
    changes: list[str] = []
    _compare([(old, old["$id"])], [(new, new["$id"])], "", resolver, changes, 0)
    return list(dict.fromkeys(changes))


def bundled_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The same rules on two self-contained (bundled) documents, e.g. from a registry."""
    embedded = {
        uri: document
        for bundle in (old, new)
        for uri, document in (bundle.get("$defs") or {}).items()
        if isinstance(document, dict) and document.get("$id") == uri
    }
    return backward_changes(old, new, embedded)


def _compare(
    old_nodes: list[Node],
    new_nodes: list[Node],
    path: str,
    resolver: _Resolver,
    out: list[str],
    depth: int,
) -> None:
    if depth > _MAX_DEPTH:
        return
    old, new = _effective(old_nodes, resolver), _effective(new_nodes, resolver)
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
        out.append(
            f"{path}/{name}: new required field (events written for the old version lack it)"
        )
    for name in sorted(set(old.properties) - set(new.properties)):
        out.append(f"{path}/{name}: field removed or renamed")
    for name in sorted(set(old.properties) & set(new.properties)):
        _compare(
            old.properties[name], new.properties[name], f"{path}/{name}", resolver, out, depth + 1
        )
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
        if any(schema is False for schema, _ in new.additional):
            out.append(f"{at}: additional properties no longer allowed")
        else:
            out.append(f"{at}: additional properties now restricted")
    elif new.additional:
        _compare(old.additional, new.additional, f"{path}/*", resolver, out, depth + 1)
    if new.items and not old.items:
        out.append(f"{at}: array items now restricted")
    elif new.items:
        _compare(old.items, new.items, f"{path}[]", resolver, out, depth + 1)
    _compare_branches(old, new, path, resolver, out, depth)
    for composite in sorted(new.composite - old.composite):
        out.append(
            f"{at}: {composite.split(':', 1)[0]} added or changed; compatibility cannot be proven"
        )


def _compare_branches(
    old: Effective, new: Effective, path: str, resolver: _Resolver, out: list[str], depth: int
) -> None:
    """anyOf/oneOf with the same shape are compared branch by branch: if no branch got
    narrower, neither did their union. Any other change cannot be proven compatible."""
    shape = [(keyword, len(branches)) for keyword, branches in new.branches]
    if shape == [(keyword, len(branches)) for keyword, branches in old.branches]:
        for (_, old_branches), (_, new_branches) in zip(old.branches, new.branches, strict=True):
            for old_branch, new_branch in zip(old_branches, new_branches, strict=True):
                _compare([old_branch], [new_branch], path, resolver, out, depth + 1)
    elif shape:
        keywords = ", ".join(sorted({keyword for keyword, _ in new.branches}))
        out.append(f"{path or '/'}: {keywords} changed; compatibility cannot be proven")


def _effective(nodes: list[Node], resolver: _Resolver) -> Effective:
    result = Effective()
    for schema, base in _conjuncts(nodes, resolver, 0):
        if schema is False:
            result.rejects_all = True
            continue
        if not isinstance(schema, dict):
            continue
        for keyword, value in schema.items():
            _merge(result, keyword, value, base)
    return result


def _conjuncts(nodes: list[Node], resolver: _Resolver, depth: int) -> list[Node]:
    """The schemas that all apply at one location: the nodes, their $ref targets, their allOf."""
    flat: list[Node] = []
    for schema, base in nodes:
        flat.append((schema, base))
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            continue
        if isinstance(schema.get("$ref"), str):
            flat.extend(_conjuncts([resolver.resolve(schema["$ref"], base)], resolver, depth + 1))
        for member in schema.get("allOf") or []:
            flat.extend(_conjuncts([(member, base)], resolver, depth + 1))
    return flat


def _merge(result: Effective, keyword: str, value: Any, base: str) -> None:
    if keyword in _IGNORED or keyword in ("$ref", "allOf"):
        return
    if keyword == "type":
        types = set(value if isinstance(value, list) else [value])
        if "number" in types:
            types.add("integer")
        result.types = types if result.types is None else result.types & types
    elif keyword == "properties":
        for name, subschema in value.items():
            result.properties.setdefault(name, []).append((subschema, base))
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
        if value is not True:
            result.additional.append((value, base))
    elif keyword == "items":
        result.items.append((value, base))
    elif keyword in _BRANCHES:
        result.branches.append((keyword, [(branch, base) for branch in value]))
    else:
        # Anything else (anyOf, oneOf, not, unknown keywords) must stay exactly as it was.
        result.composite.add(f"{keyword}:{_canonical(value)}")


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class Step:
    """One version step of one schema and what it changed incompatibly."""

    old: SchemaDoc
    new: SchemaDoc
    changes: list[str]

    @property
    def new_model(self) -> bool:
        return self.new.version.model != self.old.version.model


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
            label = f"{step.old.kind}/{step.old.name} {step.old.version} -> {step.new.version}"
            if step.new_model:
                lines.append(f"  new   {label}: a new MODEL, free to break compatibility")
            elif step.changes:
                lines.append(f"  FAIL  {label} is not backward compatible:")
                lines += [f"          {change}" for change in step.changes]
            else:
                lines.append(f"  ok    {label}")
        failed = sum(1 for step in self.steps if step.changes)
        if self.ok:
            lines.append("every version is backward compatible with the one before it")
        elif failed:
            lines.append(
                f"{failed} incompatible version step(s): keep the old version's promises, or "
                "publish the change as a new MODEL (e.g. 2-0-0) if it is meant to break them"
            )
        return "\n".join(lines)


def check_catalogue(root: Path) -> CatalogueReport:
    """Load the catalogue and check every version step within each MODEL."""
    report = CatalogueReport(root)
    try:
        docs = read_catalogue(root)
        list(build_records(docs))
    except SchemaCatalogueError as exc:
        report.problems.append(str(exc))
        return report
    report.schemas = len(docs)
    documents = {doc.id: doc.document for doc in docs}
    lines: dict[tuple[str, str], list[SchemaDoc]] = defaultdict(list)
    for doc in docs:
        lines[(doc.kind, doc.name)].append(doc)
    for key in sorted(lines):
        versions = sorted(lines[key], key=lambda d: d.version)
        for old, new in itertools.pairwise(versions):
            same_model = new.version.model == old.version.model
            changes = backward_changes(old.document, new.document, documents) if same_model else []
            report.steps.append(Step(old, new, changes))
    return report
