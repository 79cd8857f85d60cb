"""In-memory twins of the I/O seams, for unit tests only (integration tests use the real thing)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from clicktrail.clock import format_ts
from clicktrail.errors import DependencyUnavailable
from clicktrail.kafka import Delivery, Record
from clicktrail.ledger import Tally
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
    """Delivered messageIds without a window, and the ledger counts noted with them."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str]] = set()
        self.ledger: Counter[tuple[str, str]] = Counter()

    def seen(self, ids: Mapping[str, list[str]]) -> dict[str, set[str]]:
        return {s: {m for m in found if (s, m) in self.ids} for s, found in ids.items()}

    def remember(self, ids: Mapping[str, list[str]], counts: Tally | None = None) -> None:
        self.ids.update((s, m) for s, found in ids.items() for m in found)
        if counts is not None:
            self.ledger.update(counts.counts)

    def counted(self, stage: str, source_id: str = "src-1") -> int:
        """How many of one stage and source the ledger was told of (every minute)."""
        return sum(n for (_, name), n in self.ledger.items() if name == f"{stage}:{source_id}")


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


class RecordingRedis:
    """Enough of a Redis client for the ledger's writes: pipelines (transactions or not) that
    record their commands and apply them to hashes, sets and lists, or all fail while
    ``down``; reads of the deduplication's sets find nothing."""

    def __init__(self) -> None:
        self.hashes: dict[str, Counter[str]] = {}
        self.sets: dict[str, set[str]] = {}
        self.lists: dict[str, list[Any]] = {}
        self.ttls: dict[str, int] = {}
        self.round_trips: list[tuple[bool, list[str]]] = []
        self.down = False

    def pipeline(self, transaction: bool = True) -> RecordingRedis.Pipe:
        return RecordingRedis.Pipe(self, transaction)

    def lpush(self, key: str, value: Any) -> int:
        if self.down:
            raise redis.ConnectionError("connection refused")
        self.round_trips.append((False, ["lpush"]))
        self.lists.setdefault(key, []).insert(0, value)
        return len(self.lists[key])

    class Pipe:
        def __init__(self, client: RecordingRedis, transaction: bool) -> None:
            self.client, self.transaction = client, transaction
            self.commands: list[tuple[str, tuple[Any, ...]]] = []

        def __len__(self) -> int:
            return len(self.commands)

        def __getattr__(self, name: str) -> Any:
            return lambda *args: self.commands.append((name, args))

        def execute(self) -> list[Any]:
            if self.client.down:
                raise redis.ConnectionError("connection refused")
            if any(command == "smismember" for command, _ in self.commands):  # a read
                return [[0] * len(args[1]) for _, args in self.commands]
            self.client.round_trips.append((self.transaction, [c for c, _ in self.commands]))
            for command, args in self.commands:
                if command == "hincrby":
                    self.client.hashes.setdefault(args[0], Counter())[args[1]] += args[2]
                elif command == "expire":
                    self.client.ttls[args[0]] = args[1]
                elif command == "sadd":
                    self.client.sets.setdefault(args[0], set()).update(args[1:])
                elif command == "lpush":
                    self.client.lists.setdefault(args[0], []).insert(0, args[1])
            return [1] * len(self.commands)

    def counted(
        self, stage: str, source_id: str = "src-1", minute: str = "2026-01-02T03:04"
    ) -> int:
        """One field of the ledger's hash of one minute (the sample events' by default)."""
        return self.hashes.get(f"ct:ledger:{minute}", Counter())[f"{stage}:{source_id}"]
