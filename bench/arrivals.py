"""What reached Kafka, seen by a consumer of the events topic running beside the benchmark.

Counts records per run (the messageId prefix, from the ``event-id`` header: no value is parsed)
and notes when the last one arrived; for the latency run it also parses ``receivedAt`` and keeps
arrival minus receipt. The consumer fetches with a 5 ms wait, so an arrival time is at most a
few milliseconds after the delivery report.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


class Arrivals:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.counts: Counter[str] = Counter()
        self.last_arrival: dict[str, float] = {}
        self.latencies: dict[str, list[float]] = {}
        self._topic = topic
        self._bootstrap = bootstrap
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Arrivals:
        self._thread.start()
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
        """Block until ``expected`` records of the run arrived; the time of the last one."""
        deadline = time.monotonic() + timeout
        while self.count(run) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{run}: {self.count(run)} of {expected} arrived in {timeout} s")
            time.sleep(0.05)
        with self._lock:
            return self.last_arrival[run]

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "clicktrail-bench",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
            }
        )
        metadata = consumer.list_topics(self._topic, timeout=10).topics[self._topic]
        consumer.assign(
            [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        )
        try:
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=5000, timeout=0.1)
                now = time.time()
                with self._lock:
                    for message in messages:
                        if message.error():
                            continue
                        event_id = next(
                            (v for k, v in message.headers() or [] if k == "event-id"), None
                        )
                        if not isinstance(event_id, bytes):
                            continue
                        run = event_id.rsplit(b"-", 1)[0].decode()
                        self.counts[run] += 1
                        self.last_arrival[run] = now
                        if run in self.latencies:
                            received = orjson.loads(message.value() or b"{}")["receivedAt"]
                            at = datetime.fromisoformat(received.replace("Z", "+00:00"))
                            self.latencies[run].append(now - at.timestamp())
        finally:
            consumer.close()
