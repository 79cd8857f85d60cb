"""make run's restart wrapper: a command that exits is started again after a growing wait, and a
stop ends it."""

from __future__ import annotations

import subprocess
import sys

from clicktrail.local.keepalive import (
    FIRST_DELAY,
    MAX_DELAY,
    STEADY_SECONDS,
    keep_running,
    next_delay,
)


def test_quick_exits_double_the_wait_up_to_its_cap() -> None:
    delays = [next_delay(0.0, 0.1)]
    for _ in range(8):
        delays.append(next_delay(delays[-1], 0.1))
    assert delays[:4] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY, 8 * FIRST_DELAY]
    assert max(delays) == MAX_DELAY


def test_a_steady_run_resets_the_wait() -> None:
    assert next_delay(MAX_DELAY, STEADY_SECONDS) == FIRST_DELAY


def test_a_command_that_exits_is_started_again_until_a_stop() -> None:
    starts: list[int] = []
    waits: list[float] = []

    def start() -> subprocess.Popen[bytes]:
        starts.append(1)
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        return len(starts) < 3  # the stop arrives during the third wait

    code = keep_running("test", start, sleep, lambda: False)

    assert len(starts) == 3
    assert waits == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY]
    assert code == 3


def test_a_stop_while_running_ends_it_without_a_restart() -> None:
    starts: list[int] = []

    def start() -> subprocess.Popen[bytes]:
        starts.append(1)
        return subprocess.Popen([sys.executable, "-c", "pass"])

    keep_running("test", start, lambda _: True, lambda: True)

    assert len(starts) == 1
