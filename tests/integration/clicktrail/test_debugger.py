"""The debugger's tap and feed against a real Redis: nothing written for an unwatched source, what a
watched one keeps (protected), and the bounds in count and time."""

from __future__ import annotations

import copy
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis

from clicktrail.debugger import WATCHED_KEY, DebugFeed, DebugTap, Watches, stream_key
from clicktrail.enrich import Enricher
from clicktrail.message import Message, Part
from clicktrail.pipeline import Pipeline, Topics
from clicktrail.redisconn import make_redis
from clicktrail.schemas import FileSchemaRegistry
from clicktrail.validation import EventValidator
from tests.support.data import invalid_events, valid_events
from tests.support.infra import free_port
from tests.support.paths import PROJECT_ROOT
from tests.support.twins import FixedClock, MemoryPublisher, MemorySessions

VALIDATOR = EventValidator(FileSchemaRegistry(PROJECT_ROOT / "schemas"))
KEY = "debugger-test-key"


class CountingRedis(redis.Redis):
    """Counts the commands sent outside pipelines (the watch lookups and the scripts)."""

    commands: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return make_redis(redis_url)


@pytest.fixture
def source_id() -> str:
    return f"src-{uuid.uuid4().hex}"


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_tap(
    client: redis.Redis,
    ticks: Ticks | None = None,
    retention: int = 300,
    max_events: int = 500,
    per_second: int = 100,
) -> DebugTap:
    return DebugTap(
        client,
        Enricher(pseudonymization_key=KEY).protect,
        retention_seconds=retention,
        max_events=max_events,
        per_second=per_second,
        clock=FixedClock(),
        monotonic=ticks or Ticks(),
    )


def pipeline_with(tap: DebugTap) -> tuple[Pipeline, MemoryPublisher]:
    publisher = MemoryPublisher()
    pipeline = Pipeline(
        VALIDATOR,
        MemorySessions(),
        publisher,
        Topics(events="ev", deadletter="dlq"),
        FixedClock(),
        enricher=Enricher(pseudonymization_key=KEY),
        tap=tap,
    )
    return pipeline, publisher


def payload(source_id: str, *events: dict[str, Any], **settings: Any) -> Message:
    return Message.of([part(source_id, *events, **settings)])


def part(source_id: str, *events: dict[str, Any], **settings: Any) -> Part:
    return Part(source_id, {"anonymize_ip": True, **settings}, [copy.deepcopy(e) for e in events])


def identifies(*message_ids: str) -> list[dict[str, Any]]:
    """The sample identify event, once for each messageId."""
    return [{**copy.deepcopy(valid_events()["identify"]), "messageId": m} for m in message_ids]


def watch(client: redis.Redis, source_id: str) -> None:
    Watches(client, FixedClock()).watch(source_id)


def test_an_unwatched_source_costs_one_lookup_a_second_and_writes_nothing(
    redis_url: str, source_id: str
) -> None:
    counting = CountingRedis.from_url(redis_url, decode_responses=True)
    counting.commands = []
    ticks = Ticks()
    pipeline, publisher = pipeline_with(make_tap(counting, ticks))
    good = valid_events()["track_product_viewed"]

    for _ in range(200):
        pipeline.process(payload(source_id, good))
    ticks.now += 1.0
    pipeline.process(payload(source_id, good))

    assert len(publisher.published) == 201
    assert counting.commands == ["ZRANGEBYSCORE", "ZRANGEBYSCORE"]
    assert not counting.exists(stream_key(source_id))


def test_a_watched_source_keeps_each_event_received_enriched_and_its_errors(
    client: redis.Redis, source_id: str
) -> None:
    watch(client, source_id)
    pipeline, publisher = pipeline_with(make_tap(client))
    feed = DebugFeed(client, FixedClock(), retention_seconds=300)
    good = copy.deepcopy(valid_events()["track_product_viewed"])
    good["properties"]["sku"] = "someone@example.com"
    bad, expected = invalid_events()["order_completed_bad_properties"]
    bad = copy.deepcopy(bad)
    bad.setdefault("context", {})["ip"] = "198.51.100.77"

    pipeline.process(payload(source_id, good, bad, pseudonymize=["properties.sku"]))
    entries = feed.read(source_id, None, 50)

    assert [e["status"] for e in entries] == ["dead_lettered", "published"]  # newest first
    rejected, published = entries
    assert published["messageId"] == good["messageId"]
    assert (published["type"], published["name"]) == ("track", "Product Viewed")
    assert published["schema"] == "events/product_viewed/2-0-0"
    assert published["receivedAt"] == good["receivedAt"]
    assert published["raw"]["context"]["ip"] == "203.0.113.0"
    assert published["raw"]["properties"]["sku"].startswith("hmac:")
    assert "session" not in published["raw"]["context"]
    assert published["enriched"] == publisher.published[0].value
    assert published["enriched"]["context"]["session"]["eventIndex"] == 1
    assert published["errors"] == []
    assert rejected["reason"] == "schema_validation"
    assert rejected["enriched"] is None
    assert rejected["raw"]["context"]["ip"] == "198.51.100.0"
    assert sorted((e["path"], e["keyword"]) for e in rejected["errors"]) == sorted(expected)
    assert rejected["id"] > published["id"]
    assert feed.read(source_id, rejected["id"], 50) == []
    assert [e["id"] for e in feed.read(source_id, published["id"], 50)] == [rejected["id"]]


