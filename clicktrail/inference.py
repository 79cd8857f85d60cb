"""A track event's schema proposed from the history (``clicktrail schemas infer``).

genson builds the schema of the events' ``properties`` (types, nested objects, array items);
these rules, one genson strategy each, go beyond it:

- **required**: a property present in at least REQUIRED_SHARE (99 %) of the objects at its place,
  not only in all of them: a few events of a faulty client should not make a property optional
  (``schemas try`` then lists the events that lack it);
- **format**: ``date-time``, ``email`` or ``uri`` when every value has it, as the pipeline's
  validator (jsonschema-rs, draft-07 record schemas) checks it, and for ``uri`` looks like a
  URL (``scheme://``: any ``word:rest`` is a URI). ``uuid`` is not proposed: draft-07
  validators do not check it. Pseudonymised values (``hmac:…``, as the history holds them) get no
  format and no enum: the workers validate the originals;
- **enum**: a string seen at least ENUM_MIN_SAMPLES (50) times with at most ENUM_MAX_VALUES (10)
  distinct values, none longer than ENUM_MAX_CHARS, and no format;
- **closed objects** (``additionalProperties: false``), as the catalogue's 2-x-x schemas are,
  so that a property added later is a compatible ADDITION.

The proposal is the next version of the event's latest schema, the step classified with
``clicktrail.compat``: incompatible with the latest (it would refuse events the latest accepts) is
the next MODEL; compatible, and only adding optional properties, is an ADDITION; compatible but
loosening what the latest promised (a wider type, a looser bound, a property no longer
required, new enum values) is a REVISION. A property the latest version names that no event in
the window carried is missing from the proposal, which makes it a new MODEL when the latest
schema is closed: widen the window, or add the property back by hand.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from genson import SchemaBuilder
from genson.schema.strategies import Object, String

from clicktrail.clock import format_ts
from clicktrail.compat import backward_changes, check_catalogue
from clicktrail.db import Database
from clicktrail.drafts import (
    DraftError,
    HistoryStream,
    Window,
    compatibility,
    overlay,
    selection_for,
)
from clicktrail.enrich import PSEUDONYM_PREFIX
from clicktrail.inline import RECORD_DRAFT
from clicktrail.schemas import (
    DRAFT,
    VENDOR,
    SchemaDoc,
    SchemaVer,
    build_records,
    event_schema_name,
    read_catalogue,
    schema_urn,
)

REQUIRED_SHARE = 0.99
ENUM_MIN_SAMPLES = 50
ENUM_MAX_VALUES = 10
ENUM_MAX_CHARS = 64
FORMATS = ("date-time", "email", "uri")

NEW, ADDITION, REVISION, MODEL, UNCHANGED = "new", "ADDITION", "REVISION", "MODEL", "unchanged"
# How compat says, comparing the proposal with the latest the other way round, that the
# proposal has a property a closed object of the latest lacks: that is, that it adds one.
_ADDED = "field removed or renamed, and the object is closed"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PSEUDONYM = re.compile(rf"^{re.escape(PSEUDONYM_PREFIX)}[0-9a-f]{{64}}$")


class InferenceError(DraftError):
    """Nothing to infer from, or no schema name for the event."""


@cache
def _format_check(name: str) -> Any:
    schema = {"$schema": RECORD_DRAFT, "format": name}
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def _has_format(name: str, value: str) -> bool:
    # Any scheme makes a URI ("sku:123", "hmac:…"): only what looks like a URL counts as one.
    if name == "uri" and not _URL.match(value):
        return False
    return bool(_format_check(name).is_valid(value))


class _String(String):  # type: ignore[misc]  # genson is untyped
    """Strings, with the format every value has and the few values there are."""

    def __init__(self, node_class: Any) -> None:
        super().__init__(node_class)
        self.count = 0
        self.formats = list(FORMATS)
        self.values: Counter[str] | None = Counter()
        self.pseudonymous = False

    def add_object(self, obj: str) -> None:
        self.count += 1
        if _PSEUDONYM.match(obj):
            self.pseudonymous = True
        self.formats = [name for name in self.formats if _has_format(name, obj)]
        if self.values is not None:
            self.values[obj] += 1
            if len(self.values) > ENUM_MAX_VALUES or len(obj) > ENUM_MAX_CHARS:
                self.values = None  # not an enum: stop counting

    def to_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = super().to_schema()
        if self.pseudonymous:
            return schema
        if self.formats:
            schema["format"] = self.formats[0]
        elif self.values is not None and self.count >= ENUM_MIN_SAMPLES:
            schema["enum"] = sorted(self.values)
        return schema


class _Object(Object):  # type: ignore[misc]  # genson is untyped
    """Objects, closed, requiring what nearly every one of them has."""

    def __init__(self, node_class: Any) -> None:
        super().__init__(node_class)
        self.count = 0
        self.present: Counter[str] = Counter()

    def add_object(self, obj: dict[str, Any]) -> None:
        super().add_object(obj)
        self.count += 1
        self.present.update(obj.keys())

    def to_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = super().to_schema()
        schema.pop("required", None)
        required = sorted(
            name for name, seen in self.present.items() if seen >= REQUIRED_SHARE * self.count
        )
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema


class _Builder(SchemaBuilder):  # type: ignore[misc]  # genson is untyped
    EXTRA_STRATEGIES = (_Object, _String)


@dataclass(frozen=True)
class Inferred:
    """The schema of the samples' properties, how many samples, and the required properties
    that some samples lack (name -> share of samples that have it)."""

    schema: dict[str, Any]
    samples: int
    partly_required: dict[str, float]


def infer_properties(samples: Iterable[dict[str, Any]]) -> Inferred:
    """The schema of a track event's ``properties``, from the ``properties`` of its events."""
    builder = _Builder(schema_uri=None)
    count, present = 0, Counter[str]()
    for properties in samples:
        builder.add_object(properties)
        count += 1
        present.update(properties.keys())
    if not count:
        raise InferenceError("no events to infer from")
    schema = _tidy(builder.to_schema())
    partly = {
        name: present[name] / count for name in schema.get("required", []) if present[name] < count
    }
    return Inferred(schema, count, partly)


