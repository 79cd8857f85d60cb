from __future__ import annotations

import copy
import gc
import tracemalloc
from typing import Any
from urllib.parse import urlsplit

import pytest

from clicktrail.enrich import (
    Enricher,
    EnrichmentSettings,
    add_campaign,
    add_location,
    anonymize_ip,
    attach_profile_traits,
    attach_session,
    classify_referrer,
    correct_clock_skew,
    load_user_agent_rules,
    open_geoip,
    parse_user_agent,
    protect_ip,
    pseudonymize,
)
from tests.support.geoip import write_city_database

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.109 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture(scope="module")
def geoip(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return open_geoip(write_city_database(tmp_path_factory.mktemp("geo") / "city.mmdb"))


def page_event(
    url: str | None = None, referrer: str | None = None, **context: Any
) -> dict[str, Any]:
    page = {k: v for k, v in (("url", url), ("referrer", referrer)) if v is not None}
    return {"type": "page", "context": {"page": page, **context}}


@pytest.mark.parametrize(
    ("event", "timestamp", "original"),
    [
        # Client clock 1 h slow: event 10 s before sending -> 10 s before receipt.
        (
            {
                "receivedAt": "2026-05-01T12:00:00.000Z",
                "sentAt": "2026-05-01T11:00:00Z",
                "timestamp": "2026-05-01T10:59:50Z",
            },
            "2026-05-01T11:59:50.000Z",
            "2026-05-01T10:59:50Z",
        ),
        # Offsets in other zones are honoured.
        (
            {
                "receivedAt": "2026-05-01T12:00:00.000Z",
                "sentAt": "2026-05-01T14:00:05+02:00",
                "timestamp": "2026-05-01T14:00:00+02:00",
            },
            "2026-05-01T11:59:55.000Z",
            "2026-05-01T14:00:00+02:00",
        ),
        # No sentAt: a server library's timestamp is taken as is.
        (
            {"receivedAt": "2026-05-01T12:00:00.000Z", "timestamp": "2026-04-01T00:00:00Z"},
            "2026-04-01T00:00:00Z",
            "2026-04-01T00:00:00Z",
        ),
        # No timestamp: it happened when received.
        (
            {"receivedAt": "2026-05-01T12:00:00.000Z", "sentAt": "2026-05-01T11:00:00Z"},
            "2026-05-01T12:00:00.000Z",
            None,
        ),
        # A timestamp in the future (no sentAt to correct it by) is a wrong clock: the receipt.
        (
            {"receivedAt": "2026-05-01T12:00:00.000Z", "timestamp": "9999-12-31T23:59:59Z"},
            "2026-05-01T12:00:00.000Z",
            "9999-12-31T23:59:59Z",
        ),
        # Within the tolerance a server's slightly fast clock is believed.
        (
            {"receivedAt": "2026-05-01T12:00:00.000Z", "timestamp": "2026-05-01T12:04:00Z"},
            "2026-05-01T12:04:00Z",
            "2026-05-01T12:04:00Z",
        ),
        # A skew correction that lands in the future is clamped too.
        (
            {
                "receivedAt": "2026-05-01T12:00:00.000Z",
                "sentAt": "2026-05-01T12:00:00Z",
                "timestamp": "2026-05-02T12:00:00Z",
            },
            "2026-05-01T12:00:00.000Z",
            "2026-05-02T12:00:00Z",
        ),
        # Skew arithmetic that leaves the calendar (year 1 sent in year 9999): sentAt ignored.
        (
            {
                "receivedAt": "2026-05-01T12:00:00.000Z",
                "sentAt": "9999-12-31T23:59:59.999Z",
                "timestamp": "0001-01-01T00:00:00Z",
            },
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
        ),
        (
            {
                "receivedAt": "2026-05-01T12:00:00.000Z",
                "sentAt": "0001-01-01T00:00:00Z",
                "timestamp": "9999-12-31T23:59:59Z",
            },
            "2026-05-01T12:00:00.000Z",
            "9999-12-31T23:59:59Z",
        ),
        # A date with no UTC equivalent is unreadable: it happened when received.
        (
            {"receivedAt": "2026-05-01T12:00:00.000Z", "timestamp": "0001-01-01T00:00:00+01:00"},
            "2026-05-01T12:00:00.000Z",
            "0001-01-01T00:00:00+01:00",
        ),
    ],
)
def test_clock_skew_correction(event: dict[str, Any], timestamp: str, original: str | None) -> None:
    correct_clock_skew(event)

    assert event["timestamp"] == timestamp
    assert event.get("originalTimestamp") == original


@pytest.mark.parametrize(
    ("ip", "masked"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:85a3:1234:5678:8a2e:370:7334", "2001:db8:85a3::"),
        ("::ffff:198.51.100.23", "198.51.100.0"),
        (" 10.1.2.3 ", "10.1.2.0"),
        ("not-an-ip", None),
    ],
)
def test_anonymize_ip(ip: str, masked: str | None) -> None:
    assert anonymize_ip(ip) == masked


def test_protect_ip_masks_drops_or_keeps_per_setting() -> None:
    masked = {"context": {"ip": "192.0.2.44"}}
    dropped = {"context": {"ip": "garbage"}}
    numeric = {"context": {"ip": 3232235777}}
    kept = {"context": {"ip": "192.0.2.44"}}

    protect_ip(masked, anonymize=True)
    protect_ip(dropped, anonymize=True)
    protect_ip(numeric, anonymize=True)
    protect_ip(kept, anonymize=False)

    assert masked["context"] == {"ip": "192.0.2.0"}
    assert dropped["context"] == {}
    assert numeric["context"] == {}
    assert kept["context"] == {"ip": "192.0.2.44"}


@pytest.mark.parametrize(
    ("agent", "browser", "os", "device", "bot"),
    [
        (CHROME_MAC, ("Chrome", "120.0.6099"), ("Mac OS X", "10.15.7"), "Mac", False),
        (IPHONE, ("Mobile Safari", "17.1"), ("iOS", "17.1"), "iPhone", False),
        (GOOGLEBOT, ("Googlebot", "2.1"), ("Other", None), "Spider", True),
    ],
)
def test_parse_user_agent(
    agent: str, browser: tuple[str, str], os: tuple[str, str | None], device: str, bot: bool
) -> None:
    event = {"context": {"userAgent": agent}}

    parse_user_agent(event)

    parsed = event["context"]["userAgentParsed"]  # type: ignore[index]
    assert (parsed["browser"]["family"], parsed["browser"]["version"]) == browser
    assert (parsed["os"]["family"], parsed["os"]["version"]) == os
    assert parsed["device"]["family"] == device
    assert parsed["bot"] is bot


def test_no_user_agent_no_parse() -> None:
    event: dict[str, Any] = {"context": {}}

    parse_user_agent(event)

    assert event == {"context": {}}


def test_campaign_comes_from_the_utm_parameters_of_the_page_url() -> None:
    event = page_event(
        "https://shop.example/p?utm_source=newsletter&utm_medium=email&utm_campaign=spring%20sale&utm_term=shoes&utm_content=hero&x=1"
    )

    add_campaign(event)

    assert event["context"]["campaign"] == {
        "source": "newsletter", "medium": "email", "name": "spring sale", "term": "shoes", "content": "hero",
    }  # fmt: skip


def test_campaign_is_left_alone_when_sent_or_absent() -> None:
    sent = page_event("https://shop.example/?utm_source=ad", campaign={"name": "from the client"})
    plain = page_event("https://shop.example/?q=1")

    add_campaign(sent)
    add_campaign(plain)

    assert sent["context"]["campaign"] == {"name": "from the client"}
    assert "campaign" not in plain["context"]


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        (
            "https://www.google.co.uk/search?q=red+shoes&hl=en",
            {"type": "search", "name": "Google", "searchTerm": "red shoes"},
        ),
        (
            "https://duckduckgo.com/?q=clicktrail",
            {"type": "search", "name": "DuckDuckGo", "searchTerm": "clicktrail"},
        ),
        ("https://www.bing.com/", {"type": "search", "name": "Bing"}),
        ("https://l.facebook.com/l.php?u=x", {"type": "social", "name": "Facebook"}),
        ("https://t.co/abc", {"type": "social", "name": "X"}),
        ("https://www.reddit.com/r/analytics", {"type": "social", "name": "Reddit"}),
        ("https://shop.example/cart", {"type": "internal"}),
        ("https://blog.shop.example/post", {"type": "internal"}),
        ("https://help.partner.example/faq", {"type": "internal"}),
        ("https://news.example.org/article", {"type": "other"}),
    ],
)
def test_referrer_classification(referrer: str, expected: dict[str, str]) -> None:
    event = page_event("https://www.shop.example/p/1", referrer)

    classify_referrer(event, internal_domains=("partner.example",))

    assert event["context"]["referrer"] == {"url": referrer, **expected}


