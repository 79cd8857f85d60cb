"""The task message: the formats queued by earlier releases still decode, and what this one writes
is what they wrote (so a worker of either release reads the other's messages)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clicktrail.kafka import Record
from clicktrail.message import MalformedMessage, Message, Part, encode_group
from clicktrail.queue import decode_body, encode_body

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# Written by the release before the message became a type (its ingest_payload and encode_part).
SINGLE = (
    b'{"v":1,"source":{"id":"web","settings":{"mask_ip":true}},"events":[{"type":"track",'
    b'"event":"Signed Up","messageId":"m-1","anonymousId":"a-1","properties":{"plan":"pro"},'
    b'"receivedAt":"2026-12-02T10:00:00.000Z","sentAt":"2026-12-02T10:00:00.000Z",'
    b'"timestamp":"2026-12-02T10:00:00.000Z"}],'
    b'"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
)
OTHER = (
    b'{"v":1,"source":{"id":"app","settings":{}},"events":[{"type":"page","name":"Home",'
    b'"messageId":"m-2","userId":"u-2","receivedAt":"2026-12-02T10:00:01.000Z"}],'
    b'"traceparent":null}'
)
# The whole task body of a group: [args, kwargs, embed], args holding the one payload.
GROUP_BODY = b'[[{"v":2,"parts":[' + SINGLE + b"," + OTHER + b"]}],{},{}]"
# A retry after a failed publish: the records left, instead of the events.
RETRY = (
    b'{"v":1,"source":{"id":"web","settings":{"mask_ip":true}},'
    b'"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",'
    b'"records":[{"topic":"clicktrail.events","key":"a-1","value":{"type":"track",'
    b'"event":"Signed Up","messageId":"m-1","anonymousId":"a-1","properties":{"plan":"pro"},'
    b'"receivedAt":"2026-12-02T10:00:00.000Z","sentAt":"2026-12-02T10:00:00.000Z",'
    b'"timestamp":"2026-12-02T10:00:00.000Z"},"headers":{"event-id":"m-1","event-type":"track",'
    b'"schema":"iglu:x/1-0-0","source-id":"web",'
    b'"traceparent":"00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"},'
    b'"schema_id":null}]}'
)
# A retry after an unexpected error: the count of failures rides along.
FAILED = OTHER[:-1] + b',"failures":2}'


def test_a_queued_part_decodes_to_its_source_events_and_trace() -> None:
    [part] = Message.decode(orjson.loads(SINGLE)).parts

    assert (part.source_id, dict(part.settings)) == ("web", {"mask_ip": True})
    assert [e["messageId"] for e in part.events] == ["m-1"]
    assert part.traceparent == TRACEPARENT
    assert (part.is_retry, part.records, part.failures) == (False, None, 0)


def test_a_queued_group_decodes_from_the_task_body_part_by_part() -> None:
    [[payload], kwargs, _] = decode_body(encode_body(orjson.loads(GROUP_BODY)))
    message = Message.decode(payload)

    assert kwargs == {}
    assert [p.source_id for p in message.parts] == ["web", "app"]
    assert [p.traceparent for p in message.parts] == [TRACEPARENT, None]
    assert message.message_ids() == ["m-1", "m-2"]


def test_a_queued_retry_decodes_to_its_records() -> None:
    [part] = Message.decode(orjson.loads(RETRY)).parts

    assert part.is_retry
    assert part.events == ()
    [record] = part.records or []
    assert (record.topic, record.key, record.schema_id) == ("clicktrail.events", "a-1", None)
    assert record.headers["schema"] == "iglu:x/1-0-0"
    assert record.value is not None
    assert record.value["properties"] == {"plan": "pro"}
    assert part.message_ids() == ["m-1"]


def test_a_queued_failure_count_decodes_and_grows() -> None:
    message = Message.decode(orjson.loads(FAILED))

    assert message.failures == 2
    assert message.failed_again().failures == 3
    assert message.failures == 2  # frozen: the original is untouched


@pytest.mark.parametrize(
    "written", [SINGLE, OTHER, RETRY, FAILED], ids=["one", "two", "retry", "failed"]
)
def test_what_this_release_writes_is_what_the_earlier_one_wrote(written: bytes) -> None:
    payload = orjson.loads(written)

    assert Message.decode(payload).to_wire() == payload


def test_a_part_is_encoded_byte_for_byte_as_before_and_a_group_splices_its_parts() -> None:
    first = Part("web", {"mask_ip": True}, orjson.loads(SINGLE)["events"], TRACEPARENT)
    second = Part("app", {}, orjson.loads(OTHER)["events"])

    assert first.encode().json == SINGLE
    payload, argsrepr = encode_group([first.encode(), second.encode()])
    assert orjson.dumps([[payload], {}, {}]) == GROUP_BODY
    assert argsrepr == "requests=2 items=2 first=(source=web events=1 first=m-1)"
    alone, alone_repr = encode_group([second.encode()])
    assert orjson.dumps(alone) == OTHER
    assert alone_repr == "source=app events=1 first=m-2"


def test_descriptions_name_sizes_and_ids_never_contents() -> None:
    group = Message.decode(orjson.loads(GROUP_BODY)[0][0])
    retry = Message.decode(orjson.loads(RETRY))

    assert group.describe() == "requests=2 items=2 first=(source=web events=1 first=m-1)"
    assert retry.describe() == "source=web records=1 first=m-1"
    assert "Signed Up" not in group.describe() + retry.describe()


def test_a_retry_of_a_part_keeps_its_source_trace_and_failures() -> None:
    part = Part("web", {"mask_ip": True}, [{"messageId": "m-1"}], TRACEPARENT, failures=1)
    record = Record("clicktrail.events", "a-1", {"messageId": "m-1"}, {"event-id": "m-1"})

    retry = part.retrying([record])

    assert (retry.source_id, retry.traceparent, retry.failures) == ("web", TRACEPARENT, 1)
    assert Message.decode(Message.of([retry]).to_wire()) == Message.of([retry])


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"v": 1, "events": []},
        {"v": 1, "source": {"id": ""}, "events": []},
        {"v": 1, "source": {"id": "s"}},
        {"v": 1, "source": {"id": "s"}, "events": {}},
        {"v": 1, "source": {"id": "s", "settings": []}, "events": []},
        {"v": 1, "source": {"id": "s"}, "records": [{"key": "k"}]},
        {"v": 1, "source": {"id": "s"}, "records": ["r"]},
        {"v": 2, "parts": []},
        {"v": 2, "parts": [{"v": 1, "source": {"id": "s"}, "events": []}, "x"]},
    ],
)
def test_a_message_in_no_known_format_is_refused_by_name(payload: Any) -> None:
    with pytest.raises(MalformedMessage):
        Message.decode(payload)
