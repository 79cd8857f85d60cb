"""``make run``'s restart policy: ``python -m clicktrail.local.keepalive NAME COMMAND`` runs a
Procfile command and, whenever it exits, runs it again after a backoff, until it is told to stop.

Honcho (which runs the Procfile) stops every process as soon as one exits; under it, a worker
that died would take the API, the sink and the broker this command started with it, and the
in-memory broker every record it held. Wrapped in this, a process that dies is restarted
(after 1 s, doubling for each exit in quick succession up to 30 s) while the others go on.
SIGTERM or SIGINT (honcho's stop, which reaches the whole process group) ends it: the command
gets the signal too, and this waits for it to exit.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
# A run at least this long resets the backoff: the process was up, not crashing at start.
STEADY_SECONDS = 60.0


def next_delay(previous: float, ran_for: float) -> float:
    """The wait before the next start, given the last wait and how long the last run lasted."""
    if ran_for >= STEADY_SECONDS or previous <= 0:
        return FIRST_DELAY
    return min(MAX_DELAY, previous * 2)


def say(name: str, message: str) -> None:
    print(f"clicktrail | {name} {message}", flush=True)


def keep_running(
    name: str,
    start: Callable[[], subprocess.Popen[bytes]],
    sleep: Callable[[float], bool],
    stopping: Callable[[], bool],
) -> int:
    """Start the command until ``stopping``; ``sleep`` waits and returns False when interrupted
    by a stop. Returns the command's last exit code."""
    delay = 0.0
    while True:
        began = time.monotonic()
        proc = start()
        say(name, f"started (pid {proc.pid})")
        code = proc.wait()
        if stopping():
            return code
        delay = next_delay(delay, time.monotonic() - began)
        say(name, f"exited (code {code}); starting it again in {delay:.0f} s")
        if not sleep(delay) or stopping():
            return code


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m clicktrail.local.keepalive NAME COMMAND", file=sys.stderr)
        return 2
    name, command = argv
    stop = False

    def on_stop(signum: int, _: FrameType | None) -> None:
        nonlocal stop
        stop = True

    def sleep(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not stop and time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))
        return not stop

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

    # The command is a Procfile line: a shell command, run in this process group so that
    # honcho's signal to the group reaches it as it would unwrapped.
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, shell=True)  # noqa: S602 - the operator's Procfile

    return keep_running(name, start, sleep, lambda: stop)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
