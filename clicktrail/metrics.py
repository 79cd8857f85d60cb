"""Every metric Clicktrail exports, declared here with a line on what it counts.

Processes with several children (gunicorn workers, Celery's prefork pool) share values through
prometheus_client's multiprocess mode: set PROMETHEUS_MULTIPROC_DIR, a directory of their own,
before they start (``make run``, docker-compose.yml and the tests do). The API serves /metrics
itself; the worker side serves them on WORKER_METRICS_PORT and the history sink on
SINK_METRICS_PORT. Labels are low-cardinality: source id, call type, outcome, never an event
name or a user.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# API: events accepted and queued, by source and call type.
EVENTS_ACCEPTED = Counter(
    "clicktrail_events_accepted_total", "Events accepted and queued", ["source", "type"]
)
# API: requests refused, by the error code the client got (invalid_json, missing_identity, ...).
REQUESTS_REJECTED = Counter(
    "clicktrail_requests_rejected_total", "Requests refused with a 4xx or 503", ["code"]
)
# Workers: events checked against their schema, by outcome (valid, invalid, unplanned).
EVENTS_VALIDATED = Counter(
    "clicktrail_events_validated_total", "Events validated", ["source", "type", "outcome"]
)
# Workers: events Kafka confirmed on the events topic.
EVENTS_PUBLISHED = Counter(
    "clicktrail_events_published_total", "Events delivered to the events topic", ["source", "type"]
)
# Workers: events Kafka confirmed on the dead-letter topic, by reason.
EVENTS_DEAD_LETTERED = Counter(
    "clicktrail_events_dead_lettered_total",
    "Events delivered to the dead-letter topic",
    ["source", "type", "reason"],
)
# Workers: events dropped as already delivered (same source and messageId within the window).
DUPLICATES_DROPPED = Counter(
    "clicktrail_duplicates_dropped_total", "Duplicate events dropped", ["source"]
)
# Workers: requests dead-lettered because their delivery kept killing the worker.
POISON_REQUESTS = Counter("clicktrail_poison_requests_total", "Requests that kept killing workers")
# Workers: task retries, by why (publish = Kafka did not confirm, transient, unexpected).
TASK_RETRIES = Counter("clicktrail_task_retries_total", "Ingest task retries", ["reason"])
# Workers: records Kafka did not confirm (each is retried).
PUBLISH_FAILURES = Counter(
    "clicktrail_publish_failures_total", "Records without a clean delivery report"
)
# Workers: batches of delivered messageIds Redis would not note for deduplication (a later
# copy of them then goes through: a duplicate, never a loss).
DEDUPE_NOTE_FAILURES = Counter(
    "clicktrail_dedupe_note_failures_total", "Delivered ids that could not be noted as seen"
)
# Workers: from a task's first produce() to its last delivery report.
KAFKA_DELIVERY_SECONDS = Histogram(
    "clicktrail_kafka_delivery_seconds", "Kafka delivery latency", buckets=_LATENCY_BUCKETS
)
# Workers: one ingest task, start to finish.
TASK_SECONDS = Histogram(
    "clicktrail_task_duration_seconds", "Task duration", ["task"], buckets=_LATENCY_BUCKETS
)
# Workers: from the API's receivedAt to Kafka's delivery report, per request (its events share
# their receivedAt).
END_TO_END_SECONDS = Histogram(
    "clicktrail_end_to_end_seconds",
    "Latency from receipt to Kafka delivery",
    buckets=_LATENCY_BUCKETS,
)
# API and workers: ledger counts Redis did not take (their minutes will not balance).
LEDGER_COUNT_FAILURES = Counter(
    "clicktrail_ledger_count_failures_total", "Ledger counts Redis did not take"
)
# Purge: profiles removed, by reason (erasure_request, retention).
PROFILES_PURGED = Counter("clicktrail_profiles_purged_total", "Profiles purged", ["reason"])
# Sink: history rows written for the first time.
SINK_ROWS_WRITTEN = Counter("clicktrail_sink_rows_written_total", "History rows written")
# Sink: records behind the end of each partition of the events topic.
SINK_LAG = Gauge(
    "clicktrail_sink_lag_records", "Records the sink has yet to read", ["topic", "partition"]
)
# Sink: batches retried because Postgres was away.
SINK_RETRIES = Counter("clicktrail_sink_retries_total", "Sink batches retried")

# Read at scrape time by the worker-side exporter (see PipelineGauges):
# - clicktrail_queue_depth: messages waiting in the Celery queue;
# - clicktrail_active_sessions: sessions live now.
# Read from the ledger's books by the worker-side exporter, at most once a minute (LedgerGauges),
# over the settled minutes of the last day (LEDGER_WATCH_HOURS; the retention when shorter):
# - clicktrail_ledger_unbalanced_minutes{source}: minutes whose books do not balance;
# - clicktrail_ledger_missing_events{source}: accepted events those minutes cannot account for;
# - clicktrail_ledger_extra_events{source}: events they account for beyond those accepted;
# - clicktrail_ledger_minute_events{source,column}: the books of the latest settled minute
#   (accepted, published, dead_lettered, dropped, stored, duplicates, copies, erased).
LEDGER_WATCH_HOURS = 24
LEDGER_GAUGES = (
    "clicktrail_ledger_unbalanced_minutes",
    "clicktrail_ledger_missing_events",
    "clicktrail_ledger_extra_events",
    "clicktrail_ledger_minute_events",
)


class PipelineGauges(Collector):
    """Gauges computed when Prometheus scrapes: queue depth and active sessions."""

    def __init__(self, queue_depth: Callable[[], int], active_sessions: Callable[[], int]) -> None:
        self._queue_depth = queue_depth
        self._active_sessions = active_sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, doc, read in (
            ("clicktrail_queue_depth", "Messages waiting in the Celery queue", self._queue_depth),
            ("clicktrail_active_sessions", "Sessions live now", self._active_sessions),
        ):
            try:
                value = float(read())
            except Exception as exc:  # a scrape must not fail because Redis blinked
                log.warning("cannot read %s: %s", name, exc)
                continue
            yield GaugeMetricFamily(name, doc, value=value)


_LEDGER_SOURCE_GAUGES = (
    ("clicktrail_ledger_unbalanced_minutes", "Settled minutes whose books do not balance"),
    ("clicktrail_ledger_missing_events", "Accepted events unbalanced minutes cannot account for"),
    ("clicktrail_ledger_extra_events", "Events unbalanced minutes count beyond those accepted"),
)


@dataclass(frozen=True)
class LedgerReading:
    """One source's ledger over the watched window (``clicktrail.ledger.by_source``)."""

    source: str
    unbalanced_minutes: int
    missing: int
    extra: int
    # The latest settled minute's books, by column.
    latest: Mapping[str, int]


