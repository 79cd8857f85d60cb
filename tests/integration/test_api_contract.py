"""The running API against its OpenAPI document: schemathesis generates requests from it, valid
ones and broken ones, and checks every answer: never a 5xx, every status, header and body as
documented. (The document is the one the API serves at /openapi.json, as a unit test checks.) Then
sequences of calls, chained by the document's links: no 5xx on the way, and every event accepted
comes out in Kafka."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from clicktrail.web.openapi import document
from tests.integration.conftest import ADMIN_TOKEN, SourceUnderTest, TopicNames
from tests.support.infra import KafkaCollector

# 413 (over a size limit) is as proper a refusal of a request that breaks the document as a 400.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 413, 415, 422, 429]
            }
        }
    }
)
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


@schema.hook
def filter_body(_: object, body: object) -> bool:
    """Bodies the document allows: it says in words what JSON Schema cannot, that integers must
    fit in 64 bits (the API answers 400 number_too_large otherwise, as a test below checks)."""
    return _within_int64(body)


def _within_int64(value: object) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, dict):
        return all(_within_int64(v) for v in value.values())
    if isinstance(value, list):
        return all(_within_int64(v) for v in value)
    return True


@schema.parametrize()
# Derandomized: the same examples on every run, so that CI never fails by chance.
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_contract(
    case: schemathesis.Case, pipeline: str, source: SourceUnderTest, debugger_key: str
) -> None:
    if case.operation.path.startswith("/v1/users/"):
        auth = f"Bearer {ADMIN_TOKEN}"
    elif case.operation.path.startswith("/v1/debugger/"):
        auth = f"Bearer {debugger_key}"
    else:
        auth = "Basic " + base64.b64encode(f"{source.write_key}:".encode()).decode()
    case.call_and_validate(
        base_url=pipeline, headers={"Authorization": auth, **(case.headers or {})}
    )


INGEST_PATHS = frozenset(
    path
    for path, item in document()["paths"].items()
    if "post" in item and item["post"]["tags"] == ["Tracking"]
)


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls chained by the document's links (a session created, then read and
    ended; an identify, then the profile read and erased), with generated values everywhere
    else. Every event an ingest call was answered 200 for is kept, to be found in Kafka."""

    base_url = ""
    write_key = ""
    accepted: list[str] = []  # noqa: RUF012 - filled by the test that sets the class up

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        admin = case.operation.path.startswith("/v1/users/") or (
            case.operation.path.startswith("/v1/sessions/") and case.method.upper() != "POST"
        )
        auth = f"Bearer {ADMIN_TOKEN}" if admin else _basic(self.write_key)
        return {"base_url": self.base_url, "headers": {"Authorization": auth}}

    def before_call(self, case: schemathesis.Case) -> None:
        # Events of ours to find later: a fresh messageId on each generated event.
        if case.operation.path in INGEST_PATHS and isinstance(case.body, dict):
            events = case.body.get("batch") if "batch" in case.body else [case.body]
            for event in events if isinstance(events, list) else []:
                if isinstance(event, dict):
                    event["messageId"] = f"stateful-{uuid.uuid4()}"

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        super().after_call(response, case)
        assert response.status_code < 500, (case.operation.path, response.text[:500])
        if case.operation.path in INGEST_PATHS and response.status_code == 200:
            body = case.body
            events = body.get("batch") if "batch" in body else [body]
            self.accepted.extend(e["messageId"] for e in events if isinstance(e, dict))


def _basic(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def test_call_sequences_keep_the_contract_and_lose_no_accepted_event(
    pipeline: str, source: SourceUnderTest, kafka: KafkaCollector, topics: TopicNames
) -> None:
    Workflow.base_url, Workflow.write_key, Workflow.accepted = pipeline, source.write_key, []

    Workflow.run(
        settings=settings(
            max_examples=25,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )

    assert Workflow.accepted, "no sequence had an ingest call accepted"
    found = kafka.wait_for(Workflow.accepted, timeout=120)
    for message_id in Workflow.accepted:
        places = {m.topic for m in found[message_id]}
        assert places in ({topics.events}, {topics.deadletter}), (message_id, places)