def test_no_referrer_or_a_non_url_is_left_alone() -> None:
    none = page_event("https://shop.example/")
    junk = page_event("https://shop.example/", "android-app://")
    sent = page_event("https://shop.example/", "https://www.google.com/")
    sent["context"]["referrer"] = {"type": "dataxu"}

    for event in (none, junk, sent):
        classify_referrer(event)

    assert "referrer" not in none["context"]
    assert "referrer" not in junk["context"]
    assert sent["context"]["referrer"] == {"type": "dataxu"}


def test_location_comes_from_the_ip(geoip: Any) -> None:
    paris = {"context": {"ip": "203.0.113.77"}}
    japan = {"context": {"ip": "2001:db8::1"}}
    unknown = {"context": {"ip": "198.51.100.1"}}
    sent = {"context": {"ip": "203.0.113.77", "location": {"city": "Lyon"}}}

    for event in (paris, japan, unknown, sent):
        add_location(event, geoip)

    assert paris["context"]["location"] == {
        "country": "France", "countryCode": "FR", "region": "Île-de-France", "city": "Paris",
        "latitude": 48.8566, "longitude": 2.3522, "timezone": "Europe/Paris",
    }  # fmt: skip
    assert japan["context"]["location"] == {"country": "Japan", "countryCode": "JP"}
    assert "location" not in unknown["context"]
    assert sent["context"]["location"] == {"city": "Lyon"}


