"""Segment's and RudderStack's Node.js SDKs from npm (tests/sdks/node, pinned by its lock
file), pointed at the running pipeline and otherwise unchanged: every call type, gzip on and
off where the SDK has the option, read back from Kafka with its session."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.events import every_call
from tests.support.infra import KafkaCollector

NODE_SDKS = Path(__file__).resolve().parent.parent / "sdks" / "node"
LIBRARIES = {"segment": "@segment/analytics-node", "rudderstack": "analytics-node"}


def send_with(
    sdk: str, gzip: bool, host: str, write_key: str, calls: list[dict[str, object]]
) -> str:
    node = shutil.which("node")
    assert node, "Node.js is needed for these tests"
    assert (NODE_SDKS / "node_modules").is_dir(), "run make test: it installs tests/sdks/node"
    request = {"sdk": sdk, "host": host, "writeKey": write_key, "gzip": gzip, "calls": calls}
    done = subprocess.run(
        [node, "send.mjs"],
        cwd=NODE_SDKS,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("sdk", "gzip"),
    [("segment", False), ("rudderstack", True), ("rudderstack", False)],
    ids=["segment", "rudderstack-gzip", "rudderstack-plain"],
)
def test_every_call_of_a_node_sdk_reaches_kafka_with_its_session(
    pipeline: str,
    kafka: KafkaCollector,
    source: SourceUnderTest,
    topics: TopicNames,
    sdk: str,
    gzip: bool,
) -> None:
    user = f"node-{sdk}-{uuid.uuid4().hex[:8]}"
    calls = every_call(user)

    printed = send_with(sdk, gzip, pipeline, source.write_key, calls)

    assert f"{len(calls)} call(s) flushed" in printed
    found = kafka.wait_for([c["messageId"] for c in calls], topic=topics.events)
    events = [found[str(c["messageId"])][0].value for c in calls]
    for call, event in zip(calls, events, strict=True):
        for name, value in call.items():
            assert event[name] == value, (sdk, call["type"], name)
        assert event["context"]["library"]["name"] == LIBRARIES[sdk]
        assert event["receivedAt"]
        assert event["context"]["session"]["eventIndex"] >= 1
    identified = [e for e in events if e.get("userId") == user]
    assert len({e["context"]["session"]["id"] for e in identified}) == 1  # one visit
    [anonymous] = [e for e in events if "userId" not in e]
    assert anonymous["context"]["session"]["id"] != identified[0]["context"]["session"]["id"]
