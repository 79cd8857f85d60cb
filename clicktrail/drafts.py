"""A schema change tried on real traffic before it is published (``clicktrail schemas try``).

A *draft* is an authored schema file in the catalogue's form (``self`` and ``$id`` naming its
kind, name and version). It is placed into a copy of the catalogue, and the record schemas are
built from that copy as the workers build them; the events of the history it would apply to are
then validated by the pipeline's own validator (``EventValidator``), so that an event that
passes here is one the workers would accept. Which events a draft applies to follows
``clicktrail.validation``:

- ``events/<name>``: ``track`` events whose name maps to it (``Order Completed`` ->
  ``order_completed``); ``traits/identify`` and ``traits/group``: those calls; ``calls/<type>``:
  every call of that type (its envelope is part of every record of that type);
- an event naming a version in ``context.schema`` uses that version: one that names an earlier
  version of the draft's MODEL is tried against the draft (the draft promises to accept what
  was written for it), one that names another MODEL would not use the draft and is skipped;
- an event that names no version uses the latest, so it is tried only if the draft is the
  latest version of its name.

The history holds events as they were published, after enrichment: a field a source
pseudonymises holds ``hmac:…`` (or is gone), where the workers validated the original.

Rows are read newest first within a window, through a server-side cursor, and only counters and
a few message ids per failing path are kept, so a large history costs time, not memory. The
compatibility of the draft with the version it would follow is judged by ``clicktrail.compat``,
as ``make schemas-check`` judges it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from clicktrail.clock import format_ts
from clicktrail.compat import CatalogueReport, check_catalogue
from clicktrail.db import Database
from clicktrail.errors import ClicktrailError, Fault
from clicktrail.schemas import (
    KINDS,
    FileSchemaRegistry,
    SchemaCatalogueError,
    SchemaDoc,
    SchemaVer,
    event_schema_name,
)
from clicktrail.validation import EventValidator, requested_version, specific_schema

DEFAULT_LIMIT = 100_000
# Message ids kept per failing path, to look at; and at most this many paths are told apart
# (array indices make paths of their own), the rest counted together.
IDS_PER_PATH = 3
MAX_PATHS = 1000
# The names read as separate, index-ordered branches of one query; more are read in one scan
# that Postgres sorts.
MAX_BRANCHES = 32
# The distinct names of one call type looked up, at most (an index descent each).
MAX_NAMES = 100_000
_FETCH_ROWS = 500

SKIP_OTHER_MODEL = "name another MODEL or schema in context.schema"
SKIP_NOT_LATEST = "name no version, and the latest is not the draft"
SKIP_LATER = "name a later version of the draft's MODEL in context.schema"


class DraftError(ClicktrailError, ValueError):
    """The draft cannot be tried: not a schema file in the catalogue's form."""

    fault = Fault.CLIENT


@dataclass(frozen=True)
class Window:
    """Which rows of the history: received within ``since`` before ``now``, of one source (or
    every source), at most ``limit`` of them, newest first."""

    now: datetime
    since: timedelta
    source_id: str | None = None
    limit: int = DEFAULT_LIMIT

    @property
    def start(self) -> datetime:
        return self.now - self.since


@dataclass(frozen=True)
class Selection:
    """The history rows a schema may apply to: one call type, and which of its names (the
    ``event`` column: a track event's name, a page's or screen's name, else null)."""

    call_type: str
    wanted: Callable[[str | None], bool]
    what: str


def selection_for(kind: str, name: str) -> Selection:
    """The rows a schema of this kind and name applies to."""
    if kind == "events":
        return Selection(
            "track",
            lambda event: event is not None and event_schema_name(event) == name,
            f"track events whose name maps to {name}",
        )
    if kind == "traits":
        return Selection(name, lambda event: True, f"{name} calls")
    if kind == "calls":
        return Selection(name, lambda event: True, f"every {name} call")
    raise DraftError(
        f"a {kind} schema applies to no event by itself (the envelopes name the version they "
        "$ref): try the envelope that refers to it"
    )


