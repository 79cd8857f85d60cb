"""What the fault scenarios share: a client that behaves like a Segment SDK, the stack they run
against, the count of what came out, and the ledger's books of the scenario's minutes."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis
import requests

from clicktrail.clock import SystemClock
from clicktrail.db import Database
from clicktrail.ledger import Books, MinuteBooks, render
from clicktrail.queue import QUEUE
from clicktrail.sources import SourceStore
from tests.support.infra import KafkaCollector, RedisServer, Service, TansuBroker, wait_for
from tests.support.proxy import TcpProxy


class Sender:
    """Sends ``total`` track events in batches from several threads, at about ``rate`` events a
    second, as an SDK does: a batch that gets 429, 503, 5xx or no answer at all is sent again,
    unchanged (same messageIds), after a backoff, until it is accepted or ``give_up_after``.
    ``accepted`` holds the messageIds of every batch answered 200."""

    def __init__(
        self,
        base_url: str,
        write_key: str,
        total: int,
        *,
        batch: int = 25,
        threads: int = 4,
        rate: float = 400.0,
        give_up_after: float = 120.0,
        extra: Callable[[int], dict[str, object]] | None = None,
    ) -> None:
        self.base_url = base_url
        self.write_key = write_key
        self.total = total
        self.batch = batch
        self.rate = rate
        self.give_up_after = give_up_after
        self.run_id = uuid.uuid4().hex[:8]
        self.accepted: set[str] = set()
        self.refused: set[str] = set()  # answered 4xx other than 429: never retried
        self.statuses: Counter[str] = Counter()
        self._extra = extra
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> Sender:
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> Sender:
        for thread in self._threads:
            thread.join()
        return self

    @property
    def sent(self) -> int:
        with self._lock:
            return len(self.accepted) + len(self.refused)

    def _next_batch(self) -> list[dict[str, object]]:
        with self._lock:
            numbers = [n for n in itertools.islice(self._numbers, self.batch) if n < self.total]
        return [
            {
                "type": "track",
                "event": "Fault Tested",
                "userId": f"fault-{self.run_id}-{n % 50}",
                "messageId": f"fault-{self.run_id}-{n}",
                "properties": {"n": n, **(self._extra(n) if self._extra else {})},
            }
            for n in numbers
        ]

    def _run(self) -> None:
        session = requests.Session()
        period = self.batch * len(self._threads) / self.rate
        while batch := self._next_batch():
            started = time.monotonic()
            ids = [str(event["messageId"]) for event in batch]
            status = self._deliver(session, {"batch": batch})
            with self._lock:
                (self.accepted if status == 200 else self.refused).update(ids)
            time.sleep(max(0.0, period - (time.monotonic() - started)))

    def _deliver(self, session: requests.Session, body: dict[str, object]) -> int:
        deadline = time.monotonic() + self.give_up_after
        backoff = 0.2
        while True:
            try:
                response = session.post(
                    f"{self.base_url}/v1/batch", json=body, auth=(self.write_key, ""), timeout=10
                )
                status = response.status_code
            except requests.RequestException as exc:
                status, response = 0, None
                with self._lock:
                    self.statuses[type(exc).__name__] += 1
            if status:
                with self._lock:
                    self.statuses[str(status)] += 1
            if status == 200 or (400 <= status < 500 and status != 429):
                return status
            if time.monotonic() > deadline:
                return status
            wait = backoff
            if response is not None and response.headers.get("Retry-After", "").isdigit():
                wait = min(float(response.headers["Retry-After"]), 2.0)
            time.sleep(wait)
            backoff = min(backoff * 2, 2.0)


@dataclass
class Tally:
    """What one scenario sent and what arrived where it should."""

    scenario: str
    sent: int
    accepted: int
    delivered: int
    missing: int
    duplicates: int
    where: str = "kafka"
    # What the client met on the way besides 200 (the fault as it saw it), e.g. "503x12".
    client_saw: str = ""
    # Answers 5xx other than 503 (which says "retry later"): failures of the API itself.
    server_errors: int = 0
    # What the ledger's books of the scenario's minutes say ("balanced", and where the copies
    # and resends went), and when they do not balance, the books themselves.
    ledger: str = ""
    ledger_off: str = ""
    # The scenario's own source and when it began: the ledger's books to read.
    source_id: str = ""
    since: datetime | None = None

    @classmethod
    def of_kafka(
        cls, scenario: str, sender: Sender, kafka: KafkaCollector, topics: tuple[str, ...]
    ) -> Tally:
        """Accepted events that reached ``topics``: a dead letter is delivered too (replayable)."""
        counts = {
            message_id: sum(1 for m in kafka.records(message_id) if m.topic in topics)
            for message_id in sender.accepted
        }
        return cls.of_counts(scenario, sender, counts, "kafka")

    @classmethod
    def of_counts(cls, scenario: str, sender: Sender, counts: dict[str, int], where: str) -> Tally:
        delivered = sum(1 for n in counts.values() if n)
        return cls(
            scenario=scenario,
            sent=sender.total,
            accepted=len(sender.accepted),
            delivered=delivered,
            missing=len(sender.accepted) - delivered,
            duplicates=sum(n - 1 for n in counts.values() if n > 1),
            where=where,
            client_saw=", ".join(
                f"{status}x{count}"
                for status, count in sorted(sender.statuses.items())
                if status != "200"
            ),
            server_errors=sum(
                count
                for status, count in sender.statuses.items()
                if status.startswith("5") and status != "503"
            ),
        )


def format_table(tallies: list[Tally]) -> str:
    header = (
        "scenario",
        "sent",
        "accepted",
        "delivered",
        "missing",
        "duplicates",
        "counted in",
        "client saw",
        "ledger",
    )
    rows = [header] + [
        (t.scenario, str(t.sent), str(t.accepted), str(t.delivered), str(t.missing),
         str(t.duplicates), t.where, t.client_saw or "-", t.ledger or "-")
        for t in tallies
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


@dataclass
class FaultStack:
    """The pipeline's processes on dependencies of their own, each of which a scenario may
    stop, kill, pause or cut: a Tansu broker (workers reach it through a proxy), a persistent
    redis-server, Postgres behind a proxy for the history sink, and the worker, API and sink
    processes (the sink keeps the ledger's side of what was stored)."""

    env: dict[str, str]
    logs: Path
    broker: TansuBroker
    broker_proxy: TcpProxy
    postgres_proxy: TcpProxy
    redis_server: RedisServer
    start_worker: Callable[[], Service]
    start_api: Callable[[], Service]
    start_sink: Callable[[], Service]
    api_url: str
    worker: Service | None = None
    api: Service | None = None
    sink: Service | None = None

    def ensure_running(self) -> None:
        """Every process up (a scenario before may have left one down)."""
        if self.worker is None or self.worker.proc.poll() is not None:
            self.worker = self.start_worker()
        if self.api is None or self.api.proc.poll() is not None:
            self.api = self.start_api()
        if self.sink is None or self.sink.proc.poll() is not None:
            self.sink = self.start_sink()

    def source_id(self, write_key: str) -> str:
        db = Database(self.env["DATABASE_URL"])
        try:
            source = SourceStore(db, cache_seconds=0).by_write_key(write_key)
        finally:
            db.close()
        assert source is not None
        return source.id

    def books(self, source_id: str, since: datetime) -> list[MinuteBooks]:
        """The ledger's books of a source from ``since``'s minute on, every minute judged, the
        current one too (the scenario is over: nothing is on its way but what the sink has yet
        to store)."""
        db = Database(self.env["DATABASE_URL"])
        try:
            client = redis.Redis.from_url(self.redis_server.url, decode_responses=True)
            judge_all = Books(client, db.connection, -120, SystemClock())
            return judge_all.read(since, datetime.now(UTC), source_id)
        finally:
            db.close()

    def queue(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def drained(self) -> bool:
        """Nothing waits in the queue and no message is held unacknowledged."""
        try:
            client = self.queue()
            return client.llen(QUEUE) == 0 and client.hlen("unacked") == 0
        except redis.RedisError:
            return False

    def pool_children(self) -> list[psutil.Process]:
        assert self.worker is not None
        return psutil.Process(self.worker.proc.pid).children()

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool: no shutdown, no acknowledgement, nothing flushed."""
        assert self.worker is not None
        os.killpg(self.worker.proc.pid, signal.SIGKILL)
        self.worker.proc.wait(10)
        self.worker.stop()
        self.worker = None


def wait_until_delivered(
    sender: Sender, found: Callable[[set[str]], set[str]], timeout: float, what: str
) -> None:
    """Until every accepted event is found (``found`` answers which of the ids are); when they
    are not, the failure says how many are missing and which."""
    missing: set[str] = set()

    def all_found() -> bool:
        missing.clear()
        missing.update(sender.accepted - found(sender.accepted))
        return not missing

    try:
        wait_for(all_found, what, timeout=timeout, every=0.5)
    except AssertionError as exc:
        some = ", ".join(sorted(missing)[:5])
        raise AssertionError(
            f"{exc}: {len(missing)} of {len(sender.accepted)} accepted events missing ({some})"
        ) from None


def settle_ledger(stack: FaultStack, tally: Tally, timeout: float = 90.0) -> list[MinuteBooks]:
    """Wait for the books of a scenario's minutes (its source's, since it began) to balance, as
    they must once the sink has stored what Kafka holds: until they do, or until they stop
    changing for 15 s (the sink has nothing more to write), at most ``timeout``. Notes in
    ``tally`` what they say."""
    assert tally.since is not None
    since = tally.since
    deadline, quiet_since, last = time.monotonic() + timeout, time.monotonic(), None
    while True:
        minutes = stack.books(tally.source_id, since)
        state = [(m.minute, m.balance, m.stored, m.duplicates, m.copies) for m in minutes]
        if minutes and all(m.balance == 0 for m in minutes):
            break
        if state != last:
            last, quiet_since = state, time.monotonic()
        if time.monotonic() - quiet_since > 15 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    balance = sum(m.balance for m in minutes)
    went = {
        "copies": sum(m.copies for m in minutes),  # the pipeline's own, the sink stored once
        "dropped": sum(m.dropped for m in minutes),  # resends the workers dropped
        "duplicates": sum(m.duplicates for m in minutes),  # resends the sink stored once
    }
    where = ", ".join(f"{n} {what}" for what, n in went.items() if n)
    verdict = (
        "balanced"
        if minutes and all(m.balance == 0 for m in minutes)
        else (
            f"{balance} missing"
            if balance > 0
            else f"{-balance} extra"
            if balance
            else "unbalanced"
        )
    )
    tally.ledger = f"{verdict} ({where})" if where else verdict
    tally.ledger_off = "" if verdict == "balanced" else render(minutes, {}, since)
    return minutes
