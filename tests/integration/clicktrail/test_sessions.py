"""The session store against a real Redis."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from clicktrail.errors import DependencyUnavailable
from clicktrail.redisconn import make_redis
from clicktrail.sessions import SESSION_KEY, SessionStore, Touch
from tests.support.infra import free_port


def touch(store: SessionStore, source: str, identity: str) -> dict:
    [session] = store.touch_many(
        [Touch(source, identity, "2026-01-01T00:00:00.000Z", str(uuid.uuid4()))]
    )
    return session


def test_concurrent_events_of_one_user_open_one_session(redis_url: str) -> None:
    store = SessionStore(make_redis(redis_url), timeout_seconds=60)
    identity = f"user-{uuid.uuid4().hex}"

    with ThreadPoolExecutor(max_workers=16) as pool:
        sessions = list(pool.map(lambda _: touch(store, "src", identity), range(200)))

    assert len({s["id"] for s in sessions}) == 1
    assert sorted(s["eventIndex"] for s in sessions) == list(range(1, 201))
    assert {s["index"] for s in sessions} == {1}


def test_a_session_expires_after_the_timeout_and_the_next_gets_the_next_index(
    redis_url: str,
) -> None:
    store = SessionStore(make_redis(redis_url), timeout_seconds=1)
    identity = f"user-{uuid.uuid4().hex}"

    first = touch(store, "src", identity)
    time.sleep(0.6)
    same = touch(store, "src", identity)  # slides the expiry
    time.sleep(0.6)
    still = touch(store, "src", identity)
    time.sleep(1.3)
    after = touch(store, "src", identity)

    assert first["id"] == same["id"] == still["id"]
    assert after["id"] != first["id"]
    assert (after["index"], after["eventIndex"]) == (2, 1)


def test_expiry_is_a_redis_key_ttl(redis_url: str) -> None:
    client = make_redis(redis_url)
    store = SessionStore(client, timeout_seconds=1800)
    identity = f"user-{uuid.uuid4().hex}"

    touch(store, "src", identity)

    assert 1790 <= client.ttl(SESSION_KEY.format(source="src", identity=identity)) <= 1800


def test_sources_and_identities_do_not_share_sessions(redis_url: str) -> None:
    store = SessionStore(make_redis(redis_url), timeout_seconds=60)
    identity = f"user-{uuid.uuid4().hex}"

    a = touch(store, "src-a", identity)
    b = touch(store, "src-b", identity)
    c = touch(store, "src-a", identity + "-other")

    assert len({a["id"], b["id"], c["id"]}) == 3


def test_a_batch_is_one_round_trip_in_order(redis_url: str) -> None:
    store = SessionStore(make_redis(redis_url), timeout_seconds=60)
    identity = f"user-{uuid.uuid4().hex}"
    touches = [Touch("src", identity, f"2026-01-01T00:00:0{i}.000Z", f"new-{i}") for i in range(5)]

    sessions = store.touch_many(touches)

    assert [s["eventIndex"] for s in sessions] == [1, 2, 3, 4, 5]
    assert {s["id"] for s in sessions} == {"new-0"}
    assert {s["startedAt"] for s in sessions} == {"2026-01-01T00:00:00.000Z"}


def test_redis_down_is_dependency_unavailable() -> None:
    store = SessionStore(
        make_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5), timeout_seconds=60
    )

    with pytest.raises(DependencyUnavailable) as caught:
        touch(store, "src", "u")

    assert caught.value.name == "redis"
