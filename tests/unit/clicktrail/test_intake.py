from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from clicktrail.errors import InvalidInput, PayloadTooLarge
from clicktrail.intake import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    nesting_error,
    parse_json,
    read_body,
    stamp,
)
from clicktrail.message import MAX_EVENT_DEPTH, Part, Unencodable


def read(body: Any, call_type: str | None = "track") -> list[dict[str, Any]]:
    return read_body(body, call_type, len(orjson.dumps(body))).events


def test_a_single_call_takes_its_type_from_the_path() -> None:
    [event] = read({"userId": "u", "event": "E"}, "track")

    assert event["type"] == "track"


def test_a_single_call_with_another_type_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        read({"type": "identify", "userId": "u"}, "track")

    assert (caught.value.code, caught.value.field) == ("invalid_type", "type")


def test_the_write_key_is_taken_out_of_the_body_and_its_events() -> None:
    intake = read_body(
        {"writeKey": "k", "batch": [{"type": "track", "userId": "u", "writeKey": "k2"}]}, None, 100
    )

    assert intake.write_key == "k"
    assert "writeKey" not in intake.events[0]


@pytest.mark.parametrize(
    ("event", "code", "field"),
    [
        ({"event": "E"}, "missing_identity", "userId"),
        ({"userId": "", "anonymousId": None}, "missing_identity", "userId"),
        ({"userId": 7}, "invalid_identity", "userId"),
        ({"anonymousId": {"id": 1}}, "invalid_identity", "anonymousId"),
        ({"userId": "u" * 1025}, "invalid_identity", "userId"),
        ({"userId": "u", "messageId": 12}, "invalid_message_id", "messageId"),
        ({"userId": "u", "messageId": "m" * 101}, "invalid_message_id", "messageId"),
    ],
)
def test_identity_and_message_id_checks_name_the_field(
    event: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        read(event)

    assert (caught.value.code, caught.value.field) == (code, field)


def test_either_identity_is_enough() -> None:
    assert read({"anonymousId": "a", "userId": None})
    assert read({"userId": "u"})


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ([], "invalid_body", None),
        ({"batch": "x"}, "invalid_batch", "batch"),
        ({"batch": []}, "invalid_batch", "batch"),
        ({"batch": [3]}, "invalid_event", "batch[0]"),
        ({"batch": [{"userId": "u"}]}, "invalid_type", "batch[0].type"),
        (
            {"batch": [{"type": "track", "userId": "u"}, {"type": "page"}]},
            "missing_identity",
            "batch[1].userId",
        ),
        ({"writeKey": 5, "batch": []}, "invalid_write_key", "writeKey"),
    ],
)
def test_batch_checks_name_the_item(body: Any, code: str, field: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        read(body, None)

    assert (caught.value.code, caught.value.field) == (code, field)


def test_batch_context_integrations_and_sent_at_apply_to_each_call_whose_own_win() -> None:
    events = read(
        {
            "batch": [
                {"type": "track", "userId": "u", "context": {"locale": "fr"}},
                {"type": "page", "userId": "u", "sentAt": "2026-01-01T00:00:00Z"},
            ],
            "context": {"locale": "en", "library": {"name": "lib"}},
            "integrations": {"All": False},
            "sentAt": "2026-02-02T00:00:00Z",
        },
        None,
    )

    assert events[0]["context"] == {"locale": "fr", "library": {"name": "lib"}}
    assert events[1]["context"] == {"locale": "en", "library": {"name": "lib"}}
    assert events[0]["integrations"] == {"All": False}
    assert events[0]["sentAt"] == "2026-02-02T00:00:00Z"
    assert events[1]["sentAt"] == "2026-01-01T00:00:00Z"


def test_size_limits() -> None:
    big = {"userId": "u", "properties": {"x": "y" * MAX_EVENT_BYTES}}
    with pytest.raises(PayloadTooLarge) as single:
        read(big)
    with pytest.raises(PayloadTooLarge) as in_batch:
        read({"batch": [{"type": "track", "userId": "u"}, {**big, "type": "track"}]}, None)
    with pytest.raises(PayloadTooLarge) as count:
        read({"batch": [{"type": "track", "userId": "u"}] * (MAX_BATCH_EVENTS + 1)}, None)

    assert single.value.code == "event_too_large"
    assert in_batch.value.field == "batch[1]"
    assert count.value.code == "batch_too_large"


def test_a_batch_of_many_small_events_may_exceed_one_event_size() -> None:
    body = {"batch": [{"type": "track", "userId": "u", "properties": {"x": "y" * 1000}}] * 100}

    assert len(read(body, None)) == 100


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b'{"a": NaN}', b"[" * 2000 + b"]" * 2000])
def test_unreadable_json_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_json(raw)

    assert caught.value.code == "invalid_json"


