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

For an event no schema describes, the proposal is its first version, 1-0-0, inferred from the
history alone. For one that has a schema, the proposal starts from the latest version as it is
written: every property it names, nested ones too, keeps its schema (bounds, patterns, formats
...), and its ``required`` lists stay as they are, so that a property nobody sent in the window
is not taken for removed. To it are added the properties the events carry that a closed object
of the latest lacks, at any depth the latest describes through ``properties`` and ``items``,
each with its inferred schema and optional: events written for the latest lack them, so a
required one would break compatibility. Those nearly every event carries are named, for the
author to decide whether to start a new MODEL that requires them. The events read are those of
the history and those the pipeline refused against the schema (dead letters of
``schema_validation``): an event that carries a property a closed schema lacks is refused, so
it is never in the history. Events that name another MODEL in ``context.schema`` are not read:
that MODEL, not the proposal, judges them. A value the latest refuses (a type, a bound, a
missing required property) is reported, never widened: the proposal keeps the latest's schema
there. When the events carry nothing the latest lacks, nothing is proposed.
``from_scratch`` infers from the history alone, as for a first version, whatever the latest
says.

The step from the latest version is classified with ``clicktrail.compat``: incompatible with
the latest (it would refuse events the latest accepts) is the next MODEL; compatible, and only
adding optional properties, is an ADDITION; compatible but loosening what the latest promised
(a wider type, a looser bound, a property no longer required, new enum values) is a REVISION.
Started from the latest, a proposal is an ADDITION or nothing; from scratch, a property the
latest names that no event in the window carried is missing from the proposal, which makes it a
new MODEL when the latest is closed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast

import jsonschema_rs
from genson import SchemaBuilder
from genson.schema.strategies import Object, String

from clicktrail.clock import format_ts
from clicktrail.compat import backward_changes, check_catalogue
from clicktrail.db import Database
from clicktrail.drafts import (
    DeadLetterStream,
    DraftError,
    DraftTrial,
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
    FileSchemaRegistry,
    SchemaDoc,
    SchemaVer,
    build_records,
    event_schema_name,
    read_catalogue,
    schema_urn,
)
from clicktrail.validation import REASON_INVALID

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


class NothingToInfer(InferenceError):
    """No event to infer from."""


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
        raise NothingToInfer("no events to infer from")
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
class Conflict:
    """Events whose value at one place the latest version refuses, for one reason: the types
    they carry there (``type``), or the first message."""

    path: str
    keyword: str
    events: int
    detail: str

    def render(self, latest: SchemaVer) -> str:
        if self.keyword == "type":
            what = f"carry {self.path} as {self.detail}, which {latest} refuses"
        elif self.keyword == "required":
            what = f"lack {self.path}, which {latest} requires"
        else:
            what = f"fail {self.path}, which {latest} refuses ({self.keyword}: {self.detail})"
        return f"{self.events} event(s) {what}: they are dead-lettered today"


@dataclass
class Seeding:
    """What the events carry beyond the latest version: the properties added to it (paths as
    compat names them: ``/properties/products[]/gift_note``), those of them the data would make
    required, properties left out as an open object of the latest accepts them already, the
    values the latest refuses, the events not read (why -> how many) and how many of those read
    came from the dead letters."""

    added: list[str] = field(default_factory=list)
    always: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    refused: int = 0


@dataclass(frozen=True)
class Proposal:
    """The proposed schema file, the step from the latest version and why it is that step;
    ``seeding`` when it started from the latest version."""

    doc: SchemaDoc
    event_name: str
    change: str
    latest: SchemaVer | None
    reasons: list[str]
    inferred: Inferred
    path: Path
    seeding: Seeding | None = None

    def json(self) -> str:
        return _readable(self.doc.document)

    def render(self, window: Window) -> str:
        doc, latest, seeding = self.doc, self.latest, self.seeding
        events = (
            f"{self.inferred.samples} {self.event_name!r} event(s) received since "
            f"{format_ts(window.start)}"
        )
        if seeding is None:
            lines = [f"{doc.key}: inferred from the properties of {events}", self.json()]
        else:
            refused = f" ({seeding.refused} of them dead-lettered)" if seeding.refused else ""
            if self.change == UNCHANGED:
                lines = [f"{doc.key}: compared with the properties of {events}{refused}"]
            else:
                lines = [
                    f"{doc.key}: {latest} as written, with what the properties of {events}"
                    f"{refused} carry beyond it",
                    self.json(),
                ]
        if self.change == NEW:
            lines.append(f"new: no version of events/{doc.name} exists yet")
        elif self.change == UNCHANGED and seeding is not None:
            lines.append(
                f"nothing new: the events carry no property {latest} lacks, so nothing is proposed"
            )
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
        if seeding is None:
            for name, share in sorted(self.inferred.partly_required.items()):
                lines.append(
                    f"required, though {100 - share * 100:.2f}% of the events lack it: {name} "
                    f"(schemas try lists them)"
                )
        else:
            assert latest is not None  # seeded from it
            lines += _seeding_lines(seeding, latest)
        return "\n".join(lines)


