"""The profile writer and profile store against a real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from clicktrail.db import Database
from clicktrail.profiles import ProfileStore, ProfileWriter
from tests.support.events import published, uid


def apply(db: Database, *events: dict[str, Any]) -> None:
    with db.connection() as conn, conn.transaction():
        ProfileWriter().apply(conn, list(events))


def test_an_anonymous_visitor_who_identifies_gets_one_profile_holding_the_anonymous_id(
    db: Database,
) -> None:
    user, anon = uid("user"), uid("anon")

    apply(db, published("page", anonymous_id=anon, at="2026-03-01T10:00:00.000Z"))
    apply(
        db,
        published("track", anonymous_id=anon, at="2026-03-01T10:01:00.000Z", event="Clicked"),
        published(
            "identify",
            user,
            anon,
            at="2026-03-01T10:02:00.000Z",
            traits={"email": "ada@example.com"},
        ),
    )
    profile = ProfileStore(db).get(user)

    assert profile is not None
    assert profile.aliases == [anon]
    assert profile.traits == {"email": "ada@example.com"}
    assert ProfileStore(db).get(anon) == profile


def test_traits_merge_key_by_key_and_the_later_event_wins_whatever_the_arrival_order(
    db: Database,
) -> None:
    user = uid("user")
    newer = published(
        "identify", user, at="2026-03-02T00:00:00.000Z", traits={"plan": "pro", "seats": 5}
    )
    older = published(
        "identify", user, at="2026-03-01T00:00:00.000Z", traits={"plan": "free", "email": "a@x.io"}
    )

    apply(db, newer)
    apply(db, older)
    profile = ProfileStore(db).get(user)

    assert profile is not None
    assert profile.traits == {"plan": "pro", "seats": 5, "email": "a@x.io"}


@pytest.mark.parametrize("one_batch", [True, False])
def test_a_timestamp_in_the_future_never_pins_a_trait(db: Database, one_batch: bool) -> None:
    user = uid("user")
    wrong_clock = published(
        "identify",
        user,
        at="9999-12-31T23:59:59.000Z",  # as an older pipeline published it, uncorrected
        received="2026-03-01T10:00:00.000Z",
        traits={"plan": "free", "email": "a@x.io"},
    )
    later = published("identify", user, at="2026-03-01T10:05:00.000Z", traits={"plan": "pro"})

    if one_batch:
        apply(db, wrong_clock, later)
    else:
        apply(db, wrong_clock)
        apply(db, later)
    profile = ProfileStore(db).get(user)

    assert profile is not None
    assert profile.traits == {"plan": "pro", "email": "a@x.io"}
    assert profile.trait_times["plan"] == "2026-03-01T10:05:00.000Z"
    assert profile.trait_times["email"] == "2026-03-01T10:00:00.000Z"  # its receipt


def test_a_trait_stored_with_a_time_in_the_future_gives_way_to_a_later_event(
    db: Database,
) -> None:
    user = uid("user")
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO profiles (user_id, traits, trait_times, first_seen, last_seen)"
            " VALUES (%s, %s, %s, now(), now())",
            (user, Jsonb({"plan": "free"}), Jsonb({"plan": "9999-12-31T23:59:59Z"})),
        )

    apply(db, published("identify", user, at="2026-03-01T10:05:00.000Z", traits={"plan": "pro"}))
    profile = ProfileStore(db).get(user)

    assert profile is not None
    assert profile.traits == {"plan": "pro"}


def test_first_and_last_seen_are_receive_times_and_anonymous_events_count_once_linked(
    db: Database,
) -> None:
    user, anon = uid("user"), uid("anon")
    apply(db, published("identify", user, anon, received="2026-03-01T10:00:00.000Z", traits={}))

    apply(
        db,
        published(
            "track", anonymous_id=anon, received="2026-03-05T09:00:00.000Z", event="Came Back"
        ),
    )
    apply(db, published("track", user, received="2026-02-27T09:00:00.000Z", event="Late Arrival"))
    profile = ProfileStore(db).get(user)

    assert profile is not None
    assert profile.first_seen == datetime(2026, 2, 27, 9, tzinfo=UTC)
    assert profile.last_seen == datetime(2026, 3, 5, 9, tzinfo=UTC)


def test_alias_merges_the_previous_profile_into_the_user(db: Database) -> None:
    old, new, anon = uid("old"), uid("new"), uid("anon")
    apply(
        db,
        published(
            "identify",
            old,
            anon,
            at="2026-03-01T00:00:00.000Z",
            traits={"email": "old@x.io", "plan": "free"},
        ),
        published("identify", new, at="2026-03-02T00:00:00.000Z", traits={"plan": "pro"}),
    )

    apply(db, published("alias", new, at="2026-03-03T00:00:00.000Z", previousId=old))
    apply(db, published("identify", old, at="2026-03-04T00:00:00.000Z", traits={"name": "Ada"}))
    store = ProfileStore(db)
    merged = store.get(new)

    assert merged is not None
    assert merged.user_id == new
    assert sorted(merged.aliases) == sorted([old, anon])
    assert merged.traits == {"email": "old@x.io", "plan": "pro", "name": "Ada"}
    assert merged.first_seen == datetime(2026, 3, 1, tzinfo=UTC)
    assert store.get(old) == merged
    assert store.get(anon) == merged


def test_applying_the_same_events_twice_changes_nothing(db: Database) -> None:
    user, anon = uid("user"), uid("anon")
    events = [
        published("identify", user, anon, at="2026-03-01T00:00:00.000Z", traits={"a": 1}),
        published("track", user, at="2026-03-02T00:00:00.000Z", event="E"),
    ]

    apply(db, *events)
    once = ProfileStore(db).get(user)
    apply(db, *events)
    twice = ProfileStore(db).get(user)

    assert once == twice


def test_traits_for_enrichment_are_read_in_one_query_and_cached(db: Database) -> None:
    user, anon = uid("user"), uid("anon")
    apply(db, published("identify", user, anon, traits={"tier": "gold"}))
    store = ProfileStore(db, traits_cache_seconds=60)

    first = store.traits_for([user, anon, uid("nobody")])
    apply(
        db, published("identify", user, at="2027-01-01T00:00:00.000Z", traits={"tier": "platinum"})
    )
    cached = store.traits_for([user])

    assert first == {user: {"tier": "gold"}, anon: {"tier": "gold"}}
    assert cached == {user: {"tier": "gold"}}
    assert ProfileStore(db, traits_cache_seconds=60).traits_for([user]) == {
        user: {"tier": "platinum"}
    }


def test_traits_for_enrichment_go_without_postgres() -> None:
    from tests.support.infra import free_port

    database = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=0.5)
    try:
        assert ProfileStore(database).traits_for(["u"]) == {}
    finally:
        database.close()


def test_an_erasure_request_is_filed_once_for_the_user_an_alias_belongs_to(db: Database) -> None:
    user, anon = uid("user"), uid("anon")
    apply(db, published("identify", user, anon, traits={}))
    store = ProfileStore(db)

    first = store.request_erasure(anon)
    again = store.request_erasure(user)

    assert first[1:] == (user, True)
    assert again == (first[0], user, False)
