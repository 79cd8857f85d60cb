"""The debugger's page and feed at the edge: who sees which source, and refusals in the one
error shape (the feed itself is tested against Redis, the page in a browser)."""

from __future__ import annotations

from typing import Any

import pytest

from clicktrail.sources import Source
from tests.support.twins import MemoryDebugFeed, MemorySources
from tests.support.web import basic, twin_app, twin_services

SHOP_KEY, BLOG_KEY, ADMIN = "wk-shop", "wk-blog", "admin-secret"
SHOP_DEBUG = "dbg_shop"
SHOP, BLOG = Source("src-shop", "shop", {}), Source("src-blog", "blog", {})
SOURCES = MemorySources({SHOP_KEY: SHOP, BLOG_KEY: BLOG})
BEARER = {"Authorization": f"Bearer {ADMIN}"}
SHOP_BEARER = {"Authorization": f"Bearer {SHOP_DEBUG}"}


class KeyedFeed(MemoryDebugFeed):
    """A feed that knows the shop's debugger key."""

    def source_of(self, key: str) -> str | None:
        return {SHOP_DEBUG: SHOP.id}.get(key)


def entry(entry_id: str, message_id: str, status: str = "published") -> dict[str, Any]:
    return {"id": entry_id, "at": "2026-06-01T12:00:00.000Z", "status": status,
            "messageId": message_id, "type": "track", "name": "Signed Up", "errors": [],
            "raw": {"messageId": message_id}, "enriched": {"messageId": message_id}}  # fmt: skip


def client(feed: KeyedFeed | None = None, sources: MemorySources = SOURCES) -> Any:
    services = twin_services(sources, admin_token=ADMIN, debugger=feed or KeyedFeed())
    return twin_app(services).test_client()


def test_the_page_and_its_files_are_served_with_a_strict_policy() -> None:
    api = client()

    page = api.get("/debugger")
    script = api.get("/debugger/debugger.js")
    style = api.get("/debugger/debugger.css")

    assert page.status_code == script.status_code == style.status_code == 200
    assert page.mimetype == "text/html"
    assert script.mimetype == "text/javascript"
    assert style.mimetype == "text/css"
    assert b'src="/debugger/debugger.js"' in page.data
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert b"://" not in script.data  # nothing fetched from elsewhere


def test_a_debugger_key_sees_its_own_source_only() -> None:
    feed = KeyedFeed(
        {"src-shop": [entry("2-0", "m-2"), entry("1-0", "m-1")], "src-blog": [entry("3-0", "b")]}
    )
    api = client(feed)

    listed = api.get("/v1/debugger/sources", headers=SHOP_BEARER)
    own = api.get("/v1/debugger/events", headers=SHOP_BEARER)
    newer = api.get("/v1/debugger/events?after=1-0", headers=SHOP_BEARER)
    other = api.get("/v1/debugger/events?sourceId=src-blog", headers=SHOP_BEARER)

    assert listed.json == {
        "admin": False,
        "retentionSeconds": 300,
        "sources": [{"id": "src-shop", "name": "shop"}],
    }
    assert own.status_code == 200
    assert [e["messageId"] for e in own.json["events"]] == ["m-2", "m-1"]
    assert (own.json["sourceId"], own.json["cursor"]) == ("src-shop", "2-0")
    assert own.headers["Cache-Control"] == "no-store"
    assert [e["messageId"] for e in newer.json["events"]] == ["m-2"]
    assert (other.status_code, other.json["code"]) == (404, "source_not_found")
    assert feed.watched == ["src-shop", "src-shop"]


def test_the_admin_token_sees_every_source_and_names_the_one_to_watch() -> None:
    feed = KeyedFeed({"src-blog": [entry("3-0", "b")]})
    api = client(feed)

    listed = api.get("/v1/debugger/sources", headers=BEARER)
    unnamed = api.get("/v1/debugger/events", headers=BEARER)
    unknown = api.get("/v1/debugger/events?sourceId=src-nope", headers=BEARER)
    named = api.get("/v1/debugger/events?sourceId=src-blog", headers=BEARER)

    assert listed.json["admin"] is True
    assert [s["name"] for s in listed.json["sources"]] == ["blog", "shop"]
    assert (unnamed.status_code, unnamed.json["field"]) == (400, "sourceId")
    assert unnamed.json["code"] == "missing_source"
    assert (unknown.status_code, unknown.json["code"]) == (404, "source_not_found")
    assert [e["messageId"] for e in named.json["events"]] == ["b"]
    assert feed.watched == ["src-blog"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_debugger_key"),
        (basic("wk-unknown"), 401, "write_key_not_accepted"),
        ({"Authorization": "Bearer wrong"}, 401, "invalid_debugger_key"),
        ({"Authorization": f"Bearer {SHOP_KEY}"}, 401, "invalid_debugger_key"),
    ],
)
def test_the_feed_wants_credentials(headers: dict[str, str], status: int, code: str) -> None:
    for path in ("/v1/debugger/sources", "/v1/debugger/events"):
        response = client().get(path, headers=headers)

        assert (response.status_code, response.json["code"]) == (status, code)


def test_a_write_key_sees_nothing() -> None:
    """A write key is public (every page running a browser SDK shows it): it must not open the
    feed of every visitor's events."""
    feed = KeyedFeed({"src-shop": [entry("1-0", "m-1")]})
    api = client(feed)

    for path in ("/v1/debugger/sources", "/v1/debugger/events"):
        response = api.get(path, headers=basic(SHOP_KEY))

        assert (response.status_code, response.json["code"]) == (401, "write_key_not_accepted")
        assert "events" not in response.json
    assert feed.watched == []


def test_without_an_admin_token_a_debugger_key_still_works() -> None:
    services = twin_services(SOURCES, admin_token=None, debugger=KeyedFeed())
    api = twin_app(services).test_client()

    assert api.get("/v1/debugger/events", headers=SHOP_BEARER).status_code == 200
    assert api.get("/v1/debugger/events", headers={"Authorization": "Bearer "}).status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=latest", "after"),
        ("after=50844828777672824434-0", "after"),  # beyond the 64 bits of a Redis entry id
        ("after=", "after"),  # as the document says: an entry id or nothing
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("limit=", "limit"),
    ],
)
def test_a_malformed_cursor_or_limit_is_refused(query: str, field: str) -> None:
    response = client().get(f"/v1/debugger/events?{query}", headers=SHOP_BEARER)

    assert (response.status_code, response.json["field"]) == (400, field)


def test_a_debugger_that_is_off_says_how_to_turn_it_on() -> None:
    services = twin_services(SOURCES, admin_token=ADMIN)  # no feed: DEBUGGER_RETENTION_SECONDS=0

    response = twin_app(services).test_client().get("/v1/debugger/events", headers=SHOP_BEARER)

    assert (response.status_code, response.json["code"]) == (403, "debugger_disabled")
    assert "DEBUGGER_RETENTION_SECONDS" in response.json["message"]


def test_redis_down_is_a_503_with_retry_after() -> None:
    feed = KeyedFeed()
    feed.down = True

    response = client(feed).get("/v1/debugger/events", headers=SHOP_BEARER)

    assert (response.status_code, response.json["code"]) == (503, "unavailable")
    assert int(response.headers["Retry-After"]) > 0
