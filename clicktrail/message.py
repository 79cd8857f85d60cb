"""The ingest task's message: what the API queues and the workers process, as types.

A ``Part`` is one request's events (or, on a retry, the Kafka-ready records still to publish)
with its source, its trace context and how often it failed; a ``Message`` is one queue message,
the parts of the requests that reached one API process together. This module alone knows how
they are written on the queue:

    a part:   {"v": 1, "source": {"id", "settings"}, "events": [...], "traceparent": str | None,
               "failures": int (only once a part failed),
               "replay": true (only for dead letters replayed),
               "redelivered": true (only for a request split off a message handed out again)}
              a retry carries "records" (``Record.to_json``) instead of "events", so that a
              retried publish neither re-enriches nor re-counts sessions
    a group:  {"v": 2, "parts": [part, ...]}; a message of one part is that part alone

Workers read every format written since the first release (a test holds messages written by
earlier code), so messages already queued survive an upgrade.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from clicktrail.errors import ClicktrailError, Fault
from clicktrail.kafka import Record
from clicktrail.ledger import received_minutes

PART_VERSION = 1
GROUP_VERSION = 2

# How deep an event may nest (the event object is one level). orjson writes at most 254 levels;
# a task message puts an event 7 levels down, a retry's dead letter 9, and the consumers we know
# of read far deeper (Jackson 1,000, Python's json about as many), so 128 leaves room to spare.
MAX_EVENT_DEPTH = 128
_ORJSON_DEPTH = 254
# An event of a part sits in its third level ({"events": [event]}).
_PADDING = _ORJSON_DEPTH - 2 - MAX_EVENT_DEPTH


class Unencodable(ClicktrailError, ValueError):
    """A part orjson cannot write: an event nests deeper than MAX_EVENT_DEPTH (the API answers
    400 ``too_deep``, naming the field)."""

    fault = Fault.CLIENT


class MalformedMessage(ClicktrailError, ValueError):
    """A queue message in none of the formats this module reads: only our code writes them."""

    fault = Fault.INTERNAL


@dataclass(frozen=True)
class Part:
    """One request's share of a message: its events, or on a retry the records left to publish
    (``records`` is then not None and ``events`` empty).

    The ledger counts what becomes of a request's events once (``clicktrail.ledger``): a
    ``replay`` (dead letters sent through again, accepted long ago) counts nowhere, and what
    the workers drop of a ``redelivered`` part (split off a message that came back after its
    worker died, which may have published it) is the pipeline's own copies, not counted."""

    source_id: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[dict[str, Any]] = ()
    traceparent: str | None = None
    records: Sequence[Record] | None = None
    failures: int = 0
    replay: bool = False
    redelivered: bool = False

    @property
    def is_retry(self) -> bool:
        return self.records is not None

    @property
    def size(self) -> int:
        """How many events it carries (as events or as records)."""
        return len(self.records) if self.records is not None else len(self.events)

    def retrying(self, records: Sequence[Record]) -> Part:
        """This part with only ``records`` left to publish."""
        return replace(self, events=(), records=list(records))

    def message_ids(self) -> list[str]:
        if self.records is not None:
            return [str(r.headers.get("event-id")) for r in self.records]
        return [str(e.get("messageId")) for e in self.events if isinstance(e, dict)]

    def describe(self) -> str:
        """What monitors and logs show of it: no event contents, no personal data."""
        kind = "records" if self.is_retry else "events"
        return f"source={self.source_id} {kind}={self.size} first={self._first_id()}"

    def _first_id(self) -> str:
        if self.records:
            return self.records[0].headers.get("event-id", "")
        head = self.events[0] if self.events else None
        return str(head.get("messageId", "")) if isinstance(head, dict) else ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "v": PART_VERSION,
            "source": {"id": self.source_id, "settings": self.settings},
        }
        if self.records is None:
            wire["events"] = self.events
            wire["traceparent"] = self.traceparent
        else:
            wire["traceparent"] = self.traceparent
            wire["records"] = [r.to_json() for r in self.records]
        if self.failures:
            wire["failures"] = self.failures
        if self.replay:
            wire["replay"] = True
        if self.redelivered:
            wire["redelivered"] = True
        return wire

    def encode(self) -> EncodedPart:
        """The part as JSON, written in the caller's thread so that whatever it holds costs that
        caller alone; a group then only splices encoded parts (``orjson.Fragment``).

        The part is written inside enough arrays that orjson's own depth limit refuses an event
        deeper than MAX_EVENT_DEPTH: the bound costs no walk of its own. Raises Unencodable.
        """
        wrapped: Any = self.to_wire()
        for _ in range(_PADDING):
            wrapped = [wrapped]
        try:
            padded = orjson.dumps(wrapped)
        except orjson.JSONEncodeError as exc:
            raise Unencodable(str(exc)) from None
        # What the API counts as accepted, once its enqueue succeeds; a replay nothing.
        minutes = () if self.replay or self.records is not None else received_minutes(self.events)
        return EncodedPart(
            padded[_PADDING:-_PADDING], self.size, self.describe(), self.source_id, minutes
        )

    @classmethod
    def from_wire(cls, data: Any) -> Part:
        if not isinstance(data, dict):
            raise MalformedMessage(f"a part is an object, not {type(data).__name__}")
        source = data.get("source")
        if not isinstance(source, dict) or source.get("id") in (None, ""):
            raise MalformedMessage("a part names its source")
        settings = source.get("settings")
        settings = {} if settings is None else settings
        traceparent = data.get("traceparent")
        failures = data.get("failures") or 0
        if not isinstance(settings, dict) or not isinstance(failures, int):
            raise MalformedMessage("a part's settings are an object, its failures a number")
        replay, redelivered = data.get("replay") is True, data.get("redelivered") is True
        if "records" in data:
            raw = data["records"]
            if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
                raise MalformedMessage("a part's records are a list of objects")
            try:
                records = [Record.from_json(r) for r in raw]
            except KeyError as exc:
                raise MalformedMessage(f"a record has no {exc}") from None
            return cls(
                str(source["id"]),
                settings,
                (),
                traceparent if isinstance(traceparent, str) else None,
                records,
                failures,
                replay,
                redelivered,
            )
        events = data.get("events")
        if not isinstance(events, list):
            raise MalformedMessage("a part holds a list of events or of records")
        return cls(
            str(source["id"]),
            settings,
            events,
            traceparent if isinstance(traceparent, str) else None,
            None,
            failures,
            replay,
            redelivered,
        )