def test_a_task_of_several_requests_keeps_only_the_watched_sources_events(
    client: redis.Redis, source_id: str
) -> None:
    other = f"src-{uuid.uuid4().hex}"
    watch(client, source_id)
    pipeline, publisher = pipeline_with(make_tap(client))
    feed = DebugFeed(client, FixedClock(), retention_seconds=300)
    first, second, third = identifies("g-1", "g-2", "g-3")

    pipeline.process(
        Message.of([part(source_id, first), part(other, second), part(source_id, third)])
    )

    assert len(publisher.published) == 3
    assert [e["messageId"] for e in feed.read(source_id, None, 50)] == ["g-3", "g-1"]
    assert not client.exists(stream_key(other))


def test_the_stream_keeps_at_most_max_events(client: redis.Redis, source_id: str) -> None:
    watch(client, source_id)
    pipeline, _ = pipeline_with(make_tap(client, max_events=5))
    events = identifies(*(f"bounded-{n}" for n in range(8)))

    pipeline.process(payload(source_id, *events[:3]))
    pipeline.process(payload(source_id, *events[3:]))

    assert client.xlen(stream_key(source_id)) == 5
    feed = DebugFeed(client, FixedClock(), retention_seconds=300)
    assert [e["messageId"] for e in feed.read(source_id, None, 50)] == [
        f"bounded-{n}" for n in (7, 6, 5, 4, 3)
    ]


def test_nothing_outlives_the_retention(client: redis.Redis, source_id: str) -> None:
    watch(client, source_id)
    pipeline, _ = pipeline_with(make_tap(client, retention=1))
    feed = DebugFeed(client, FixedClock(), retention_seconds=1)

    pipeline.process(payload(source_id, valid_events()["identify"]))
    ttl = client.pttl(stream_key(source_id))
    fresh = feed.read(source_id, None, 50)
    time.sleep(1.2)
    stale = feed.read(source_id, None, 50)

    assert 0 < ttl <= 1000
    assert len(fresh) == 1
    assert stale == []
    assert not client.exists(stream_key(source_id))


def test_a_busy_source_is_sampled_and_says_how_much_it_left_out(
    client: redis.Redis, source_id: str
) -> None:
    watch(client, source_id)
    ticks = Ticks()
    pipeline, _ = pipeline_with(make_tap(client, ticks, per_second=3))
    feed = DebugFeed(client, FixedClock(), retention_seconds=300)
    events = identifies(*(f"busy-{n}" for n in range(6)))

    pipeline.process(payload(source_id, *events[:5]))
    first = feed.read(source_id, None, 50)
    ticks.now += 1.0
    pipeline.process(payload(source_id, events[5]))
    second = feed.read(source_id, first[0]["id"], 50)

    assert [(e["status"], e.get("count"), e.get("messageId")) for e in first] == [
        ("skipped", 2, None),
        ("published", None, "busy-2"),
        ("published", None, "busy-1"),
        ("published", None, "busy-0"),
    ]
    assert [e["messageId"] for e in second] == ["busy-5"]


def test_a_watch_lapses_and_the_tap_notices_within_a_second(
    client: redis.Redis, source_id: str
) -> None:
    clock = FixedClock()
    watches = Watches(client, clock, seconds=15)
    ticks = Ticks()
    pipeline, _ = pipeline_with(make_tap(client, ticks))
    feed = DebugFeed(client, FixedClock(), retention_seconds=300)
    identify = valid_events()["identify"]

    pipeline.process(payload(source_id, identify))  # not watched yet: remembered for a second
    watches.watch(source_id)
    pipeline.process(payload(source_id, identify))
    before_refresh = feed.read(source_id, None, 50)
    ticks.now += 1.0
    pipeline.process(payload(source_id, identify))
    after_refresh = feed.read(source_id, None, 50)
    clock.moment += timedelta(seconds=16)

    assert before_refresh == []
    assert len(after_refresh) == 1
    assert source_id in Watches(client, FixedClock()).watched()
    assert source_id not in watches.watched()
    assert 0 < client.pttl(WATCHED_KEY) <= 15000


def test_the_pipeline_goes_on_when_the_debugger_redis_is_down(source_id: str) -> None:
    down = make_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    pipeline, publisher = pipeline_with(make_tap(down))

    outcome = pipeline.process(payload(source_id, valid_events()["identify"]))

    assert outcome.published == 1
    assert len(publisher.published) == 1
