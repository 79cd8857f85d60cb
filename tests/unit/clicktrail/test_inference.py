"""Inferring an event's schema: the rules beyond genson, and the step from the latest version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clicktrail.compat import check_catalogue
from clicktrail.drafts import DraftTrial
from clicktrail.inference import (
    ADDITION,
    ENUM_MAX_VALUES,
    ENUM_MIN_SAMPLES,
    MODEL,
    NEW,
    REVISION,
    UNCHANGED,
    InferenceError,
    infer_properties,
    propose,
    write_proposal,
)
from clicktrail.schemas import FileSchemaRegistry, SchemaVer
from tests.support.catalogue import copy_catalogue


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
        event = {
            "type": "track",
            "event": "Widget Added",
            "messageId": f"m{index}",
            "userId": "u1",
            "receivedAt": "2026-12-04T11:00:00.000Z",
            "properties": properties,
        }
        assert judge(event) == []
    with pytest.raises(InferenceError, match="exists already"):
        write_proposal(proposal)
