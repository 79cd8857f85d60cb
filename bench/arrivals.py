"""What reached Kafka, seen by a consumer of the events topic running beside the benchmark.

Counts records per run (the messageId's first part, from the ``event-id`` header: no value is
parsed) and notes when the last one arrived; for a latency run it also parses ``receivedAt`` and
keeps arrival minus receipt. A consumer's fetches wait up to ``wait_ms`` for records: the
counting one waits 100 ms (an end of run noted up to 100 ms late, on runs of several seconds),
the latency one 5 ms (an arrival noted a few milliseconds after its delivery report). Fetching
every 5 ms keeps a broker busy, so that one runs only during the latency run and reads from the
end of the topic.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from datetime import datetime

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

# Seconds without a new record, while some are still expected, before the topic is read again.
STALL_SECONDS = 10.0


class Arrivals:
    def __init__(
        self, bootstrap: str, topic: str, wait_ms: int = 100, from_end: bool = False
    ) -> None:
        self.counts: Counter[str] = Counter()
        self.last_arrival: dict[str, float] = {}
        self.latencies: dict[str, list[float]] = {}
        # Records read so far, each time they were read (a topic read again counts again).
        self.read = 0
        self._topic = topic
        self._bootstrap = bootstrap
        self._wait_ms = wait_ms
        self._start_at = OFFSET_END if from_end else OFFSET_BEGINNING
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._reread = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, timeout: float = 10.0) -> Arrivals:
        """Start consuming; returns once partitions are assigned."""
        self._thread.start()
        if not self._assigned.wait(timeout):
            raise RuntimeError("the arrivals consumer got no partitions")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def measure_latency(self, run: str) -> None:
        with self._lock:
            self.latencies[run] = []

    def count(self, run: str) -> int:
        with self._lock:
            return self.counts[run]

    def wait_for(self, run: str, expected: int, timeout: float) -> float:
        """Block until ``expected`` records of the run arrived; the time of the last one.

        A consumer of the broker used here has been seen to stop a few records short of the end
        (while a new consumer read them all); after STALL_SECONDS without a new record it reads
        the topic again from the beginning (counting each event once), and the records it finds
        then count as arriving then."""
        deadline = time.monotonic() + timeout
        counted, progressed = self.count(run), time.monotonic()
        read = self.read
        while counted < expected:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"{run}: {counted} of {expected} arrived in {timeout} s")
            if now - progressed > STALL_SECONDS:
                print(f"{run}: {counted} of {expected} after {STALL_SECONDS} s without one more,"
                      " reading the topic again", file=sys.stderr)  # fmt: skip
                self._reread.set()
                progressed = now
            time.sleep(0.05)
            # Reading the topic again (records counted already) is progress too: a read of a
            # large topic outlasts STALL_SECONDS, and must not be started over.
            if self.count(run) != counted or self.read != read:
                counted, read, progressed = self.count(run), self.read, time.monotonic()
        with self._lock:
            return self.last_arrival[run]

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "clicktrail-bench",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": self._wait_ms,
                "fetch.min.bytes": 1,
                # After a fetch error (an offset past that lagging end), fetch again as soon as
                # an ordinary fetch would (librdkafka waits 500 ms by default).
                "fetch.error.backoff.ms": self._wait_ms,
                # A fetch past what the broker reports as the end (its watermark can lag behind
                # what it stored) starts again from the beginning, not from the end; records
                # read twice are counted once, by their event id. The latency consumer, which
                # wants only what comes next, starts again from the end: going back to the
                # beginning, it would note new records only after reading the whole topic.
                "auto.offset.reset": "latest" if self._start_at == OFFSET_END else "earliest",
            }
        )
        metadata = consumer.list_topics(self._topic, timeout=10).topics[self._topic]
        consumer.assign(
            [TopicPartition(self._topic, p, self._start_at) for p in metadata.partitions]
        )
        self._assigned.set()
        seen: set[bytes] = set()
        try:
            while not self._stop.is_set():
                if self._reread.is_set():
                    self._reread.clear()
                    consumer.assign(
                        [
                            TopicPartition(self._topic, p, OFFSET_BEGINNING)
                            for p in metadata.partitions
                        ]
                    )
                # consume() returns when it has num_messages or when the timeout is up, so the
                # timeout is how late an arrival may be noted: the fetch wait, no more.
                messages = consumer.consume(num_messages=5000, timeout=self._wait_ms / 1000)
                now = time.time()
                with self._lock:
                    self.read += len(messages)
                    for message in messages:
                        if message.error():
                            continue
                        event_id = next(
                            (v for k, v in message.headers() or [] if k == "event-id"), None
                        )
                        # A record read twice (after a reset to the beginning) counts once.
                        if not isinstance(event_id, bytes) or event_id in seen:
                            continue
                        seen.add(event_id)
                        run = event_id.split(b"-", 1)[0].decode()
                        self.counts[run] += 1
                        self.last_arrival[run] = now
                        if run in self.latencies:
                            received = orjson.loads(message.value() or b"{}")["receivedAt"]
                            at = datetime.fromisoformat(received.replace("Z", "+00:00"))
                            self.latencies[run].append(now - at.timestamp())
        finally:
            consumer.close()
