"""Enrichment: plain functions on one event, each with its own tests, each switchable per source.

What each adds (never overwriting a value the client sent):
- ``context.location`` from GeoIP (country, region, city, coordinates), when a MaxMind database
  is configured; looked up before the IP is anonymised;
- ``context.ip`` anonymised (last octet / last 80 bits), unless the source keeps IPs;
- ``context.userAgentParsed``: browser, OS, device and a bot flag (ua-parser);
- ``context.campaign`` from the UTM parameters of ``context.page.url``;
- ``context.referrer`` classified: search (with the search terms), social, internal or other;
- ``context.traits``: the identified user's profile traits (the event's own win);
- the source's ``pseudonymize`` paths (``properties.email``, ``traits.phone``,
  ``properties.products.*.sku``) replaced by ``hmac:<HMAC-SHA256 hex>`` under
  PSEUDONYMIZATION_KEY: equal values stay equal (joins and counts still work), the originals
  never leave the pipeline; without a key the fields are removed instead;
- ``timestamp`` corrected for client clock skew, and ``context.session``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson
import ua_parser

from clicktrail import referrers
from clicktrail.clock import event_time, format_ts, parse_ts
from clicktrail.errors import InvalidSettings

log = logging.getLogger(__name__)

# The same user agents, addresses and URLs come back event after event: each step remembers
# this many recent inputs (per process) and hands out copies of what it computed. Only inputs
# up to these lengths are remembered (real ones are far shorter): a client sending distinct
# strings of up to 32 KB would otherwise make every worker process hold CACHE_SIZE of them per
# step, some 750 MB; with these bounds, at most some 50 MB.
CACHE_SIZE = 4096
CACHED_AGENT_CHARS = 1024
CACHED_URL_CHARS = 2048
CACHED_IP_CHARS = 64  # the longest IPv6 text with a zone is well below

UTM_FIELDS = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


@dataclass(frozen=True)
class EnrichmentSettings:
    """A source's switches (its settings; every one on by default)."""

    anonymize_ip: bool = True
    geoip: bool = True
    user_agent: bool = True
    campaign: bool = True
    referrer: bool = True
    profile_traits: bool = True
    # Hosts counted as the site itself when classifying referrers (besides the page's own).
    internal_domains: tuple[str, ...] = field(default_factory=tuple)
    # Dotted paths of values to pseudonymise; ``*`` stands for any list item or key.
    pseudonymize: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> EnrichmentSettings:
        switches = {
            name: settings[name]
            for name in (
                "anonymize_ip",
                "geoip",
                "user_agent",
                "campaign",
                "referrer",
                "profile_traits",
            )
            if name in settings
        }
        for name, value in switches.items():
            if not isinstance(value, bool):
                raise InvalidSettings(f"{name} must be true or false")
        domains = settings.get("internal_domains", [])
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise InvalidSettings("internal_domains must be a list of host names")
        paths = settings.get("pseudonymize", [])
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise InvalidSettings("pseudonymize must be a list of dotted paths")
        return cls(**switches, internal_domains=tuple(domains), pseudonymize=tuple(paths))


def _context(event: dict[str, Any]) -> dict[str, Any]:
    context = event.get("context")
    if not isinstance(context, dict):
        context = event["context"] = {}
    return context


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (to read from, never to write)."""
    return value if isinstance(value, dict) else {}


def correct_clock_skew(event: dict[str, Any]) -> None:
    """Set ``timestamp`` on the server's clock (``clock.event_time``), as Segment does:
    ``receivedAt - (sentAt - timestamp)``, the receive time for one in the future.

    The client's own value is kept as ``originalTimestamp``. Without ``sentAt`` the client's
    timestamp is trusted as is (server-side libraries send exact times); without a timestamp,
    the event happened when it was received.
    """
    received = parse_ts(event.get("receivedAt"))
    if received is None:
        return
    if event.get("timestamp") is not None:
        event.setdefault("originalTimestamp", event["timestamp"])
    original = parse_ts(event.get("timestamp"))
    if original is None:  # none, or unreadable (kept as originalTimestamp)
        event["timestamp"] = format_ts(received)
        return
    moment = event_time(original, parse_ts(event.get("sentAt")), received)
    if moment is not original:
        event["timestamp"] = format_ts(moment)


def anonymize_ip(ip: str) -> str | None:
    """Zero the last octet of an IPv4 address, the last 80 bits of an IPv6 one; None if no IP."""
    return _masked_ip(ip) if len(ip) <= CACHED_IP_CHARS else None


@functools.lru_cache(maxsize=CACHE_SIZE)
def _masked_ip(ip: str) -> str | None:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return str(network.network_address)


def protect_ip(event: dict[str, Any], anonymize: bool) -> None:
    """Anonymise ``context.ip`` (unless the source keeps IPs); drop a value that is not an IP."""
    context = event.get("context")
    if not anonymize or not isinstance(context, dict) or context.get("ip") is None:
        return
    ip = context["ip"]
    masked = anonymize_ip(ip) if isinstance(ip, str) else None
    if masked is None:
        del context["ip"]
    else:
        context["ip"] = masked


def parse_user_agent(event: dict[str, Any]) -> None:
    """``context.userAgentParsed`` from ``context.userAgent``: browser, os, device, bot."""
    context = event.get("context")
    agent = _object(context).get("userAgent")
    if not isinstance(context, dict) or not isinstance(agent, str) or not agent:
        return
    if "userAgentParsed" in context:
        return
    browser, os, device, bot = _parsed_agent(agent)
    context["userAgentParsed"] = {
        "browser": dict(browser),
        "os": dict(os),
        "device": dict(device),
        "bot": bot,
    }


def load_user_agent_rules() -> None:
    """Load the user-agent parser's rules now: the first parse of a process takes about 0.1 s."""
    _agent_parser().parse("Mozilla/5.0")


