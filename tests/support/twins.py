"""In-memory twins of the I/O seams, for unit tests only (integration tests use the real thing)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clicktrail.clock import format_ts
from clicktrail.errors import DependencyUnavailable
from clicktrail.kafka import Delivery, Record
from clicktrail.message import Part
from clicktrail.profiles import Profile
from clicktrail.sessions import SessionView, Touch
from clicktrail.sources import Source


class FixedClock:
    def __init__(self, moment: datetime = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


class MemorySessions:
    """Sessions without expiry: one per (source, identity)."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls = 0

    def touch_many(self, touches: list[Touch]) -> list[dict[str, Any]]:
        self.calls += 1
        out = []
        for t in touches:
            session = self.sessions.setdefault(
                (t.source_id, t.identity),
                {"id": t.new_id, "index": 1, "eventIndex": 0, "startedAt": t.at},
            )
            session["eventIndex"] += 1
            out.append(dict(session))
        return out


class MemoryPublisher:
    """Keeps what it is given; a record whose event-id is in ``fail_ids`` fails ``fail_times``."""

    def __init__(self, fail_ids: set[str] | None = None, fail_times: int = 1) -> None:
        self.published: list[Record] = []
        self.fail_ids = fail_ids or set()
        self.fail_times = fail_times
        self._failed: dict[str, int] = {}

    def publish(self, records: list[Record]) -> list[Delivery]:
        deliveries = []
        for record in records:
            event_id = record.headers.get("event-id", "")
            if event_id in self.fail_ids and self._failed.get(event_id, 0) < self.fail_times:
                self._failed[event_id] = self._failed.get(event_id, 0) + 1
                deliveries.append(Delivery(record, "broker unreachable"))
            else:
                self.published.append(record)
                deliveries.append(Delivery(record, None, 0, len(self.published) - 1))
        return deliveries

    def close(self) -> None:
        pass


class RecordingEnqueuer:
    """Keeps the parts it is handed, after encoding them as the real enqueuer does."""

    def __init__(self, down: bool = False) -> None:
        self.parts: list[Part] = []
        self.down = down

    def enqueue(self, part: Part) -> None:
        part.encode()
        if self.down:
            raise DependencyUnavailable("queue", "connection refused")
        self.parts.append(part)


class MemorySessionViews:
    """Server-issued sessions, kept until ended."""

    timeout_seconds = 1800

    def __init__(self) -> None:
        self.views: dict[str, SessionView] = {}

    def create(self, source_id: str, session_id: str, now: datetime) -> SessionView:
        started = format_ts(now)
        self.views[session_id] = SessionView(
            session_id, source_id, None, None, None, started, None, 0, started
        )
        return self.views[session_id]

    def get(self, session_id: str) -> SessionView | None:
        return self.views.get(session_id)

    def end(self, session_id: str) -> bool:
        return self.views.pop(session_id, None) is not None


class MemoryProfiles:
    def __init__(self, profiles: dict[str, Profile] | None = None) -> None:
        self.profiles = profiles or {}
        self.erasures: list[str] = []

    def get(self, user_id: str) -> Profile | None:
        return self.profiles.get(user_id)

    def request_erasure(self, user_id: str) -> tuple[int, str, bool]:
        new = user_id not in self.erasures
        if new:
            self.erasures.append(user_id)
        return self.erasures.index(user_id) + 1, user_id, new


class MemorySources:
    def __init__(self, sources: dict[str, Source], down: bool = False) -> None:
        self.sources = sources
        self.down = down

    def by_write_key(self, key: str) -> Source | None:
        if self.down:
            raise DependencyUnavailable("postgres", "connection refused")
        return self.sources.get(key)

    def listing(self) -> list[Source]:
        if self.down:
            raise DependencyUnavailable("postgres", "connection refused")
        return sorted({s.id: s for s in self.sources.values()}.values(), key=lambda s: s.name)


class MemorySeenIds:
    """Delivered messageIds without a window."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str]] = set()

    def seen(self, ids: Mapping[str, list[str]]) -> dict[str, set[str]]:
        return {s: {m for m in found if (s, m) in self.ids} for s, found in ids.items()}

    def remember(self, ids: Mapping[str, list[str]]) -> None:
        self.ids.update((s, m) for s, found in ids.items() for m in found)


class MemoryRateCounter:
    """The cell-rate counts of ``clicktrail.web.admission.RedisRateCounter``, in memory."""

    def __init__(self) -> None:
        self.paid: dict[str, float] = {}
        self.calls = 0

    def lease(self, source_id: str, limit: int, wanted: int, needed: int, now: float) -> int:
        self.calls += 1
        paid = max(self.paid.get(source_id, 0.0), now)
        free = math.floor((now + 1 - paid) * limit + 1e-6)
        if free >= needed:
            granted = min(wanted, free)
        elif needed > limit and paid <= now:
            granted = needed
        elif needed > limit:
            return -math.ceil((paid - now) * 1000)
        else:
            return -math.ceil((paid - 1 + needed / limit - now) * 1000)
        self.paid[source_id] = paid + granted / limit
        return granted


class MemoryDebugFeed:
    """A debugger feed: entries per source, newest first; remembers which sources were watched."""

    retention_seconds = 300

    def __init__(self, entries: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.entries = entries or {}
        self.watched: list[str] = []
        self.down = False

    def watch(self, source_id: str) -> None:
        if self.down:
            raise DependencyUnavailable("redis", "connection refused")
        self.watched.append(source_id)

    def read(self, source_id: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        newest_first = self.entries.get(source_id, [])
        newer = [e for e in newest_first if after is None or e["id"] > after]
        return newer[:limit]