class HistoryStream:
    """The payloads of the rows a selection picks within a window, newest first, as
    (messageId, event); ``truncated`` tells, once read, whether older rows were left."""

    def __init__(self, db: Database, selection: Selection, window: Window) -> None:
        self._db = db
        self._selection = selection
        self._window = window
        self.truncated = False

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        window = self._window
        with self._db.connection() as conn, conn.transaction():
            names = self._names(conn)
            if not names:
                return
            query = _rows_query(self._selection.call_type, names, window)
            with conn.cursor(name="clicktrail-history") as cursor:
                set_json_loads(orjson.loads, cursor)
                cursor.itersize = _FETCH_ROWS
                cursor.execute(query)
                for read, (message_id, payload) in enumerate(cursor):
                    if read == window.limit:
                        self.truncated = True
                        return
                    if isinstance(payload, dict):
                        yield message_id, payload

    def _names(self, conn: psycopg.Connection) -> list[str | None] | None:
        """The names of the call type received in the window that the selection wants, from the
        index (one descent per name); None when there are too many to look up one by one."""
        window = self._window
        bounds = {
            "type": self._selection.call_type,
            "day": window.start.date(),
            "start": window.start,
        }
        found: list[str | None] = [
            row[0] for row in conn.execute(_NAMES, {**bounds, "most": MAX_NAMES + 1})
        ]
        if len(found) > MAX_NAMES:
            return None
        if conn.execute(_NULL_NAME, bounds).fetchone() is not None:
            found.append(None)
        return [name for name in found if self._selection.wanted(name)]


# The distinct names of one call type in a window, each found by one descent of the
# (type, event, received_at) index: Postgres 15 has no skip scan of its own.
_NAMES = """
WITH RECURSIVE names(event) AS (
    (SELECT event FROM event_history
     WHERE type = %(type)s AND day >= %(day)s AND received_at >= %(start)s AND event IS NOT NULL
     ORDER BY event LIMIT 1)
    UNION ALL
    SELECT (SELECT h.event FROM event_history h
            WHERE h.type = %(type)s AND h.day >= %(day)s AND h.received_at >= %(start)s
              AND h.event > names.event
            ORDER BY h.event LIMIT 1)
    FROM names WHERE names.event IS NOT NULL
)
SELECT event FROM names WHERE event IS NOT NULL LIMIT %(most)s
"""
_NULL_NAME = """
SELECT 1 FROM event_history
WHERE type = %(type)s AND day >= %(day)s AND received_at >= %(start)s AND event IS NULL LIMIT 1
"""


class DeadLetterStream:
    """The events of the dead letters of one reason that a selection picks within a window,
    newest first, as (messageId, event): what the pipeline refused, as the dead letter keeps
    it (protected as the history is). Dead letters are few, and a window of them is read by
    its days, without an index of names."""

    def __init__(self, db: Database, selection: Selection, window: Window, reason: str) -> None:
        self._db = db
        self._selection = selection
        self._window = window
        self._reason = reason

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        window = self._window
        bounds: dict[str, Any] = {
            "type": self._selection.call_type,
            "reason": self._reason,
            "day": window.start.date(),
            "start": window.start,
            "source": window.source_id,
        }
        with self._db.connection() as conn, conn.transaction():
            found = [row[0] for row in conn.execute(_LETTER_NAMES, bounds)]
            names = [name for name in found if self._selection.wanted(name)]
            if not names:
                return
            query = _LETTER_ROWS.format(limit=sql.Literal(window.limit))
            with conn.cursor(name="clicktrail-dead-letters") as cursor:
                set_json_loads(orjson.loads, cursor)
                cursor.itersize = _FETCH_ROWS
                cursor.execute(query, {**bounds, "names": names})
                for message_id, letter in cursor:
                    event = letter.get("event") if isinstance(letter, dict) else None
                    if isinstance(event, dict):
                        yield message_id, event


_LETTERS_IN_WINDOW = """
FROM dead_letters
WHERE type = %(type)s AND reason = %(reason)s AND day >= %(day)s AND received_at >= %(start)s
  AND (%(source)s::text IS NULL OR source_id = %(source)s::text)
"""
_LETTER_NAMES = f"SELECT DISTINCT event {_LETTERS_IN_WINDOW}"
_LETTER_ROWS = sql.SQL(
    f"SELECT message_id, payload {_LETTERS_IN_WINDOW}"
    " AND event = ANY(%(names)s) ORDER BY received_at DESC LIMIT {limit}"
)


