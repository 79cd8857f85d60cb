"""What the web side talks to, behind small interfaces so tests can hand in twins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clicktrail.clock import Clock, SystemClock
from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.registry import make_registry
from clicktrail.sources import Source, SourceStore
from clicktrail.validation import EventValidator


class Enqueuer(Protocol):
    def enqueue(self, payload: dict[str, Any]) -> None:
        """Durably hand a payload to the workers; raise DependencyUnavailable when it cannot."""


class SourceLookup(Protocol):
    def by_write_key(self, key: str) -> Source | None: ...


# A readiness check raises (anything) when its dependency is not usable.
HealthCheck = Callable[[], None]


@dataclass
class Services:
    sources: SourceLookup
    enqueuer: Enqueuer
    validator: EventValidator
    checks: dict[str, HealthCheck] = field(default_factory=dict)
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """The real services; nothing connects until first used."""
        from web.enqueue import CeleryEnqueuer
        from web.health import readiness_checks

        db = Database(settings.database_url, name="clicktrail-api")
        return cls(
            sources=SourceStore(db, settings.source_cache_seconds),
            enqueuer=CeleryEnqueuer(settings),
            validator=EventValidator(make_registry(settings)),
            checks=readiness_checks(settings, db),
        )