def _seeding_lines(seeding: Seeding, latest: SchemaVer) -> list[str]:
    lines = []
    if seeding.always:
        lines.append(
            f"optional, though at least {REQUIRED_SHARE:.0%} of the objects at their place carry "
            f"them (events written for {latest} lack them: requiring them is a new MODEL):"
        )
        lines += [f"  {path}" for path in seeding.always]
    if seeding.accepted:
        lines.append(
            f"not added, as an open object of {latest} accepts them already (a property added "
            "to an open object is a new MODEL):"
        )
        lines += [f"  {path}" for path in seeding.accepted]
    if seeding.conflicts:
        lines.append(f"values {latest} refuses (not widened: its schema stays as it is there):")
        lines += [f"  {conflict.render(latest)}" for conflict in seeding.conflicts]
    for why, count in sorted(seeding.skipped.items()):
        lines.append(f"{count} event(s) not read: they {why}")
    return lines


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


def _versioned(document: dict[str, Any], name: str, version: SchemaVer) -> dict[str, Any]:
    """An authored document as another version of itself."""
    described = {**document["self"], "version": str(version)}
    return {**document, "$id": schema_urn("events", name, version), "self": described}


def _schema_name(event_name: str) -> str:
    name = event_schema_name(event_name)
    if not name:
        raise InferenceError(f"{event_name!r} has no schema name (no letter or digit)")
    return name


def _latest(docs: list[SchemaDoc], name: str) -> SchemaDoc | None:
    versions = [doc for doc in docs if (doc.kind, doc.name) == ("events", name)]
    return max(versions, key=lambda doc: doc.version) if versions else None


def propose(root: Path, event_name: str, inferred: Inferred) -> Proposal:
    """The next version of the event's schema in the catalogue at ``root`` (1-0-0 if it has
    none) as inferred, whatever the latest says, checked as ``make schemas-check`` checks the
    catalogue."""
    name = _schema_name(event_name)
    docs = read_catalogue(root)
    found = _latest(docs, name)
    latest = found.version if found is not None else None
    change, version, reasons = NEW, SchemaVer(1, 0, 0), list[str]()
    if latest is not None:

        def inferred_as(version: SchemaVer) -> dict[str, Any]:
            return _document(name, version, event_name, inferred)

        change, version, reasons = _step(docs, name, latest, inferred_as)
    doc = SchemaDoc("events", name, version, _document(name, version, event_name, inferred))
    _check(root, doc)
    return Proposal(doc, event_name, change, latest, reasons, inferred, _path(root, doc))


def extend_latest(
    root: Path,
    event_name: str,
    history: Iterable[dict[str, Any]],
    refused: Iterable[dict[str, Any]] = (),
) -> Proposal:
    """The next version of the event's schema in the catalogue at ``root``: its latest version
    as written, with the properties the events carry beyond it (``history``: events the
    pipeline published; ``refused``: the ones it dead-lettered). Checked as ``make
    schemas-check`` checks the catalogue."""
    name = _schema_name(event_name)
    docs = read_catalogue(root)
    authored = _latest(docs, name)
    if authored is None:
        raise InferenceError(f"no version of events/{name} to start from")
    latest = authored.version
    seeding = Seeding()
    judged = _Judged(authored, FileSchemaRegistry(root), seeding)
    try:
        inferred = infer_properties(judged.properties(history, refused))
    except NothingToInfer:
        raise NothingToInfer(_nothing_read(seeding)) from None
    seeding.conflicts = judged.conflicts()
    document = _extended(authored.document, inferred.schema, _ROOT, seeding)

    def extended_as(version: SchemaVer) -> dict[str, Any]:
        return _versioned(document, name, version)

    change, version, reasons = _step(docs, name, latest, extended_as)
    doc = SchemaDoc("events", name, version, extended_as(version))
    _check(root, doc)
    return Proposal(doc, event_name, change, latest, reasons, inferred, _path(root, doc), seeding)