def _rows_query(call_type: str, names: list[str | None] | None, window: Window) -> sql.Composed:
    """Newest first: with few names, one index-ordered branch per name, merged by Postgres
    (Merge Append), so reading stops at the limit; with many, one scan of the type, sorted."""
    common = [
        sql.SQL("type = {}").format(sql.Literal(call_type)),
        sql.SQL("day >= {}").format(sql.Literal(window.start.date())),
        sql.SQL("received_at >= {}").format(sql.Literal(window.start)),
    ]
    if window.source_id is not None:
        common.append(sql.SQL("source_id = {}").format(sql.Literal(window.source_id)))
    columns = sql.SQL("SELECT message_id, received_at, payload FROM event_history WHERE ")
    limit = sql.Literal(window.limit + 1)  # one more: whether the limit left any
    if names is not None and len(names) <= MAX_BRANCHES:
        branches = [
            sql.SQL("({}{} ORDER BY received_at DESC LIMIT {})").format(
                columns, sql.SQL(" AND ").join([*common, _name_is(name)]), limit
            )
            for name in names
        ]
        return sql.SQL("SELECT message_id, payload FROM ({}) AS rows").format(
            sql.SQL(" UNION ALL ").join(branches)
        ) + sql.SQL(" ORDER BY received_at DESC LIMIT {}").format(limit)
    if names is not None:
        common.append(sql.SQL("event = ANY({})").format(sql.Literal([n for n in names if n])))
    return sql.SQL("SELECT message_id, payload FROM event_history WHERE {}").format(
        sql.SQL(" AND ").join(common)
    ) + sql.SQL(" ORDER BY received_at DESC LIMIT {}").format(limit)


def _name_is(name: str | None) -> sql.Composable:
    if name is None:
        return sql.SQL("event IS NULL")
    return sql.SQL("event = {}").format(sql.Literal(name))


def read_draft(path: Path) -> SchemaDoc:
    """The draft at ``path``: where it belongs in the catalogue, from its ``self``. Whether it is
    a valid schema file is told by the catalogue it is placed into."""
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DraftError(f"{path}: not valid JSON: {exc}") from None
    described = document.get("self") if isinstance(document, dict) else None
    if not isinstance(described, dict):
        raise DraftError(
            f"{path}: a draft describes itself as catalogue files do: "
            '"self": {"vendor", "kind", "name", "version"}'
        )
    kind, name = described.get("kind"), described.get("name")
    if kind not in KINDS:
        raise DraftError(f"{path}: self.kind is {kind!r}, one of {', '.join(KINDS)} expected")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise DraftError(f"{path}: self.name {name!r} is not a schema name")
    try:
        version = SchemaVer.parse(str(described.get("version")))
    except SchemaCatalogueError as exc:
        raise DraftError(f"{path}: self.version: {exc}") from None
    return SchemaDoc(kind, name, version, document)