@functools.cache
def _agent_parser() -> ua_parser.Parser:
    """ua-parser's rules without its own cache (of 2,000 agents, whatever their length): the
    bounded one below is the only one."""
    return ua_parser.Parser(ua_parser.BestAvailableResolver(ua_parser.load_lazy_builtins()))


AgentParts = tuple[dict[str, str | None], dict[str, str | None], dict[str, str | None], bool]


def _parsed_agent(agent: str) -> AgentParts:
    return _cached_agent(agent) if len(agent) <= CACHED_AGENT_CHARS else _parse_agent(agent)


def _parse_agent(agent: str) -> AgentParts:
    parsed = _agent_parser().parse(agent)
    browser, os, device = parsed.user_agent, parsed.os, parsed.device
    return (
        {"family": browser.family if browser else "Other", "version": _version(browser)},
        {"family": os.family if os else "Other", "version": _version(os)},
        {
            "family": device.family if device else "Other",
            "brand": device.brand if device else None,
            "model": device.model if device else None,
        },
        bool(device and device.family == "Spider"),
    )


_cached_agent = functools.lru_cache(maxsize=CACHE_SIZE)(_parse_agent)


def _version(part: Any) -> str | None:
    if part is None or not part.major:
        return None
    numbers = [part.major, part.minor, getattr(part, "patch", None)]
    return ".".join(n for n in numbers if n)


def add_campaign(event: dict[str, Any]) -> None:
    """``context.campaign`` (source, medium, name, term, content) from the page URL's UTMs."""
    context = event.get("context")
    url = _object(_object(context).get("page")).get("url")
    if not isinstance(context, dict) or not isinstance(url, str) or "campaign" in context:
        return
    campaign = _campaign_of(url)
    if campaign:
        context["campaign"] = dict(campaign)


def _campaign_of(url: str) -> dict[str, str]:
    return _cached_campaign(url) if len(url) <= CACHED_URL_CHARS else _campaign(url)


def _campaign(url: str) -> dict[str, str]:
    query = parse_qs(urlsplit(url).query)
    return {name: query[param][0] for param, name in UTM_FIELDS.items() if query.get(param)}


_cached_campaign = functools.lru_cache(maxsize=CACHE_SIZE)(_campaign)


def classify_referrer(event: dict[str, Any], internal_domains: tuple[str, ...] = ()) -> None:
    """``context.referrer`` from ``context.page.referrer``: search (with the search terms),
    social, internal (the page's own site or a configured domain) or other."""
    context = event.get("context")
    page = _object(_object(context).get("page"))
    referrer = page.get("referrer")
    if not isinstance(context, dict) or not isinstance(referrer, str) or not referrer:
        return
    if "referrer" in context:
        return
    url = page.get("url")
    classified = _referrer_of(referrer, url if isinstance(url, str) else None, internal_domains)
    if classified is not None:
        context["referrer"] = dict(classified)


def _referrer_of(
    referrer: str, page_url: str | None, internal_domains: tuple[str, ...]
) -> dict[str, str] | None:
    if len(referrer) <= CACHED_URL_CHARS and len(page_url or "") <= CACHED_URL_CHARS:
        return _cached_referrer(referrer, page_url, internal_domains)
    return _referrer(referrer, page_url, internal_domains)


def _referrer(
    referrer: str, page_url: str | None, internal_domains: tuple[str, ...]
) -> dict[str, str] | None:
    page_host = urlsplit(page_url).hostname if page_url is not None else None
    return referrers.classify(referrer, page_host, list(internal_domains))


_cached_referrer = functools.lru_cache(maxsize=CACHE_SIZE)(_referrer)


