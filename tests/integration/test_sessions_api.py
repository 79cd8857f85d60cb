"""The sessions endpoints, with events joining a server-issued session, through the real pipeline."""

from __future__ import annotations

import uuid

import requests

from tests.integration.conftest import ADMIN_TOKEN, SourceUnderTest, TopicNames
from tests.support.infra import KafkaCollector


def test_a_server_issued_session_is_joined_shown_and_ended(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    auth = (source.write_key, "")
    created = requests.post(f"{pipeline}/v1/sessions", auth=auth, timeout=10)
    assert created.status_code == 201, created.text
    session = created.json()
    device, message_id = f"device-{uuid.uuid4().hex[:8]}", f"sess-{uuid.uuid4()}"

    event = {
        "anonymousId": device,
        "messageId": message_id,
        "event": "Opened",
        "context": {"sessionId": session["sessionId"]},
    }
    assert (
        requests.post(f"{pipeline}/v1/track", json=event, auth=auth, timeout=10).status_code == 200
    )
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    shown = requests.get(f"{pipeline}/v1/sessions/{session['sessionId']}", auth=auth, timeout=10)
    ended = requests.delete(f"{pipeline}/v1/sessions/{session['sessionId']}", auth=auth, timeout=10)
    gone = requests.get(f"{pipeline}/v1/sessions/{session['sessionId']}", auth=auth, timeout=10)

    assert session["timeoutSeconds"] > 0
    assert session["eventCount"] == 0
    assert record.value["context"]["session"]["id"] == session["sessionId"]
    assert record.value["context"]["session"]["eventIndex"] == 1
    assert shown.status_code == 200
    assert (shown.json()["anonymousId"], shown.json()["eventCount"], shown.json()["sourceId"]) == (
        device,
        1,
        source.id,
    )
    assert shown.json()["expiresAt"] > shown.json()["lastSeen"]
    assert ended.status_code == 204
    assert gone.status_code == 404
    assert gone.json()["code"] == "session_not_found"


def test_a_session_is_visible_to_its_source_and_operators_only(
    pipeline: str, source: SourceUnderTest, database_url: str, run_id: str
) -> None:
    from clicktrail.db import Database
    from clicktrail.sources import SourceStore, new_write_key

    db = Database(database_url)
    try:
        other_key = new_write_key()
        SourceStore(db, cache_seconds=0).create(f"other-{run_id}-{uuid.uuid4().hex[:4]}", other_key)
    finally:
        db.close()
    session_id = requests.post(
        f"{pipeline}/v1/sessions", auth=(source.write_key, ""), timeout=10
    ).json()["sessionId"]
    url = f"{pipeline}/v1/sessions/{session_id}"

    other = requests.get(url, auth=(other_key, ""), timeout=10)
    anonymous = requests.get(url, timeout=10)
    operator = requests.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    wrong_token = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)

    assert other.status_code == 404
    assert anonymous.status_code == 401
    assert operator.status_code == 200
    assert wrong_token.status_code == 401
    assert wrong_token.json()["code"] == "invalid_admin_token"
