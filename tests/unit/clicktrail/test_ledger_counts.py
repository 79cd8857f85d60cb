"""The ledger's counts: each taken once, where it happens, in a round-trip that happens anyway."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from clicktrail import metrics
from clicktrail.clock import minute_of
from clicktrail.delivery import SeenIds
from clicktrail.kafka import Record
from clicktrail.ledger import LedgerCounter, Tally, label_of, minute_label, received_minutes
from clicktrail.message import Message, Part
from clicktrail.pipeline import Pipeline, PublishIncomplete, Topics
from clicktrail.schemas import FileSchemaRegistry
from clicktrail.validation import EventValidator
from tests.support.data import invalid_events, valid_events
from tests.support.paths import PROJECT_ROOT
from tests.support.twins import (
    FixedClock,
    MemoryPublisher,
    MemorySeenIds,
    MemorySessions,
    RecordingRedis,
)

TOPICS = Topics(events="ev", deadletter="dlq")
VALIDATOR = EventValidator(FileSchemaRegistry(PROJECT_ROOT / "schemas"))
MINUTE = "2026-01-02T03:04"  # the sample events' receivedAt


def part(*events: dict[str, Any], source: str = "src-1", **flags: Any) -> Part:
    return Part(source, {}, [copy.deepcopy(e) for e in events], **flags)


def make(
    seen: Any = None, publisher: MemoryPublisher | None = None, erasures: Any = None
) -> tuple[Pipeline, MemoryPublisher]:
    publisher = publisher or MemoryPublisher()
    pipeline = Pipeline(
        VALIDATOR,
        MemorySessions(),
        publisher,
        TOPICS,
        FixedClock(),
        seen=seen,
        erasures=erasures,
    )
    return pipeline, publisher


# What becomes the ledger's minutes.


@pytest.mark.parametrize(
    "received_at",
    [
        "2026-01-02T03:04:05.678Z",
        "2026-01-02T03:04:59Z",
        "2026-01-02T04:04:05.678+01:00",
        "2026-01-02T03:04:05",
    ],
)
def test_every_form_of_a_receipt_time_falls_in_the_minute_the_sink_counts_it_in(
    received_at: str,
) -> None:
    assert (
        minute_label(received_at) == MINUTE == label_of(datetime(2026, 1, 2, 3, 4, 30, tzinfo=UTC))
    )


def test_a_receipt_time_that_is_no_time_falls_in_no_minute() -> None:
    assert minute_label(None) is None
    assert minute_label("soon") is None
    assert minute_label(12) is None


def test_minutes_are_utc_whatever_the_zone() -> None:
    moment = datetime(2026, 1, 2, 23, 59, 59, tzinfo=timezone(timedelta(hours=-2)))

    assert label_of(moment) == "2026-01-03T01:59"
    assert label_of(moment) == minute_of(moment).strftime("%Y-%m-%dT%H:%M")


def test_a_requests_events_are_counted_by_the_minute_they_were_received() -> None:
    events = [
        {"messageId": "a", "receivedAt": "2026-01-02T03:04:05.678Z"},
        {"messageId": "b", "receivedAt": "2026-01-02T03:04:05.678Z"},
        {"messageId": "c", "receivedAt": "2026-01-02T03:05:00.000Z"},
        {"messageId": "no receipt time"},
        "not an event",
    ]

    assert dict(received_minutes(events)) == {MINUTE: 2, "2026-01-02T03:05": 1}


def test_a_messageid_a_request_repeats_is_accepted_once_as_the_history_stores_it_once() -> None:
    event = {"messageId": "a", "receivedAt": "2026-01-02T03:04:05.678Z"}

    assert received_minutes([event, dict(event), {**event, "messageId": "b"}]) == ((MINUTE, 2),)


# The API's side: what an encoded part carries for the enqueue to count.


def test_an_encoded_part_says_how_many_events_it_holds_of_each_minute() -> None:
    encoded = part(valid_events()["page"], valid_events()["identify"]).encode()

    assert (encoded.source_id, encoded.minutes) == ("src-1", ((MINUTE, 2),))


def test_a_replay_counts_as_accepted_no_more() -> None:
    assert part(valid_events()["page"], replay=True).encode().minutes == ()


def test_the_ledger_flags_of_a_part_survive_the_queue_and_older_messages_have_none() -> None:
    flagged = Message.of([part(valid_events()["page"], replay=True), part(redelivered=True)])
    old = {"v": 1, "source": {"id": "s", "settings": {}}, "events": [], "traceparent": None}

    again = Message.decode(flagged.to_wire())

    assert [(p.replay, p.redelivered) for p in again.parts] == [(True, False), (False, True)]
    assert "replay" not in Part("s").to_wire()
    assert (Part.from_wire(old).replay, Part.from_wire(old).redelivered) == (False, False)
    # Neither a retry nor a failure drops them.
    [retry] = Message.of([again.parts[1].retrying([])]).failed_again().parts
    assert Part.from_wire(retry.to_wire()).redelivered is True


# The workers' side.


def test_what_kafka_confirmed_is_counted_published_or_dead_lettered_by_its_minute() -> None:
    seen = MemorySeenIds()
    pipeline, _ = make(seen)
    bad, _ = invalid_events()["track_without_event"]

    pipeline.process(Message.of([part(valid_events()["page"], bad, valid_events()["identify"])]))

    assert (seen.counted("published"), seen.counted("dead_lettered")) == (2, 1)
    assert {minute for minute, _ in seen.ledger} == {MINUTE}


def test_a_record_kafka_did_not_confirm_is_counted_once_its_retry_is() -> None:
    seen = MemorySeenIds()
    pipeline, _ = make(seen, MemoryPublisher(fail_ids={"m-6"}))

    with pytest.raises(PublishIncomplete) as caught:
        pipeline.process(Message.of([part(valid_events()["page"], valid_events()["identify"])]))
    assert seen.counted("published") == 1
    pipeline.process(caught.value.retry)

    assert seen.counted("published") == 2


def test_events_dropped_as_delivered_already_count_on_a_first_delivery_only() -> None:
    seen = MemorySeenIds()
    pipeline, _ = make(seen)
    page, identify = valid_events()["page"], valid_events()["identify"]
    pipeline.process(Message.of([part(page)]))

    resent = pipeline.process(Message.of([part(page, identify)]))  # a client's resend
    assert (resent.published, seen.counted("dropped")) == (1, 1)

    # Handed out again after a worker died: what it skips is the pipeline's own copies.
    pipeline.process(Message.of([part(page, identify)]), first_delivery=False)
    pipeline.process(Message.of([part(page, identify, redelivered=True)]))
    assert seen.counted("dropped") == 1


def test_a_replay_is_counted_nowhere() -> None:
    seen = MemorySeenIds()
    pipeline, publisher = make(seen)
    page = valid_events()["page"]
    pipeline.process(Message.of([part(page)]))
    before = Counter(seen.ledger)

    pipeline.process(Message.of([part(page, valid_events()["identify"], replay=True)]))

    assert len(publisher.published) == 2  # the replay went through
    assert seen.ledger == before


class EraseUser:
    """Erasure marks for one userId: its events (and queued records) are dropped."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id

    def without_erased(self, parts: Sequence[Part]) -> list[Part]:
        def kept(event: Any) -> bool:
            value = event.get("event") if isinstance(event, dict) and "reason" in event else event
            return not (isinstance(value, dict) and value.get("userId") == self.user_id)

        return [
            Part(p.source_id, p.settings, [e for e in p.events if kept(e)], p.traceparent)
            if p.records is None
            else p.retrying([r for r in p.records if kept(r.value)])
            for p in parts
        ]


