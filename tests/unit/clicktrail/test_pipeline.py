from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from clicktrail import enrich
from clicktrail.enrich import Enricher
from clicktrail.errors import DependencyUnavailable
from clicktrail.kafka import Record
from clicktrail.message import Message, Part
from clicktrail.pipeline import Pipeline, PublishIncomplete, Topics
from clicktrail.schemas import FileSchemaRegistry
from clicktrail.validation import ALLOW_ALL, EventValidator, TrackingPlan, Verdict
from tests.support.data import invalid_events, valid_events
from tests.support.paths import PROJECT_ROOT
from tests.support.twins import FixedClock, MemoryPublisher, MemorySeenIds, MemorySessions

TOPICS = Topics(events="ev", deadletter="dlq")
VALIDATOR = EventValidator(FileSchemaRegistry(PROJECT_ROOT / "schemas"))


def make(
    publisher: MemoryPublisher | None = None,
    seen: MemorySeenIds | None = None,
    enricher: Enricher | None = None,
) -> tuple[Pipeline, MemorySessions, MemoryPublisher]:
    sessions, publisher = MemorySessions(), publisher or MemoryPublisher()
    counter = itertools.count(1)
    pipeline = Pipeline(
        VALIDATOR,
        sessions,
        publisher,
        TOPICS,
        FixedClock(),
        enricher=enricher,
        seen=seen,
        new_id=lambda: f"s{next(counter)}",
    )
    return pipeline, sessions, publisher


def payload(*events: dict[str, Any], settings: dict[str, Any] | None = None) -> Message:
    return Message.of([part(*events, settings=settings)])


def part(*events: dict[str, Any], settings: dict[str, Any] | None = None) -> Part:
    return Part(
        "src-1",
        settings or {"anonymize_ip": True},
        [copy.deepcopy(e) for e in events],
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )


def test_valid_events_are_enriched_and_published_in_order_invalid_ones_dead_lettered() -> None:
    pipeline, _, publisher = make()
    good = valid_events()["track_product_viewed"]
    bad, expected = invalid_events()["track_without_event"]
    other = valid_events()["identify"]

    outcome = pipeline.process(payload(good, bad, other))

    assert (outcome.published, outcome.dead_lettered) == (2, 1)
    assert [(r.topic, r.headers["event-id"]) for r in publisher.published] == [
        ("ev", "m-1"),
        ("dlq", "m-9"),
        ("ev", "m-6"),
    ]
    first = publisher.published[0]
    assert first.key == "u-1"
    assert {k: v for k, v in first.headers.items() if k != "traceparent"} == {
        "event-id": "m-1",
        "event-type": "track",
        "schema": "events/product_viewed/2-0-0",
        "source-id": "src-1",
    }
    assert first.headers["traceparent"].split("-")[1] == "a" * 32  # the request's trace goes on
    assert first.value["context"]["ip"] == "203.0.113.0"
    assert first.value["context"]["session"] == {
        "id": "s1",
        "index": 1,
        "eventIndex": 1,
        "startedAt": good["receivedAt"],
    }
    assert first.value["timestamp"] == "2026-01-02T03:04:04.678Z"
    assert first.value["originalTimestamp"] == "2026-01-02T03:04:00Z"
    dead = publisher.published[1]
    assert dead.headers["error-kind"] == "schema_validation"
    assert dead.value["reason"] == "schema_validation"
    assert dead.value["event"]["messageId"] == "m-9"
    assert [(e["path"], e["keyword"]) for e in dead.value["errors"]] == expected
    assert dead.value["failedAt"] == "2026-06-01T12:00:00.000Z"


def test_invalid_events_do_not_touch_sessions_and_keep_no_raw_ip() -> None:
    pipeline, sessions, publisher = make()
    bad = copy.deepcopy(invalid_events()["track_without_event"][0])
    bad["context"] = {"ip": "198.51.100.200"}

    pipeline.process(payload(bad))

    assert sessions.sessions == {}
    assert publisher.published[0].value["event"]["context"]["ip"] == "198.51.100.0"


def test_a_source_may_keep_ips() -> None:
    pipeline, _, publisher = make()

    pipeline.process(
        payload(valid_events()["track_product_viewed"], settings={"anonymize_ip": False})
    )

    assert publisher.published[0].value["context"]["ip"] == "203.0.113.9"


def test_events_of_one_device_share_a_session() -> None:
    pipeline, _, publisher = make()
    page, identify = valid_events()["page"], valid_events()["identify"]

    pipeline.process(payload(page, identify))

    one, two = (r.value["context"]["session"] for r in publisher.published)
    assert one["id"] == two["id"]
    assert (one["eventIndex"], two["eventIndex"]) == (1, 2)


