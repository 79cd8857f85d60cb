"""Operator commands (`flask --app web ...`) against the test database."""

from __future__ import annotations

import subprocess
import sys
import uuid

import orjson

from clicktrail.config import PROJECT_ROOT
from clicktrail.db import Database
from clicktrail.sources import SourceStore, new_write_key
from tests.support.infra import child_env


def flask(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "web", *args],
        env=child_env(DATABASE_URL=database_url),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sources_plan_shows_and_changes_a_tracking_plan(database_url: str) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    db = Database(database_url)
    try:
        SourceStore(db, cache_seconds=0).create(name, new_write_key())

        shown = flask(database_url, "sources", "plan", name)
        changed = flask(
            database_url,
            "sources",
            "plan",
            name,
            "--event",
            "Signed Up",
            "--event",
            "Product Viewed",
            "--unplanned",
            "deadletter",
        )
        opened = flask(database_url, "sources", "plan", name, "--any-event")
        stored = SourceStore(db, cache_seconds=0).by_name(name)
    finally:
        db.close()

    assert orjson.loads(shown.stdout)["tracking_plan"] == {"unplanned": "allow"}
    assert orjson.loads(changed.stdout)["tracking_plan"] == {
        "events": ["Product Viewed", "Signed Up"],
        "unplanned": "deadletter",
    }
    assert orjson.loads(opened.stdout)["tracking_plan"] == {"unplanned": "deadletter"}
    assert stored is not None
    assert stored.settings["tracking_plan"] == {"unplanned": "deadletter"}


def test_sources_plan_of_an_unknown_source_fails(database_url: str) -> None:
    result = flask(database_url, "sources", "plan", "no-such-source")

    assert result.returncode == 1
    assert "no source named 'no-such-source'" in result.stderr
