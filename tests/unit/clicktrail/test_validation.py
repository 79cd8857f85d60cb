from __future__ import annotations

import copy
from typing import Any

import pytest

from clicktrail.schemas import FileSchemaRegistry
from clicktrail.validation import EventValidator, TrackingPlan
from tests.support.catalogue import SCHEMAS, add_optional_color, copy_catalogue, evolved
from tests.support.data import invalid_events, valid_events


@pytest.fixture(scope="module")
def validator() -> EventValidator:
    return EventValidator(FileSchemaRegistry(SCHEMAS))


@pytest.fixture(scope="module")
def evolved_validator(tmp_path_factory: pytest.TempPathFactory) -> EventValidator:
    root = copy_catalogue(tmp_path_factory.mktemp("catalogue") / "schemas")
    evolved(root, "events/product_viewed", "2-0-1", add_optional_color)
    return EventValidator(FileSchemaRegistry(root))


def with_context_schema(event: dict[str, Any], schema: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event.setdefault("context", {})["schema"] = schema
    return event


@pytest.mark.parametrize(("name", "event"), list(valid_events().items()))
def test_valid_sample_events_pass(
    validator: EventValidator, name: str, event: dict[str, Any]
) -> None:
    verdict = validator.validate(event)

    assert verdict.errors == []
    assert verdict.valid


@pytest.mark.parametrize(("name", "case"), list(invalid_events().items()))
def test_invalid_sample_events_report_every_error_with_its_path(
    validator: EventValidator, name: str, case: tuple[dict[str, Any], list[tuple[str, str]]]
) -> None:
    event, expected = case

    verdict = validator.validate(event)

    assert not verdict.valid
    assert verdict.reason == "schema_validation"
    assert sorted((e["path"], e["keyword"]) for e in verdict.errors) == sorted(expected)
    assert all(e["message"] and e["schema"] == verdict.schema for e in verdict.errors)


@pytest.mark.parametrize(
    ("sample", "schema"),
    [
        ("track_product_viewed", "events/product_viewed/2-0-0"),
        ("track_unplanned", "calls/track/1-0-1"),
        ("identify", "traits/identify/1-0-0"),
        ("group", "traits/group/1-0-0"),
        ("page", "calls/page/1-0-1"),
    ],
)
def test_each_event_is_checked_against_its_most_specific_schema(
    validator: EventValidator, sample: str, schema: str
) -> None:
    assert validator.validate(valid_events()[sample]).schema == schema


def test_traits_are_checked_against_the_traits_schema(validator: EventValidator) -> None:
    event = copy.deepcopy(valid_events()["identify"])
    event["traits"]["age"] = "thirty"

    verdict = validator.validate(event)

    assert [(e["path"], e["keyword"], e["schema"]) for e in verdict.errors] == [
        ("/traits/age", "type", "traits/identify/1-0-0")
    ]


def test_an_unknown_call_type_is_an_error(validator: EventValidator) -> None:
    verdict = validator.validate({"type": "hover", "userId": "u"})

    assert [(e["path"], e["keyword"]) for e in verdict.errors] == [("/type", "enum")]


def test_without_context_schema_the_latest_version_applies(
    evolved_validator: EventValidator,
) -> None:
    event = copy.deepcopy(valid_events()["track_product_viewed"])
    event["properties"]["color"] = ""

    verdict = evolved_validator.validate(event)

    assert verdict.schema == "events/product_viewed/2-0-1"
    assert [(e["path"], e["keyword"]) for e in verdict.errors] == [
        ("/properties/color", "minLength")
    ]


def test_a_closed_event_schema_refuses_a_property_it_does_not_name(
    validator: EventValidator,
) -> None:
    event = copy.deepcopy(valid_events()["track_product_viewed"])
    event["properties"]["colour"] = "red"

    verdict = validator.validate(event)

    assert [(e["path"], e["keyword"]) for e in verdict.errors] == [
        ("/properties", "additionalProperties")
    ]
    assert "colour" in verdict.errors[0]["message"]


@pytest.mark.parametrize("named", ["product_viewed/1-0-0", "events/product_viewed/1-0-0"])
def test_context_schema_selects_the_version_an_old_client_was_written_for(
    evolved_validator: EventValidator, named: str
) -> None:
    event = with_context_schema(valid_events()["track_product_viewed"], named)
    event["properties"]["color"] = ""  # 1-0-0 knows no color: any value is allowed

    verdict = evolved_validator.validate(event)

    assert verdict.valid
    assert verdict.schema == "events/product_viewed/1-0-0"


@pytest.mark.parametrize(
    ("named", "message"),
    [
        ("product_viewed/9-0-0", "which is missing"),
        ("order_completed/1-0-0", "but this event's schema is events/product_viewed"),
        ("product_viewed", "must look like name/1-0-0"),
        ("product_viewed/1.0", "not a SchemaVer"),
    ],
)
def test_a_wrong_context_schema_is_an_error(
    validator: EventValidator, named: str, message: str
) -> None:
    verdict = validator.validate(with_context_schema(valid_events()["track_product_viewed"], named))

    assert not verdict.valid
    assert verdict.errors[0]["path"] == "/context/schema"
    assert message in verdict.errors[0]["message"]


def test_a_version_that_is_not_there_is_a_missing_schema_that_says_where(
    validator: EventValidator,
) -> None:
    event = with_context_schema(valid_events()["track_product_viewed"], "product_viewed/2-0-7")

    verdict = validator.validate(event)

    assert verdict.reason == "schema_missing"
    assert verdict.errors[0]["message"].endswith(
        str(SCHEMAS / "events" / "product_viewed" / "2-0-7.json")
    )


class EmptyRegistry:
    """A registry that holds nothing yet (the catalogue was never registered)."""

    def record(self, kind: str, name: str, version: str | None = None) -> None:
        return None

    def locate(self, kind: str, name: str, version: str | None = None) -> str:
        return f"subject ct.{kind}.{name}.v<MODEL>"


def test_without_its_envelope_an_event_is_a_missing_schema_not_a_crash() -> None:
    verdict = EventValidator(EmptyRegistry()).validate(valid_events()["track_product_viewed"])

    assert (verdict.valid, verdict.reason, verdict.schema) == (
        False,
        "schema_missing",
        "calls/track",
    )
    assert verdict.errors[0]["message"] == (
        "no envelope schema for track calls: subject ct.calls.track.v<MODEL> is missing"
    )


def test_context_schema_may_name_an_envelope_version(validator: EventValidator) -> None:
    verdict = validator.validate(with_context_schema(valid_events()["page"], "page/1-0-0"))

    assert verdict.valid
    assert verdict.schema == "calls/page/1-0-0"


def test_a_tracking_plan_lists_the_events_a_source_may_send(validator: EventValidator) -> None:
    plan = TrackingPlan.from_settings({"tracking_plan": {"events": ["Product Viewed"]}})

    allowed = validator.validate(valid_events()["track_product_viewed"], plan)
    refused = validator.validate(valid_events()["track_order_completed"], plan)
    other_calls = validator.validate(valid_events()["identify"], plan)

    assert allowed.valid
    assert not refused.valid
    assert refused.reason == "unplanned"
    assert refused.errors[0]["keyword"] == "trackingPlan"
    assert "not in this source's tracking plan" in refused.errors[0]["message"]
    assert other_calls.valid


def test_unplanned_events_are_allowed_or_dead_lettered_as_the_plan_says(
    validator: EventValidator,
) -> None:
    event = valid_events()["track_unplanned"]

    allowed = validator.validate(event, TrackingPlan.from_settings({}))
    refused = validator.validate(
        event, TrackingPlan.from_settings({"tracking_plan": {"unplanned": "deadletter"}})
    )

    assert allowed.valid
    assert refused.reason == "unplanned"
    assert (
        "no schema describes 'Newsletter Opened' (events/newsletter_opened)"
        in refused.errors[0]["message"]
    )


@pytest.mark.parametrize(
    "plan",
    [
        "everything",
        {"events": "Product Viewed"},
        {"events": [""]},
        {"unplanned": "drop"},
    ],
)
def test_a_malformed_tracking_plan_is_refused(plan: Any) -> None:
    with pytest.raises(ValueError, match="tracking_plan"):
        TrackingPlan.from_settings({"tracking_plan": plan})


def test_a_tracking_plan_round_trips_through_settings() -> None:
    plan = TrackingPlan(frozenset({"B", "A"}), "deadletter")

    assert TrackingPlan.from_settings({"tracking_plan": plan.to_settings()}) == plan
    assert plan.to_settings() == {"events": ["A", "B"], "unplanned": "deadletter"}
