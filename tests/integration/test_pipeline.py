"""End to end: HTTP request -> Redis queue -> Celery worker process -> Kafka, read back."""

from __future__ import annotations

import copy
import gzip
import hmac
import time
import uuid
from datetime import datetime, timedelta

import orjson
import pytest
import requests

from clicktrail.db import Database
from clicktrail.sources import SourceStore, new_write_key
from tests.integration.conftest import (
    PSEUDONYMIZATION_KEY,
    SESSION_TIMEOUT,
    SourceUnderTest,
    TopicNames,
)
from tests.support.data import valid_events
from tests.support.infra import KafkaCollector

CALLS = {
    "track": {"event": "Signed Up", "properties": {"plan": "pro"}},
    "page": {"name": "Home", "properties": {"path": "/"}},
    "screen": {"name": "Settings"},
    "identify": {"traits": {"email": "ada@example.com"}},
    "group": {"groupId": "acme", "traits": {"name": "Acme"}},
    "alias": {"previousId": "anon-before"},
}


def mid() -> str:
    return f"test-{uuid.uuid4()}"


def post(
    base: str, path: str, body: object, key: str | None, **kwargs: object
) -> requests.Response:
    auth = (key, "") if key is not None else None
    return requests.post(f"{base}{path}", json=body, auth=auth, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("call_type", list(CALLS))
def test_each_call_type_arrives_in_kafka_enriched(
    pipeline: str,
    kafka: KafkaCollector,
    source: SourceUnderTest,
    topics: TopicNames,
    call_type: str,
) -> None:
    message_id, user = mid(), f"user-{uuid.uuid4().hex[:8]}"
    body = {
        "userId": user,
        "anonymousId": f"anon-{user}",
        "messageId": message_id,
        **CALLS[call_type],
    }

    response = post(pipeline, f"/v1/{call_type}", body, source.write_key)

    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    assert record.key == user
    assert record.headers["event-id"] == message_id
    assert record.headers["event-type"] == call_type
    assert record.headers["schema"] == (
        f"traits/{call_type}/1-0-0"
        if call_type in ("identify", "group")
        else f"calls/{call_type}/1-0-1"
    )
    assert record.headers["source-id"] == source.id
    assert record.headers["traceparent"].startswith("00-")
    event = record.value
    assert event["type"] == call_type
    for name, value in CALLS[call_type].items():
        assert event[name] == value
    assert event["context"]["session"]["eventIndex"] >= 1
    assert set(event["context"]["session"]) == {"id", "index", "eventIndex", "startedAt"}
    assert datetime.fromisoformat(event["receivedAt"]) <= datetime.fromisoformat(
        event["timestamp"]
    ) + timedelta(seconds=1)
    assert not kafka.records(message_id)[1:], "published more than once"


def test_track_with_an_event_schema_names_it_and_keeps_the_caller_trace(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    message_id = mid()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    body = {
        "userId": "u-schema",
        "messageId": message_id,
        "event": "Product Viewed",
        "properties": {"product_id": "sku-1", "price": 9.5, "currency": "EUR"},
    }

    response = post(
        pipeline, "/v1/track", body, source.write_key, headers={"traceparent": traceparent}
    )

    assert response.status_code == 200
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    assert record.headers["schema"] == "events/product_viewed/2-0-0"
    # The caller's trace continues: same trace id, the span of the Kafka produce under it.
    version, trace_id, span_id, flags = record.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id != "b7ad6b7169203331"


def test_server_stamps_message_id_received_at_corrects_skew_and_masks_ip(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    marker = uuid.uuid4().hex
    # The client's clock is a day behind: its timestamp is 10 s before its sentAt.
    body = {
        "writeKey": source.write_key,
        "anonymousId": f"skew-{marker}",
        "event": "Clock Tested",
        "properties": {"marker": marker},
        "timestamp": "2020-01-01T00:00:00.000Z",
        "sentAt": "2020-01-01T00:00:10.000Z",
        "context": {"ip": "203.0.113.77"},
    }

    response = post(pipeline, "/v1/track", body, key=None)

    assert response.status_code == 200
    record = wait_for_marker(kafka, topics.events, marker)
    event = record.value
    assert event["messageId"] == record.headers["event-id"]
    uuid.UUID(event["messageId"])
    received = datetime.fromisoformat(event["receivedAt"])
    assert abs(datetime.now(received.tzinfo) - received) < timedelta(minutes=1)
    assert datetime.fromisoformat(event["timestamp"]) == received - timedelta(seconds=10)
    assert event["originalTimestamp"] == "2020-01-01T00:00:00.000Z"
    assert event["sentAt"] == "2020-01-01T00:00:10.000Z"
    assert event["context"]["ip"] == "203.0.113.0"
    assert "writeKey" not in event


def wait_for_marker(kafka: KafkaCollector, topic: str, marker: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(kafka.messages):
            if message.topic == topic and orjson.dumps(message.value).find(marker.encode()) >= 0:
                return message
        time.sleep(0.1)
    raise AssertionError(f"no record with {marker} in {topic}")


def test_batch_splits_valid_and_invalid_events_one_dead_letter_each(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    ids = [mid() for _ in range(4)]
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "b1",
                "messageId": ids[0],
                "event": "Order Completed",
                "properties": {"order_id": "o-1", "currency": "EUR", "total": 12.5},
            },
            {
                "type": "track",
                "userId": "b1",
                "messageId": ids[1],
                "event": "Order Completed",
                "properties": {"total": "twelve"},
            },
            {"type": "identify", "userId": "b2", "messageId": ids[2], "traits": {"plan": "free"}},
            {"type": "alias", "anonymousId": "b3", "messageId": ids[3], "previousId": "old"},
        ],
        "context": {"library": {"name": "analytics-test", "version": "1.0"}},
        "sentAt": datetime.now().astimezone().isoformat(),
    }

    response = post(pipeline, "/v1/batch", batch, source.write_key)

    assert response.status_code == 200, response.text
    good = kafka.wait_for([ids[0], ids[2]], topic=topics.events)
    assert good[ids[0]][0].value["context"]["library"]["name"] == "analytics-test"
    bad = kafka.wait_for([ids[1], ids[3]], topic=topics.deadletter)
    order = bad[ids[1]][0].value
    assert order["reason"] == "schema_validation"
    assert order["schema"] == "events/order_completed/2-0-0"
    assert order["event"]["messageId"] == ids[1]
    assert {(e["path"], e["keyword"]) for e in order["errors"]} == {
        ("/properties/order_id", "required"),
        ("/properties/currency", "required"),
        ("/properties/total", "type"),
    }
    alias = bad[ids[3]][0].value
    assert [(e["path"], e["keyword"]) for e in alias["errors"]] == [("/userId", "required")]
    assert bad[ids[3]][0].headers["error-kind"] == "schema_validation"
    for valid in (ids[0], ids[2]):
        assert all(m.topic == topics.events for m in kafka.records(valid))
    for invalid in (ids[1], ids[3]):
        assert all(m.topic == topics.deadletter for m in kafka.records(invalid))


def test_rudderstacks_anonymous_event_shape_flows_unchanged(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    """RudderStack's JavaScript SDK: an empty userId beside the anonymousId, a numeric
    context.sessionId of its own."""
    event = copy.deepcopy(valid_events()["track_rudderstack_anonymous"])
    del event["receivedAt"]
    device = f"rs-{uuid.uuid4()}"
    event.update(messageId=mid(), anonymousId=device)
    first = copy.deepcopy(event)
    second = {**copy.deepcopy(event), "messageId": mid()}

    for body in (first, second):
        assert post(pipeline, "/v1/track", body, source.write_key).status_code == 200
    got = kafka.wait_for([first["messageId"], second["messageId"]], topic=topics.events)
    one, two = (got[e["messageId"]][0] for e in (first, second))

    assert one.key == device
    assert one.headers["schema"] == "calls/track/1-0-1"
    assert (one.value["userId"], one.value["anonymousId"]) == ("", device)
    assert one.value["context"]["sessionId"] == event["context"]["sessionId"]
    assert one.value["properties"] == event["properties"]
    assert one.value["context"]["session"]["id"] == two.value["context"]["session"]["id"]
    assert [r.topic for r in kafka.records(first["messageId"])] == [topics.events]


def test_two_events_share_a_session_which_ends_after_the_timeout(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    device = f"device-{uuid.uuid4().hex[:8]}"
    first, second, later = mid(), mid(), mid()

    for message_id in (first, second):
        body = {"anonymousId": device, "messageId": message_id, "event": "Clicked"}
        assert post(pipeline, "/v1/track", body, source.write_key).status_code == 200
    got = kafka.wait_for([first, second], topic=topics.events)
    one, two = got[first][0].value["context"]["session"], got[second][0].value["context"]["session"]
    time.sleep(SESSION_TIMEOUT + 1.5)
    body = {"anonymousId": device, "messageId": later, "event": "Came Back"}
    assert post(pipeline, "/v1/track", body, source.write_key).status_code == 200
    three = kafka.wait_for([later], topic=topics.events)[later][0].value["context"]["session"]

    assert one["id"] == two["id"]
    assert sorted([one["eventIndex"], two["eventIndex"]]) == [1, 2]
    assert one["index"] == two["index"] == 1
    assert three["id"] != one["id"]
    assert three["index"] == 2
    assert three["eventIndex"] == 1


BIG = "x" * (33 * 1024)
GOOD = {"type": "track", "userId": "u", "event": "E"}


@pytest.mark.parametrize(
    ("path", "raw", "headers", "status", "code", "field"),
    [
        ("/v1/track", b'{"userId": "u", "event": "Trunc', {}, 400, "invalid_json", None),
        ("/v1/track", b'["an", "array"]', {}, 400, "invalid_body", None),
        (
            "/v1/track",
            b'{"type": "page", "userId": "u", "event": "E"}',
            {},
            400,
            "invalid_type",
            "type",
        ),
        ("/v1/track", b'{"userId": 42, "event": "E"}', {}, 400, "invalid_identity", "userId"),
        ("/v1/track", b'{"event": "E", "properties": {}}', {}, 400, "missing_identity", "userId"),
        ("/v1/batch", b'{"batch": {"type": "track"}}', {}, 400, "invalid_batch", "batch"),
        (
            "/v1/batch",
            orjson.dumps({"batch": [GOOD, {"type": "hover", "userId": "u"}]}),
            {},
            400,
            "invalid_type",
            "batch[1].type",
        ),
        (
            "/v1/batch",
            orjson.dumps({"batch": [GOOD, {"type": "track", "event": "E"}]}),
            {},
            400,
            "missing_identity",
            "batch[1].userId",
        ),
        (
            "/v1/track",
            orjson.dumps({"userId": "u", "event": "E", "properties": {"blob": BIG}}),
            {},
            413,
            "event_too_large",
            None,
        ),
        (
            "/v1/batch",
            orjson.dumps(
                {
                    "batch": [
                        {"type": "track", "userId": "u", "event": "E", "properties": {"blob": BIG}}
                    ]
                }
            ),
            {},
            413,
            "event_too_large",
            "batch[0]",
        ),
        (
            "/v1/batch",
            orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2501}),
            {},
            413,
            "batch_too_large",
            "batch",
        ),
        (
            "/v1/batch",
            orjson.dumps(
                {
                    "batch": [
                        {
                            "type": "track",
                            "userId": "u",
                            "event": "E",
                            "properties": {"b": "y" * 30000},
                        }
                    ]
                    * 18
                }
            ),
            {},
            413,
            "request_too_large",
            None,
        ),
        ("/v1/track", b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "invalid_gzip", None),
    ],
    ids=[
        "truncated-json",
        "not-an-object",
        "wrong-type",
        "user-id-not-string",
        "no-identity",
        "batch-not-array",
        "batch-unknown-type",
        "batch-item-no-identity",
        "event-over-32k",
        "batch-event-over-32k",
        "batch-over-2500",
        "request-over-500k",
        "bad-gzip",
    ],
)
def test_bad_input_is_rejected_with_a_named_error(
    pipeline: str,
    source: SourceUnderTest,
    path: str,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = requests.post(
        f"{pipeline}{path}",
        data=raw,
        auth=(source.write_key, ""),
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )

    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert body["message"]
    assert body.get("field") == field


@pytest.mark.parametrize(
    ("auth", "body_key", "code"),
    [
        (None, None, "missing_write_key"),
        (("not-a-key", ""), None, "invalid_write_key"),
        (None, "not-a-key", "invalid_write_key"),
    ],
    ids=["no-key", "wrong-basic-key", "wrong-body-key"],
)
def test_wrong_or_missing_write_key_is_401(
    pipeline: str, auth: tuple[str, str] | None, body_key: str | None, code: str
) -> None:
    body: dict[str, object] = {"userId": "u", "event": "E"}
    if body_key:
        body["writeKey"] = body_key
    response = requests.post(f"{pipeline}/v1/track", json=body, auth=auth, timeout=10)

    assert response.status_code == 401
    assert response.json()["code"] == code


def test_rejected_requests_enqueue_nothing(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    rejected = [mid() for _ in range(4)]
    bodies = [
        ({"messageId": rejected[0], "event": "No Identity"}, source.write_key),
        ({"userId": "u", "messageId": rejected[1], "event": "Wrong Key"}, "wrong-key"),
        (
            {"userId": "u", "messageId": rejected[2], "type": "page", "event": "Wrong Type"},
            source.write_key,
        ),
        (
            {
                "batch": [
                    {"type": "track", "userId": "u", "messageId": rejected[3], "event": "E"},
                    {"type": "track"},
                ]
            },
            source.write_key,
        ),
    ]
    for body, key in bodies:
        path = "/v1/batch" if "batch" in body else "/v1/track"
        assert post(pipeline, path, body, key).status_code in (400, 401)
    sentinel = mid()
    assert (
        post(
            pipeline,
            "/v1/track",
            {"userId": "u", "messageId": sentinel, "event": "After"},
            source.write_key,
        ).status_code
        == 200
    )

    kafka.wait_for([sentinel], topic=topics.events)
    time.sleep(1)  # the worker handles requests in order; give any stray one a moment more
    assert [m for m in rejected if kafka.records(m)] == []


def test_gzip_body_is_accepted(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    message_id = mid()
    raw = gzip.compress(
        orjson.dumps(
            {
                "batch": [
                    {"type": "track", "userId": "gz", "messageId": message_id, "event": "Zipped"}
                ]
            }
        )
    )

    response = requests.post(
        f"{pipeline}/v1/import",
        data=raw,
        auth=(source.write_key, ""),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=10,
    )

    assert response.status_code == 200, response.text
    assert (
        kafka.wait_for([message_id], topic=topics.events)[message_id][0].value["event"] == "Zipped"
    )


def test_gzip_bomb_is_refused(pipeline: str, source: SourceUnderTest) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * (20 * 1024 * 1024) + b"]}")

    response = requests.post(
        f"{pipeline}/v1/batch",
        data=bomb,
        auth=(source.write_key, ""),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=10,
    )

    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def test_a_resent_message_id_reaches_kafka_once(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    repeated, marker = mid(), mid()
    event = {"type": "track", "userId": "u-dup", "event": "Signed Up", "messageId": repeated}
    assert post(pipeline, "/v1/track", event, source.write_key).status_code == 200
    kafka.wait_for([repeated], topic=topics.events)

    # A client retrying a request whose answer it never got, with something new in the batch.
    batch = {"batch": [event, {**event, "messageId": marker}]}
    assert post(pipeline, "/v1/batch", batch, source.write_key).status_code == 200
    kafka.wait_for([marker], topic=topics.events)  # processed after the repeat: same partition

    assert len(kafka.records(repeated)) == 1


def test_a_sources_pseudonymised_fields_never_reach_kafka(
    pipeline: str, kafka: KafkaCollector, database_url: str, topics: TopicNames
) -> None:
    db = Database(database_url)
    try:
        key = new_write_key()
        SourceStore(db, cache_seconds=0).create(
            f"pseudo-{uuid.uuid4().hex[:8]}", key, {"pseudonymize": ["properties.email", "userId"]}
        )
    finally:
        db.close()
    message_id = mid()
    body = {"userId": "ada", "event": "Signed Up", "messageId": message_id,
            "properties": {"email": "ada@example.com", "plan": "pro"}}  # fmt: skip

    assert post(pipeline, "/v1/track", body, key).status_code == 200

    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]

    def pseudonym(value: str) -> str:
        return (
            "hmac:" + hmac.new(PSEUDONYMIZATION_KEY.encode(), value.encode(), "sha256").hexdigest()
        )

    assert record.value["properties"] == {"email": pseudonym("ada@example.com"), "plan": "pro"}
    assert record.value["userId"] == pseudonym("ada")
    assert record.key == pseudonym("ada")  # the partition key too: the raw id never leaves
    assert b"ada@example.com" not in (record.raw or b"")


def test_dates_at_the_calendars_edges_cost_their_batch_nothing(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    """A timestamp of year 1 sent in year 9999, and one stamped 9999: corrected, and the batch
    flows at once (no retries, no dead letters)."""
    good, edges, future = (mid() for _ in range(3))
    batch = {
        "batch": [
            {"type": "track", "userId": "w1", "messageId": good, "event": "Clock Tested"},
            {
                "type": "track",
                "userId": "w1",
                "messageId": edges,
                "event": "Clock Tested",
                "timestamp": "0001-01-01T00:00:00Z",
                "sentAt": "9999-12-31T23:59:59.999Z",
            },
            {
                "type": "identify",
                "userId": "w1",
                "messageId": future,
                "timestamp": "9999-12-31T23:59:59Z",
            },
        ],
    }
    started = time.monotonic()

    response = post(pipeline, "/v1/batch", batch, source.write_key)

    assert response.status_code == 200, response.text
    published = kafka.wait_for([good, edges, future], topic=topics.events, timeout=20)
    assert time.monotonic() - started < 15  # no retries: a retry waits seconds
    corrected = published[edges][0].value
    assert corrected["timestamp"] == "0001-01-01T00:00:00Z"
    assert corrected["originalTimestamp"] == "0001-01-01T00:00:00Z"
    clamped = published[future][0].value
    assert clamped["timestamp"] == clamped["receivedAt"]
    assert clamped["originalTimestamp"] == "9999-12-31T23:59:59Z"
    for sent in (good, edges, future):
        assert all(m.topic == topics.events for m in kafka.records(sent))
