"""Postgres: a per-process connection pool, database creation and numbered SQL migrations.

Migrations are the files ``clicktrail/migrations/NNNN_name.sql``, applied in order, each in its own
transaction, under an advisory lock so that concurrent starters do not race.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from clicktrail.config import PACKAGE_DIR
from clicktrail.errors import DependencyUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
_MIGRATION_LOCK = 0x436C69636B  # any constant shared by every migrator

# Errors that mean "Postgres is not reachable right now".
POSTGRES_DOWN = (psycopg.OperationalError, PoolTimeout)
# Postgres refuses the data itself (a value it cannot store or index): retrying cannot help.
REFUSED_DATA = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded)


class Database:
    """A lazily opened connection pool; ``connection()`` raises DependencyUnavailable when down."""

    def __init__(
        self, url: str, *, max_size: int = 4, timeout: float = 3.0, name: str = "clicktrail"
    ) -> None:
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            open=False,
            name=name,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(timeout)),
                # A vanished server (no FIN, packets dropped) is noticed in seconds, not hours.
                "keepalives": 1,
                "keepalives_idle": 15,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": 30000,
            },
            check=ConnectionPool.check_connection,
        )
        self._opened = False
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if not self._opened:
            with self._lock:
                if not self._opened:
                    self._pool.open(wait=False)
                    self._opened = True
        try:
            with self._pool.connection() as conn:
                yield conn
        except REFUSED_DATA:
            raise
        except POSTGRES_DOWN as exc:
            raise DependencyUnavailable("postgres", str(exc)) from exc

    def close(self) -> None:
        if self._opened:
            self._pool.close()
            self._opened = False


def without_nul(value: Any) -> Any:
    """``value`` with every NUL character (in strings and keys) replaced by U+FFFD: Postgres
    text and jsonb cannot hold NUL, and JSON events may carry it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def create_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True when created."""
    params = conninfo_to_dict(url)
    name = str(params.get("dbname") or params.get("user") or "postgres")
    admin_url = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False
    return True


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (closing its sessions); used by tests and tooling."""
    name = str(conninfo_to_dict(url)["dbname"])
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def migration_names(directory: Path = MIGRATIONS_DIR) -> list[str]:
    return [path.stem for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def pending_migrations(db: Database, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The migrations in ``directory`` the database has not applied (every one on a new one)."""
    with db.connection() as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        done = (
            {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            if row and row[0]
            else set()
        )
    return [name for name in migration_names(directory) if name not in done]


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet applied; the names of those applied now."""
    files = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for path in files:
                if path.stem in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.stem,))
                log.info("applied migration %s", path.stem)
                applied_now.append(path.stem)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now
