"""The session store against a real Redis."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from clicktrail.clock import parse_ts
from clicktrail.errors import DependencyUnavailable
from clicktrail.redisconn import make_redis
from clicktrail.sessions import LIVE_KEY, SESSION_PREFIX, SessionStore, Touch, mark_key
from tests.support.infra import free_port
from tests.support.twins import FixedClock

NOW = "2026-01-01T00:00:00.000Z"


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return make_redis(redis_url)


def touch(
    store: SessionStore, source: str, device: str, user: str | None = None, named: str | None = None
) -> dict[str, Any]:
    [session] = store.touch_many([Touch(source, user, device, NOW, str(uuid.uuid4()), named)])
    return session


def device() -> str:
    return f"device-{uuid.uuid4().hex}"


def test_concurrent_events_of_one_user_open_one_session(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)
    anon = device()

    with ThreadPoolExecutor(max_workers=16) as pool:
        sessions = list(pool.map(lambda _: touch(store, "src", anon), range(200)))

    assert len({s["id"] for s in sessions}) == 1
    assert sorted(s["eventIndex"] for s in sessions) == list(range(1, 201))
    assert {s["index"] for s in sessions} == {1}


def test_a_session_expires_after_the_timeout_sliding_with_each_event(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=1)
    anon = device()

    first = touch(store, "src", anon)
    time.sleep(0.6)
    same = touch(store, "src", anon)
    time.sleep(0.6)
    still = touch(store, "src", anon)
    time.sleep(1.3)
    after = touch(store, "src", anon)

    assert first["id"] == same["id"] == still["id"]
    assert after["id"] != first["id"]
    assert (after["index"], after["eventIndex"]) == (2, 1)
    assert store.get(first["id"]) is None


def test_expiry_is_a_redis_key_ttl(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=1800)

    session = touch(store, "src", device())

    assert 1790 <= client.ttl(SESSION_PREFIX + session["id"]) <= 1800


def test_signing_in_keeps_the_session_of_the_device(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)
    anon = device()

    before = touch(store, "src", anon)
    after = touch(store, "src", anon, user="ada")

    assert after["id"] == before["id"]
    view = store.get(before["id"])
    assert view is not None
    assert (view.user_id, view.anonymous_id, view.event_count) == ("ada", anon, 2)


def test_sources_and_devices_do_not_share_sessions(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)
    anon = device()

    a = touch(store, "src-a", anon)
    b = touch(store, "src-b", anon)
    c = touch(store, "src-a", anon + "-other")

    assert len({a["id"], b["id"], c["id"]}) == 3


def test_a_batch_is_one_round_trip_in_order(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)
    anon = device()
    touches = [
        Touch("src", None, anon, f"2026-01-01T00:00:0{i}.000Z", f"new-{uuid.uuid4()}")
        for i in range(5)
    ]

    sessions = store.touch_many(touches)

    assert [s["eventIndex"] for s in sessions] == [1, 2, 3, 4, 5]
    assert {s["id"] for s in sessions} == {touches[0].new_id}
    assert {s["startedAt"] for s in sessions} == {"2026-01-01T00:00:00.000Z"}


def test_events_join_a_server_issued_session_they_name(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)
    issued = store.create("src", f"issued-{uuid.uuid4()}", datetime.now(UTC))
    anon = device()

    joined = touch(store, "src", anon, named=issued.id)
    next_one = touch(store, "src", anon)  # names nothing: the device's session is the issued one
    other_source = touch(store, "src-b", device(), named=issued.id)

    assert joined["id"] == next_one["id"] == issued.id
    assert (joined["index"], joined["eventIndex"], next_one["eventIndex"]) == (1, 1, 2)
    assert joined["startedAt"] == issued.started_at
    assert other_source["id"] != issued.id


def test_naming_a_session_that_is_not_live_opens_a_new_one(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)

    session = touch(store, "src", device(), named="no-such-session")

    assert session["id"] != "no-such-session"
    assert session["eventIndex"] == 1


def test_get_shows_a_live_session_and_end_ends_it(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)
    anon = device()
    session = touch(store, "src", anon, user="grace")

    view = store.get(session["id"])
    ended = store.end(session["id"])
    again = store.end(session["id"])
    after = touch(store, "src", anon)

    assert view is not None
    assert (view.source_id, view.user_id, view.anonymous_id, view.index, view.event_count) == (
        "src",
        "grace",
        anon,
        1,
        1,
    )
    assert view.last_seen == NOW
    assert datetime.fromisoformat(view.expires_at) > datetime.now(UTC)
    assert (ended, again) == (True, False)
    assert store.get(session["id"]) is None
    assert after["id"] != session["id"]
    assert after["index"] == 2


def test_active_sessions_are_counted_by_the_live_index(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=1)
    before = store.active_count()

    sessions = [touch(store, "src", device()) for _ in range(3)]
    during = store.active_count()
    store.end(sessions[0]["id"])
    after_end = store.active_count()
    time.sleep(1.2)
    after_expiry = store.active_count()

    assert during - before == 3
    assert after_end - before == 2
    assert after_expiry <= before
    assert client.zscore(LIVE_KEY, sessions[0]["id"]) is None


def test_end_all_ends_every_session_of_the_identities(client: redis.Redis) -> None:
    store = SessionStore(client, timeout_seconds=60)
    anon, other = device(), device()
    mine = [touch(store, "src-a", anon, user="erased"), touch(store, "src-b", anon)]
    theirs = touch(store, "src-a", other)

    ended = store.end_all(["src-a", "src-b"], ["erased", anon])

    assert ended == 2
    assert all(store.get(s["id"]) is None for s in mine)
    assert store.get(theirs["id"]) is not None
    assert not client.keys(f"*{anon}*")


def test_redis_down_is_dependency_unavailable() -> None:
    store = SessionStore(
        make_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5), timeout_seconds=60
    )

    with pytest.raises(DependencyUnavailable) as caught:
        touch(store, "src", "u")

    assert caught.value.name == "redis"


def test_an_event_received_before_its_users_erasure_stores_no_session(
    client: redis.Redis,
) -> None:
    """An event already in a worker when the erasure ran must not bring back what the erasure
    removed: the session, the device pointer, the session count."""
    store = SessionStore(client, timeout_seconds=60)
    user, anon, other = f"user-{uuid.uuid4().hex}", device(), device()
    erased_at = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    client.set(mark_key(user), int(erased_at.timestamp() * 1000), ex=60)
    before, after = "2026-01-01T00:00:00.500Z", "2026-01-01T00:00:01.500Z"

    late, bystander, returning = store.touch_many(
        [
            Touch("src", user, anon, before, f"s-{uuid.uuid4()}"),
            Touch("src", None, other, before, f"s-{uuid.uuid4()}"),
            Touch("src", user, anon, after, f"s-{uuid.uuid4()}"),
        ]
    )

    assert store.get(late["id"]) is None
    assert late["id"] != returning["id"]
    assert store.get(bystander["id"]) is not None
    returned = store.get(returning["id"])
    assert returned is not None
    assert (returned.index, returned.event_count) == (1, 1)


def test_which_sessions_are_live_is_decided_by_the_injected_clock(client: redis.Redis) -> None:
    """The live index and a session's expiresAt go by the store's clock, not the machine's
    (the keys themselves still expire by Redis)."""
    then = datetime(2020, 5, 1, 12, 0, 0, tzinfo=UTC)
    store = SessionStore(client, timeout_seconds=60, clock=FixedClock(then))
    session = touch(store, "src", device())

    live_then = store.active_count()
    two_minutes_on = SessionStore(
        client, timeout_seconds=60, clock=FixedClock(then + timedelta(minutes=2))
    ).active_count()
    view = store.get(session["id"])
    store.end(session["id"])

    assert live_then - two_minutes_on == 1  # ended by the clock two minutes on, not before
    assert view is not None
    expires = parse_ts(view.expires_at)
    assert expires is not None
    assert then + timedelta(seconds=58) <= expires <= then + timedelta(seconds=60)