def test_profile_traits_are_attached_and_the_events_own_win() -> None:
    event = {"context": {"traits": {"plan": "pro"}}}
    bare: dict[str, Any] = {}

    attach_profile_traits(event, {"plan": "free", "email": "a@example.com"})
    attach_profile_traits(bare, {"email": "a@example.com"})

    assert event["context"]["traits"] == {"plan": "pro", "email": "a@example.com"}
    assert bare["context"]["traits"] == {"email": "a@example.com"}


def test_attach_session_makes_a_context_when_there_is_none() -> None:
    event: dict[str, Any] = {"context": None}
    session = {"id": "s", "index": 1, "eventIndex": 3, "startedAt": "2026-01-01T00:00:00.000Z"}

    attach_session(event, session)

    assert event["context"] == {"session": session}


def full_event() -> dict[str, Any]:
    return {
        "type": "page",
        "userId": "u",
        "receivedAt": "2026-05-01T12:00:00.000Z",
        "context": {
            "ip": "203.0.113.77",
            "userAgent": CHROME_MAC,
            "page": {
                "url": "https://shop.example/?utm_source=ad",
                "referrer": "https://www.google.com/search?q=x",
            },
        },
    }


def test_the_enricher_runs_every_step_a_source_has_on(geoip: Any) -> None:
    event = full_event()

    Enricher(geoip).enrich(event, EnrichmentSettings(), {"email": "a@example.com"})

    context = event["context"]
    assert context["ip"] == "203.0.113.0"
    assert context["location"]["city"] == "Paris"  # looked up before the IP was masked
    assert context["userAgentParsed"]["browser"]["family"] == "Chrome"
    assert context["campaign"] == {"source": "ad"}
    assert context["referrer"]["type"] == "search"
    assert context["traits"] == {"email": "a@example.com"}
    assert event["timestamp"] == "2026-05-01T12:00:00.000Z"


@pytest.mark.parametrize(
    ("switch", "missing"),
    [
        ("geoip", "location"),
        ("user_agent", "userAgentParsed"),
        ("campaign", "campaign"),
        ("referrer", "referrer"),
        ("profile_traits", "traits"),
    ],
)
def test_each_step_can_be_switched_off_per_source(geoip: Any, switch: str, missing: str) -> None:
    event = full_event()
    settings = EnrichmentSettings.from_settings({switch: False})

    Enricher(geoip).enrich(event, settings, {"email": "a@example.com"})

    assert missing not in event["context"]
    present = {"location", "userAgentParsed", "campaign", "referrer", "traits"} - {missing}
    assert present <= set(event["context"])


def test_a_source_may_keep_ips(geoip: Any) -> None:
    event = full_event()

    Enricher(geoip).enrich(event, EnrichmentSettings.from_settings({"anonymize_ip": False}), None)

    assert event["context"]["ip"] == "203.0.113.77"


def test_without_a_geoip_database_there_is_no_location() -> None:
    event = full_event()

    Enricher().enrich(event, EnrichmentSettings(), None)

    assert "location" not in event["context"]