@dataclass(frozen=True)
class EncodedPart:
    """A part written by ``Part.encode``: its JSON, how many events it holds, what monitors show,
    and for the ledger its source and how many of its events were received in each minute
    (none for a replay)."""

    json: bytes
    size: int
    description: str
    source_id: str = ""
    minutes: tuple[tuple[str, int], ...] = ()


def describe_group(requests: int, items: int, first: str) -> str:
    """What monitors show of a group: its size and the description of its first part."""
    return f"requests={requests} items={items} first=({first})"


def encode_group(parts: Sequence[EncodedPart]) -> tuple[Any, str]:
    """The task argument holding these encoded parts (spliced, not written again) and what
    monitors show of it."""
    if len(parts) == 1:
        return orjson.Fragment(parts[0].json), parts[0].description
    return (
        {"v": GROUP_VERSION, "parts": [orjson.Fragment(p.json) for p in parts]},
        describe_group(len(parts), sum(p.size for p in parts), parts[0].description),
    )


@dataclass(frozen=True)
class Message:
    """One queue message: the parts of one or several requests."""

    parts: tuple[Part, ...]

    @classmethod
    def of(cls, parts: Iterable[Part]) -> Message:
        return cls(tuple(parts))

    @classmethod
    def decode(cls, payload: Any) -> Message:
        """The message a task was given (its one argument). Raises MalformedMessage."""
        if isinstance(payload, dict) and "parts" in payload:
            parts = payload["parts"]
            if not isinstance(parts, list) or not parts:
                raise MalformedMessage("a group holds a list of parts")
            return cls(tuple(Part.from_wire(p) for p in parts))
        return cls((Part.from_wire(payload),))

    def to_wire(self) -> Any:
        """The task argument (JSON-ready) that ``decode`` reads back."""
        if len(self.parts) == 1:
            return self.parts[0].to_wire()
        return {"v": GROUP_VERSION, "parts": [p.to_wire() for p in self.parts]}

    @property
    def failures(self) -> int:
        """How often processing it raised an unexpected error."""
        return max((p.failures for p in self.parts), default=0)

    def failed_again(self) -> Message:
        return Message(tuple(replace(p, failures=p.failures + 1) for p in self.parts))

    def message_ids(self) -> list[str]:
        return [i for part in self.parts for i in part.message_ids()]

    def describe(self) -> str:
        """What monitors and logs show of it: no event contents, no personal data."""
        if len(self.parts) == 1:
            return self.parts[0].describe()
        size = sum(p.size for p in self.parts)
        return describe_group(len(self.parts), size, self.parts[0].describe())
