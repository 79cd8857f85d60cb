"""Inferring an event's schema: the rules beyond genson, the latest version extended with what
the events carry beyond it, and the step from the latest version."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from clicktrail.compat import check_catalogue
from clicktrail.drafts import DraftTrial, Window
from clicktrail.inference import (
    ADDITION,
    ENUM_MAX_VALUES,
    ENUM_MIN_SAMPLES,
    MODEL,
    NEW,
    REVISION,
    UNCHANGED,
    Conflict,
    InferenceError,
    extend_latest,
    infer_properties,
    propose,
    write_proposal,
)
from clicktrail.schemas import FileSchemaRegistry, SchemaVer
from tests.support.catalogue import copy_catalogue, evolved


def schema_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return infer_properties(samples).schema


def test_a_property_is_required_when_nearly_every_event_has_it() -> None:
    samples = [{"a": 1, "b": 1, "c": 1} for _ in range(200)]
    del samples[0]["b"]  # 99.5 % have b
    for sample in samples[:3]:
        del sample["c"]  # 98.5 % have c

    inferred = infer_properties(samples)

    assert inferred.schema["required"] == ["a", "b"]
    assert inferred.partly_required == {"b": 0.995}


def test_objects_are_closed_at_every_level() -> None:
    schema = schema_of([{"order": {"id": "o1", "lines": [{"sku": "s1"}, {"sku": "s2", "n": 2}]}}])

    order = schema["properties"]["order"]
    line = order["properties"]["lines"]["items"]
    assert schema["additionalProperties"] is False
    assert order["additionalProperties"] is False
    assert line == {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "sku": {"type": "string"}},
        "required": ["sku"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2026-01-02T03:04:05.678Z", "2026-12-31T23:59:59Z"], "date-time"),
        (["ann@example.com", "bob@example.org"], "email"),
        (["https://example.com/a?b=c", "http://example.org"], "uri"),
        (["sku:123", "sku:124"], None),  # a URI, but nothing like a URL
        (["2026-01-02T03:04:05Z", "yesterday"], None),
        (["0b9f6f2e-3c1a-4d4e-9a8b-1c2d3e4f5a6b"], None),  # draft-07 does not check uuid
    ],
)
def test_a_format_every_value_has_is_proposed(values: list[str], expected: str | None) -> None:
    schema = schema_of([{"v": value} for value in values])

    assert schema["properties"]["v"].get("format") == expected


def test_pseudonymised_values_get_no_format_and_no_enum() -> None:
    pseudonym = "hmac:" + "ab" * 32
    schema = schema_of([{"v": pseudonym} for _ in range(ENUM_MIN_SAMPLES)])

    assert schema["properties"]["v"] == {"type": "string"}


def test_few_values_over_enough_events_make_an_enum() -> None:
    few = [{"v": ("EUR", "USD", "GBP")[i % 3]} for i in range(ENUM_MIN_SAMPLES)]
    too_few_events = few[:-1]
    many = [{"v": f"value {i % (ENUM_MAX_VALUES + 1)}"} for i in range(ENUM_MIN_SAMPLES * 3)]
    long = [{"v": ("x" * 65, "y")[i % 2]} for i in range(ENUM_MIN_SAMPLES)]

    assert schema_of(few)["properties"]["v"] == {"type": "string", "enum": ["EUR", "GBP", "USD"]}
    assert "enum" not in schema_of(too_few_events)["properties"]["v"]
    assert "enum" not in schema_of(many)["properties"]["v"]
    assert "enum" not in schema_of(long)["properties"]["v"]


def test_a_value_of_several_types_is_one_schema_with_a_list_of_types() -> None:
    with_null = [{"v": ("a", "b", None)[i % 3]} for i in range(ENUM_MIN_SAMPLES * 2)]
    with_number = [
        {"v": ("a", 1)[i % 2], "when": ("2026-01-02T03:04:05Z", None)[i % 2]} for i in range(60)
    ]

    nullable = schema_of(with_null)["properties"]["v"]
    mixed = schema_of(with_number)["properties"]

    assert nullable == {"type": ["null", "string"], "enum": ["a", "b", None]}
    assert mixed["v"] == {"type": ["integer", "string"]}  # an enum would refuse the numbers
    assert mixed["when"] == {"type": ["null", "string"], "format": "date-time"}


def test_numbers_are_integers_until_one_is_not() -> None:
    schema = schema_of([{"n": 1, "x": 1}, {"n": 2, "x": 1.5}])

    assert schema["properties"]["n"] == {"type": "integer"}
    assert schema["properties"]["x"] == {"type": "number"}


def test_nothing_to_infer_from() -> None:
    with pytest.raises(InferenceError):
        infer_properties([])


WIDGETS = [{"widget_id": f"w{i}", "size": i % 4, "color": "red"} for i in range(ENUM_MIN_SAMPLES)]


# From the history alone (a first version, or --from-scratch): the step as compat classifies it.


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    """A catalogue copy holding events/widget_added 1-0-0 as inferred from WIDGETS."""
    root = copy_catalogue(tmp_path / "schemas")
    write_proposal(propose(root, "Widget Added", infer_properties(WIDGETS)))
    return root


def test_an_event_no_schema_describes_gets_its_first_version(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")

    proposal = propose(root, "Widget Added", infer_properties(WIDGETS))

    assert (proposal.change, proposal.doc.version) == (NEW, SchemaVer(1, 0, 0))
    assert proposal.path == root / "events" / "widget_added" / "1-0-0.json"
    assert proposal.doc.document["self"]["name"] == "widget_added"
    assert proposal.doc.document["properties"]["color"] == {"type": "string", "enum": ["red"]}


def test_a_new_optional_property_is_an_addition(catalogue: Path) -> None:
    samples = [*WIDGETS, {**WIDGETS[0], "label": "big"}]

    proposal = propose(catalogue, "Widget Added", infer_properties(samples))

    assert (proposal.change, str(proposal.doc.version)) == (ADDITION, "1-0-1")
    assert [reason.split(":")[0] for reason in proposal.reasons] == ["/properties/label"]


def test_a_loosened_promise_is_a_revision(catalogue: Path) -> None:
    samples = [*WIDGETS, {**WIDGETS[0], "size": 2.5}]

    proposal = propose(catalogue, "Widget Added", infer_properties(samples))

    assert (proposal.change, str(proposal.doc.version)) == (REVISION, "1-1-0")
    assert proposal.reasons == ["/properties/size: type narrowed, no longer accepts number"]


def test_an_incompatible_proposal_is_the_next_model(catalogue: Path) -> None:
    samples = [{**sample, "shape": "round"} for sample in WIDGETS]  # now in every event

    proposal = propose(catalogue, "Widget Added", infer_properties(samples))

    assert (proposal.change, str(proposal.doc.version)) == (MODEL, "2-0-0")
    assert any("/properties/shape: new required field" in r for r in proposal.reasons)


def test_a_history_the_latest_version_fits_changes_nothing(catalogue: Path) -> None:
    proposal = propose(catalogue, "widget-added", infer_properties(WIDGETS))

    assert (proposal.change, str(proposal.doc.version)) == (UNCHANGED, "1-0-0")


def test_a_written_proposal_passes_the_check_and_accepts_its_events(catalogue: Path) -> None:
    samples = [*WIDGETS, {**WIDGETS[0], "label": "big"}]
    proposal = propose(catalogue, "Widget Added", infer_properties(samples))

    write_proposal(proposal)

    report = check_catalogue(catalogue)
    assert report.ok, report.render()
    judge = DraftTrial(proposal.doc, FileSchemaRegistry(catalogue)).judge
    for index, properties in enumerate(samples):
        assert judge(track("Widget Added", index, properties)) == []
    with pytest.raises(InferenceError, match="exists already"):
        write_proposal(proposal)


def track(name: str, index: int, properties: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "messageId": f"m{index}",
        "userId": "u1",
        "receivedAt": "2026-12-04T11:00:00.000Z",
        "properties": properties,
        **fields,
    }


# From the latest version: events/order_completed 2-0-0 of the catalogue, closed, its products
# too, with bounds and a pattern, and properties (tax, coupon, ...) no order below carries.


def order(index: int, **extra: Any) -> dict[str, Any]:
    properties = {
        "order_id": f"o-{index}",
        "currency": "EUR",
        "total": 10.5 + index,
        "products": [{"product_id": f"p-{index}", "price": 2, "quantity": 1}],
        **extra,
    }
    return track("Order Completed", index, properties)


ORDERS = [order(i) for i in range(100)]
WINDOW = Window(datetime(2026, 12, 4, 12, tzinfo=UTC), timedelta(hours=1))


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return copy_catalogue(tmp_path / "schemas")


def order_completed(root: Path, version: str = "2-0-0") -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(
        (root / "events" / "order_completed" / f"{version}.json").read_bytes()
    )
    return document


def with_gift_note(index: int) -> dict[str, Any]:
    event = order(index, gift_wrap=index % 2 == 0)
    event["properties"]["products"][0]["gift_note"] = f"for {index}"
    return event


def test_the_latest_is_kept_as_written_and_what_the_events_carry_beyond_it_is_added(
    shop: Path,
) -> None:
    events = [*ORDERS, *(with_gift_note(i) for i in range(100, 110))]

    proposal = extend_latest(shop, "Order Completed", events)

    expected = copy.deepcopy(order_completed(shop))
    expected["$id"] = "urn:clicktrail:events/order_completed/2-0-1"
    expected["self"]["version"] = "2-0-1"
    expected["properties"]["gift_wrap"] = {"type": "boolean"}
    expected["properties"]["products"]["items"]["properties"]["gift_note"] = {"type": "string"}
    assert (proposal.change, str(proposal.doc.version)) == (ADDITION, "2-0-1")
    assert proposal.path == shop / "events" / "order_completed" / "2-0-1.json"
    # Bounds, pattern, the properties nobody sent and the required lists: as 2-0-0 has them.
    assert proposal.doc.document == expected
    assert proposal.seeding is not None
    assert proposal.seeding.added == ["/properties/products[]/gift_note", "/properties/gift_wrap"]
    assert (proposal.seeding.always, proposal.seeding.conflicts) == ([], [])
    assert sorted(reason.split(":")[0] for reason in proposal.reasons) == [
        "/properties/gift_wrap",
        "/properties/products[]/gift_note",
    ]
    rendered = proposal.render(WINDOW)
    assert rendered.startswith(
        "events/order_completed/2-0-1: 2-0-0 as written, with what the properties of 110 "
        "'Order Completed' event(s) received since 2026-12-04T11:00:00.000Z carry beyond it\n"
    )
    assert "ADDITION to 2-0-0: compatible, only new optional properties:" in rendered


def test_an_extended_proposal_passes_the_check_and_accepts_its_events(shop: Path) -> None:
    events = [*ORDERS, *(with_gift_note(i) for i in range(100, 110))]
    proposal = extend_latest(shop, "Order Completed", events)

    write_proposal(proposal)

    report = check_catalogue(shop)
    assert report.ok, report.render()
    assert "ok    events/order_completed 2-0-0 -> 2-0-1" in report.render()
    judge = DraftTrial(proposal.doc, FileSchemaRegistry(shop)).judge
    assert [judge(event) for event in events] == [[]] * len(events)


def test_a_new_property_every_event_carries_is_optional_and_named(shop: Path) -> None:
    events = [order(i, gift_wrap=True) for i in range(100)]

    proposal = extend_latest(shop, "Order Completed", events)

    assert (proposal.change, str(proposal.doc.version)) == (ADDITION, "2-0-1")
    assert proposal.doc.document["required"] == ["order_id", "currency"]
    assert proposal.seeding is not None
    assert proposal.seeding.always == ["/properties/gift_wrap"]
    assert (
        "optional, though at least 99% of the objects at their place carry them (events written "
        "for 2-0-0 lack them: requiring them is a new MODEL):\n  /properties/gift_wrap"
    ) in proposal.render(WINDOW)


def test_values_the_latest_refuses_are_reported_and_not_accepted(shop: Path) -> None:
    as_text = [order(i, total=f"{i}.50") for i in range(100, 103)]
    price_as_text = [order(i) for i in range(103, 105)]
    for event in price_as_text:
        event["properties"]["products"].append({"product_id": "p", "price": "2"})
    pseudonymised = [order(105, currency="hmac:" + "ab" * 32)]  # the original was judged
    refused = [order(i, gift_wrap=True) for i in range(106, 110)]

    proposal = extend_latest(
        shop, "Order Completed", [*ORDERS, *as_text, *price_as_text, *pseudonymised], refused
    )

    authored = order_completed(shop)["properties"]
    properties = proposal.doc.document["properties"]
    assert (proposal.change, str(proposal.doc.version)) == (ADDITION, "2-0-1")
    assert properties["total"] == authored["total"] == {"type": "number", "minimum": 0}
    assert properties["products"] == authored["products"]
    assert properties["currency"] == authored["currency"]
    assert proposal.seeding is not None
    assert proposal.seeding.refused == 4
    assert proposal.seeding.conflicts == [
        Conflict("/properties/products[]/price", "type", 2, "string"),
        Conflict("/properties/total", "type", 3, "string"),
    ]
    rendered = proposal.render(WINDOW)
    assert "(4 of them dead-lettered)" in rendered
    assert (
        "values 2-0-0 refuses (not widened: its schema stays as it is there):\n"
        "  2 event(s) carry /properties/products[]/price as string, which 2-0-0 refuses: they "
        "are dead-lettered today\n"
        "  3 event(s) carry /properties/total as string, which 2-0-0 refuses: they are "
        "dead-lettered today"
    ) in rendered


def test_a_missing_required_property_and_a_broken_bound_are_reported(shop: Path) -> None:
    lacking = order(100)
    del lacking["properties"]["currency"]
    negative = order(101, total=-3)

    proposal = extend_latest(shop, "Order Completed", [*ORDERS, lacking, negative])

    assert proposal.change == UNCHANGED
    assert proposal.seeding is not None
    assert proposal.seeding.conflicts == [
        Conflict("/properties/currency", "required", 1, '"currency" is a required property'),
        Conflict("/properties/total", "minimum", 1, "-3 is less than the minimum of 0"),
    ]
    rendered = proposal.render(WINDOW)
    assert "1 event(s) lack /properties/currency, which 2-0-0 requires" in rendered
    assert (
        "1 event(s) fail /properties/total, which 2-0-0 refuses (minimum: -3 is less than the "
        "minimum of 0)"
    ) in rendered


def test_events_that_carry_nothing_new_propose_nothing(shop: Path) -> None:
    proposal = extend_latest(shop, "Order Completed", ORDERS)

    assert (proposal.change, str(proposal.doc.version)) == (UNCHANGED, "2-0-0")
    assert proposal.doc.document == order_completed(shop)
    rendered = proposal.render(WINDOW)
    assert rendered.splitlines() == [
        "events/order_completed/2-0-0: compared with the properties of 100 'Order Completed' "
        "event(s) received since 2026-12-04T11:00:00.000Z",
        "nothing new: the events carry no property 2-0-0 lacks, so nothing is proposed",
    ]


def test_events_of_another_model_are_not_read_and_a_replayed_one_is_read_once(
    shop: Path,
) -> None:
    legacy = {"schema": "events/order_completed/1-0-0"}
    pinned = [
        track("Order Completed", i, {"order_id": "o", "legacy": 1}, context=legacy)
        for i in range(3)
    ]
    replayed = order(0, gift_wrap=True)  # dead-lettered, then published once 2-0-1 existed

    proposal = extend_latest(shop, "Order Completed", [*ORDERS, *pinned], [replayed])

    assert proposal.change == UNCHANGED
    assert proposal.seeding is not None
    assert proposal.seeding.refused == 0
    assert proposal.inferred.samples == 100
    assert "3 event(s) not read: they name another MODEL or schema in context.schema" in (
        proposal.render(WINDOW)
    )


def test_an_open_object_of_the_latest_is_not_extended(shop: Path) -> None:
    evolved(shop, "events/order_completed", "3-0-0", lambda doc: doc.pop("additionalProperties"))

    proposal = extend_latest(shop, "Order Completed", [order(i, legacy=1) for i in range(10)])

    assert (proposal.change, str(proposal.doc.version)) == (UNCHANGED, "3-0-0")
    assert proposal.seeding is not None
    assert proposal.seeding.accepted == ["/properties/legacy"]


def test_nothing_to_extend_from(shop: Path) -> None:
    with pytest.raises(InferenceError, match="no version of events/widget_added"):
        extend_latest(shop, "Widget Added", [track("Widget Added", 0, WIDGETS[0])])
    with pytest.raises(InferenceError, match="no events with properties"):
        extend_latest(shop, "Order Completed", [])