class GeoIP(Protocol):
    def get(self, ip: str) -> Any: ...


def open_geoip(path: Path) -> GeoIP:
    """A MaxMind (GeoLite2/GeoIP2 City or Country) database, memory-mapped. Never downloaded."""
    import maxminddb

    return maxminddb.open_database(str(path), maxminddb.MODE_MMAP)


def add_location(event: dict[str, Any], geoip: GeoIP) -> None:
    """``context.location`` (country, countryCode, region, city, latitude, longitude, timezone)
    from ``context.ip``. Runs before the IP is anonymised."""
    context = event.get("context")
    ip = _object(context).get("ip")
    if not isinstance(context, dict) or not isinstance(ip, str) or "location" in context:
        return
    try:
        found = geoip.get(ip.strip())
    except ValueError:  # not an IP address
        return
    if not isinstance(found, dict):
        return
    location: dict[str, Any] = {}
    country = found.get("country") or {}
    if names := (country.get("names") or {}):
        location["country"] = names.get("en")
    if country.get("iso_code"):
        location["countryCode"] = country["iso_code"]
    subdivisions = found.get("subdivisions") or []
    if subdivisions and (names := subdivisions[0].get("names")):
        location["region"] = names.get("en")
    if names := ((found.get("city") or {}).get("names")):
        location["city"] = names.get("en")
    coordinates = found.get("location") or {}
    for source_key, target_key in (
        ("latitude", "latitude"),
        ("longitude", "longitude"),
        ("time_zone", "timezone"),
    ):
        if coordinates.get(source_key) is not None:
            location[target_key] = coordinates[source_key]
    if location:
        context["location"] = location


def attach_profile_traits(event: dict[str, Any], traits: Mapping[str, Any] | None) -> None:
    """``context.traits``: the user's profile traits, the event's own ``context.traits`` winning."""
    if not traits:
        return
    context = _context(event)
    own = context.get("traits")
    context["traits"] = {**traits, **own} if isinstance(own, dict) else dict(traits)


PSEUDONYM_PREFIX = "hmac:"


def pseudonymize(event: dict[str, Any], paths: tuple[str, ...], key: bytes | None) -> None:
    """Replace the values at ``paths`` by their keyed hash (removed when there is no key)."""
    for path in paths:
        for container, name in _locations(event, path.split(".")):
            value = container[name]
            if value is None or (isinstance(value, str) and value.startswith(PSEUDONYM_PREFIX)):
                continue
            if key is None:
                container[name] = None
                continue
            text = (
                value
                if isinstance(value, str)
                else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
            )
            digest = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
            container[name] = PSEUDONYM_PREFIX + digest


def _locations(node: Any, parts: list[str]) -> list[tuple[Any, Any]]:
    """(container, key) pairs a dotted path reaches; ``*`` fans out over lists and objects."""
    if not parts:
        return []
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        names: list[Any] = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        names = (
            list(range(len(node)))
            if head == "*"
            else [int(head)]
            if head.isdigit() and int(head) < len(node)
            else []
        )
    else:
        return []
    if not rest:
        return [(node, name) for name in names]
    return [found for name in names for found in _locations(node[name], rest)]


def attach_session(event: dict[str, Any], session: dict[str, Any]) -> None:
    """``context.session``: id, index (the user's nth session), eventIndex, startedAt."""
    _context(event)["session"] = session


class Enricher:
    """Applies the enrichment steps a source has switched on, in order."""

    def __init__(self, geoip: GeoIP | None = None, pseudonymization_key: str | None = None) -> None:
        self._geoip = geoip
        self._key = pseudonymization_key.encode() if pseudonymization_key else None

    def protect(self, event: dict[str, Any], settings: EnrichmentSettings) -> None:
        """What every event gets before it leaves, a dead letter too: IP and pseudonyms."""
        protect_ip(event, settings.anonymize_ip)
        if settings.pseudonymize:
            pseudonymize(event, settings.pseudonymize, self._key)

    def enrich(
        self,
        event: dict[str, Any],
        settings: EnrichmentSettings,
        profile_traits: Mapping[str, Any] | None,
    ) -> None:
        """Everything but the session, which the pipeline joins for a whole request at once."""
        if settings.geoip and self._geoip is not None:
            add_location(event, self._geoip)
        self.protect(event, settings)
        if settings.user_agent:
            parse_user_agent(event)
        if settings.campaign:
            add_campaign(event)
        if settings.referrer:
            classify_referrer(event, settings.internal_domains)
        if settings.profile_traits:
            attach_profile_traits(event, profile_traits)
            if settings.pseudonymize:  # traits attached now may hold what is pseudonymised
                pseudonymize(event, settings.pseudonymize, self._key)
        correct_clock_skew(event)
