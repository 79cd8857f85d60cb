"""Receipts at the edge: who may ask, what a malformed id gets, and the answer's status (the
lookups themselves are tested against Postgres and Redis, the whole path through the stack)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from clicktrail.receipts import Copy, Receipt
from tests.support.web import basic, twin_app, twin_services

ADMIN, SHOP_DEBUG, SHOP = "admin-secret", "dbg_shop", "src-shop"


class Keys:
    def source_of(self, key: str) -> str | None:
        return {SHOP_DEBUG: SHOP}.get(key)


class Book:
    """Receipts of a shop's one published event, asked after by (messageId, source)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    def find(self, message_id: str, source_id: str | None = None) -> Receipt:
        self.asked.append((message_id, source_id))
        if message_id != "m-1" or source_id not in (None, SHOP):
            return Receipt(message_id, queue_depth=3)
        moment = datetime(2026, 6, 1, 12, tzinfo=UTC)
        copy = Copy(moment.date(), moment, SHOP, "track", "Signed Up", published={"topic": "ev"})
        return Receipt(message_id, [copy])


def client(book: Book | None = None, **more: Any) -> Any:
    services = twin_services(
        admin_token=ADMIN, debugger_keys=Keys(), receipts=book or Book(), **more
    )
    return twin_app(services).test_client()


def test_the_admin_and_the_sources_debugger_key_get_the_receipt() -> None:
    book = Book()
    api = client(book)

    by_admin = api.get("/v1/events/m-1", headers={"Authorization": f"Bearer {ADMIN}"})
    by_key = api.get("/v1/events/m-1", headers={"Authorization": f"Bearer {SHOP_DEBUG}"})

    assert by_admin.status_code == by_key.status_code == 200
    assert by_admin.json["status"] == "published"
    assert by_admin.headers["Cache-Control"] == "no-store"
    assert book.asked == [("m-1", None), ("m-1", SHOP)]  # a key is held to its source


def test_an_unknown_event_is_404_with_the_queue_depth() -> None:
    answer = client().get("/v1/events/m-2", headers={"Authorization": f"Bearer {ADMIN}"})

    assert answer.status_code == 404
    assert answer.json["code"] == "event_not_found"
    assert answer.json["queue"] == {"depth": 3}
    assert "queued" in answer.json["message"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_debugger_key"),
        (basic("wk-shop"), 401, "write_key_not_accepted"),
        ({"Authorization": "Bearer nope"}, 401, "invalid_debugger_key"),
    ],
)
def test_a_receipt_wants_a_debugger_key_or_the_admin_token(
    headers: dict[str, str], status: int, code: str
) -> None:
    answer = client().get("/v1/events/m-1", headers=headers)

    assert (answer.status_code, answer.json["code"]) == (status, code)


def test_a_message_id_over_segments_limit_is_refused() -> None:
    answer = client().get("/v1/events/" + "x" * 101, headers={"Authorization": f"Bearer {ADMIN}"})

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_message_id")


def test_an_api_without_receipts_says_so() -> None:
    services = twin_services(admin_token=ADMIN)
    answer = (
        twin_app(services)
        .test_client()
        .get("/v1/events/m-1", headers={"Authorization": f"Bearer {ADMIN}"})
    )

    assert (answer.status_code, answer.json["code"]) == (403, "receipts_disabled")
