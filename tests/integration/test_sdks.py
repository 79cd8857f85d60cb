"""A real Segment SDK from PyPI, pointed at Clicktrail, unchanged: its calls arrive in Kafka."""

from __future__ import annotations

import uuid

import pytest
from segment.analytics import Client

from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import KafkaCollector


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_analytics_python_calls_arrive_unchanged_in_meaning(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames, gzip: bool
) -> None:
    errors: list[Exception] = []
    client = Client(
        write_key=source.write_key,
        host=pipeline,
        gzip=gzip,
        sync_mode=True,
        on_error=lambda e, _: errors.append(e),
    )
    user = f"sdk-{uuid.uuid4().hex[:8]}"

    calls = {
        "track": client.track(user, "Product Viewed", {"product_id": "sku-9", "price": 4.5}),
        "identify": client.identify(user, {"email": "sdk@example.com"}),
        "page": client.page(user, category="Docs", name="Install"),
        "screen": client.screen(user, name="Home"),
        "group": client.group(user, "team-1", {"name": "Team"}),
        "alias": client.alias("earlier-id", user),
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
    for kind, event in events.items():
        assert event["type"] == kind
        assert event["userId"] == user
        assert event["sentAt"]
        assert event["originalTimestamp"] == calls[kind][1]["timestamp"]
