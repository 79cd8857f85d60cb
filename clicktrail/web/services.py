"""What the web side talks to, behind small interfaces so tests can hand in twins."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from clicktrail.clock import Clock, SystemClock, epoch_seconds
from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.health import Check, dependency_checks, workers_check
from clicktrail.message import Part
from clicktrail.profiles import Profile
from clicktrail.receipts import Receipt
from clicktrail.redisconn import pipeline_redis, queue_redis
from clicktrail.registry import make_registry
from clicktrail.sessions import SessionStore, SessionView
from clicktrail.sources import Source, SourceStore
from clicktrail.validation import EventValidator
from clicktrail.web.admission import Admission


class Enqueuer(Protocol):
    def enqueue(self, part: Part) -> None:
        """Durably hand one request's part to the workers; raise DependencyUnavailable when it
        cannot, Unencodable when the part cannot be written."""


class SourceLookup(Protocol):
    def by_write_key(self, key: str) -> Source | None: ...

    def listing(self) -> list[Source]: ...


class Sessions(Protocol):
    timeout_seconds: int

    def create(self, source_id: str, session_id: str, now: datetime) -> SessionView: ...

    def get(self, session_id: str) -> SessionView | None: ...

    def end(self, session_id: str) -> bool: ...


class DebugEvents(Protocol):
    """The live debugger's feed (``clicktrail.debugger.DebugFeed``)."""

    retention_seconds: int

    def watch(self, source_id: str) -> None: ...

    def read(self, source_id: str, after: str | None, limit: int) -> list[dict[str, Any]]: ...

    def source_of(self, key: str) -> str | None: ...


class DebuggerKeyLookup(Protocol):
    def source_of(self, key: str) -> str | None: ...


class ReceiptLookup(Protocol):
    """``clicktrail.receipts.Receipts``."""

    def find(self, message_id: str, source_id: str | None = None) -> Receipt: ...


class Profiles(Protocol):
    def get(self, user_id: str) -> Profile | None: ...

    def request_erasure(self, user_id: str) -> tuple[int, str, bool]: ...


@dataclass
class Services:
    sources: SourceLookup
    enqueuer: Enqueuer
    validator: EventValidator
    sessions: Sessions
    profiles: Profiles
    admin_token: str | None = None
    admission: Admission | None = None
    # None: the debugger is off (DEBUGGER_RETENTION_SECONDS=0).
    debugger: DebugEvents | None = None
    # Debugger keys, which also open receipts (the debugger's own, when only it is given).
    debugger_keys: DebuggerKeyLookup | None = None
    receipts: ReceiptLookup | None = None
    checks: dict[str, Check] = field(default_factory=dict)
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Services:
        """The real services, every one reading time from ``clock`` (the system's by default);
        nothing connects until first used."""
        from clicktrail.debugger import DebugFeed, DebuggerKeys
        from clicktrail.profiles import ProfileStore
        from clicktrail.receipts import build_receipts
        from clicktrail.web.enqueue import CeleryEnqueuer

        db = Database(settings.database_url, name="clicktrail-api")
        enqueuer = CeleryEnqueuer(settings)
        checks = dependency_checks(settings, db)
        checks["workers"] = workers_check(enqueuer.ping_workers)
        clock = clock or SystemClock()
        redis_client = pipeline_redis(settings)
        keys = DebuggerKeys(db, settings.source_cache_seconds)
        debugger = (
            DebugFeed(redis_client, clock, settings.debugger_retention_seconds, keys)
            if settings.debugger_retention_seconds > 0
            else None
        )
        sources = SourceStore(db, settings.source_cache_seconds)
        receipts = build_receipts(
            settings, db, lambda: [source.id for source in sources.listing()], clock
        )
        return cls(
            sources=sources,
            enqueuer=enqueuer,
            validator=EventValidator(make_registry(settings)),
            sessions=SessionStore(redis_client, settings.session_timeout_seconds, clock),
            profiles=ProfileStore(db),
            admin_token=settings.admin_token,
            admission=Admission(
                settings, queue_redis(settings, timeout=2), wall_clock=epoch_seconds(clock)
            ),
            checks=checks,
            clock=clock,
            debugger=debugger,
            debugger_keys=keys,
            receipts=receipts,
        )