def test_events_of_an_erased_user_are_counted_erased_on_a_first_delivery_only() -> None:
    seen = MemorySeenIds()
    pipeline, publisher = make(seen, erasures=EraseUser("u-1"))
    page, identify = valid_events()["page"], valid_events()["identify"]  # anonymous, then u-1

    pipeline.process(Message.of([part(page, identify)]))
    pipeline.process(Message.of([part(identify)]), first_delivery=False)

    assert [r.headers["event-id"] for r in publisher.published] == ["m-4"]
    assert (seen.counted("published"), seen.counted("erased")) == (1, 1)


def test_queued_records_of_a_user_erased_before_their_retry_count_erased() -> None:
    seen = MemorySeenIds()
    pipeline, _ = make(seen, MemoryPublisher(fail_ids={"m-6"}))
    with pytest.raises(PublishIncomplete) as caught:
        pipeline.process(Message.of([part(valid_events()["page"], valid_events()["identify"])]))
    erasing, _ = make(seen, erasures=EraseUser("u-1"))

    erasing.process(caught.value.retry)  # a retry is a message of its own: its first delivery

    assert (seen.counted("published"), seen.counted("erased")) == (1, 1)


def test_worker_counts_share_the_round_trip_of_the_dedupe_note() -> None:
    client = RecordingRedis()
    seen = SeenIds(client, 600, lambda: 1000.0, LedgerCounter(client, 3600))  # type: ignore[arg-type]
    pipeline, _ = make(seen)

    pipeline.process(Message.of([part(valid_events()["page"], valid_events()["identify"])]))

    writes = [commands for _, commands in client.round_trips if "sadd" in commands]
    assert writes == [["sadd", "expire", "hincrby", "expire"]]
    assert client.counted("published") == 2
    assert client.ttls[f"ct:ledger:{MINUTE}"] == 3600


