"""Real Python SDKs from PyPI, Segment's and RudderStack's, pointed at Clicktrail and otherwise
unchanged: every call type, gzip on and off, arrives in Kafka as sent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderStackClient
from segment.analytics import Client as SegmentClient

from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import KafkaCollector

CLIENTS = {"segment": SegmentClient, "rudderstack": RudderStackClient}


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("sdk", list(CLIENTS))
def test_a_python_sdks_calls_arrive_unchanged_in_meaning(
    pipeline: str,
    kafka: KafkaCollector,
    source: SourceUnderTest,
    topics: TopicNames,
    sdk: str,
    gzip: bool,
) -> None:
    errors: list[Exception] = []
    client: Any = CLIENTS[sdk](
        write_key=source.write_key,
        host=pipeline,
        gzip=gzip,
        sync_mode=True,
        on_error=lambda e, _: errors.append(e),
    )
    user = f"sdk-{sdk}-{uuid.uuid4().hex[:8]}"

    calls = {
        "track": client.track(user, "Product Viewed", {"product_id": "sku-9", "price": 4.5}),
        "identify": client.identify(user, {"email": "sdk@example.com"}),
        "page": client.page(user, category="Docs", name="Install"),
        "screen": client.screen(user, name="Home"),
        "group": client.group(user, "team-1", {"name": "Team"}),
        "alias": client.alias("earlier-id", user),
        "anonymous": client.track(event="Browsed", anonymous_id=f"{user}-anon"),
    }

    assert errors == []
    assert all(ok for ok, _ in calls.values())
    ids = {kind: msg["messageId"] for kind, (_, msg) in calls.items()}
    got = kafka.wait_for(ids.values(), topic=topics.events)
    events = {kind: got[ids[kind]][0].value for kind in ids}
    assert events["track"]["event"] == "Product Viewed"
    assert events["track"]["properties"] == {"product_id": "sku-9", "price": 4.5}
    assert events["track"]["context"]["library"]["name"] == "analytics-python"
    assert events["identify"]["traits"] == {"email": "sdk@example.com"}
    assert (events["page"]["category"], events["page"]["name"]) == ("Docs", "Install")
    assert events["screen"]["name"] == "Home"
    assert events["group"]["groupId"] == "team-1"
    assert (events["alias"]["previousId"], events["alias"]["userId"]) == ("earlier-id", user)
    assert events["anonymous"]["anonymousId"] == f"{user}-anon"
    for kind, event in events.items():
        assert event["type"] == ("track" if kind == "anonymous" else kind)
        assert event["sentAt"]
        assert event["originalTimestamp"] == calls[kind][1]["timestamp"]
        assert event["context"]["session"]["id"]
        if kind != "anonymous":
            assert event["userId"] == user
