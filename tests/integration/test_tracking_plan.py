"""A source's tracking plan and a client naming its schema version, through the real pipeline."""

from __future__ import annotations

import uuid

import pytest
import requests

from clicktrail.db import Database
from clicktrail.sources import SourceStore, new_write_key
from clicktrail.validation import TrackingPlan
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import KafkaCollector


@pytest.fixture(scope="module")
def planned_source(database_url: str, run_id: str) -> SourceUnderTest:
    plan = TrackingPlan(frozenset({"Product Viewed", "Newsletter Opened"}), unplanned="deadletter")
    db = Database(database_url)
    try:
        key = new_write_key()
        created = SourceStore(db, cache_seconds=0).create(
            f"planned-{run_id}", key, {"tracking_plan": plan.to_settings()}
        )
    finally:
        db.close()
    return SourceUnderTest(created.id, key)


def track(
    message_id: str, event: str, properties: dict[str, object], **extra: object
) -> dict[str, object]:
    return {
        "type": "track",
        "userId": "plan-user",
        "messageId": message_id,
        "event": event,
        "properties": properties,
        **extra,
    }


def test_the_tracking_plan_decides_what_flows_and_what_is_dead_lettered_as_unplanned(
    pipeline: str,
    kafka: KafkaCollector,
    planned_source: SourceUnderTest,
    source: SourceUnderTest,
    topics: TopicNames,
) -> None:
    planned, not_in_plan, no_schema = (f"plan-{uuid.uuid4()}" for _ in range(3))
    elsewhere = f"plan-{uuid.uuid4()}"
    batch = [
        track(planned, "Product Viewed", {"product_id": "sku-1"}),
        track(
            not_in_plan, "Order Completed", {"order_id": "o-1", "currency": "EUR"}
        ),  # has a schema
        track(no_schema, "Newsletter Opened", {"issue": 12}),  # planned, but no schema describes it
    ]

    response = requests.post(
        f"{pipeline}/v1/batch",
        json={"batch": batch},
        auth=(planned_source.write_key, ""),
        timeout=10,
    )
    other = requests.post(
        f"{pipeline}/v1/batch",
        json={"batch": [track(elsewhere, "Newsletter Opened", {})]},
        auth=(source.write_key, ""),  # a source without a plan: anything goes
        timeout=10,
    )

    assert response.status_code == other.status_code == 200
    kafka.wait_for([planned, elsewhere], topic=topics.events)
    dead = kafka.wait_for([not_in_plan, no_schema], topic=topics.deadletter)
    for message_id, says in (
        (not_in_plan, "not in this source's tracking plan"),
        (no_schema, "no schema describes"),
    ):
        [record] = dead[message_id]
        assert record.headers["error-kind"] == "unplanned"
        assert record.value["reason"] == "unplanned"
        assert record.value["errors"][0]["keyword"] == "trackingPlan"
        assert says in record.value["errors"][0]["message"]


def test_naming_a_schema_version_that_does_not_exist_dead_letters_the_event(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    message_id = f"plan-{uuid.uuid4()}"
    body = track(
        message_id,
        "Product Viewed",
        {"product_id": "sku-1"},
        context={"schema": "product_viewed/7-0-0"},
    )

    assert (
        requests.post(
            f"{pipeline}/v1/track", json=body, auth=(source.write_key, ""), timeout=10
        ).status_code
        == 200
    )

    [record] = kafka.wait_for([message_id], topic=topics.deadletter)[message_id]
    assert record.value["reason"] == "schema_missing"
    assert record.value["errors"][0]["path"] == "/context/schema"
    assert "product_viewed/7-0-0" in record.value["errors"][0]["message"]
