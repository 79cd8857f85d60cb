"""Profiles in Postgres: one per userId, with the other ids that resolve to it (aliases).

Written by the history sink, for the events it stores for the first time, in the sink's own
transaction (so a replay changes nothing):
- any event with a userId creates the profile and moves ``last_seen`` (receive time);
- an event carrying both a userId and an anonymousId links the anonymous id to the profile
  (identify-after-anonymous);
- ``identify`` merges its traits, key by key, the trait set by the later event winning (by
  ``timestamp``, as the pipeline corrected it; a time more than ``FUTURE_TOLERANCE`` after the
  event's receipt, or after now for one already stored, counts as no time, so a wrong clock in
  the future cannot pin a trait);
- ``alias`` merges ``previousId`` into ``userId``: the previous profile's traits, aliases and
  first sighting move over and it is removed; ``previousId`` becomes an alias.
Events naming an alias as their userId count for the profile it resolves to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from cachetools import TTLCache
from psycopg.types.json import Jsonb

from clicktrail.clock import (
    FUTURE_TOLERANCE,
    SYSTEM_CLOCK,
    Clock,
    event_time,
    format_ts,
    parse_ts,
)
from clicktrail.db import Database
from clicktrail.errors import DependencyUnavailable
from clicktrail.telemetry import dependency_span

log = logging.getLogger(__name__)
_MISSING = object()


@dataclass
class Profile:
    user_id: str
    traits: dict[str, Any] = field(default_factory=dict)
    trait_times: dict[str, str] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    aliases: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "traits": self.traits,
            "aliases": sorted(self.aliases),
            "firstSeen": format_ts(self.first_seen) if self.first_seen else None,
            "lastSeen": format_ts(self.last_seen) if self.last_seen else None,
        }

    def seen(self, at: datetime) -> None:
        self.first_seen = at if self.first_seen is None else min(self.first_seen, at)
        self.last_seen = at if self.last_seen is None else max(self.last_seen, at)

    def merge_traits(self, traits: dict[str, Any], at: str, now: datetime) -> None:
        """Set each trait unless a later event already set it. A known time in the future (after
        ``now``) was set by a wrong clock (before timestamps were corrected): any later event
        wins over it."""
        moment = parse_ts(at)
        horizon = now + FUTURE_TOLERANCE
        for name, value in traits.items():
            known = parse_ts(self.trait_times.get(name))
            if known is None or moment is None or moment >= known or known > horizon:
                self.traits[name] = value
                self.trait_times[name] = at

    def absorb(self, other: Profile, now: datetime) -> None:
        """Take over another profile's traits (the later-set value of each wins) and sightings."""
        for name, value in other.traits.items():
            self.merge_traits({name: value}, other.trait_times.get(name, ""), now)
        for moment in (other.first_seen, other.last_seen):
            if moment is not None:
                self.seen(moment)