def test_a_failed_publish_retries_only_the_undelivered_records_without_re_enriching() -> None:
    pipeline, sessions, publisher = make(MemoryPublisher(fail_ids={"m-6"}))
    original = payload(valid_events()["page"], valid_events()["identify"])
    untouched = copy.deepcopy(original)

    with pytest.raises(PublishIncomplete) as caught:
        pipeline.process(original)
    retry = caught.value.retry
    pipeline.process(retry)

    assert original == untouched
    [retried] = retry.parts
    assert retried.is_retry
    assert not retried.events
    assert retry.message_ids() == ["m-6"]
    assert [r.headers["event-id"] for r in publisher.published] == ["m-4", "m-6"]
    assert sessions.calls == 1
    assert publisher.published[1].value["context"]["session"]["eventIndex"] == 2


def test_dead_letter_all_gives_up_on_every_event_of_a_payload() -> None:
    pipeline, _, publisher = make()

    pipeline.dead_letter_all(
        payload(valid_events()["page"], valid_events()["alias"]),
        "processing_failed",
        "KeyError: 'x'",
    )

    assert [(r.topic, r.headers["error-kind"]) for r in publisher.published] == [
        ("dlq", "processing_failed")
    ] * 2
    assert publisher.published[0].value["errors"][0]["message"] == "KeyError: 'x'"


def test_dead_letter_all_of_a_retry_keeps_its_dead_letters() -> None:
    pipeline, _, publisher = make(MemoryPublisher(fail_ids={"m-4", "m-9"}))
    with pytest.raises(PublishIncomplete) as caught:
        pipeline.process(
            payload(valid_events()["page"], invalid_events()["track_without_event"][0])
        )

    pipeline.dead_letter_all(caught.value.retry, "processing_failed", "boom")

    reasons = {r.headers["event-id"]: r.value["reason"] for r in publisher.published}
    assert reasons == {"m-4": "processing_failed", "m-9": "schema_validation"}


def test_events_outside_the_tracking_plan_are_dead_lettered_as_unplanned() -> None:
    pipeline, _, publisher = make()
    plan = {"anonymize_ip": True, "tracking_plan": {"events": ["Product Viewed"]}}

    pipeline.process(
        payload(
            valid_events()["track_product_viewed"],
            valid_events()["track_order_completed"],
            settings=plan,
        )
    )

    assert [(r.topic, r.headers.get("error-kind")) for r in publisher.published] == [
        ("ev", None),
        ("dlq", "unplanned"),
    ]
    assert publisher.published[1].value["reason"] == "unplanned"


def test_a_record_with_a_schema_id_is_written_in_the_confluent_wire_format() -> None:
    from clicktrail.kafka import Record

    plain = Record("t", "k", {"a": 1})
    framed = Record("t", "k", {"a": 1}, schema_id=258)

    assert plain.encode_value() == b'{"a":1}'
    assert framed.encode_value() == b"\x00\x00\x00\x01\x02" + b'{"a":1}'
    assert Record.from_json(framed.to_json()) == framed


def test_an_event_kafka_already_has_is_dropped_as_a_duplicate() -> None:
    pipeline, _, publisher = make(seen=MemorySeenIds())
    page, identify = valid_events()["page"], valid_events()["identify"]

    pipeline.process(payload(page))
    outcome = pipeline.process(payload(page, identify))  # a client's retry with one more event

    assert outcome.published == 1
    assert [r.headers["event-id"] for r in publisher.published] == ["m-4", "m-6"]


def test_only_delivered_events_count_as_seen_and_dead_letters_never() -> None:
    seen = MemorySeenIds()
    pipeline, _, publisher = make(MemoryPublisher(fail_ids={"m-4"}, fail_times=1), seen)
    bad, _ = invalid_events()["track_without_event"]

    with pytest.raises(PublishIncomplete):
        pipeline.process(payload(valid_events()["page"], bad))
    assert seen.ids == set()  # the failed event must be retried, the dead letter replayable

    pipeline.process(payload(valid_events()["page"], bad))

    assert seen.ids == {("src-1", "m-4")}
    assert [r.topic for r in publisher.published] == ["dlq", "ev", "dlq"]


