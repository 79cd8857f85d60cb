"""The spans of the pipeline's and the sink's round-trips, recorded in memory: their parents, the
links of work shared by several requests, and nothing at all when tracing is off."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from clicktrail import telemetry
from clicktrail.delivery import SeenIds
from clicktrail.history import Written
from clicktrail.message import Message, Part
from clicktrail.pipeline import Pipeline, Topics
from clicktrail.queue import INGEST_TASK
from clicktrail.schemas import FileSchemaRegistry
from clicktrail.sessions import SessionStore
from clicktrail.telemetry import dependency_span, request_spans
from clicktrail.validation import EventValidator
from clicktrail.workers import sink as sink_module
from clicktrail.workers.sink import SPAN_NAME, HistorySink
from tests.support.data import valid_events
from tests.support.paths import PROJECT_ROOT
from tests.support.twins import FixedClock, MemoryPublisher

TOPICS = Topics(events="ev", deadletter="dlq")
VALIDATOR = EventValidator(FileSchemaRegistry(PROJECT_ROOT / "schemas"))
TRACE_A, TRACE_C = "a" * 32, "c" * 32
CALLER_A, CALLER_C = f"00-{TRACE_A}-{'b' * 16}-01", f"00-{TRACE_C}-{'d' * 16}-01"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """A tracer provider of this test's own, as ``setup_tracing`` installs one."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setattr(telemetry, "tracer", provider.get_tracer("clicktrail"))
    monkeypatch.setattr(telemetry, "_enabled", True)
    return exporter


def tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process where nothing installed a provider (other tests here may have)."""
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    monkeypatch.setattr(telemetry, "_enabled", False)


class ScriptRedis:
    """Enough of a redis client for SessionStore and SeenIds: scripts and pipelines answer at
    once, each session new, no id seen."""

    class Pipe:
        def __init__(self) -> None:
            self.commands: list[tuple[str, Any]] = []

        def __len__(self) -> int:
            return len(self.commands)

        def smismember(self, key: str, members: list[str]) -> None:
            self.commands.append(("smismember", members))

        def sadd(self, key: str, *members: str) -> None:
            self.commands.append(("sadd", members))

        def expire(self, key: str, seconds: int) -> None:
            self.commands.append(("expire", seconds))

        def execute(self) -> list[Any]:
            return [[0] * len(a) if c == "smismember" else 1 for c, a in self.commands]

    def register_script(self, _source: str) -> Any:
        def run(keys: list[str], args: list[bytes]) -> str:
            touches = orjson.loads(args[0])["touches"]
            return orjson.dumps([[t[2], 1, 1, t[7]] for t in touches]).decode()

        return run

    def pipeline(self, transaction: bool = True) -> ScriptRedis.Pipe:
        return ScriptRedis.Pipe()


def make() -> tuple[Pipeline, MemoryPublisher]:
    client, publisher, counter = ScriptRedis(), MemoryPublisher(), itertools.count(1)
    pipeline = Pipeline(
        VALIDATOR,
        SessionStore(client, 60),  # type: ignore[arg-type]
        publisher,
        TOPICS,
        FixedClock(),
        seen=SeenIds(client, 3600),  # type: ignore[arg-type]
        new_id=lambda: f"s{next(counter)}",
    )
    return pipeline, publisher


def part(traceparent: str, source: str = "src-1") -> Part:
    event = copy.deepcopy(valid_events()["track_product_viewed"])
    return Part(source, {}, [event], traceparent)


def request(traceparent: str, source: str = "src-1") -> Message:
    return Message.of([part(traceparent, source)])


def hex_id(span_id: int) -> str:
    return format(span_id, "016x")


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def test_a_tasks_redis_round_trips_are_children_of_its_span(
    spans: InMemorySpanExporter,
) -> None:
    pipeline, publisher = make()

    pipeline.process(request(CALLER_A))

    finished = spans.get_finished_spans()
    [task] = by_name(finished, INGEST_TASK)
    assert task.context is not None
    assert task.parent is not None
    assert format(task.context.trace_id, "032x") == TRACE_A
    assert hex_id(task.parent.span_id) == "b" * 16
    names = [s.name for s in finished if s.kind == SpanKind.CLIENT]
    assert names == ["redis seen_ids.seen", "redis sessions.touch_many", "redis seen_ids.remember"]
    for name in names:
        [span] = by_name(finished, name)
        assert span.parent is not None
        assert span.parent.span_id == task.context.span_id
        assert span.context is not None
        assert span.context.trace_id == task.context.trace_id
        assert span.attributes is not None
        assert span.attributes["db.system.name"] == "redis"
        assert not span.links
    [touch] = by_name(finished, "redis sessions.touch_many")
    assert touch.attributes is not None
    assert (touch.attributes["db.operation.name"], touch.attributes["clicktrail.items"]) == (
        "EVALSHA",
        1,
    )
    [produce] = by_name(finished, "kafka produce")
    assert produce.parent is not None
    assert produce.parent.span_id == task.context.span_id
    [record] = publisher.published
    assert record.headers["traceparent"] == f"00-{TRACE_A}-{hex_id(produce.context.span_id)}-01"  # type: ignore[union-attr]


def test_a_round_trip_serving_several_requests_is_the_first_ones_child_and_links_the_others(
    spans: InMemorySpanExporter,
) -> None:
    pipeline, publisher = make()

    pipeline.process(Message.of([part(CALLER_A), part(CALLER_C, "src-2")]))

    finished = spans.get_finished_spans()
    first, second = by_name(finished, INGEST_TASK)
    assert first.context is not None
    assert second.context is not None
    assert [format(s.context.trace_id, "032x") for s in (first, second)] == [TRACE_A, TRACE_C]  # type: ignore[union-attr]
    shared = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert len(shared) == 3  # one of each round-trip for both requests
    for span in shared:
        assert span.parent is not None
        assert span.parent.span_id == first.context.span_id
        assert [link.context for link in span.links] == [second.context]
    # Each request's records carry its own produce span, under its own task span.
    produces = by_name(finished, "kafka produce")
    assert sorted(p.parent.span_id for p in produces) == sorted(  # type: ignore[union-attr]
        s.context.span_id  # type: ignore[union-attr]
        for s in (first, second)
    )
    assert [r.headers["traceparent"].split("-")[1] for r in publisher.published] == [
        TRACE_A,
        TRACE_C,
    ]


def test_without_a_provider_no_round_trip_span_is_made_and_the_trace_ids_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracing_off(monkeypatch)
    pipeline, publisher = make()

    with dependency_span("redis x", "redis", "GET") as span:
        assert span is None
    pipeline.process(request(CALLER_A))

    [record] = publisher.published
    assert record.headers["traceparent"].split("-")[1] == TRACE_A


def test_a_round_trip_outside_any_request_starts_no_trace(spans: InMemorySpanExporter) -> None:
    with dependency_span("redis deliveries.count", "redis", "INCR") as span:
        assert span is None

    assert spans.get_finished_spans() == ()


def test_a_failed_round_trip_is_recorded_on_its_span_and_on_the_requests(
    spans: InMemorySpanExporter,
) -> None:
    with (
        pytest.raises(ConnectionError),
        request_spans("work", [CALLER_A]),
        dependency_span("redis x", "redis", "GET"),
    ):
        raise ConnectionError("redis went away")

    client, work = spans.get_finished_spans()
    for span in (client, work):
        assert span.status.status_code == StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]


class FakeMessage:
    def __init__(self, offset: int, event: dict[str, Any], traceparent: str | None) -> None:
        self._offset, self._event = offset, event
        self._headers = [("source-id", b"src-1")]
        if traceparent:
            self._headers.append(("traceparent", traceparent.encode()))

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return orjson.dumps(self._event)

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def topic(self) -> str:
        return "ev"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, 1767225600000


class FakeDatabase:
    class Conn:
        @contextmanager
        def transaction(self) -> Iterator[None]:
            yield

    @contextmanager
    def connection(self) -> Iterator[FakeDatabase.Conn]:
        yield FakeDatabase.Conn()


class Stored:
    def write(self, conn: Any, rows: list[Any]) -> Written:
        return Written(history={row.message_id for row in rows})


class NoProfiles:
    def apply(self, conn: Any, events: list[Any]) -> int:
        return 0


def sink_batch(traceparents: list[str | None]) -> list[Any]:
    return [
        FakeMessage(
            n,
            {
                "type": "track",
                "event": "E",
                "messageId": f"m{n}",
                "receivedAt": "2026-01-01T00:00:00.000Z",
            },
            traceparent,
        )
        for n, traceparent in enumerate(traceparents)
    ]


def make_sink() -> HistorySink:
    sink = HistorySink(None, FakeDatabase(), "ev", 100)  # type: ignore[arg-type]
    sink._history, sink._profiles = Stored(), NoProfiles()  # type: ignore[assignment]
    return sink


def test_the_sink_continues_each_records_trace_and_writes_under_the_first_linking_the_others(
    spans: InMemorySpanExporter,
) -> None:
    produce_a, produce_c = f"00-{TRACE_A}-{'1' * 16}-01", f"00-{TRACE_C}-{'2' * 16}-01"

    result = make_sink().write(sink_batch([produce_a, produce_a, produce_c]))

    assert result.written == 3
    finished = spans.get_finished_spans()
    first, second = by_name(finished, SPAN_NAME)
    assert first.kind == SpanKind.CONSUMER
    assert [
        (format(s.context.trace_id, "032x"), hex_id(s.parent.span_id)) for s in (first, second)
    ] == [  # type: ignore[union-attr]
        (TRACE_A, "1" * 16),
        (TRACE_C, "2" * 16),
    ]
    assert first.attributes is not None
    assert first.attributes["messaging.batch.message_count"] == 3
    [write] = by_name(finished, "postgres history.write")
    assert write.kind == SpanKind.CLIENT
    assert write.parent is not None
    assert write.parent.span_id == first.context.span_id
    assert [link.context for link in write.links] == [second.context]
    assert write.attributes is not None
    assert write.attributes["clicktrail.items"] == 3


def test_the_sink_makes_no_span_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing_off(monkeypatch)
    parsed: list[Any] = []
    monkeypatch.setattr(sink_module, "_traceparents", parsed.append)

    assert make_sink().write(sink_batch([CALLER_A])).written == 1
    assert parsed == []  # not even the headers were read for a trace


def test_setup_tracing_keeps_a_provider_already_installed_and_records_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clicktrail.config import Settings

    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setattr(telemetry, "_enabled", False)

    telemetry.setup_tracing(Settings.from_env({}), "test")

    assert telemetry.tracing_enabled()


def test_a_shared_round_trip_goes_under_the_first_request_whose_trace_is_sampled(
    spans: InMemorySpanExporter,
) -> None:
    unsampled = f"00-{TRACE_A}-{'b' * 16}-00"  # the caller sampled this trace out

    with request_spans("work", [unsampled, CALLER_C]) as work, dependency_span("x", "redis", "GET"):
        pass

    [client] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert client.parent is not None
    assert client.parent.span_id == work[1].get_span_context().span_id
    assert [link.context for link in client.links] == [work[0].get_span_context()]
