"""Trying a draft schema: which events it applies to, their verdicts under it, and the report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from clicktrail.compat import check_catalogue
from clicktrail.drafts import (
    IDS_PER_PATH,
    MAX_PATHS,
    SKIP_LATER,
    SKIP_NOT_LATEST,
    SKIP_OTHER_MODEL,
    DraftError,
    DraftTrial,
    TryReport,
    Window,
    compatibility,
    overlay,
    read_draft,
    selection_for,
)
from clicktrail.schemas import FileSchemaRegistry, SchemaDoc, SchemaVer
from tests.support.catalogue import SCHEMAS

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
WINDOW = Window(NOW, timedelta(hours=24), limit=5)


def draft_of(key: str, version: str, change: Any = None, base: str | None = None) -> SchemaDoc:
    """A draft: the catalogue's ``key/base`` (default: the same version) as ``version``."""
    kind, name = key.split("/")
    source = SCHEMAS / kind / name / f"{base or version}.json"
    document = orjson.loads(source.read_bytes())
    document["$id"] = f"urn:clicktrail:{key}/{version}"
    document["self"]["version"] = version
    if change is not None:
        change(document)
    return SchemaDoc(kind, name, SchemaVer.parse(version), document)


def require_coupon(document: dict[str, Any]) -> None:
    document["required"] = [*document["required"], "coupon"]


def order(messages: int = 0, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"m{messages}",
        "userId": "u1",
        "receivedAt": "2026-12-04T11:00:00.000Z",
        "properties": {"order_id": "o1", "currency": "EUR", **properties},
    }


def pinned(event: dict[str, Any], schema: str) -> dict[str, Any]:
    return {**event, "context": {"schema": schema}}


def trial(draft: SchemaDoc) -> DraftTrial:
    with overlay(SCHEMAS, draft) as copy:
        return DraftTrial(draft, FileSchemaRegistry(copy))


def test_a_tightened_draft_reports_what_the_workers_would_refuse() -> None:
    judge = trial(draft_of("events/order_completed", "2-0-1", require_coupon, "2-0-0")).judge

    assert judge(order(coupon="SALE")) == []
    [error] = judge(order())
    assert (error["path"], error["keyword"]) == ("/properties/coupon", "required")
    assert error["schema"] == "events/order_completed/2-0-1"


def test_an_event_written_for_an_earlier_version_of_the_model_is_tried_against_the_draft() -> None:
    judge = trial(draft_of("events/order_completed", "2-0-1", require_coupon, "2-0-0")).judge

    [error] = judge(pinned(order(), "order_completed/2-0-0"))

    assert error["path"] == "/properties/coupon"


def test_events_naming_another_model_or_a_later_version_are_skipped() -> None:
    judge = trial(draft_of("events/order_completed", "2-0-1", require_coupon, "2-0-0")).judge

    assert judge(pinned(order(), "order_completed/1-0-0")) == SKIP_OTHER_MODEL
    assert judge(pinned(order(), "events/order_completed/2-0-7")) == SKIP_LATER
    assert judge(pinned(order(), "product_viewed/2-0-0")) == SKIP_OTHER_MODEL


def test_a_draft_that_is_not_the_latest_applies_only_to_events_naming_its_model() -> None:
    def require_total(document: dict[str, Any]) -> None:
        document["required"] = [*document["required"], "total"]

    judge = trial(draft_of("events/order_completed", "1-0-1", require_total, "1-0-0")).judge

    assert judge(order()) == SKIP_NOT_LATEST
    [error] = judge(pinned(order(), "order_completed/1-0-0"))
    assert (error["path"], error["schema"]) == ("/properties/total", "events/order_completed/1-0-1")


def test_an_envelope_draft_applies_under_the_event_schemas_of_its_call_type() -> None:
    def require_channel(document: dict[str, Any]) -> None:
        document["required"] = [*document["required"], "channel"]

    judge = trial(draft_of("calls/track", "1-0-2", require_channel, "1-0-1")).judge

    [error] = judge(pinned(order(), "order_completed/1-0-0"))
    assert (error["path"], error["schema"]) == ("/channel", "events/order_completed/1-0-0")
    assert judge({**order(), "channel": "web"}) == []