def test_configured_paths_are_pseudonymised_in_events_and_dead_letters() -> None:
    pipeline, _, publisher = make(enricher=Enricher(pseudonymization_key="k"))
    good = copy.deepcopy(valid_events()["track_unplanned"])
    good["properties"]["email"] = "ada@example.com"
    bad = {**copy.deepcopy(invalid_events()["track_without_event"][0]), "properties": {}}
    bad["properties"]["email"] = "ada@example.com"
    settings = {"anonymize_ip": True, "pseudonymize": ["properties.email"]}

    pipeline.process(payload(good, bad, settings=settings))

    published, dead = (r.value for r in publisher.published)
    assert published["properties"]["email"] == dead["event"]["properties"]["email"]
    assert published["properties"]["email"].startswith("hmac:")
    assert "ada@example.com" not in str([r.value for r in publisher.published])


def test_a_group_of_requests_shares_one_session_call_and_keeps_each_requests_trace() -> None:
    pipeline, sessions, publisher = make()
    first = part(valid_events()["track_product_viewed"])
    second = Part(
        "src-2",
        {"anonymize_ip": False},
        [copy.deepcopy(valid_events()["track_product_viewed"])],
        "00-" + "c" * 32 + "-" + "d" * 16 + "-01",
    )

    outcome = pipeline.process(Message.of([first, second]))

    assert (outcome.published, outcome.dead_lettered) == (2, 0)
    assert sessions.calls == 1
    one, two = publisher.published
    assert (one.headers["source-id"], two.headers["source-id"]) == ("src-1", "src-2")
    assert one.headers["traceparent"].split("-")[1] == "a" * 32
    assert two.headers["traceparent"].split("-")[1] == "c" * 32
    assert one.value["context"]["ip"] == "203.0.113.0"  # each request's source settings
    assert two.value["context"]["ip"] == "203.0.113.9"


def test_a_group_retries_only_the_requests_whose_records_failed() -> None:
    pipeline, sessions, publisher = make(MemoryPublisher(fail_ids={"m-6"}))
    group = Message.of([part(valid_events()["page"]), part(valid_events()["identify"])])

    with pytest.raises(PublishIncomplete) as caught:
        pipeline.process(group)
    retry = caught.value.retry
    pipeline.process(retry)

    [retried] = retry.parts  # one request left
    assert retry.message_ids() == ["m-6"]
    assert retried.traceparent == group.parts[1].traceparent
    assert [r.headers["event-id"] for r in publisher.published] == ["m-4", "m-6"]
    assert sessions.calls == 1


def test_duplicates_are_dropped_per_source_across_a_group() -> None:
    seen = MemorySeenIds()
    pipeline, _, publisher = make(seen=seen)
    page = valid_events()["page"]
    pipeline.process(payload(page))
    other = Part("src-2", {}, [copy.deepcopy(page)])

    outcome = pipeline.process(Message.of([part(page), other]))

    assert outcome.published == 1  # the same messageId from another source is another event
    assert [r.headers["source-id"] for r in publisher.published] == ["src-1", "src-2"]


class RecordingTap:
    def __init__(self) -> None:
        self.offered: list[list[tuple[str, list[str]]]] = []

    def offer(self, prepared: Sequence[tuple[Part, list[Record]]]) -> None:
        self.offered.append(
            [(part.source_id, [r.headers["event-id"] for r in rs]) for part, rs in prepared]
        )


def test_the_tap_sees_each_prepared_request_once_and_never_a_retry() -> None:
    tap = RecordingTap()
    publisher = MemoryPublisher(fail_ids={"m-1"})
    pipeline = Pipeline(VALIDATOR, MemorySessions(), publisher, TOPICS, FixedClock(), tap=tap)
    good = valid_events()["track_product_viewed"]
    bad, _ = invalid_events()["track_without_event"]
    other = Part("src-2", {}, [copy.deepcopy(valid_events()["identify"])])

    with pytest.raises(PublishIncomplete) as caught:
        pipeline.process(Message.of([part(good, bad), other]))
    pipeline.process(caught.value.retry)

    assert tap.offered == [[("src-1", ["m-1", "m-9"]), ("src-2", ["m-6"])]]
    assert sorted(r.headers["event-id"] for r in publisher.published) == ["m-1", "m-6", "m-9"]


# One event that raises costs no other event of its request anything.


class RaisingValidator(EventValidator):
    """Raises on the event whose messageId it names (or a given error for it)."""

    def __init__(self, message_id: str, error: Exception) -> None:
        super().__init__(FileSchemaRegistry(PROJECT_ROOT / "schemas"))
        self._message_id, self._error = message_id, error

    def validate(self, event: dict[str, Any], plan: TrackingPlan = ALLOW_ALL) -> Verdict:
        if event.get("messageId") == self._message_id:
            raise self._error
        return super().validate(event, plan)


