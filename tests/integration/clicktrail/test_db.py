"""Migrations and the source store against a real Postgres."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from clicktrail.db import Database, migrate
from clicktrail.errors import Conflict, DependencyUnavailable
from clicktrail.sources import SourceStore, hash_write_key, new_write_key
from tests.support.infra import free_port


def test_migrations_are_applied_once(database_url: str) -> None:
    again = migrate(database_url)

    with psycopg.connect(database_url) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert again == []
    assert "0001_sources" in names


def test_write_keys_are_stored_only_as_hashes(db: Database) -> None:
    key = new_write_key()
    source = SourceStore(db, cache_seconds=0).create(f"hashed-{uuid.uuid4().hex}", key)

    with db.connection() as conn:
        rows = conn.execute(
            "SELECT key_hash FROM write_keys WHERE source_id = %s", (source.id,)
        ).fetchall()
    assert rows == [(hash_write_key(key),)]
    assert key not in str(rows)


def test_lookup_finds_live_keys_only(db: Database) -> None:
    store = SourceStore(db, cache_seconds=0)
    live, revoked, expired = new_write_key(), new_write_key(), new_write_key()
    source = store.create(f"lookup-{uuid.uuid4().hex}", live, {"anonymize_ip": False})
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO write_keys (key_hash, source_id, revoked_at) VALUES (%s, %s, now())",
            (hash_write_key(revoked), source.id),
        )
        conn.execute(
            "INSERT INTO write_keys (key_hash, source_id, expires_at)"
            " VALUES (%s, %s, now() - interval '1 second')",
            (hash_write_key(expired), source.id),
        )

    found = store.by_write_key(live)
    assert found is not None
    assert found.id == source.id
    assert found.settings["anonymize_ip"] is False
    assert store.by_write_key(revoked) is None
    assert store.by_write_key(expired) is None
    assert store.by_write_key("never-issued") is None


def test_answers_are_cached_for_the_configured_time(db: Database) -> None:
    key = new_write_key()
    cached = SourceStore(db, cache_seconds=60)
    source = SourceStore(db, cache_seconds=0).create(f"cached-{uuid.uuid4().hex}", key)
    assert cached.by_write_key(key) is not None

    with db.connection() as conn:
        conn.execute("UPDATE write_keys SET revoked_at = now() WHERE source_id = %s", (source.id,))

    assert cached.by_write_key(key) is not None
    assert SourceStore(db, cache_seconds=0).by_write_key(key) is None


def test_ensure_is_idempotent_and_refuses_a_key_of_another_source(db: Database) -> None:
    store = SourceStore(db, cache_seconds=0)
    key, name = new_write_key(), f"dev-{uuid.uuid4().hex}"

    first = store.ensure(name, key)
    second = store.ensure(name, key)

    assert first == second
    with pytest.raises(Conflict, match="another source"):
        store.ensure(f"other-{uuid.uuid4().hex}", key)


def test_postgres_down_is_dependency_unavailable() -> None:
    database = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=1)
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            SourceStore(database, cache_seconds=0).by_write_key("k")
        assert caught.value.name == "postgres"
    finally:
        database.close()


def test_update_settings_merges_and_removes_keys(db: Database) -> None:
    store = SourceStore(db, cache_seconds=0)
    name = f"settings-{uuid.uuid4().hex}"
    store.create(name, new_write_key(), {"anonymize_ip": False, "campaign": False})

    updated = store.update_settings(
        name, {"tracking_plan": {"unplanned": "deadletter"}, "campaign": None}
    )

    assert updated is not None
    assert updated.settings == {"anonymize_ip": False, "tracking_plan": {"unplanned": "deadletter"}}
    assert store.by_name(name) == updated
    assert store.update_settings(f"missing-{uuid.uuid4().hex}", {"campaign": True}) is None


def test_settings_are_checked_before_they_are_stored(db: Database) -> None:
    store = SourceStore(db, cache_seconds=0)
    name = f"checked-{uuid.uuid4().hex}"
    with pytest.raises(ValueError, match="unknown setting"):
        store.create(name, new_write_key(), {"anonymise_ip": False})
    assert store.by_name(name) is None

    store.create(name, new_write_key())
    for bad, says in [
        ({"allowed_origins": "https://shop.example"}, "allowed_origins"),
        ({"rate_limit_events_per_second": -1}, "rate_limit"),
        ({"pseudonymize": "properties.email"}, "pseudonymize"),
        ({"anonymize_ip": "no"}, "anonymize_ip"),
    ]:
        with pytest.raises(ValueError, match=says):
            store.update_settings(name, bad)
    source = store.by_name(name)
    assert source is not None
    assert "allowed_origins" not in source.settings
