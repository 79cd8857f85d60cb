"""What ops see, across real process boundaries: one trace from the API through the worker to
the Kafka record, errors in Sentry without personal data, metrics that move, health checks."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import requests
from celery import Celery
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from clicktrail.config import Settings
from clicktrail.message import Part
from clicktrail.queue import INGEST_TASK, QUEUE, celery_settings
from clicktrail.web import create_app
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import (
    KafkaCollector,
    Service,
    claim_redis_db,
    free_port,
    release_redis_db,
    start_worker,
    wait_for,
)
from tests.support.paths import PROJECT_ROOT
from tests.support.receivers import ExportedSpan, OtlpReceiver, SentryReceiver

OTLP_CONSUMER = 5  # SpanKind.CONSUMER in the OTLP protocol's numbering


@dataclass
class ObservedStack:
    api: str
    worker: Service
    env: dict[str, str]
    spans: InMemorySpanExporter
    otlp: OtlpReceiver
    sentry: SentryReceiver
    api_log: io.StringIO


def in_memory_spans() -> InMemorySpanExporter:
    """The SDK's in-memory exporter on this process's tracer provider."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="module")
def observed(stack_env: dict[str, str], run_id: str, logs_dir: Path) -> Iterator[ObservedStack]:
    """The API in this process (its spans in memory); a worker process exporting its spans over
    OTLP and its errors to Sentry, both received here; a queue of their own."""
    db = claim_redis_db(owner=f"{run_id}-observed")
    otlp, sentry = OtlpReceiver(), SentryReceiver()
    env = {
        **stack_env,
        "REDIS_URL": f"redis://127.0.0.1:6379/{db}",
        "LOG_FORMAT": "json",
        "LOG_REQUESTS": "1",
    }
    worker_env = {
        **env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SENTRY_DSN": sentry.dsn,
    }
    worker = start_worker(worker_env, logs_dir / "observed-worker.log", f"observed-{run_id}")
    spans = in_memory_spans()
    app = create_app(Settings.from_env(env))
    api_log = io.StringIO()
    handler = logging.StreamHandler(api_log)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(handler)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ObservedStack(f"http://127.0.0.1:{port}", worker, env, spans, otlp, sentry, api_log)
    finally:
        server.shutdown()
        logging.getLogger().removeHandler(handler)
        worker.stop()
        otlp.stop()
        sentry.stop()
        release_redis_db(db)


