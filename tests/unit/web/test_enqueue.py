"""Group commit: concurrent requests share a message; each returns once its own is sent."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from clicktrail.errors import DependencyUnavailable
from clicktrail.web.enqueue import GroupCommit


def payload(n: int, events: int = 1) -> tuple[dict[str, Any], int]:
    """What a request submits: its payload and how many events it holds."""
    return {"n": n}, events


class Sender:
    """Records each group; the first call can be held until others are waiting."""

    def __init__(self, hold_first: threading.Event | None = None) -> None:
        self.groups: list[list[int]] = []
        self.hold_first = hold_first
        self.lock = threading.Lock()
        self.fail_next = False

    def __call__(self, payloads: list[dict[str, Any]]) -> None:
        if self.hold_first is not None and not self.groups:
            self.groups.append([p["n"] for p in payloads])
            assert self.hold_first.wait(5)
            return
        with self.lock:
            if self.fail_next:
                self.fail_next = False
                raise DependencyUnavailable("queue", "connection refused")
            self.groups.append([p["n"] for p in payloads])


def held_leader(pool: ThreadPoolExecutor, group: GroupCommit, sender: Sender) -> Future[None]:
    """A first request, leading, its send begun and held by ``sender``."""
    first = pool.submit(group.submit, *payload(0))
    while not sender.groups:
        time.sleep(0.001)
    return first


def wait_for_pending(group: GroupCommit, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(group._pending) < count:
        assert time.monotonic() < deadline, "submitters did not queue up"
        time.sleep(0.001)


def test_a_lone_request_is_sent_at_once_by_itself() -> None:
    sender = Sender()
    GroupCommit(sender).submit(*payload(1))
    assert sender.groups == [[1]]


def test_requests_arriving_during_a_commit_go_out_together_in_the_next_one() -> None:
    release = threading.Event()
    sender = Sender(hold_first=release)
    group = GroupCommit(sender)
    with ThreadPoolExecutor(8) as pool:
        first = held_leader(pool, group, sender)
        rest = [pool.submit(group.submit, *payload(n)) for n in range(1, 8)]
        wait_for_pending(group, 7)
        assert not any(f.done() for f in [first, *rest])  # nobody answered before their send
        release.set()
        for future in [first, *rest]:
            future.result(5)

    assert sender.groups[0] == [0]
    assert sorted(sender.groups[1]) == list(range(1, 8))
    assert len(sender.groups) == 2


def test_a_group_holds_at_most_max_events_but_a_larger_request_goes_alone() -> None:
    release = threading.Event()
    sender = Sender(hold_first=release)
    group = GroupCommit(sender, max_events=10)
    with ThreadPoolExecutor(8) as pool:
        first = held_leader(pool, group, sender)
        sizes = {1: 4, 2: 4, 3: 4, 4: 25, 5: 1}
        futures = []
        for n, size in sizes.items():
            futures.append(pool.submit(group.submit, *payload(n, size)))
            wait_for_pending(group, len(futures))  # keeps their order
        release.set()
        for future in [first, *futures]:
            future.result(5)

    assert sender.groups == [[0], [1, 2], [3], [4], [5]]


def test_a_failed_send_fails_every_request_of_its_group_and_no_other() -> None:
    release = threading.Event()
    sender = Sender(hold_first=release)
    group = GroupCommit(sender)
    with ThreadPoolExecutor(8) as pool:
        first = held_leader(pool, group, sender)
        failing = [pool.submit(group.submit, *payload(n)) for n in range(1, 4)]
        wait_for_pending(group, 3)
        sender.fail_next = True
        release.set()
        first.result(5)
        for future in failing:
            with pytest.raises(DependencyUnavailable):
                future.result(5)
    group.submit(*payload(9))  # the next request goes through

    assert sender.groups[-1] == [9]


def test_under_contention_every_payload_is_sent_once_before_its_request_returns() -> None:
    sent: set[int] = set()
    lock = threading.Lock()
    groups = 0

    def send(payloads: list[dict[str, Any]]) -> None:
        nonlocal groups
        time.sleep(random.uniform(0, 0.002))
        with lock:
            groups += 1
            for p in payloads:
                assert p["n"] not in sent
                sent.add(p["n"])

    group = GroupCommit(send)

    def request(n: int) -> None:
        group.submit(*payload(n))
        with lock:
            assert n in sent

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(request, range(2000)))

    assert sent == set(range(2000))
    assert groups < 2000  # they did share messages
    assert not group._pending
    assert not group._leading


def timed(group: GroupCommit, n: int) -> float:
    started = time.monotonic()
    group.submit(*payload(n))
    return time.monotonic() - started


def test_a_busy_leader_lingers_for_company_but_no_longer_than_its_linger() -> None:
    sender = Sender()
    group = GroupCommit(sender, linger=0.5, target=3)

    first = timed(group, 0)  # an idle process: it goes at once
    with ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        leader = pool.submit(group.submit, *payload(1))  # right after another: it lingers
        time.sleep(0.05)
        others = [pool.submit(group.submit, *payload(n)) for n in (2, 3)]
        for future in [leader, *others]:
            future.result(5)
        together = time.monotonic() - started
    alone = timed(group, 4)  # busy, but no company comes: it waits out the linger
    time.sleep(0.6)
    after_a_pause = timed(group, 5)

    assert sender.groups[0] == [0]
    assert first < 0.3
    assert sorted(sender.groups[1]) == [1, 2, 3]  # the target was reached: sent at once
    assert together < 0.4
    assert sender.groups[2] == [4]
    assert 0.45 <= alone < 1.5
    assert sender.groups[3] == [5]
    assert after_a_pause < 0.3