class CityOf:
    """A GeoIP database whose answer for one address is what the test says (raising, or a
    value that cannot be encoded)."""

    def __init__(self, ip: str, city: object) -> None:
        self._ip, self._city = ip, city

    def get(self, ip: str) -> Any:
        if ip != self._ip:
            return None
        if isinstance(self._city, Exception):
            raise self._city
        return {"city": {"names": {"en": self._city}}}


def make_with(
    validator: EventValidator | None = None, enricher: Enricher | None = None
) -> tuple[Pipeline, MemoryPublisher]:
    publisher = MemoryPublisher()
    counter = itertools.count(1)
    pipeline = Pipeline(
        validator or VALIDATOR,
        MemorySessions(),
        publisher,
        TOPICS,
        FixedClock(),
        enricher=enricher,
        new_id=lambda: f"s{next(counter)}",
    )
    return pipeline, publisher


def with_ip(event: dict[str, Any], ip: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event.setdefault("context", {})["ip"] = ip
    return event


def assert_alone_dead_lettered(
    publisher: MemoryPublisher, bad_id: str, error: str, topics: Sequence[str] = ("ev", "dlq", "ev")
) -> dict[str, Any]:
    """The request's records in order, the bad one a processing_failed dead letter naming the
    error; every record encodes. Returns the dead letter's value."""
    assert [r.topic for r in publisher.published] == list(topics)
    dead = next(r for r in publisher.published if r.headers["event-id"] == bad_id)
    assert dead.topic == "dlq"
    assert dead.headers["error-kind"] == "processing_failed"
    assert dead.value["reason"] == "processing_failed"
    assert dead.value["errors"][0]["keyword"] == "processing_failed"
    assert dead.value["errors"][0]["message"].startswith(error)
    for record in publisher.published:
        assert orjson.loads(record.encode_value() or b"null") == orjson.loads(
            orjson.dumps(record.value)
        )
    return dead.value


def test_an_event_that_makes_validation_raise_is_dead_lettered_alone() -> None:
    pipeline, publisher = make_with(RaisingValidator("m-6", RecursionError("too deep")))
    page, identify, product = (
        valid_events()["page"],
        valid_events()["identify"],
        valid_events()["track_product_viewed"],
    )

    outcome = pipeline.process(payload(page, identify, product))

    assert (outcome.published, outcome.dead_lettered) == (2, 1)
    dead = assert_alone_dead_lettered(publisher, "m-6", "RecursionError: too deep")
    assert dead["event"]["messageId"] == "m-6"
    assert "session" not in dead["event"].get("context", {})


def test_a_dependency_down_in_validation_still_fails_the_request_for_a_retry() -> None:
    error = DependencyUnavailable("schema_registry", "down")
    pipeline, publisher = make_with(RaisingValidator("m-6", error))

    with pytest.raises(DependencyUnavailable):
        pipeline.process(payload(valid_events()["page"], valid_events()["identify"]))
    assert publisher.published == []


def test_a_soft_time_limit_in_validation_is_the_tasks_not_the_events() -> None:
    pipeline, publisher = make_with(RaisingValidator("m-6", SoftTimeLimitExceeded()))

    with pytest.raises(SoftTimeLimitExceeded):
        pipeline.process(payload(valid_events()["page"], valid_events()["identify"]))
    assert publisher.published == []


def test_an_event_that_makes_enrichment_raise_is_dead_lettered_alone_with_its_ip_masked() -> None:
    enricher = Enricher(geoip=CityOf("198.51.100.7", RuntimeError("corrupt database node")))
    pipeline, publisher = make_with(enricher=enricher)
    bad = with_ip(valid_events()["identify"], "198.51.100.7")

    pipeline.process(payload(valid_events()["page"], bad, valid_events()["track_product_viewed"]))

    dead = assert_alone_dead_lettered(publisher, "m-6", "RuntimeError: corrupt database node")
    assert dead["event"]["context"]["ip"] == "198.51.100.0"
    good = [r.value for r in publisher.published if r.topic == "ev"]
    assert [e["context"]["session"]["eventIndex"] for e in good] == [1, 1]


def test_an_event_that_makes_clock_correction_raise_is_dead_lettered_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = enrich.correct_clock_skew

    def correct(event: dict[str, Any]) -> None:
        if event.get("messageId") == "m-6":
            raise OverflowError("date value out of range")
        real(event)

    monkeypatch.setattr(enrich, "correct_clock_skew", correct)
    pipeline, publisher = make_with()

    pipeline.process(
        payload(valid_events()["page"], valid_events()["identify"], valid_events()["group"])
    )

    assert_alone_dead_lettered(publisher, "m-6", "OverflowError: date value out of range")


def test_timestamps_at_the_calendars_edges_are_corrected_not_raised() -> None:
    pipeline, publisher = make_with()
    good = valid_events()["page"]
    bad = {
        **valid_events()["identify"],
        "timestamp": "0001-01-01T00:00:00Z",
        "sentAt": "9999-12-31T23:59:59.999Z",
    }
    future = {**valid_events()["group"], "timestamp": "9999-12-31T23:59:59Z"}

    outcome = pipeline.process(payload(good, bad, future))

    assert (outcome.published, outcome.dead_lettered) == (3, 0)
    _, early, late = (r.value for r in publisher.published)
    assert (early["timestamp"], early["originalTimestamp"]) == ("0001-01-01T00:00:00Z",) * 2
    assert late["timestamp"] == late["receivedAt"]
    assert late["originalTimestamp"] == "9999-12-31T23:59:59Z"


def test_an_event_that_cannot_be_encoded_is_dead_lettered_alone_and_its_dead_letter_encodes() -> (
    None
):
    pipeline, publisher = make_with()
    bad = copy.deepcopy(valid_events()["identify"])
    bad["traits"]["points"] = 2**70  # beyond what JSON encoders take
    bad["traits"]["name"] = "Ada \ud800"  # a lone surrogate: not UTF-8

    outcome = pipeline.process(
        payload(valid_events()["page"], bad, valid_events()["track_product_viewed"])
    )

    assert (outcome.published, outcome.dead_lettered) == (2, 1)
    dead = assert_alone_dead_lettered(publisher, "m-6", "TypeError: ")
    assert dead["event"]["traits"]["points"] == str(2**70)
    assert dead["event"]["traits"]["name"] == "Ada ?"


def test_an_event_nested_deeper_than_the_encoder_goes_is_dead_lettered_alone() -> None:
    pipeline, publisher = make_with()
    bad = copy.deepcopy(valid_events()["identify"])
    nested: list[Any] = []
    for _ in range(300):  # the API takes some 900 levels, orjson encodes 255
        nested = [nested]
    bad["traits"]["nested"] = nested

    pipeline.process(payload(valid_events()["page"], bad, valid_events()["track_product_viewed"]))

    dead = assert_alone_dead_lettered(publisher, "m-6", "TypeError: Recursion limit reached")
    assert dead["event"]["messageId"] == "m-6"


def test_an_enriched_value_that_cannot_be_encoded_dead_letters_its_event_alone() -> None:
    enricher = Enricher(geoip=CityOf("198.51.100.7", "Par\udcc3is"))
    pipeline, publisher = make_with(enricher=enricher)
    bad = with_ip(valid_events()["identify"], "198.51.100.7")

    pipeline.process(payload(valid_events()["page"], bad, valid_events()["track_product_viewed"]))

    dead = assert_alone_dead_lettered(publisher, "m-6", "TypeError: str is not valid UTF-8")
    assert dead["event"]["context"]["location"]["city"] == "Par?is"
    assert dead["event"]["context"]["ip"] == "198.51.100.0"


def test_dead_letter_all_encodes_what_cannot_be_encoded() -> None:
    pipeline, publisher = make_with()
    bad = copy.deepcopy(valid_events()["identify"])
    bad["traits"]["points"] = 2**70

    pipeline.dead_letter_all(payload(valid_events()["page"], bad), "poison", "died")

    assert [r.value["reason"] for r in publisher.published] == ["poison", "poison"]
    assert publisher.published[1].value["event"]["traits"]["points"] == str(2**70)
    assert all(orjson.loads(r.encode_value() or b"") for r in publisher.published)


def test_a_prepared_record_encodes_as_a_plain_one_and_a_changed_copy_anew() -> None:
    pipeline, _ = make_with()
    event = valid_events()["track_product_viewed"]

    [[record]] = pipeline.prepare([part(event)])
    framed = replace(record, schema_id=258)
    changed = replace(record, value={"a": 1})

    plain = Record(record.topic, record.key, record.value, record.headers)
    assert record.encode_value() == plain.encode_value()
    assert framed.encode_value() == b"\x00\x00\x00\x01\x02" + (plain.encode_value() or b"")
    assert changed.encode_value() == b'{"a":1}'
    assert Record.from_json(record.to_json()).encode_value() == plain.encode_value()