def _nothing_read(seeding: Seeding) -> str:
    skipped = "; ".join(f"{n} not read: they {why}" for why, n in sorted(seeding.skipped.items()))
    return "no events with properties" + (f" ({skipped})" if skipped else "")


def _check(root: Path, doc: SchemaDoc) -> None:
    with overlay(root, doc) as copy:
        report = compatibility(check_catalogue(copy), doc)
    if not report.ok:
        raise InferenceError(f"the proposal does not pass the check:\n{report.render()}")


def _path(root: Path, doc: SchemaDoc) -> Path:
    return root / doc.kind / doc.name / f"{doc.version}.json"


# Where an event's properties are, as compat and the validator's errors name places.
_ROOT = "/properties"


def _extended(authored: Any, inferred: Any, path: str, seeding: Seeding) -> Any:
    """The authored schema at ``path`` with what the inferred one has beyond it: in each closed
    object, the properties it lacks, optional. Where the authored schema says anything, it
    stays as it is written; a schema it does not describe by ``properties`` or ``items``
    (a ``$ref``, an ``anyOf``...) is not looked into."""
    if not isinstance(authored, dict) or not isinstance(inferred, dict):
        return authored
    result = dict(authored)
    carried = inferred.get("properties")
    known = authored.get("properties")
    if isinstance(carried, dict) and (isinstance(known, dict) or _closed(authored)):
        known = known if isinstance(known, dict) else {}
        properties = {
            name: _extended(schema, carried.get(name), f"{path}/{name}", seeding)
            for name, schema in known.items()
        }
        new = [name for name in carried if name not in known]
        if new and _closed(authored):
            required = inferred.get("required", [])
            for name in new:
                properties[name] = carried[name]
                seeding.added.append(f"{path}/{name}")
                if name in required:
                    seeding.always.append(f"{path}/{name}")
        elif new and not _restricted(authored):
            seeding.accepted += [f"{path}/{name}" for name in new]
        if properties or "properties" in authored:
            result["properties"] = properties
    items = authored.get("items")
    if isinstance(items, dict):
        result["items"] = _extended(items, inferred.get("items"), f"{path}[]", seeding)
    return result


def _closed(schema: dict[str, Any]) -> bool:
    return schema.get("additionalProperties") is False


def _restricted(schema: dict[str, Any]) -> bool:
    """Whether a schema says more of the properties it does not name than to accept them
    (``additionalProperties`` other than true, ``patternProperties``)."""
    return schema.get("additionalProperties", True) not in (True, {}) or (
        "patternProperties" in schema
    )


def _closed_places(schema: Any, path: str = _ROOT) -> Iterator[str]:
    """The closed objects ``_extended`` adds properties to, by path."""
    if not isinstance(schema, dict):
        return
    if _closed(schema):
        yield path
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            yield from _closed_places(sub, f"{path}/{name}")
    yield from _closed_places(schema.get("items"), f"{path}[]")