def test_which_history_rows_a_schema_applies_to() -> None:
    events = selection_for("events", "order_completed")
    identify = selection_for("traits", "identify")
    page = selection_for("calls", "page")

    assert (events.call_type, identify.call_type, page.call_type) == ("track", "identify", "page")
    assert events.wanted("Order Completed")
    assert events.wanted("order-completed")
    assert not events.wanted("Order Completed Twice")
    assert not events.wanted(None)
    assert identify.wanted(None)
    assert page.wanted("Pricing")
    with pytest.raises(DraftError, match="applies to no event by itself"):
        selection_for("common", "segment")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "not valid JSON"),
        (b'{"type": "object"}', "describes itself"),
        (b'{"self": {"kind": "widgets", "name": "a", "version": "1-0-0"}}', "self.kind"),
        (b'{"self": {"kind": "events", "name": "../a", "version": "1-0-0"}}', "self.name"),
        (b'{"self": {"kind": "events", "name": "a", "version": "1.0.0"}}', "self.version"),
    ],
)
def test_a_draft_must_say_where_it_belongs(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "draft.json"
    path.write_bytes(content)

    with pytest.raises(DraftError, match=message):
        read_draft(path)


def test_the_compatibility_verdict_is_the_checkers_on_the_step_to_the_draft() -> None:
    tight = draft_of("events/order_completed", "2-0-1", require_coupon, "2-0-0")
    loose = draft_of(
        "events/order_completed", "2-0-1", lambda d: d["required"].remove("currency"), "2-0-0"
    )

    with overlay(SCHEMAS, tight) as copy:
        refused = compatibility(check_catalogue(copy), tight)
    with overlay(SCHEMAS, loose) as copy:
        passed = compatibility(check_catalogue(copy), loose)

    assert [(str(s.old), str(s.new)) for s in refused.steps] == [("2-0-0", "2-0-1")]
    assert not refused.ok
    assert "/properties/coupon: now required" in refused.render()
    assert passed.ok


def report(**counts: Any) -> TryReport:
    draft = draft_of("events/order_completed", "2-0-1", None, "2-0-0")
    return TryReport(draft, "track events", WINDOW, **counts)


def test_the_report_counts_each_failing_path_and_keeps_a_few_ids() -> None:
    tried = report()
    for index in range(IDS_PER_PATH + 2):
        tried.fail(
            f"m{index}", [{"path": "/properties/coupon", "keyword": "required", "message": "x"}]
        )
    tried.fail("other", [{"path": "/properties/total", "keyword": "type", "message": "y"}])

    coupon = tried.failures[("/properties/coupon", "required")]
    assert (coupon.count, coupon.ids) == (IDS_PER_PATH + 2, [f"m{i}" for i in range(IDS_PER_PATH)])
    assert tried.failures[("/properties/total", "type")].ids == ["other"]
    assert tried.failed == IDS_PER_PATH + 3


def test_the_report_tells_paths_apart_up_to_a_bound() -> None:
    tried = report()
    for index in range(MAX_PATHS + 5):
        tried.fail(
            "m", [{"path": f"/properties/products/{index}", "keyword": "type", "message": ""}]
        )

    assert len(tried.failures) == MAX_PATHS
    assert tried.other_paths == 5
    assert "errors at other paths" in tried.render()


def test_the_verdict_needs_every_event_to_pass_and_a_compatible_change() -> None:
    draft = draft_of("events/order_completed", "2-0-1", None, "2-0-0")
    with overlay(SCHEMAS, draft) as copy:
        compatible = compatibility(check_catalogue(copy), draft)
    clean = report(passed=3, compat=compatible)
    failing = report(passed=3, compat=compatible)
    failing.fail("m", [{"path": "/", "keyword": "type", "message": ""}])
    stopped = report(passed=5, compat=compatible, truncated=True)

    assert clean.ok
    assert "the draft passes (exit 0)" in clean.render()
    assert not failing.ok
    assert "does not pass (exit 1)" in failing.render()
    assert not report(passed=3).ok  # no verdict on compatibility: not proven
    assert "stopped at --limit 5: older events were not tried" in stopped.render()