class LedgerGauges(Collector):
    """The ledger's gauges, read through ``read`` at most every ``every`` seconds (a reading
    walks a day of minutes in Redis and Postgres); between readings a scrape costs nothing."""

    def __init__(
        self,
        read: Callable[[], Sequence[LedgerReading]],
        every: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._every = every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._readings: Sequence[LedgerReading] | None = None
        self._read_at = -float("inf")

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without reading anything (a registry asks when one is registered)."""
        return self._families([])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if self._monotonic() - self._read_at >= self._every:
                self._read_at = self._monotonic()
                try:
                    self._readings = list(self._read())
                except Exception as exc:  # a scrape must not fail because a dependency blinked
                    log.warning("cannot read the ledger: %s", exc)
                    self._readings = None
            readings = self._readings
        if readings is None:
            return iter(())
        return self._families(readings)

    def _families(self, readings: Sequence[LedgerReading]) -> Iterator[GaugeMetricFamily]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=["source"])
            for name, doc in _LEDGER_SOURCE_GAUGES
        }
        minute = GaugeMetricFamily(
            "clicktrail_ledger_minute_events",
            "The latest settled minute's books, by column",
            labels=["source", "column"],
        )
        for reading in readings:
            values = (reading.unbalanced_minutes, reading.missing, reading.extra)
            for family, value in zip(families.values(), values, strict=True):
                family.add_metric([reading.source], float(value))
            for column, count in reading.latest.items():
                minute.add_metric([reading.source, column], float(count))
        yield from families.values()
        yield minute


def serve(
    port: int, host: str, multiproc_dir: Path | None, extra: Sequence[Collector] = ()
) -> None:
    """Serve this process's metrics (and its children's, in multiprocess mode) on host:port,
    with the collectors in ``extra``."""
    if port <= 0:
        return
    if multiproc_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    for collector in extra:
        registry.register(collector)
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%s/metrics", host, port)


def mark_dead(pid: int, multiproc_dir: Path | None) -> None:
    """Forget a child process's live gauges (multiprocess mode)."""
    if multiproc_dir is not None:
        multiprocess.mark_process_dead(pid, path=str(multiproc_dir))  # type: ignore[no-untyped-call]


def clear_multiprocess_dir(multiproc_dir: Path | None) -> None:
    """Empty the multiprocess directory before a process tree starts: stale files skew counts."""
    if multiproc_dir is None:
        return
    multiproc_dir.mkdir(parents=True, exist_ok=True)
    for stale in multiproc_dir.glob("*.db"):
        stale.unlink()
