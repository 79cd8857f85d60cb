"""`clicktrail schemas try` and `schemas infer` on a history the real pipeline wrote: events
posted to the API, validated by the worker, published to Kafka and written by the sink."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from clicktrail.db import Database
from clicktrail.sources import SourceStore, new_write_key
from tests.support.catalogue import SCHEMAS, copy_catalogue, evolved
from tests.support.infra import Service, history_counts, wait_for
from tests.support.paths import PROJECT_ROOT

BATCHES = 3
ORDERS_PER_BATCH = 10


@dataclass(frozen=True)
class PostingSource:
    name: str
    key: str


@dataclass
class History:
    """What the module posted, and by whom."""

    shop: PostingSource
    other: PostingSource
    widget: str  # an event no schema describes, named for this run
    orders: list[dict[str, Any]]  # the shop's Order Completed events, oldest first
    other_orders: list[dict[str, Any]]
    widgets: list[dict[str, Any]]


def post(pipeline: str, source: PostingSource, events: list[dict[str, Any]]) -> None:
    response = requests.post(
        f"{pipeline}/v1/batch", json={"batch": events}, auth=(source.key, ""), timeout=10
    )
    assert response.status_code == 200, response.text


def written(database_url: str, events: list[dict[str, Any]]) -> None:
    ids = [event["messageId"] for event in events]
    wait_for(lambda: len(history_counts(database_url, ids)) == len(ids), "history rows", timeout=90)


def order(index: int) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "order_id": f"o-{index}",
        "currency": ("EUR", "USD")[index % 2],
        "total": 40.5 + index * 5,  # above 100 from index 12 on
    }
    if index % 3 == 0:
        properties["coupon"] = "SPRING"
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"drafts-{index % 4}",
        "messageId": f"drafts-order-{uuid.uuid4()}",
        "properties": properties,
    }


def widget(name: str, index: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "userId": f"drafts-{index % 4}",
        "messageId": f"drafts-widget-{uuid.uuid4()}",
        "properties": {
            "widget_id": f"w-{index}",
            "size": index % 5,
            "color": ("red", "green", "blue")[index % 3],
            "added_at": f"2026-12-0{1 + index % 3}T10:00:00.000Z",
            **extra,
        },
    }


@pytest.fixture(scope="module")
def history(pipeline: str, sink: Service, database_url: str) -> History:
    run = uuid.uuid4().hex[:8]
    db = Database(database_url)
    try:
        store = SourceStore(db, cache_seconds=0)
        shop, other = (PostingSource(f"drafts-{who}-{run}", new_write_key()) for who in "ab")
        for source in (shop, other):
            store.create(source.name, source.key)
    finally:
        db.close()
    orders: list[dict[str, Any]] = []
    for batch in range(BATCHES):  # one request each: each its own receivedAt
        events = [order(batch * ORDERS_PER_BATCH + i) for i in range(ORDERS_PER_BATCH)]
        post(pipeline, shop, events)
        orders += events
        time.sleep(0.05)
    other_orders = [order(i) for i in range(7)]
    post(pipeline, other, other_orders)
    name = f"Widget Added {run}"
    widgets = [widget(name, i) for i in range(60)]
    post(pipeline, shop, widgets)
    written(database_url, [*orders, *other_orders, *widgets])
    return History(shop, other, name, orders, other_orders, widgets)


Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def clicktrail(stack_env: dict[str, str]) -> Run:
    """``clicktrail <args>`` against the stack, with SCHEMAS_DIR of the caller's choosing."""

    def run(*args: str, schemas: Path = SCHEMAS) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clicktrail", *args],
            env={**stack_env, "SCHEMAS_DIR": str(schemas)},
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def draft(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """events/order_completed 2-0-1: 2-0-0 changed, in a file of its own."""
    scratch = copy_catalogue(tmp_path / "scratch")
    evolved(scratch, "events/order_completed", "2-0-1", change)
    path = tmp_path / "draft.json"
    path.write_bytes((scratch / "events" / "order_completed" / "2-0-1.json").read_bytes())
    return path


def failing(output: str) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """The failing paths of a try's output: (path, keyword) -> (count, messageIds)."""
    found = {}
    lines = output.splitlines()
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        match = re.match(r"^\s+(\d+)  (\S+)  (\S+)  ", line)
        if match:
            ids = [i.strip() for i in following.split(",")]
            found[(match[2], match[3])] = (int(match[1]), ids)
    return found


def test_a_loosening_draft_passes_every_event_and_is_compatible(
    history: History, clicktrail: Run, tmp_path: Path
) -> None:
    def add_gift_wrap(document: dict[str, Any]) -> None:
        document["properties"]["gift_wrap"] = {"type": "boolean"}

    result = clicktrail(
        "schemas", "try", str(draft(tmp_path, add_gift_wrap)),
        "--source", history.shop.name, "--since", "1h",
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "30 event(s) tried: 30 passed, 0 failed" in result.stdout
    assert "ok    events/order_completed 2-0-0 -> 2-0-1" in result.stdout
    assert "stopped at --limit" not in result.stdout
    assert result.stdout.rstrip().endswith("verdict: the draft passes (exit 0)")


def test_a_tightening_draft_counts_failures_per_path_and_is_incompatible(
    history: History, clicktrail: Run, tmp_path: Path
) -> None:
    def tighten(document: dict[str, Any]) -> None:
        document["required"] = [*document["required"], "coupon"]
        document["properties"]["total"]["maximum"] = 100

    result = clicktrail(
        "schemas", "try", str(draft(tmp_path, tighten)),
        "--source", history.shop.name, "--since", "1h",
    )  # fmt: skip

    without_coupon = {e["messageId"] for e in history.orders if "coupon" not in e["properties"]}
    over_100 = {e["messageId"] for e in history.orders if e["properties"]["total"] > 100}
    rejected = without_coupon | over_100
    paths = failing(result.stdout)
    assert result.returncode == 1
    assert f"30 event(s) tried: {30 - len(rejected)} passed, {len(rejected)} failed" in (
        result.stdout
    )
    assert set(paths) == {("/properties/coupon", "required"), ("/properties/total", "maximum")}
    count, ids = paths[("/properties/coupon", "required")]
    assert count == len(without_coupon)
    assert len(ids) == 3
    assert set(ids) <= without_coupon
    count, ids = paths[("/properties/total", "maximum")]
    assert (count, set(ids) <= over_100) == (len(over_100), True)
    assert "FAIL  events/order_completed 2-0-0 -> 2-0-1 is not backward compatible:" in (
        result.stdout
    )
    assert "/properties/coupon: now required" in result.stdout
    assert "/properties/total: maximum tightened to 100" in result.stdout


def test_try_stops_at_the_limit_with_the_newest_events(
    history: History, clicktrail: Run, tmp_path: Path
) -> None:
    def require_discount(document: dict[str, Any]) -> None:
        document["required"] = [*document["required"], "discount"]

    result = clicktrail(
        "schemas", "try", str(draft(tmp_path, require_discount)),
        "--source", history.shop.name, "--since", "1h", "--limit", "4",
    )  # fmt: skip

    newest = {e["messageId"] for e in history.orders[-ORDERS_PER_BATCH:]}
    [(count, ids)] = failing(result.stdout).values()
    assert result.returncode == 1
    assert "4 event(s) tried: 0 passed, 4 failed" in result.stdout
    assert "stopped at --limit 4: older events were not tried" in result.stdout
    assert count == 4
    assert set(ids) <= newest


def test_try_reads_only_the_source_asked_for(
    history: History, clicktrail: Run, tmp_path: Path
) -> None:
    path = draft(tmp_path, lambda document: None)

    other = clicktrail("schemas", "try", str(path), "--source", history.other.name)
    unknown = clicktrail("schemas", "try", str(path), "--source", f"{history.other.name}-none")

    assert other.returncode == 0, other.stdout + other.stderr
    assert f"{len(history.other_orders)} event(s) tried: 7 passed, 0 failed" in other.stdout
    assert f"of source {history.other.name}" in other.stdout
    assert unknown.returncode == 1
    assert "no source named" in unknown.stderr


def proposed(output: str) -> dict[str, Any]:
    """The schema an infer printed: the JSON document after its first line."""
    start = output.index("\n{") + 1
    end = output.index("\n}", start) + 2
    document: dict[str, Any] = orjson.loads(output[start:end])
    return document


def test_infer_proposes_a_first_version_then_an_addition_each_passing_check_and_try(
    history: History, clicktrail: Run, pipeline: str, database_url: str, tmp_path: Path
) -> None:
    catalogue = copy_catalogue(tmp_path / "schemas")
    name = history.widget
    snake = name.lower().replace(" ", "_")
    where = ("--source", history.shop.name, "--since", "1h")

    path = catalogue / "events" / snake / "1-0-0.json"
    shown = clicktrail("schemas", "infer", name, *where, schemas=catalogue)
    left_unwritten = not path.exists()
    first = clicktrail("schemas", "infer", name, *where, "--write", schemas=catalogue)
    checked = clicktrail("schemas", "check", "--dir", str(catalogue))
    tried = clicktrail("schemas", "try", str(path), *where, schemas=catalogue)

    assert shown.returncode == 0, shown.stderr
    assert f"events/{snake}/1-0-0: inferred from the properties of 60 " in shown.stdout
    assert f"new: no version of events/{snake} exists yet" in shown.stdout
    assert f"would be written to {path} (--write writes it)" in shown.stdout
    assert left_unwritten
    schema = proposed(shown.stdout)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["added_at", "color", "size", "widget_id"]
    assert schema["properties"]["color"] == {"type": "string", "enum": ["blue", "green", "red"]}
    assert schema["properties"]["added_at"] == {"type": "string", "format": "date-time"}
    assert schema["properties"]["size"] == {"type": "integer"}
    assert first.returncode == 0, first.stderr
    assert f"written to {path}" in first.stdout
    assert orjson.loads(path.read_bytes()) == schema
    assert checked.returncode == 0, checked.stdout
    assert tried.returncode == 0, tried.stdout + tried.stderr
    assert "60 event(s) tried: 60 passed, 0 failed" in tried.stdout

    labelled = [widget(name, i, label=f"label {i}") for i in range(60, 70)]
    post(pipeline, history.shop, labelled)
    written(database_url, labelled)
    second = clicktrail("schemas", "infer", name, *where, "--write", schemas=catalogue)
    addition = catalogue / "events" / snake / "1-0-1.json"
    checked_again = clicktrail("schemas", "check", "--dir", str(catalogue))
    tried_again = clicktrail("schemas", "try", str(addition), *where, schemas=catalogue)

    assert second.returncode == 0, second.stderr
    assert "ADDITION to 1-0-0: compatible, only new optional properties:\n  /properties/label" in (
        second.stdout
    )
    assert f"written to {addition}" in second.stdout
    assert "label" not in orjson.loads(addition.read_bytes())["required"]
    assert checked_again.returncode == 0, checked_again.stdout
    assert f"ok    events/{snake} 1-0-0 -> 1-0-1" in checked_again.stdout
    assert tried_again.returncode == 0, tried_again.stdout
    assert "70 event(s) tried: 70 passed, 0 failed" in tried_again.stdout


def gift_wrapped(event: dict[str, Any]) -> dict[str, Any]:
    """An order with what 2-0-0 lacks: a gift_wrap, and a product with a gift_note."""
    event["properties"]["gift_wrap"] = True
    event["properties"]["products"] = [{"product_id": "p-1", "price": 4.5, "gift_note": "hi"}]
    return event


def test_infer_for_an_event_with_a_schema_adds_to_its_latest_what_the_events_carry(
    history: History, clicktrail: Run, pipeline: str, database_url: str, tmp_path: Path
) -> None:
    catalogue = copy_catalogue(tmp_path / "schemas")
    where = ("--source", history.shop.name, "--since", "1h")
    # 2-0-0 is closed, so the pipeline dead-letters these: they are not in the history.
    wrapped = [gift_wrapped(order(100 + i)) for i in range(5)]
    as_text = order(105)
    as_text["properties"]["total"] = "12.50"
    post(pipeline, history.shop, [*wrapped, as_text])
    letters = [event["messageId"] for event in [*wrapped, as_text]]
    wait_for(
        lambda: len(history_counts(database_url, letters, "dead_letters")) == len(letters),
        "the dead letters",
        timeout=90,
    )

    scratch = clicktrail("schemas", "infer", "Order Completed", *where, "--from-scratch")
    result = clicktrail("schemas", "infer", "Order Completed", *where, "--write", schemas=catalogue)
    path = catalogue / "events" / "order_completed" / "2-0-1.json"
    checked = clicktrail("schemas", "check", "--dir", str(catalogue))
    tried = clicktrail("schemas", "try", str(path), *where, schemas=catalogue)
    again = clicktrail("schemas", "infer", "Order Completed", *where, "--write", schemas=catalogue)

    # From the history alone, as before: every order has a total, which 2-0-0 does not
    # require; none has products.
    assert scratch.returncode == 0, scratch.stderr
    assert "events/order_completed/3-0-0: inferred from the properties of 30 " in scratch.stdout
    assert "MODEL: incompatible with 2-0-0, so a new MODEL 3-0-0:" in scratch.stdout
    assert "/properties/total: now required" in scratch.stdout
    assert "/properties/products: field removed or renamed" in scratch.stdout
    assert result.returncode == 0, result.stderr
    assert (
        "events/order_completed/2-0-1: 2-0-0 as written, with what the properties of 36 "
        "'Order Completed' event(s) received since "
    ) in result.stdout
    assert "(6 of them dead-lettered) carry beyond it" in result.stdout
    assert (
        "ADDITION to 2-0-0: compatible, only new optional properties:\n"
        "  /properties/products[]/gift_note\n"
        "  /properties/gift_wrap\n"
    ) in result.stdout
    assert (
        "  1 event(s) carry /properties/total as string, which 2-0-0 refuses: they are "
        "dead-lettered today"
    ) in result.stdout
    expected = orjson.loads((SCHEMAS / "events" / "order_completed" / "2-0-0.json").read_bytes())
    expected["$id"] = "urn:clicktrail:events/order_completed/2-0-1"
    expected["self"]["version"] = "2-0-1"
    expected["properties"]["products"]["items"]["properties"]["gift_note"] = {"type": "string"}
    expected["properties"]["gift_wrap"] = {"type": "boolean"}
    assert proposed(result.stdout) == expected
    assert f"written to {path}" in result.stdout
    assert orjson.loads(path.read_bytes()) == expected
    assert checked.returncode == 0, checked.stdout
    assert "ok    events/order_completed 2-0-0 -> 2-0-1" in checked.stdout
    assert tried.returncode == 0, tried.stdout + tried.stderr
    assert "30 event(s) tried: 30 passed, 0 failed" in tried.stdout
    # 2-0-1 has what the events carry: nothing more to propose.
    assert again.returncode == 0, again.stderr
    assert "nothing new: the events carry no property 2-0-1 lacks" in again.stdout
    assert "1 event(s) carry /properties/total as string, which 2-0-1 refuses" in again.stdout
    assert again.stdout.rstrip().endswith("nothing to write")
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "1-0-0.json",
        "2-0-0.json",
        "2-0-1.json",
    ]


def test_infer_of_an_event_the_window_does_not_hold_fails(
    history: History, clicktrail: Run
) -> None:
    result = clicktrail("schemas", "infer", f"{history.widget} Never", "--since", "1h")

    assert result.returncode == 1
    assert "nothing to infer from" in result.stderr
