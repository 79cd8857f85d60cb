"""The API's edge behaviour with twins for the queue and the source store."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from flask.testing import FlaskClient

from clicktrail.sources import Source
from tests.support.twins import MemorySources, RecordingEnqueuer
from tests.support.web import basic, twin_app, twin_services

KEY = "wk-test"
SOURCE = Source("src-1", "web", {"anonymize_ip": True})


def client_for(enqueuer: RecordingEnqueuer, sources: MemorySources | None = None) -> FlaskClient:
    return twin_app(twin_services(sources or MemorySources({KEY: SOURCE}), enqueuer)).test_client()


@pytest.fixture
def queue() -> RecordingEnqueuer:
    return RecordingEnqueuer()


@pytest.fixture
def client(queue: RecordingEnqueuer) -> FlaskClient:
    return client_for(queue)


def test_an_accepted_event_is_enqueued_stamped_with_its_source(
    client: FlaskClient, queue: RecordingEnqueuer
) -> None:
    response = client.post(
        "/v1/track",
        json={"userId": "u", "event": "E"},
        headers={
            **basic(KEY),
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )

    assert response.status_code == 200
    assert response.json == {"success": True}
    [part] = queue.parts
    assert (part.source_id, part.settings) == ("src-1", {"anonymize_ip": True})
    # The request's span continues the caller's trace.
    assert part.traceparent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert part.traceparent.split("-")[2] != "b7ad6b7169203331"
    [event] = part.events
    assert event["type"] == "track"
    assert event["receivedAt"] == "2026-06-01T12:00:00.000Z"
    assert event["messageId"]
    assert event["context"] == {"ip": "192.0.2.7"}


def test_a_batch_is_one_message(client: FlaskClient, queue: RecordingEnqueuer) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "E"},
            {"type": "page", "anonymousId": "a"},
        ]
    }

    for path in ("/v1/batch", "/v1/import"):
        assert client.post(path, json=batch, headers=basic(KEY)).status_code == 200

    assert [len(p.events) for p in queue.parts] == [2, 2]


def test_the_write_key_may_come_in_the_body_and_is_not_kept(
    client: FlaskClient, queue: RecordingEnqueuer
) -> None:
    response = client.post("/v1/identify", json={"writeKey": KEY, "userId": "u", "traits": {}})

    assert response.status_code == 200
    assert KEY not in orjson.dumps([p.to_wire() for p in queue.parts]).decode()


def test_a_malformed_traceparent_starts_a_new_trace(
    client: FlaskClient, queue: RecordingEnqueuer
) -> None:
    client.post(
        "/v1/track",
        json={"userId": "u", "event": "E"},
        headers={**basic(KEY), "traceparent": "garbage"},
    )

    traceparent = queue.parts[0].traceparent
    assert traceparent != "garbage"
    assert len(traceparent.split("-")[1]) == 32


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, {"userId": "u", "event": "E"}, 401, "missing_write_key"),
        (basic("nope"), {"userId": "u", "event": "E"}, 401, "invalid_write_key"),
        (basic("nope"), {"writeKey": KEY, "userId": "u", "event": "E"}, 401, "invalid_write_key"),
        (
            {"Authorization": "Bearer " + KEY},
            {"userId": "u", "event": "E"},
            401,
            "missing_write_key",
        ),
        (basic(KEY), {"event": "E"}, 400, "missing_identity"),
    ],
)
def test_rejected_requests_enqueue_nothing(
    client: FlaskClient,
    queue: RecordingEnqueuer,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = client.post("/v1/track", json=body, headers=headers)

    assert response.status_code == status
    assert response.json is not None
    assert response.json["code"] == code
    assert queue.parts == []


def test_a_down_queue_is_503_with_retry_after() -> None:
    client = client_for(RecordingEnqueuer(down=True))

    response = client.post("/v1/track", json={"userId": "u", "event": "E"}, headers=basic(KEY))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json is not None
    assert response.json["code"] == "unavailable"


def test_a_down_source_store_is_503(queue: RecordingEnqueuer) -> None:
    client = client_for(queue, MemorySources({}, down=True))

    response = client.post("/v1/track", json={"userId": "u", "event": "E"}, headers=basic(KEY))

    assert response.status_code == 503
    assert queue.parts == []


def test_gzip_is_inflated_and_other_encodings_refused(
    client: FlaskClient, queue: RecordingEnqueuer
) -> None:
    raw = gzip.compress(orjson.dumps({"userId": "u", "event": "Zipped"}))
    headers = {**basic(KEY), "Content-Type": "application/json"}

    zipped = client.post("/v1/track", data=raw, headers={**headers, "Content-Encoding": "gzip"})
    brotli = client.post("/v1/track", data=raw, headers={**headers, "Content-Encoding": "br"})
    truncated = client.post(
        "/v1/track", data=raw[:-6], headers={**headers, "Content-Encoding": "gzip"}
    )

    assert zipped.status_code == 200
    assert queue.parts[0].events[0]["event"] == "Zipped"
    assert (brotli.status_code, brotli.json["code"]) == (415, "unsupported_encoding")  # type: ignore[index]
    assert (truncated.status_code, truncated.json["code"]) == (400, "invalid_gzip")  # type: ignore[index]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain;charset=UTF-8",  # navigator.sendBeacon
        "application/x-www-form-urlencoded",  # RudderStack's Node.js SDK, gzipped or not
        "application/octet-stream",
        None,
    ],
)
def test_the_body_is_json_whatever_its_content_type(
    client: FlaskClient, queue: RecordingEnqueuer, content_type: str | None
) -> None:
    headers = {**basic(KEY), "Content-Encoding": "gzip"}
    if content_type:
        headers["Content-Type"] = content_type
    raw = gzip.compress(orjson.dumps({"batch": [{"userId": "u", "event": "E", "type": "track"}]}))

    response = client.post("/v1/batch", data=raw, headers=headers)

    assert response.status_code == 200, response.json
    assert queue.parts[0].events[0]["event"] == "E"


def test_a_form_is_not_json(client: FlaskClient, queue: RecordingEnqueuer) -> None:
    response = client.post(
        "/v1/track",
        data="userId=u&event=E",
        headers={**basic(KEY), "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert (response.status_code, response.json["code"]) == (400, "invalid_json")  # type: ignore[index]
    assert queue.parts == []


def test_unknown_paths_and_methods_answer_json(client: FlaskClient) -> None:
    missing = client.post("/v1/hover", json={}, headers=basic(KEY))
    wrong_method = client.get("/v1/track")

    assert (missing.status_code, missing.json["code"]) == (404, "not_found")  # type: ignore[index]
    assert (wrong_method.status_code, wrong_method.json["code"]) == (405, "method_not_allowed")  # type: ignore[index]


def test_livez_calls_no_dependency() -> None:
    client = client_for(RecordingEnqueuer(down=True), MemorySources({}, down=True))

    assert client.get("/livez").status_code == 200


def test_readyz_reports_each_check() -> None:
    def broken() -> None:
        raise ConnectionError("refused")

    services = twin_services(checks={"redis": lambda: None, "kafka": broken})
    client = twin_app(services).test_client()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json == {
        "status": "unavailable",
        "checks": {
            "redis": {"status": "ok"},
            "kafka": {"status": "down", "error": "ConnectionError: refused"},
        },
    }


def test_readyz_for_intake_runs_only_what_taking_events_needs() -> None:
    ran: list[str] = []

    def check(name: str) -> Callable[[], None]:
        return lambda: ran.append(name)

    names = ("redis", "queue", "postgres", "kafka", "schema_registry", "workers")
    client = twin_app(twin_services(checks={n: check(n) for n in names})).test_client()

    intake = client.get("/readyz?scope=intake")
    unknown = client.get("/readyz?scope=kafka")

    assert intake.status_code == 200
    assert sorted(ran) == ["postgres", "queue", "redis"]
    assert set(intake.json["checks"]) == {"redis", "queue", "postgres"}  # type: ignore[index]
    assert (unknown.status_code, unknown.json["field"]) == (400, "scope")  # type: ignore[index]


def test_validate_answers_every_error_and_queues_nothing(
    client: FlaskClient, queue: RecordingEnqueuer
) -> None:
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "Product Viewed",
                "properties": {"product_id": "p", "price": 1},
            },
            {
                "type": "track",
                "userId": "u",
                "event": "Order Completed",
                "properties": {"total": "9"},
            },
        ]
    }

    response = client.post("/v1/validate", json=batch, headers=basic(KEY))

    assert response.status_code == 200
    body = response.json
    assert body is not None
    assert body["valid"] is False
    good, bad = body["results"]
    assert (good["valid"], good["schema"], good["errors"]) == (
        True,
        "events/product_viewed/2-0-0",
        [],
    )
    assert bad["reason"] == "schema_validation"
    assert {(e["path"], e["keyword"]) for e in bad["errors"]} == {
        ("/properties/order_id", "required"),
        ("/properties/currency", "required"),
        ("/properties/total", "type"),
    }
    assert all(e["schema"] == "events/order_completed/2-0-0" for e in bad["errors"])
    assert queue.parts == []


def test_validate_takes_one_event_naming_its_type(client: FlaskClient) -> None:
    one = client.post(
        "/v1/validate",
        json={"type": "page", "anonymousId": "a", "name": "Home"},
        headers=basic(KEY),
    )
    untyped = client.post("/v1/validate", json={"anonymousId": "a"}, headers=basic(KEY))
    unauthorised = client.post("/v1/validate", json={"type": "page", "anonymousId": "a"})

    assert one.status_code == 200
    assert one.json is not None
    assert one.json["valid"] is True
    assert one.json["results"][0]["schema"] == "calls/page/1-0-1"
    assert (untyped.status_code, untyped.json["code"]) == (400, "invalid_type")  # type: ignore[index]
    assert unauthorised.status_code == 401


def test_validate_applies_the_source_tracking_plan(queue: RecordingEnqueuer) -> None:
    planned = Source(
        "src-2", "app", {"tracking_plan": {"events": ["Product Viewed"], "unplanned": "deadletter"}}
    )
    client = client_for(queue, MemorySources({KEY: planned}))

    response = client.post(
        "/v1/validate",
        json={"type": "track", "userId": "u", "event": "Signed Up"},
        headers=basic(KEY),
    )

    assert response.json is not None
    [result] = response.json["results"]
    assert (result["valid"], result["reason"]) == (False, "unplanned")
    assert result["errors"][0]["keyword"] == "trackingPlan"


@pytest.mark.parametrize(
    ("path", "call_type"),
    [("/v1/t", "track"), ("/v1/p", "page"), ("/v1/s", "screen"), ("/v1/i", "identify"),
     ("/v1/g", "group"), ("/v1/a", "alias")],
)  # fmt: skip
def test_segments_short_paths_are_the_calls_they_stand_for(
    client: FlaskClient, queue: RecordingEnqueuer, path: str, call_type: str
) -> None:
    # What Segment's browser library sends: text/plain (no preflight for the type) and the key
    # in the body as well as in the Authorization header.
    body = {"type": call_type, "anonymousId": "a-1", "writeKey": KEY}

    response = client.post(
        path, data=orjson.dumps(body), headers={**basic(KEY), "Content-Type": "text/plain"}
    )

    assert response.status_code == 200, response.json
    [part] = queue.parts
    [event] = part.events
    assert event["type"] == call_type
    assert "writeKey" not in event


def test_the_short_batch_path_is_a_batch_and_a_short_path_checks_the_type(
    client: FlaskClient, queue: RecordingEnqueuer
) -> None:
    batch = {"batch": [{"type": "page", "anonymousId": "a"}, {"type": "track", "userId": "u",
             "event": "E"}], "writeKey": KEY}  # fmt: skip

    accepted = client.post("/v1/b", json=batch)
    mismatched = client.post("/v1/t", json={"type": "page", "userId": "u"}, headers=basic(KEY))

    assert accepted.status_code == 200
    assert [e["type"] for e in queue.parts[0].events] == ["page", "track"]
    assert (mismatched.status_code, mismatched.json["field"]) == (400, "type")


def test_validate_refuses_an_event_nested_too_deep_naming_the_field(client: FlaskClient) -> None:
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    event = {"type": "track", "userId": "u", "event": "E", "properties": {"p": deep}}

    single = client.post("/v1/validate", json=event, headers=basic(KEY))
    batch = client.post("/v1/validate", json={"batch": [event]}, headers=basic(KEY))

    assert (single.status_code, single.json["code"], single.json["field"]) == (  # type: ignore[index]
        400,
        "too_deep",
        "properties",
    )
    assert batch.json["field"] == "batch[0].properties"  # type: ignore[index]


def test_validate_answers_a_schemaver_of_thousands_of_digits_as_an_invalid_event(
    client: FlaskClient,
) -> None:
    event = {
        "type": "track",
        "userId": "u",
        "event": "Product Viewed",
        "context": {"schema": "product_viewed/1-0-" + "9" * 5000},
    }

    response = client.post("/v1/validate", json=event, headers=basic(KEY))

    assert response.status_code == 200
    assert response.json is not None
    assert response.json["valid"] is False
    assert response.json["results"][0]["errors"][0]["path"] == "/context/schema"


class RefusingSessions:
    """Sessions whose Redis refuses: read-only after a failover, or out of memory."""

    timeout_seconds = 1800

    def __init__(self, error: Exception) -> None:
        self.error = error

    def create(self, *_: Any) -> Any:
        raise self.error

    def get(self, *_: Any) -> Any:
        raise self.error

    def end(self, *_: Any) -> bool:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.ResponseError("Error running script"),
    ],
    ids=["read-only", "out-of-memory", "script-error"],
)
def test_any_error_redis_answers_is_a_503_with_retry_after(error: Exception) -> None:
    sources = MemorySources({KEY: SOURCE})
    api = twin_app(twin_services(sources, sessions=RefusingSessions(error))).test_client()

    created = api.post("/v1/sessions", headers=basic(KEY))
    shown = api.get("/v1/sessions/abc", headers=basic(KEY))

    for response in (created, shown):
        assert (response.status_code, response.json["code"]) == (503, "unavailable")  # type: ignore[index]
        assert response.headers["Retry-After"]
