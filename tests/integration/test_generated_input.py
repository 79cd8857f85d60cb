"""Generated hostile input through the running pipeline: hypothesis builds Segment calls and
batches with arbitrary JSON in every field (and JSON that is not quite JSON: huge integers,
NaN, deep nesting, odd types where strings belong). Whatever it sends, the API never answers a
5xx, a refusal names its problem, and every event the API accepted comes out of the pipeline,
counted: in the events topic or, with its reason, in the dead-letter topic."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import KafkaCollector

CALLS = ("track", "page", "screen", "identify", "group", "alias")
FIELDS = (
    "type",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "event",
    "name",
    "properties",
    "traits",
    "context",
    "integrations",
    "timestamp",
    "sentAt",
    "originalTimestamp",
    "receivedAt",
    "channel",
    "version",
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond 64 bits too
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-02-30T00:00:00Z",
            "1" * 5000,
            "events/order_completed/" + "9" * 5000 + "-0-0",
            "events/order_completed/1-0-" + "9" * 30,
            "iglu:com.acme/x/jsonschema/1-0-0",
            "\u0000\ud7ff\U0010ffff",
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


plausible = {
    "type": st.sampled_from(CALLS),
    "userId": st.sampled_from(["u-gen-1", "u-gen-2"]),
    "anonymousId": st.sampled_from(["a-gen-1"]),
    "event": st.sampled_from(["Product Viewed", "Order Completed", "Signed Up"]),
    "properties": st.fixed_dictionaries({"product_id": st.text(max_size=8)}),
    "context": st.fixed_dictionaries({"schema": scalars, "traits": json_values}),
}
# What one event carries that an ordinary SDK would not send, besides arbitrary JSON anywhere.
HOSTILE = {
    "nothing more": lambda draw: {},
    "deep nesting": lambda draw: {
        "properties": nested(draw(st.sampled_from([200, 254, 255, 300, 900])))
    },
    "a huge integer": lambda draw: {"properties": {"n": draw(st.sampled_from([2**64, -(2**70)]))}},
    "NaN": lambda draw: {"properties": {"n": float("nan")}},
    "a schema version of thousands of digits": lambda draw: {
        "context": {
            "schema": "events/order_completed/" + "9" * draw(st.sampled_from([20, 5000])) + "-0-0"
        }
    },
    "timestamps at the ends of time": lambda draw: {
        "timestamp": draw(st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"])),
        "sentAt": draw(st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"])),
    },
    "long ids": lambda draw: {
        draw(st.sampled_from(["userId", "anonymousId", "event", "groupId"])): "x" * 40000
    },
    "a wrong type": lambda draw: {draw(st.sampled_from(FIELDS)): draw(json_values)},
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=len(FIELDS)))
    event = {name: draw(plausible.get(name, json_values)) for name in names}
    event.update(HOSTILE[draw(st.sampled_from(sorted(HOSTILE)))](draw))
    return event


@dataclass
class Call:
    path: str
    body: Any
    tracked: list[str] = field(default_factory=list)


@st.composite
def calls(draw: st.DrawFn) -> Call:
    """A single call or a batch; most events carry a messageId of ours, to be found later."""
    batch = draw(st.booleans())
    drawn = draw(st.lists(events(), min_size=1, max_size=6 if batch else 1))
    tracked = []
    for event in drawn:
        if draw(st.integers(0, 9)) < 8:
            event["messageId"] = f"gen-{uuid.uuid4()}"
            tracked.append(event["messageId"])
        elif draw(st.booleans()):
            event["messageId"] = draw(json_values)
    if draw(st.sampled_from(["send", "send", "send", "validate"])) == "validate":
        # Checked, not sent: nothing of it is to be found later.
        return Call("/v1/validate", {"batch": drawn} if batch else drawn[0])
    if batch:
        body: Any = {
            "batch": drawn,
            **draw(
                st.dictionaries(
                    st.sampled_from(["context", "sentAt", "integrations"]), json_values, max_size=2
                )
            ),
        }
        return Call("/v1/batch", body, tracked)
    kind = drawn[0].get("type")
    path = f"/v1/{kind}" if kind in CALLS else f"/v1/{draw(st.sampled_from(CALLS))}"
    return Call(path, drawn[0], tracked)


def encode(body: Any) -> bytes:
    # allow_nan: NaN and Infinity go out as the bare tokens some encoders write, which are not JSON.
    return json.dumps(body, allow_nan=True).encode()


def test_generated_calls_never_get_a_5xx_and_every_accepted_event_comes_out(
    pipeline: str, source: SourceUnderTest, kafka: KafkaCollector, topics: TopicNames
) -> None:
    auth = "Basic " + base64.b64encode(f"{source.write_key}:".encode()).decode()
    accepted: list[str] = []
    refusals: dict[str, int] = {}

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,  # the same examples on every run, so that CI never fails by chance
        suppress_health_check=list(HealthCheck),
    )
    @given(call=calls())
    def send(call: Call) -> None:
        response = requests.post(
            pipeline + call.path,
            data=encode(call.body),
            headers={"Authorization": auth, "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code < 500, (call.path, response.status_code, response.text[:500])
        if response.status_code == 200:
            accepted.extend(call.tracked)
        else:
            refusal = response.json()
            assert refusal["success"] is False
            assert refusal["code"]
            assert refusal["message"]
            refusals[refusal["code"]] = refusals.get(refusal["code"], 0) + 1

    send()

    assert accepted, f"no generated call was accepted (refusals: {refusals})"
    assert refusals, "no generated call was refused: the generator is too tame"
    found = kafka.wait_for(accepted, timeout=120)
    for message_id in accepted:
        places = {m.topic for m in found[message_id]}
        assert places in ({topics.events}, {topics.deadletter}), (message_id, places)
    dead = [m for i in accepted for m in found[i] if m.topic == topics.deadletter]
    for letter in dead:
        assert letter.value["reason"]
        assert letter.value["errors"]
