"""Celery beat's lock: a live beat keeps it, a standby takes over soon after the holder died."""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.infra import (
    Service,
    claim_redis_db,
    release_redis_db,
    start_worker,
    wait_for,
)

LOCK_TIMEOUT = 10


def start_beat(env: dict[str, str], log_path: Path, name: str) -> Service:
    """Beat as the Procfile runs it (no --max-interval: the app's settings decide)."""
    beat = Service(
        name,
        [sys.executable, "-m", "celery", "--app", "clicktrail.workers.celery_app", "beat",
         "--loglevel", "DEBUG", "--scheduler", "redbeat.RedBeatScheduler"],
        env,
        log_path,
    )  # fmt: skip
    beat.wait_for_output("beat: Starting")
    return beat


def sent_ids(beat: Service) -> list[str]:
    return re.findall(r"clicktrail\.purge_profiles sent\. id->(\S+)", beat.output())


@pytest.fixture
def beat_env(stack_env: dict[str, str], run_id: str) -> Iterator[dict[str, str]]:
    """A Redis database of the test's own: its lock, its schedule, its queue."""
    db = claim_redis_db(owner=f"{run_id}-beat")
    yield {
        **stack_env,
        "REDIS_URL": f"redis://127.0.0.1:6379/{db}",
        "BEAT_LOCK_TIMEOUT_SECONDS": str(LOCK_TIMEOUT),
        # Long enough for the worker to take each run before it expires.
        "PURGE_INTERVAL_SECONDS": "3",
        # Beat names each task it sent at debug level; the worker each task it ran.
        "LOG_LEVEL": "DEBUG",
        "LOG_REQUESTS": "1",
    }
    release_redis_db(db)


def test_a_standby_beat_takes_over_soon_after_the_holder_is_killed(
    beat_env: dict[str, str], logs_dir: Path
) -> None:
    env = {**beat_env, "LOG_LEVEL": "INFO"}
    worker = start_worker(env, logs_dir / "takeover-worker.log", "takeover", concurrency=1)
    holder: Service | None = None
    standby: Service | None = None
    try:
        holder = start_beat(beat_env, logs_dir / "takeover-beat-1.log", "takeover-beat-1")
        holder.wait_for_output("beat: Acquired lock", timeout=30)
        wait_for(lambda: sent_ids(holder), "the holder sending the purge", timeout=30)
        standby = start_beat(beat_env, logs_dir / "takeover-beat-2.log", "takeover-beat-2")

        # Past the lock's timeout, the live holder still has it: it renews it on every tick.
        time.sleep(LOCK_TIMEOUT * 1.5)
        assert "Acquired lock" not in standby.output()
        assert holder.proc.poll() is None
        sent_before = len(sent_ids(holder))
        wait_for(lambda: len(sent_ids(holder)) > sent_before, "the holder still sending", 10)

        holder.stop(signal.SIGKILL)
        killed = time.monotonic()
        # The lock expires at most LOCK_TIMEOUT after the holder's last renewal, and the
        # standby tries for it every fifth of that.
        standby.wait_for_output("beat: Acquired lock", timeout=LOCK_TIMEOUT * 1.2 + 10)
        [task_id, *_] = wait_for(lambda: sent_ids(standby), "the standby sending the purge", 15)
        took_over = time.monotonic() - killed
        assert took_over < LOCK_TIMEOUT * 1.2 + 15, took_over
        worker.wait_for_output(f"Task clicktrail.purge_profiles[{task_id}] succeeded", timeout=30)
    finally:
        for beat in (holder, standby):
            if beat is not None:
                beat.stop()
        worker.stop()