@pytest.mark.parametrize(
    "settings", [{"geoip": "yes"}, {"internal_domains": "shop.example"}, {"internal_domains": [1]}]
)
def test_malformed_switches_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        EnrichmentSettings.from_settings(settings)


def test_enrichment_never_overwrites_what_the_client_sent(geoip: Any) -> None:
    event = full_event()
    event["context"].update(
        location={"city": "Lyon"},
        userAgentParsed={"mine": True},
        campaign={"name": "c"},
        referrer={"type": "x"},
    )
    sent = copy.deepcopy(event["context"])

    Enricher(geoip).enrich(event, EnrichmentSettings(), None)

    for key in ("location", "userAgentParsed", "campaign", "referrer"):
        assert event["context"][key] == sent[key]


def test_pseudonymize_replaces_values_by_a_keyed_hash_that_keeps_equality() -> None:
    event: dict[str, Any] = {
        "properties": {
            "email": "ada@example.com",
            "products": [{"sku": "A-1"}, {"sku": 42}, {"name": "no sku"}],
        },
        "traits": {"email": "ada@example.com", "phone": None},
    }
    paths = ("properties.email", "properties.products.*.sku", "traits.*", "missing.path")

    pseudonymize(event, paths, b"key")

    email = event["properties"]["email"]
    assert email.startswith("hmac:")
    assert len(email) == len("hmac:") + 64
    assert event["traits"]["email"] == email  # equal inputs, equal pseudonyms: joins still work
    assert event["traits"]["phone"] is None
    first, second, third = event["properties"]["products"]
    assert first["sku"].startswith("hmac:")
    assert second["sku"].startswith("hmac:")
    assert third == {"name": "no sku"}

    again = copy.deepcopy(event)
    pseudonymize(again, paths, b"key")
    assert again == event  # applied twice (a retried request) changes nothing

    other: dict[str, Any] = {"properties": {"email": "ada@example.com"}}
    pseudonymize(other, ("properties.email",), b"another key")
    assert other["properties"]["email"] != email


def test_without_a_key_pseudonymised_fields_are_blanked() -> None:
    event: dict[str, Any] = {"properties": {"email": "ada@example.com", "plan": "pro"}}

    pseudonymize(event, ("properties.email",), None)

    assert event == {"properties": {"email": None, "plan": "pro"}}


def test_traits_the_enricher_attaches_are_pseudonymised_too() -> None:
    event: dict[str, Any] = {"type": "track", "userId": "u", "context": {"ip": "192.0.2.1"}}
    settings = EnrichmentSettings.from_settings({"pseudonymize": ["context.traits.email"]})

    Enricher(pseudonymization_key="key").enrich(event, settings, {"email": "ada@example.com"})

    assert event["context"]["traits"]["email"].startswith("hmac:")
    assert event["context"]["ip"] == "192.0.2.0"


@pytest.mark.parametrize("field", ["userAgent", "ip", "page.url", "page.referrer"])
def test_long_distinct_inputs_are_enriched_but_not_remembered(field: str) -> None:
    """A client sending distinct 30 KB strings must not make the process keep them."""
    enricher, settings = Enricher(), EnrichmentSettings()
    load_user_agent_rules()

    def long_event(n: int) -> dict[str, Any]:
        pad = f"{n:06d}" + "x" * 30_000
        event = page_event("https://shop.example/?utm_source=a", "https://www.bing.com/?q=a")
        context = event["context"]
        context.update(userAgent="Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", ip="1.2.3.4")
        if field == "userAgent":
            context["userAgent"] += " " + pad
        elif field == "ip":
            context["ip"] += pad
        elif field == "page.url":
            context["page"]["url"] = f"https://shop.example/?utm_source={pad}"
        else:
            context["page"]["referrer"] = f"https://www.bing.com/search?q={pad}"
        return event

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(64):
            event = long_event(n)
            enricher.enrich(event, settings, None)
        del event
        urlsplit.cache_clear()  # the standard library's own: 128 entries, bounded
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert kept < 256 * 1024, f"{kept} bytes kept for 64 events"  # 64 x 30 KB would be 1.9 MB
    last = long_event(63)
    enricher.enrich(last, settings, None)
    context = last["context"]
    assert context["userAgentParsed"]["browser"]["family"] == "Chrome"
    assert context["referrer"]["type"] == "search"
    if field == "ip":
        assert "ip" not in context  # not an address
    if field == "page.url":
        assert context["campaign"]["source"].startswith("000063")