def test_one_trace_runs_from_the_http_request_through_the_worker_to_the_kafka_record(
    observed: ObservedStack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    message_id = f"traced-{uuid.uuid4()}"

    response = requests.post(
        f"{observed.api}/v1/track",
        json={"userId": "tracer", "messageId": message_id, "event": "Traced"},
        auth=(source.write_key, ""),
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01", "X-Request-ID": "req-traced-1"},
        timeout=10,
    )

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-traced-1"
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    [server] = [
        s
        for s in observed.spans.get_finished_spans()
        if s.kind == SpanKind.SERVER and format(s.context.trace_id, "032x") == trace_id
    ]
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == caller_span

    def worker_spans() -> dict[str, object] | None:
        mine = {s.name: s for s in observed.otlp.spans if s.trace_id == trace_id}
        return mine if {INGEST_TASK, "kafka produce"} <= set(mine) else None

    exported = wait_for(worker_spans, "the worker's spans", timeout=30)
    task, produce = exported[INGEST_TASK], exported["kafka produce"]
    assert (task.service, task.kind) == ("clicktrail-worker", OTLP_CONSUMER)  # type: ignore[attr-defined]
    assert task.parent_span_id == format(server.context.span_id, "016x")  # type: ignore[attr-defined]
    assert produce.parent_span_id == task.span_id  # type: ignore[attr-defined]
    assert record.headers["traceparent"] == f"00-{trace_id}-{produce.span_id}-01"  # type: ignore[attr-defined]
    # The same trace id is on the API's log line and the worker's.
    api_lines = [
        orjson.loads(line)
        for line in observed.api_log.getvalue().splitlines()
        if "accepted" in line
    ]
    assert any(
        line.get("trace_id") == trace_id and line.get("request_id") == "req-traced-1"
        for line in api_lines
    )
    worker_lines = [
        orjson.loads(line) for line in observed.worker.output().splitlines() if line.startswith("{")
    ]
    assert any(
        line.get("trace_id") == trace_id and "published" in line["event"] and line.get("task_id")
        for line in worker_lines
    )


# The worker's round-trips for one request (no profile traits asked for: no Postgres read).
WORKER_ROUND_TRIPS = (
    "redis erasure_marks.erased",
    "redis seen_ids.seen",
    "redis sessions.touch_many",
    "redis seen_ids.remember",
)
OTLP_CLIENT, OTLP_PRODUCER = 3, 4


def test_one_events_trace_shows_every_round_trip_from_the_api_to_the_history_write(
    observed: ObservedStack,
    kafka: KafkaCollector,
    source: SourceUnderTest,
    topics: TopicNames,
    logs_dir: Path,
) -> None:
    """API span -> ingest task span -> its Redis round-trips and the Kafka produce span -> the
    history sink's span (another process, continuing the record's traceparent) -> the Postgres
    write: one trace, every process exporting over OTLP."""
    from tests.integration.conftest import FAST_GROUP_JOIN
    from tests.support.infra import start_sink

    sink = start_sink(
        {
            **observed.env,
            **FAST_GROUP_JOIN,
            "OTEL_EXPORTER_OTLP_ENDPOINT": observed.otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SINK_GROUP_ID": f"traced-sink-{uuid.uuid4().hex[:8]}",
            # It reads the topic from its start, earlier tests' records too: batches of fewer
            # traces than a span keeps links (the SDK's 128), so the write links to this one,
            # and room for all their spans.
            "SINK_BATCH_SIZE": "100",
            "OTEL_BSP_MAX_QUEUE_SIZE": "200000",
        },
        logs_dir / "traced-sink.log",
        name="traced-sink",
    )
    try:
        trace_id = uuid.uuid4().hex
        message_id = f"traced-{uuid.uuid4()}"
        response = requests.post(
            f"{observed.api}/v1/track",
            json={"userId": "tracer", "messageId": message_id, "event": "Traced"},
            auth=(source.write_key, ""),
            headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
            timeout=10,
        )
        assert response.status_code == 200
        [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
        wanted = {INGEST_TASK, "kafka produce", *WORKER_ROUND_TRIPS, "history sink"}

        def all_spans() -> tuple[dict[str, ExportedSpan], ExportedSpan] | None:
            mine = {s.name: s for s in observed.otlp.spans if s.trace_id == trace_id}
            if not wanted <= set(mine):
                return None
            # The sink, reading the topic from its start, may write this record in a batch
            # with others' (of earlier tests): its write is then the first trace's child, and
            # links to this one.
            consumed = mine["history sink"]
            writes = [
                s
                for s in observed.otlp.spans
                if s.name == "postgres history.write"
                and (
                    s.parent_span_id == consumed.span_id or (trace_id, consumed.span_id) in s.links
                )
            ]
            return (mine, writes[0]) if writes else None

        spans, written = wait_for(all_spans, f"the spans {sorted(wanted)}", timeout=120)
    finally:
        sink.stop()

    [server] = [
        s
        for s in observed.spans.get_finished_spans()
        if s.kind == SpanKind.SERVER and format(s.context.trace_id, "032x") == trace_id
    ]
    task, produce = spans[INGEST_TASK], spans["kafka produce"]
    assert task.parent_span_id == format(server.context.span_id, "016x")
    for name in WORKER_ROUND_TRIPS:
        round_trip = spans[name]
        assert (round_trip.service, round_trip.kind) == ("clicktrail-worker", OTLP_CLIENT), name
        assert round_trip.parent_span_id == task.span_id, name
        assert round_trip.attributes["db.system.name"] == "redis", name
        assert not round_trip.links, name
    assert (produce.kind, produce.parent_span_id) == (OTLP_PRODUCER, task.span_id)
    assert record.headers["traceparent"] == f"00-{trace_id}-{produce.span_id}-01"
    consumed = spans["history sink"]
    assert (consumed.service, consumed.kind) == ("clicktrail-sink", OTLP_CONSUMER)
    assert consumed.parent_span_id == produce.span_id
    assert consumed.attributes["messaging.destination.name"] == topics.events
    assert (written.service, written.kind) == ("clicktrail-sink", OTLP_CLIENT)
    assert (written.trace_id, written.parent_span_id) == (trace_id, consumed.span_id) or (
        trace_id,
        consumed.span_id,
    ) in written.links
    assert written.attributes["db.system.name"] == "postgresql"


def test_an_unexpected_error_in_a_task_reaches_sentry_without_personal_data(
    observed: ObservedStack, source: SourceUnderTest
) -> None:
    client = Celery("observability-test", set_as_current=False)
    client.conf.update(celery_settings(Settings.from_env(observed.env)))
    poison = Part(
        source.id,
        {"tracking_plan": "not a plan"},  # the pipeline cannot read it: an unexpected error
        [{"type": "track", "userId": "u", "messageId": f"poison-{uuid.uuid4()}", "event": "E",
          "receivedAt": "2026-01-01T00:00:00.000Z", "writeKey": "secret-write-key-123",
          "context": {"ip": "203.0.113.9"}, "properties": {"note": "came from 198.51.100.7"}}],
    )  # fmt: skip

    client.send_task(INGEST_TASK, args=[poison.to_wire()], queue=QUEUE)

    events = wait_for(
        lambda: [e for e in observed.sentry.events if "tracking_plan" in orjson.dumps(e).decode()],
        "a Sentry event",
        timeout=30,
    )
    event = events[0]
    assert event["release"] == "clicktrail@0.1.0"
    assert event["environment"] == "development"
    assert "tracking_plan must be an object" in orjson.dumps(event).decode()
    raw = b"".join(observed.sentry.raw)
    for secret in (b"secret-write-key-123", b"203.0.113.9", b"198.51.100.7"):
        assert secret not in raw, secret


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample of a metric (0 when absent)."""
    text = requests.get(url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_metrics_move_as_events_flow_in_every_process(
    pipeline: str,
    worker: Service,
    sink: Service,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    topics: TopicNames,
) -> None:
    before = {
        "accepted": metric(
            f"{pipeline}/metrics",
            "clicktrail_events_accepted_total",
            source=source.id,
            type="track",
        ),
        "published": metric(
            worker.metrics_url, "clicktrail_events_published_total", source=source.id, type="track"
        ),
        "written": metric(sink.metrics_url, "clicktrail_sink_rows_written_total"),
    }
    ids = [f"metered-{uuid.uuid4()}" for _ in range(20)]

    for message_id in ids:  # one request each, spread over the API's gunicorn workers
        body = {"userId": "metered", "messageId": message_id, "event": "Metered"}
        assert (
            requests.post(
                f"{pipeline}/v1/track", json=body, auth=(source.write_key, ""), timeout=10
            ).status_code
            == 200
        )
    kafka.wait_for(ids, topic=topics.events)
    active_sessions = metric(
        worker.metrics_url, "clicktrail_active_sessions"
    )  # within the 3 s timeout

    assert (
        metric(
            f"{pipeline}/metrics",
            "clicktrail_events_accepted_total",
            source=source.id,
            type="track",
        )
        - before["accepted"]
        == 20
    )
    wait_for(
        lambda: (
            metric(
                worker.metrics_url,
                "clicktrail_events_published_total",
                source=source.id,
                type="track",
            )
            - before["published"]
            >= 20
        ),
        "published counter",
    )
    wait_for(
        lambda: (
            metric(sink.metrics_url, "clicktrail_sink_rows_written_total") - before["written"] >= 20
        ),
        "sink counter",
    )
    assert (
        metric(f"{pipeline}/metrics", "flask_http_request_total", method="POST", status="200") >= 20
    )
    assert (
        metric(worker.metrics_url, "clicktrail_task_duration_seconds_count", task=INGEST_TASK) >= 20
    )
    assert metric(worker.metrics_url, "clicktrail_end_to_end_seconds_count") >= 20
    assert metric(worker.metrics_url, "clicktrail_kafka_delivery_seconds_count") >= 20
    text = requests.get(worker.metrics_url, timeout=10).text
    assert "clicktrail_queue_depth " in text
    assert active_sessions >= 1
    assert "clicktrail_sink_lag_records{" in requests.get(sink.metrics_url, timeout=10).text


def health(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "clicktrail.workers.health"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, orjson.loads(result.stdout)


def test_the_worker_side_health_command_runs_the_readiness_checks(
    stack_env: dict[str, str], worker: Service
) -> None:
    ok_code, ok = health(stack_env)
    down_code, down = health({**stack_env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})

    assert ok_code == 0, ok
    assert {name: check["status"] for name, check in ok["checks"].items()} == {  # type: ignore[attr-defined]
        "redis": "ok", "queue": "ok", "postgres": "ok", "kafka": "ok", "workers": "ok",
    }  # fmt: skip
    assert down_code == 1
    assert down["checks"]["kafka"]["status"] == "down"  # type: ignore[index]
    assert down["checks"]["postgres"]["status"] == "ok"  # type: ignore[index]


def test_readyz_says_when_no_worker_answers_and_intake_is_still_ready(
    stack_env: dict[str, str], run_id: str, logs_dir: Path
) -> None:
    from tests.support.infra import start_api

    db = claim_redis_db(owner=f"{run_id}-noworker")
    api, base = start_api(
        {**stack_env, "REDIS_URL": f"redis://127.0.0.1:6379/{db}"},
        logs_dir / "noworker-api.log",
        name="noworker-api",
    )
    try:
        ready = requests.get(f"{base}/readyz", timeout=15)
        intake = requests.get(f"{base}/readyz?scope=intake", timeout=15)
    finally:
        api.stop()
        release_redis_db(db)

    assert ready.status_code == 503
    assert ready.json()["checks"]["workers"] == {
        "status": "down",
        "error": "RuntimeError: no Celery worker answered",
    }
    # Events can still be taken: they wait in the queue for a worker.
    assert intake.status_code == 200
    assert set(intake.json()["checks"]) == {"redis", "queue", "postgres"}