def _tidy(schema: dict[str, Any]) -> dict[str, Any]:
    """genson's output with each value of several types as one schema with a list of types
    (its keywords apply to one type each) rather than an anyOf, and properties in order."""
    if "anyOf" in schema:
        schema = _merged(schema)
    if "properties" in schema:
        schema["properties"] = {
            name: _tidy(sub) for name, sub in sorted(schema["properties"].items())
        }
    if isinstance(schema.get("items"), dict):
        schema["items"] = _tidy(schema["items"])
    return schema


def _merged(schema: dict[str, Any]) -> dict[str, Any]:
    types: set[str] = set()
    merged: dict[str, Any] = {}
    for branch in schema["anyOf"]:
        kind = branch.get("type")
        types.update(kind if isinstance(kind, list) else [kind])
        for keyword, value in branch.items():
            if keyword == "type":
                continue
            if keyword in merged:  # never from genson's one strategy per type; keep it as is
                return schema
            merged[keyword] = value
    if "enum" in merged:
        others = types - {"string"}
        if others == {"null"}:
            merged["enum"] = [*merged["enum"], None]
        elif others:
            del merged["enum"]  # an enum would refuse the other types
    return {"type": sorted(types), **merged}


@dataclass(frozen=True)
class Proposal:
    """The proposed schema file, the step from the latest version and why it is that step."""

    doc: SchemaDoc
    event_name: str
    change: str
    latest: SchemaVer | None
    reasons: list[str]
    inferred: Inferred
    path: Path

    def json(self) -> str:
        return _readable(self.doc.document)

    def render(self, window: Window) -> str:
        doc, latest = self.doc, self.latest
        lines = [
            f"{doc.key}: inferred from the properties of {self.inferred.samples} "
            f"{self.event_name!r} event(s) received since {format_ts(window.start)}",
            self.json(),
        ]
        if self.change == NEW:
            lines.append(f"new: no version of events/{doc.name} exists yet")
        elif self.change == UNCHANGED:
            lines.append(f"unchanged: the history fits {doc.kind}/{doc.name}/{latest} as it is")
        elif self.change == MODEL:
            lines.append(f"MODEL: incompatible with {latest}, so a new MODEL {doc.version}:")
            lines += [f"  {reason}" for reason in self.reasons]
        elif self.change == REVISION:
            lines.append(
                f"REVISION of {latest}: compatible, but {latest} would refuse some events the "
                "proposal accepts:"
            )
            lines += [f"  {reason}" for reason in self.reasons]
        else:
            lines.append(f"ADDITION to {latest}: compatible, only new optional properties:")
            lines += [f"  {reason.split(':', 1)[0]}" for reason in self.reasons]
        for name, share in sorted(self.inferred.partly_required.items()):
            lines.append(
                f"required, though {100 - share * 100:.2f}% of the events lack it: {name} "
                f"(schemas try lists them)"
            )
        return "\n".join(lines)