class ProfileStore:
    """Reads for the API and for enrichment, and erasure requests."""

    def __init__(
        self, db: Database, traits_cache_seconds: int = 60, max_entries: int = 10000
    ) -> None:
        self._db = db
        self._traits: TTLCache[str, dict[str, Any] | None] = TTLCache(
            max_entries, traits_cache_seconds
        )
        self._lock = threading.Lock()

    def resolve(self, conn: psycopg.Connection, user_id: str) -> str:
        row = conn.execute(
            "SELECT user_id FROM profile_aliases WHERE alias = %s", (user_id,)
        ).fetchone()
        return str(row[0]) if row else user_id

    def get(self, user_id: str) -> Profile | None:
        """The profile of a userId or of one of its aliases."""
        with self._db.connection() as conn:
            canonical = self.resolve(conn, user_id)
            row = conn.execute(
                "SELECT user_id, traits, trait_times, first_seen, last_seen FROM profiles"
                " WHERE user_id = %s",
                (canonical,),
            ).fetchone()
            if row is None:
                return None
            aliases = [
                r[0]
                for r in conn.execute(
                    "SELECT alias FROM profile_aliases WHERE user_id = %s", (canonical,)
                )
            ]
        return Profile(row[0], row[1], row[2], row[3], row[4], aliases)

    def traits_for(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Profile traits of these users, from a short cache or one query; {} when Postgres is
        away (enrichment must never hold events back)."""
        wanted = set(user_ids)
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for user_id in list(wanted):
                # One lookup: an entry can expire between a membership test and a read.
                traits = self._traits.get(user_id, _MISSING)
                if traits is _MISSING:
                    continue
                if traits:
                    found[user_id] = cast("dict[str, Any]", traits)
                wanted.discard(user_id)
        if not wanted:
            return found
        try:
            span = dependency_span("postgres profiles.traits_for", "postgresql", "SELECT")
            with span, self._db.connection() as conn:
                rows = conn.execute(
                    "SELECT a.id, p.traits FROM unnest(%s::text[]) AS a(id)"
                    " LEFT JOIN profile_aliases pa ON pa.alias = a.id"
                    " JOIN profiles p ON p.user_id = coalesce(pa.user_id, a.id)",
                    (list(wanted),),
                ).fetchall()
        except DependencyUnavailable as exc:
            log.warning("profile traits unavailable, events go without them: %s", exc)
            return found
        fetched = {user_id: traits for user_id, traits in rows}
        with self._lock:
            for user_id in wanted:
                self._traits[user_id] = fetched.get(user_id)
        found.update({k: v for k, v in fetched.items() if v})
        return found

    def forget(self, user_ids: Iterable[str]) -> None:
        """Drop cached traits of these users (they were erased: the next lookup asks Postgres,
        which no longer has them)."""
        with self._lock:
            for user_id in user_ids:
                self._traits.pop(user_id, None)

    def request_erasure(self, user_id: str) -> tuple[int, str, bool]:
        """File an erasure request for a user (or the user an alias belongs to): its id, the
        userId it is for, and whether it is new (a pending one is reused)."""
        with self._db.connection() as conn, conn.transaction():
            canonical = self.resolve(conn, user_id)
            row = conn.execute(
                "INSERT INTO erasure_requests (user_id) VALUES (%s)"
                " ON CONFLICT (user_id) WHERE completed_at IS NULL DO NOTHING RETURNING id",
                (canonical,),
            ).fetchone()
            if row is not None:
                return int(row[0]), canonical, True
            pending = conn.execute(
                "SELECT id FROM erasure_requests WHERE user_id = %s AND completed_at IS NULL",
                (canonical,),
            ).fetchone()
            assert pending is not None
            return int(pending[0]), canonical, False


class ProfileWriter:
    """Applies newly stored events to profiles, inside the caller's transaction. A stored trait
    time beyond ``clock``'s now (and its tolerance) counts as no time."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock

    def apply(self, conn: psycopg.Connection, events: list[dict[str, Any]]) -> int:
        """Apply events (in any order) with a handful of statements, whatever their number;
        the number of profiles written."""
        now = self._clock.now()
        times = {id(event): _time_of(event) for event in events}
        events = sorted(events, key=lambda e: times[id(e)] or _NO_TIME)
        ids = {
            str(value)
            for event in events
            for value in (event.get("userId"), event.get("anonymousId"), event.get("previousId"))
            if value
        }
        aliases: dict[str, str] = dict(
            conn.execute(
                "SELECT alias, user_id FROM profile_aliases WHERE alias = ANY(%s)", (list(ids),)
            ).fetchall()
        )
        wanted = ids | set(aliases.values())
        profiles = {
            row[0]: Profile(row[0], row[1], row[2], row[3], row[4])
            for row in conn.execute(
                "SELECT user_id, traits, trait_times, first_seen, last_seen FROM profiles"
                " WHERE user_id = ANY(%s) ORDER BY user_id FOR UPDATE",
                (list(wanted),),
            )
        }
        new_aliases: dict[str, str] = {}
        merged: dict[str, str] = {}  # removed profile -> the one it went into

        def canonical(user_id: str) -> str:
            while user_id in merged:
                user_id = merged[user_id]
            return aliases.get(user_id, user_id)

        for event in events:
            received = parse_ts(event.get("receivedAt"))
            user_id = event.get("userId")
            anonymous_id = event.get("anonymousId")
            if not user_id:
                linked = aliases.get(str(anonymous_id)) if anonymous_id else None
                if linked and linked in profiles and received:
                    profiles[linked].seen(received)
                continue
            target = canonical(str(user_id))
            profile = profiles.setdefault(target, Profile(target))
            if received:
                profile.seen(received)
            if anonymous_id and str(anonymous_id) != target and str(anonymous_id) not in aliases:
                aliases[str(anonymous_id)] = new_aliases[str(anonymous_id)] = target
            if event.get("type") == "identify" and isinstance(event.get("traits"), dict):
                moment = times[id(event)]
                profile.merge_traits(event["traits"], format_ts(moment) if moment else "", now)
            if event.get("type") == "alias" and event.get("previousId"):
                previous = canonical(str(event["previousId"]))
                if previous != target:
                    if previous in profiles:
                        profile.absorb(profiles.pop(previous), now)
                        merged[previous] = target
                    for alias, owner in list(aliases.items()):
                        if owner == previous:
                            aliases[alias] = new_aliases[alias] = target
                    aliases[previous] = new_aliases[previous] = target

        with conn.cursor() as cur:
            # Profiles first (an alias must point at one), then move the aliases of merged
            # profiles, then remove those, then link the new aliases.
            cur.executemany(
                "INSERT INTO profiles (user_id, traits, trait_times, first_seen, last_seen)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET"
                " traits = EXCLUDED.traits, trait_times = EXCLUDED.trait_times,"
                " first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,"
                " updated_at = now()",
                [
                    (p.user_id, Jsonb(p.traits), Jsonb(p.trait_times), p.first_seen, p.last_seen)
                    for p in profiles.values()
                ],
            )
            if merged:
                cur.executemany(
                    "UPDATE profile_aliases SET user_id = %s WHERE user_id = %s",
                    [(canonical(previous), previous) for previous in merged],
                )
                cur.execute("DELETE FROM profiles WHERE user_id = ANY(%s)", (list(merged),))
            cur.executemany(
                "INSERT INTO profile_aliases (alias, user_id) VALUES (%s, %s)"
                " ON CONFLICT (alias) DO UPDATE SET user_id = EXCLUDED.user_id",
                [(alias, canonical(owner)) for alias, owner in new_aliases.items()],
            )
        return len(profiles)


_NO_TIME = datetime.min.replace(tzinfo=UTC)


def _time_of(event: dict[str, Any]) -> datetime | None:
    """When an event happened: its (corrected) ``timestamp``, the receive time when that is
    missing or beyond the receipt by more than FUTURE_TOLERANCE (an event written before
    timestamps were corrected)."""
    received = parse_ts(event.get("receivedAt"))
    timestamp = parse_ts(event.get("timestamp"))
    if received is None:
        return timestamp
    return event_time(timestamp, None, received)