def test_stamp_sets_received_at_mints_missing_message_ids_and_fills_the_ip() -> None:
    events: list[dict[str, Any]] = [
        {"userId": "u", "messageId": "keep-me", "context": {"ip": "198.51.100.1"}},
        {"userId": "u", "messageId": ""},
        {"userId": "u", "context": "not an object"},
    ]

    stamp(events, datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC), "192.0.2.10")

    assert [e["receivedAt"] for e in events] == ["2026-03-04T05:06:07.891Z"] * 3
    assert events[0]["messageId"] == "keep-me"
    uuid.UUID(events[1]["messageId"])
    assert events[1]["messageId"] != events[2]["messageId"]
    assert events[0]["context"]["ip"] == "198.51.100.1"
    assert events[1]["context"] == {"ip": "192.0.2.10"}
    assert events[2]["context"] == "not an object"


def test_an_identify_with_its_traits_in_context_alone_gets_them_in_traits() -> None:
    rudderstack = {"type": "identify", "userId": "u", "context": {"traits": {"plan": "pro"}}}
    segment = {"type": "identify", "userId": "u", "traits": {"a": 1}, "context": {"traits": {}}}
    track = {"type": "track", "userId": "u", "event": "E", "context": {"traits": {"b": 2}}}

    stamp([rudderstack, segment, track], datetime(2026, 3, 4, tzinfo=UTC), None)

    assert rudderstack["traits"] == {"plan": "pro"}
    assert rudderstack["context"]["traits"] == {"plan": "pro"}  # as sent, too
    assert segment["traits"] == {"a": 1}
    assert "traits" not in track


@pytest.mark.parametrize(
    "raw",
    [
        b'{"userId": "u", "userId": "v"}',
        b'{"batch": [{"type": "track", "event": "a", "event": "b"}]}',
        b'{"properties": {"a": {"x": 1, "x": 2}}}',
    ],
)
def test_a_repeated_key_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_json(raw)

    assert caught.value.code == "duplicate_key"


@pytest.mark.parametrize(
    "raw",
    [
        # Strings that look like keys, numbers or quotes must not confuse the key count.
        b'{"a": "b\\": 1, \\"a\\": 2", "c": "x:y", "d": ["e", "f"], "g": {"a": 1}}',
        b'{"k": "\\\\", "m": "\\\\\\"", "n": "12345678901234567890123"}',
        b'{"big": 1.5e300, "neg": -9223372036854775808, "max": 9223372036854775807}',
        b'[{"a": 1}, {"a": 1}]',
    ],
)
def test_tricky_but_valid_json_is_accepted(raw: bytes) -> None:
    assert parse_json(raw) == orjson.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"revenue": 9223372036854775808}',
        b'{"revenue": -9223372036854775809}',
        b'{"properties": {"n": 123456789012345678901234567890}}',
    ],
)
def test_integers_beyond_64_bits_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_json(raw)

    assert caught.value.code == "number_too_large"


@pytest.mark.parametrize("name", ["userId", "anonymousId", "previousId"])
def test_identities_longer_than_postgres_can_index_are_refused(name: str) -> None:
    event = {"userId": "u", "type": "alias", name: "\u4e00" * (MAX_ID_CHARS + 1)}

    with pytest.raises(InvalidInput) as caught:
        read_body(event, "alias", 100)

    assert (caught.value.code, caught.value.field) == ("invalid_identity", name)
    assert len(("\u4e00" * MAX_ID_CHARS).encode()) < 2704  # Postgres' btree limit


@pytest.mark.parametrize("name", ["groupId", "event", "name"])
def test_names_longer_than_an_id_are_refused_naming_the_field(name: str) -> None:
    event = {"userId": "u", "type": "group", name: "x" * (MAX_ID_CHARS + 1)}

    with pytest.raises(InvalidInput) as caught:
        read_body({"batch": [{"userId": "u", "type": "track"}, event]}, None, 100)

    assert (caught.value.code, caught.value.field) == ("too_long", f"batch[1].{name}")


def nested(levels: int) -> dict[str, Any]:
    """An event nesting ``levels`` objects and arrays, itself the first."""
    value: Any = 1
    for _ in range(levels - 2):
        value = [value]
    return {"userId": "u", "type": "track", "properties": {"p": value}}


def test_an_event_nesting_within_the_bound_is_encoded_as_orjson_writes_it() -> None:
    part = Part("src", {"tracking_plan": {"mode": "allow"}}, [nested(MAX_EVENT_DEPTH)])

    assert part.encode().json == orjson.dumps(part.to_wire())


def test_an_event_nesting_beyond_the_bound_is_refused_naming_its_field() -> None:
    events = [nested(3), nested(MAX_EVENT_DEPTH + 1)]

    with pytest.raises(Unencodable):
        Part("src", {}, events).encode()
    error = nesting_error(events, batch=True)

    assert (error.code, error.field) == ("too_deep", "batch[1].properties")
    assert nesting_error(events[1:], batch=False).field == "properties"