def _readable(value: Any, indent: int = 0, lead: int = 0, width: int = 100) -> str:
    """JSON as the catalogue's files are written: what fits on a line (after ``lead``
    characters of its key) on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    if indent + lead + len(flat) <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = []
        for key, sub in value.items():
            name = json.dumps(key, ensure_ascii=False)
            items.append(f"{pad}{name}: {_readable(sub, indent + 2, len(name) + 2, width)}")
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _readable(sub, indent + 2, 0, width) for sub in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _document(name: str, version: SchemaVer, event_name: str, inferred: Inferred) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": schema_urn("events", name, version),
        "self": {"vendor": VENDOR, "kind": "events", "name": name, "version": str(version)},
        "description": (
            f"properties of the track event {event_name!r}, inferred from "
            f"{inferred.samples} events of the history"
        ),
        **inferred.schema,
    }


def propose(root: Path, event_name: str, inferred: Inferred) -> Proposal:
    """The next version of the event's schema in the catalogue at ``root`` (1-0-0 if it has
    none), checked as ``make schemas-check`` checks the catalogue."""
    name = event_schema_name(event_name)
    if not name:
        raise InferenceError(f"{event_name!r} has no schema name (no letter or digit)")
    docs = read_catalogue(root)
    versions = [doc.version for doc in docs if (doc.kind, doc.name) == ("events", name)]
    latest = max(versions) if versions else None
    change, version, reasons = NEW, SchemaVer(1, 0, 0), list[str]()
    if latest is not None:
        change, version, reasons = _step(docs, name, latest, event_name, inferred)
    doc = SchemaDoc("events", name, version, _document(name, version, event_name, inferred))
    with overlay(root, doc) as copy:
        report = compatibility(check_catalogue(copy), doc)
    if not report.ok:
        raise InferenceError(f"the proposal does not pass the check:\n{report.render()}")
    return Proposal(
        doc,
        event_name,
        change,
        latest,
        reasons,
        inferred,
        root / "events" / name / f"{version}.json",
    )


def _step(
    docs: list[SchemaDoc], name: str, latest: SchemaVer, event_name: str, inferred: Inferred
) -> tuple[str, SchemaVer, list[str]]:
    """The change from the latest version to the proposal, and the proposal's version."""
    model = SchemaVer(latest.model + 1, 0, 0)
    candidate = SchemaDoc("events", name, model, _document(name, model, event_name, inferred))
    records = {
        version: document
        for kind, named, version, document in build_records([*docs, candidate])
        if (kind, named) == ("events", name)
    }
    old, new = records[latest], records[model]
    if breaking := backward_changes(old, new):
        return MODEL, model, breaking
    widened = backward_changes(new, old)
    if not widened:
        return UNCHANGED, latest, []
    loosened = [change for change in widened if _ADDED not in change]
    if loosened:
        return REVISION, SchemaVer(latest.model, latest.revision + 1, 0), loosened
    return ADDITION, SchemaVer(latest.model, latest.revision, latest.addition + 1), widened


def infer_from_history(db: Database, root: Path, event_name: str, window: Window) -> Proposal:
    """Propose the schema of a track event from its events in the history's window."""
    name = event_schema_name(event_name)
    if not name:
        raise InferenceError(f"{event_name!r} has no schema name (no letter or digit)")
    stream = HistoryStream(db, selection_for("events", name), window)
    samples = (
        event["properties"] for _, event in stream if isinstance(event.get("properties"), dict)
    )
    try:
        inferred = infer_properties(samples)
    except InferenceError:
        raise InferenceError(
            f"no {event_name!r} events with properties in the history since "
            f"{format_ts(window.start)}: nothing to infer from"
        ) from None
    return propose(root, event_name, inferred)


def write_proposal(proposal: Proposal) -> Path:
    """Write the proposal into the catalogue; never over an existing version."""
    if proposal.path.exists():
        raise InferenceError(f"{proposal.path} exists already")
    proposal.path.parent.mkdir(parents=True, exist_ok=True)
    proposal.path.write_text(proposal.json() + "\n")
    return proposal.path