def test_worker_counts_are_noted_with_deduplication_off() -> None:
    client = RecordingRedis()
    seen = SeenIds(client, 0, ledger=LedgerCounter(client, 3600))  # type: ignore[arg-type]

    seen.remember({"src-1": ["m-1"]}, tally(published=1))

    assert client.round_trips == [(False, ["hincrby", "expire"])]
    assert client.sets == {}


def test_worker_counts_for_a_ledger_in_another_redis_take_a_round_trip_of_their_own() -> None:
    dedupe, queue = RecordingRedis(), RecordingRedis()
    seen = SeenIds(dedupe, 600, ledger=LedgerCounter(queue, 3600))  # type: ignore[arg-type]

    seen.remember({"src-1": ["m-1"]}, tally(published=1))

    assert [c for _, c in dedupe.round_trips] == [["sadd", "expire"]]
    assert [c for _, c in queue.round_trips] == [["hincrby", "expire"]]


def test_redis_refusing_the_counts_costs_the_task_nothing_but_is_counted() -> None:
    client = RecordingRedis()
    client.down = True
    seen = SeenIds(client, 600, ledger=LedgerCounter(client, 3600))  # type: ignore[arg-type]
    before = metrics.LEDGER_COUNT_FAILURES._value.get()

    seen.remember({"src-1": ["m-1"]}, tally(published=1))  # does not raise

    assert metrics.LEDGER_COUNT_FAILURES._value.get() == before + 1


def tally(**stages: int) -> Tally:
    counts = Tally()
    for stage, count in stages.items():
        counts.add(stage, "src-1", "2026-01-02T03:04:05.678Z", count)
    return counts


def test_a_tally_adds_up_by_minute_and_field() -> None:
    counts = tally(published=2)
    counts.add("published", "src-1", "2026-01-02T03:04:59.000Z")
    counts.add("published", "src-2", "2026-01-02T03:05:00.000Z", 3)
    counts.add("published", "src-1", None)  # no minute: nowhere

    assert counts.counts == {
        (MINUTE, "published:src-1"): 3,
        ("2026-01-02T03:05", "published:src-2"): 3,
    }
    assert counts.of("published", "src-1") == 3
    assert not Tally()


def test_a_record_value_none_counts_nothing_but_is_harmless() -> None:
    seen = MemorySeenIds()
    pipeline, _ = make(seen)
    tombstone = Part("src-1", records=[Record("ev", "k", None, {"event-id": "x"})])

    pipeline.process(Message.of([tombstone]))

    assert seen.counted("published") == 0
