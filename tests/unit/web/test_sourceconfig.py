"""/sourceConfig, the control-plane answer RudderStack's SDKs fetch before they send."""

from __future__ import annotations

import pytest

from clicktrail.sources import Source
from tests.support.twins import MemorySources
from tests.support.web import basic, twin_app, twin_services

KEY = "wk-rs"
SOURCES = MemorySources(
    {KEY: Source("src-rs", "app", {"allowed_origins": ["https://app.example"]})}
)


@pytest.mark.parametrize("path", ["/sourceConfig", "/sourceConfig/?p=npm&v=3.34.1&writeKey=x"])
def test_a_write_key_gets_its_source_enabled_without_destinations(path: str) -> None:
    api = twin_app(twin_services(SOURCES)).test_client()

    response = api.get(path, headers={**basic(KEY), "Origin": "https://app.example"})

    assert response.status_code == 200
    source = response.json["source"]
    assert (source["id"], source["name"], source["writeKey"]) == ("src-rs", "app", KEY)
    assert (source["enabled"], source["config"], source["destinations"]) == (True, {}, [])
    assert source["workspaceId"] == "clicktrail"
    assert source["updatedAt"] == "2026-06-01T12:00:00.000Z"
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_without_a_good_key_or_from_another_origin_it_is_refused() -> None:
    api = twin_app(twin_services(SOURCES)).test_client()

    missing = api.get("/sourceConfig")
    in_query_only = api.get(f"/sourceConfig/?writeKey={KEY}")
    elsewhere = api.get("/sourceConfig", headers={**basic(KEY), "Origin": "https://evil.example"})

    assert (missing.status_code, missing.json["code"]) == (401, "missing_write_key")
    assert in_query_only.status_code == 401  # keys in URLs end up in logs: Basic auth only
    assert (elsewhere.status_code, elsewhere.json["code"]) == (403, "origin_not_allowed")