@contextmanager
def overlay(root: Path, *docs: SchemaDoc) -> Iterator[Path]:
    """A scratch copy of the catalogue at ``root`` with ``docs`` in place (one already there of
    the same version replaced), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="clicktrail-schemas-") as scratch:
        copy = Path(scratch) / "schemas"
        shutil.copytree(root, copy)
        for doc in docs:
            target = copy / doc.kind / doc.name / f"{doc.version}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(orjson.dumps(doc.document, option=orjson.OPT_INDENT_2))
        yield copy


def compatibility(report: CatalogueReport, doc: SchemaDoc) -> CatalogueReport:
    """The part of a catalogue report about ``doc``: the catalogue's problems, and the version
    steps that lead to it or from it."""
    steps = [
        step
        for step in report.steps
        if (step.kind, step.name) == (doc.kind, doc.name) and doc.version in (step.old, step.new)
    ]
    return replace(report, steps=steps)


@dataclass
class PathFailures:
    """Events failing at one path for one reason: how many, the first message, a few ids."""

    count: int = 0
    message: str = ""
    ids: list[str] = field(default_factory=list)


@dataclass
class TryReport:
    """What trying a draft found: counters, the failing paths, and the compatibility verdict."""

    draft: SchemaDoc
    selection: str
    window: Window
    source_name: str | None = None
    replaces: bool = False
    passed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failures: dict[tuple[str, str], PathFailures] = field(default_factory=dict)
    other_paths: int = 0
    failed: int = 0
    truncated: bool = False
    compat: CatalogueReport | None = None

    @property
    def tried(self) -> int:
        return self.passed + self.failed

    @property
    def compatible(self) -> bool:
        return self.compat is not None and self.compat.ok

    @property
    def ok(self) -> bool:
        """Every tried event passes and the change is compatible."""
        return self.failed == 0 and self.compatible

    def fail(self, message_id: str, errors: Iterable[dict[str, str]]) -> None:
        self.failed += 1
        for error in errors:
            key = (error["path"], error["keyword"])
            entry = self.failures.get(key)
            if entry is None:
                if len(self.failures) >= MAX_PATHS:
                    self.other_paths += 1
                    continue
                entry = self.failures[key] = PathFailures(message=error["message"])
            entry.count += 1
            if len(entry.ids) < IDS_PER_PATH:
                entry.ids.append(message_id)

    def render(self) -> str:
        draft, window = self.draft, self.window
        source = f" of source {self.source_name}" if self.source_name else ""
        lines = [
            f"draft {draft.key}: tried on {self.selection}{source} received since "
            f"{format_ts(window.start)}, newest first"
        ]
        if self.replaces:
            lines.append(
                f"  note: the catalogue has {draft.key} already; the draft replaces it here, "
                "but a published version should not change: give the draft the next version"
            )
        lines.append(f"{self.tried} event(s) tried: {self.passed} passed, {self.failed} failed")
        if self.truncated:
            lines.append(f"stopped at --limit {window.limit}: older events were not tried")
        for why, count in sorted(self.skipped.items()):
            lines.append(f"{count} event(s) skipped: they {why}")
        if not self.tried:
            lines.append("no event in the window to try the draft on")
        if self.failures:
            lines.append("failing paths (events, path, keyword, first message; a few messageIds):")
            ranked = sorted(self.failures.items(), key=lambda item: (-item[1].count, item[0]))
            for (path, keyword), entry in ranked:
                lines.append(f"  {entry.count:8d}  {path}  {keyword}  {entry.message}")
                lines.append(f"            {', '.join(entry.ids)}")
            if self.other_paths:
                lines.append(f"  {self.other_paths:8d}  errors at other paths (not told apart)")
        lines.append("compatibility (make schemas-check, the draft in the catalogue):")
        if self.compat is not None:
            rendered = self.compat.render().splitlines()[1:]  # not the scratch copy's name
            if not self.compat.steps and not self.compat.problems:
                rendered = [f"  first version of {draft.kind}/{draft.name}: nothing to follow"]
            lines += rendered
        verdict = "passes" if self.ok else "does not pass"
        lines.append(f"verdict: the draft {verdict} (exit {0 if self.ok else 1})")
        return "\n".join(lines)


class DraftTrial:
    """Judges events with the catalogue the draft is placed into, as the workers would."""

    def __init__(self, draft: SchemaDoc, catalogue: FileSchemaRegistry) -> None:
        self.draft = draft
        self._validator = EventValidator(catalogue)
        latest = catalogue.record(draft.kind, draft.name)
        self._latest = latest is not None and latest.version == draft.version

    def judge(self, event: dict[str, Any]) -> list[dict[str, str]] | str:
        """The errors of the event under the draft (empty: it passes), or why the draft would
        not apply to it."""
        draft = self.draft
        kind, name = specific_schema(event)
        if (kind, name) != (draft.kind, draft.name):
            # A calls draft under an events or traits schema: every record of the call type
            # is built on the latest envelope, whatever version the event names.
            return self._errors(event) if self._latest else SKIP_NOT_LATEST
        version, problem = requested_version(event, kind, name)
        if problem is not None:
            return SKIP_OTHER_MODEL
        if version is None:
            return self._errors(event) if self._latest else SKIP_NOT_LATEST
        named = SchemaVer.parse(version)
        if named.model != draft.version.model:
            return SKIP_OTHER_MODEL
        if draft.version < named:
            return SKIP_LATER
        # Written for an earlier version of the draft's MODEL: the draft must accept it too.
        pinned = {**event, "context": {**event["context"], "schema": draft.key}}
        return self._errors(pinned)

    def _errors(self, event: dict[str, Any]) -> list[dict[str, str]]:
        return self._validator.validate(event).errors

    def run(self, events: Iterable[tuple[str, dict[str, Any]]], report: TryReport) -> None:
        for message_id, event in events:
            outcome = self.judge(event)
            if isinstance(outcome, str):
                report.skipped[outcome] += 1
            elif outcome:
                report.fail(message_id, outcome)
            else:
                report.passed += 1


def try_draft(
    db: Database, root: Path, path: Path, window: Window, source_name: str | None = None
) -> TryReport:
    """Try the draft at ``path`` on the history, in the catalogue at ``root``."""
    draft = read_draft(path)
    selection = selection_for(draft.kind, draft.name)
    replaces = (root / draft.kind / draft.name / f"{draft.version}.json").exists()
    report = TryReport(draft, selection.what, window, source_name, replaces)
    with overlay(root, draft) as copy:
        report.compat = compatibility(check_catalogue(copy), draft)
        if report.compat.problems:
            return report  # no record schemas to validate with
        trial = DraftTrial(draft, FileSchemaRegistry(copy))
    stream = HistoryStream(db, selection, window)
    trial.run(stream, report)
    report.truncated = stream.truncated
    return report