class _Judged:
    """The events judged by the latest version as the workers judge them, as they are read:
    the ones another MODEL judges are left out, and what the latest refuses in the others,
    beyond a property it lacks in a closed object (an addition), is counted by place."""

    def __init__(self, latest: SchemaDoc, catalogue: FileSchemaRegistry, seeding: Seeding) -> None:
        self._trial = DraftTrial(latest, catalogue)
        self._seeding = seeding
        self._additions = set(_closed_places(latest.document))
        self._events: Counter[tuple[str, str]] = Counter()
        self._types: dict[tuple[str, str], Counter[str]] = {}
        self._messages: dict[tuple[str, str], str] = {}

    def properties(
        self, history: Iterable[dict[str, Any]], refused: Iterable[dict[str, Any]]
    ) -> Iterator[dict[str, Any]]:
        """The properties of the events to infer from: the history's, then those of the
        refused events not in it (replayed since)."""
        published: set[Any] = set()
        for event in history:
            published.add(event.get("messageId"))
            if (properties := self._read(event)) is not None:
                yield properties
        for event in refused:
            if event.get("messageId") in published:
                continue
            if (properties := self._read(event)) is not None:
                self._seeding.refused += 1
                yield properties

    def _read(self, event: dict[str, Any]) -> dict[str, Any] | None:
        properties = event.get("properties")
        if event.get("type") != "track" or not isinstance(properties, dict):
            return None
        outcome = self._trial.judge(event)
        if isinstance(outcome, str):
            self._seeding.skipped[outcome] += 1
            return None
        places = set()
        for error in outcome:
            place, value = _place(event, error["path"])
            keyword = error["keyword"]
            if not (place == _ROOT or place.startswith(_ROOT + "/")):
                continue  # the envelope's, not the properties'
            if keyword == "additionalProperties" and place in self._additions:
                continue  # a property to add
            if isinstance(value, str) and _PSEUDONYM.match(value):
                continue  # the workers judged the original
            key = (place, keyword)
            places.add(key)
            self._messages.setdefault(key, error["message"])
            if keyword == "type":
                self._types.setdefault(key, Counter())[_json_type(value)] += 1
        self._events.update(places)
        return properties

    def conflicts(self) -> list[Conflict]:
        found = []
        for (place, keyword), count in sorted(self._events.items()):
            types = self._types.get((place, keyword))
            detail = ", ".join(sorted(types)) if types else self._messages[(place, keyword)]
            found.append(Conflict(place, keyword, count, detail))
        return found


_MISSING = object()


def _place(event: dict[str, Any], path: str) -> tuple[str, Any]:
    """An error's path with array indices as ``[]`` (``/properties/products[]/price``, as
    compat names places), and the value there (``_MISSING`` if none)."""
    place, value = "", cast(Any, event)
    for part in path.split("/")[1:]:
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            place, value = place + "[]", value[int(part)]
        elif isinstance(value, dict) and part in value:
            place, value = f"{place}/{part}", value[part]
        else:
            place, value = f"{place}/{part}", _MISSING
    return place, value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _step(
    docs: list[SchemaDoc],
    name: str,
    latest: SchemaVer,
    document: Callable[[SchemaVer], dict[str, Any]],
) -> tuple[str, SchemaVer, list[str]]:
    """The change from the latest version to the proposal (``document``, of a version), and
    the proposal's version."""
    model = SchemaVer(latest.model + 1, 0, 0)
    candidate = SchemaDoc("events", name, model, document(model))
    records = {
        version: record
        for kind, named, version, record in build_records([*docs, candidate])
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


def infer_from_history(
    db: Database, root: Path, event_name: str, window: Window, from_scratch: bool = False
) -> Proposal:
    """Propose the schema of a track event from its events in the window: its latest version
    with what they carry beyond it, or (none yet, or ``from_scratch``) what the history's
    events have, inferred."""
    name = _schema_name(event_name)
    selection = selection_for("events", name)
    since = format_ts(window.start)
    if not from_scratch and _latest(read_catalogue(root), name) is not None:
        history = (event for _, event in HistoryStream(db, selection, window))
        refused = (event for _, event in DeadLetterStream(db, selection, window, REASON_INVALID))
        try:
            return extend_latest(root, event_name, history, refused)
        except NothingToInfer as exc:
            raise NothingToInfer(
                f"{exc} for {event_name!r} in the history or the dead letters since {since}: "
                "nothing to infer from"
            ) from None
    stream = HistoryStream(db, selection, window)
    samples = (
        event["properties"] for _, event in stream if isinstance(event.get("properties"), dict)
    )
    try:
        inferred = infer_properties(samples)
    except NothingToInfer:
        raise NothingToInfer(
            f"no {event_name!r} events with properties in the history since {since}: "
            "nothing to infer from"
        ) from None
    return propose(root, event_name, inferred)


def write_proposal(proposal: Proposal) -> Path:
    """Write the proposal into the catalogue; never over an existing version."""
    if proposal.path.exists():
        raise InferenceError(f"{proposal.path} exists already")
    proposal.path.parent.mkdir(parents=True, exist_ok=True)
    proposal.path.write_text(proposal.json() + "\n")
    return proposal.path
