"""celery-redbeat's lock: short enough for a standby to take over, renewed well within it."""

from __future__ import annotations

from clicktrail.config import Settings
from clicktrail.workers.celery_app import make_celery


def test_a_dead_beat_holds_the_lock_for_at_most_a_minute_and_a_half() -> None:
    conf = make_celery(Settings()).conf

    assert conf.redbeat_lock_timeout == 90
    # Renewed on every tick; ticks at most a fifth of the timeout apart.
    assert conf.beat_max_loop_interval == 18


def test_the_lock_timeout_is_configurable() -> None:
    conf = make_celery(Settings.from_env({"BEAT_LOCK_TIMEOUT_SECONDS": "30"})).conf

    assert conf.redbeat_lock_timeout == 30
    assert conf.beat_max_loop_interval == 6
