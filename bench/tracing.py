"""What tracing costs the pipeline: ``Pipeline.process`` on a real redis-server, the records
handed to a publisher that keeps nothing (Kafka's cost is the same in every mode: its produce
span was there before), in one process per mode, the modes taking turns.

- ``off``: no tracer provider (no OTEL_EXPORTER_OTLP_ENDPOINT), the production default;
- ``spans``: a provider as ``setup_tracing`` installs it, the spans encoded as OTLP protobuf
  (then dropped): the task, produce and our Redis round-trip spans;
- ``redis-instrumentation``: the same plus opentelemetry-instrumentation-redis (a span per
  command and pipeline), when it is installed;
- ``off-before``, ``spans-before``: ``off`` and ``spans`` with the clicktrail package from
  ``--before`` (a checkout of an earlier commit): what a change costs, tracing off and on.

python -m bench.tracing [--tasks 400] [--rounds 3] [--before /tmp/clicktrail-before]

Prints one JSON document: CPU and wall time per task and per event, for tasks of one request of
100 events and of one single-event request, the median of the rounds.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.paths import PROJECT_ROOT
from bench.stack import free_port, wait_until

MODES = ("off", "spans", "redis-instrumentation")
SHAPES = {"batch_of_100": 100, "single_event": 1}


def _events(n: int, samples: list[dict[str, Any]], received: str) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        event = copy.deepcopy(samples[i % len(samples)])
        event["messageId"] = str(uuid.uuid4())
        event["userId"] = f"user-{i % 500}"
        event["anonymousId"] = f"anon-{i % 500}"
        event["receivedAt"] = received
        events.append(event)
    return events


def child(mode: str, redis_url: str, tasks: int) -> dict[str, Any]:
    """Measure in this process (one mode)."""
    from clicktrail.clock import SystemClock, format_ts
    from clicktrail.delivery import SeenIds
    from clicktrail.kafka import Delivery, Record
    from clicktrail.pipeline import Pipeline, Topics
    from clicktrail.purge import ErasureMarks
    from clicktrail.redisconn import make_redis
    from clicktrail.schemas import FileSchemaRegistry
    from clicktrail.sessions import SessionStore
    from clicktrail.validation import EventValidator

    if mode != "off":
        _install_provider(mode)

    class Discard:
        def publish(self, records: list[Record]) -> list[Delivery]:
            for record in records:
                record.encode_value()
            return [Delivery(r, None, 0, n) for n, r in enumerate(records)]

        def close(self) -> None:
            pass

    client = make_redis(redis_url)
    clock = SystemClock()
    pipeline = Pipeline(
        validator=EventValidator(FileSchemaRegistry(PROJECT_ROOT / "schemas")),
        sessions=SessionStore(client, 1800),
        publisher=Discard(),
        topics=Topics("bench-events", "bench-events.deadletter"),
        clock=clock,
        seen=SeenIds(client, 3600),
        erasures=ErasureMarks(client, 3600),
    )
    samples = [
        orjson.loads(p.read_bytes())
        for p in sorted((PROJECT_ROOT / "tests" / "data" / "events" / "valid").glob("*.json"))
        if "unplanned" not in p.stem
    ]
    received = format_ts(clock.now())
    figures: dict[str, Any] = {}
    for shape, size in SHAPES.items():
        count = tasks if size > 1 else tasks * 10
        payloads = [
            _message(
                "bench-source",
                {"anonymize_ip": True},
                _events(size, samples, received),
                f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            )
            for _ in range(count + count // 10)
        ]
        for payload in payloads[: count // 10]:  # warm up: schemas compiled, scripts loaded
            pipeline.process(payload)
        cpu, wall = time.process_time(), time.perf_counter()
        for payload in payloads[count // 10 :]:
            pipeline.process(payload)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        figures[shape] = {
            "tasks": count,
            "cpu_us_per_task": round(cpu / count * 1e6, 1),
            "wall_us_per_task": round(wall / count * 1e6, 1),
            "cpu_us_per_event": round(cpu / (count * size) * 1e6, 1),
        }
    _flush()
    return figures


def _message(source_id: str, settings: dict[str, Any], events: list[Any], traceparent: str) -> Any:
    """One request's task message, as the package on the path (this one or ``--before``'s)
    writes it: a ``clicktrail.message.Message``, or the plain payload of earlier releases."""
    try:
        from clicktrail.message import Message, Part
    except ImportError:
        from clicktrail.queue import ingest_payload  # type: ignore[attr-defined]

        return ingest_payload(source_id, settings, events, traceparent)
    return Message.of([Part(source_id, settings, events, traceparent)])


def _install_provider(mode: str) -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class EncodeAndDrop(SpanExporter):
        """What the OTLP exporter does to every span, short of sending it."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "bench-worker"}))
    provider.add_span_processor(BatchSpanProcessor(EncodeAndDrop()))
    trace.set_tracer_provider(provider)
    from clicktrail.config import Settings
    from clicktrail.telemetry import setup_tracing

    setup_tracing(Settings.from_env({}), "bench-worker")  # it finds the provider and uses it
    if mode == "redis-instrumentation":
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument(tracer_provider=provider)


def _flush() -> None:
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def _instrumentation_installed() -> bool:
    try:
        import opentelemetry.instrumentation.redis  # noqa: F401
    except ImportError:
        return False
    return True


def run(mode: str, redis_url: str, tasks: int, before: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    path = [str(before)] if mode.endswith("-before") and before else []
    env["PYTHONPATH"] = os.pathsep.join([*path, str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "bench.tracing", "--child", mode.removesuffix("-before"),
            "--redis-url", redis_url, "--tasks", str(tasks)]  # fmt: skip
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def measure(tasks: int = 400, rounds: int = 3, before: Path | None = None) -> dict[str, Any]:
    from clicktrail.local.stack import spawn_redis

    modes = [m for m in MODES if m != "redis-instrumentation" or _instrumentation_installed()]
    if before is not None:
        modes[:0] = ["off-before", "spans-before"]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as data:
        server = spawn_redis("127.0.0.1", port, Path(data), subprocess.DEVNULL, appendonly=False)
        try:
            import redis

            client = redis.Redis(port=port)
            wait_until(lambda: _answers(client), "redis-server")
            url = f"redis://127.0.0.1:{port}/0"
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for _ in range(rounds):  # taking turns, so a slow spell falls on every mode
                for mode in modes:
                    client.flushall()
                    runs[mode].append(run(mode, url, tasks, before))
        finally:
            server.terminate()
            server.wait(10)
    figures: dict[str, Any] = {"rounds": rounds, "modes": {}}
    for mode, results in runs.items():
        figures["modes"][mode] = {
            shape: {
                key: statistics.median(r[shape][key] for r in results)
                for key in ("cpu_us_per_task", "wall_us_per_task", "cpu_us_per_event")
            }
            | {"rounds_cpu_us_per_task": [r[shape]["cpu_us_per_task"] for r in results]}
            for shape in SHAPES
        }
    modes_ = figures["modes"]
    figures["spans_over_off_cpu"] = {
        shape: round(
            modes_["spans"][shape]["cpu_us_per_task"] / modes_["off"][shape]["cpu_us_per_task"], 2
        )
        for shape in SHAPES
    }
    return figures


def _answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks of 100 events per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout whose clicktrail runs off-before")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = child(args.child, args.redis_url, args.tasks)
    else:
        figures = measure(args.tasks, args.rounds, args.before)
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
