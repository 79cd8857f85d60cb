"""Referrer classification: search engines (with the query parameter that holds the search
terms) and social networks, by host. A host matches an entry when it is the entry or a
subdomain of it (``www.google.co.uk`` matches ``google.co.uk``).

The referer-parser project's data set (Snowplow) is the usual source for this but has not been
published for Python since 2016; this table covers the engines and networks that send the bulk
of today's traffic. Add to it freely: a host missing here is classified ``other``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

# name -> (hosts, query parameters holding the search terms)
SEARCH_ENGINES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Google": (
        ("google.com", "google.co.uk", "google.de", "google.fr", "google.es", "google.it",
         "google.nl", "google.ca", "google.com.au", "google.co.in", "google.com.br", "google.co.jp",
         "google.pl", "google.ch", "google.at", "google.be", "google.se", "google.dk", "google.no",
         "google.fi", "google.ie", "google.pt", "google.com.mx", "google.com.ar", "google.co.za"),
        ("q",),
    ),
    "Bing": (("bing.com",), ("q",)),
    "Yahoo!": (("search.yahoo.com", "yahoo.com", "yahoo.co.jp"), ("p", "q")),
    "DuckDuckGo": (("duckduckgo.com",), ("q",)),
    "Baidu": (("baidu.com",), ("wd", "word", "kw")),
    "Yandex": (("yandex.ru", "yandex.com", "ya.ru"), ("text",)),
    "Ecosia": (("ecosia.org",), ("q",)),
    "Qwant": (("qwant.com",), ("q",)),
    "Naver": (("search.naver.com",), ("query",)),
    "Seznam": (("search.seznam.cz",), ("q",)),
    "Brave": (("search.brave.com",), ("q",)),
    "Startpage": (("startpage.com",), ("query", "q")),
    "Perplexity": (("perplexity.ai",), ("q",)),
    "ChatGPT": (("chatgpt.com", "chat.openai.com"), ()),
}  # fmt: skip

SOCIAL_NETWORKS: dict[str, tuple[str, ...]] = {
    "Facebook": ("facebook.com", "fb.com", "m.facebook.com", "l.facebook.com", "lm.facebook.com"),
    "Instagram": ("instagram.com", "l.instagram.com"),
    "X": ("twitter.com", "t.co", "x.com"),
    "LinkedIn": ("linkedin.com", "lnkd.in"),
    "Reddit": ("reddit.com", "old.reddit.com", "out.reddit.com"),
    "Pinterest": ("pinterest.com", "pin.it"),
    "TikTok": ("tiktok.com",),
    "YouTube": ("youtube.com", "youtu.be"),
    "Threads": ("threads.net",),
    "Bluesky": ("bsky.app",),
    "Mastodon": ("mastodon.social",),
    "Snapchat": ("snapchat.com",),
    "Tumblr": ("tumblr.com",),
    "VK": ("vk.com",),
    "WhatsApp": ("whatsapp.com", "wa.me"),
    "Telegram": ("t.me", "telegram.org"),
    "Discord": ("discord.com", "discord.gg"),
    "Hacker News": ("news.ycombinator.com",),
    "Quora": ("quora.com",),
    "Xing": ("xing.com",),
    "Weibo": ("weibo.com",),
}

_SEARCH = {
    host: (name, params) for name, (hosts, params) in SEARCH_ENGINES.items() for host in hosts
}
_SOCIAL = {host: name for name, hosts in SOCIAL_NETWORKS.items() for host in hosts}


def _lookup(host: str, table: Mapping[str, object]) -> str | None:
    """The longest suffix of ``host`` (at a dot) that is in ``table``."""
    parts = host.split(".")
    for start in range(len(parts) - 1):
        candidate = ".".join(parts[start:])
        if candidate in table:
            return candidate
    return None


def _same_site(host: str, other: str) -> bool:
    return host == other or host.endswith("." + other) or other.endswith("." + host)


def classify(referrer: str, page_host: str | None, internal: list[str]) -> dict[str, str] | None:
    """``{"type": search|social|internal|other, "url", "name"?, "searchTerm"?}``, or None when
    ``referrer`` is not a web URL."""
    parts = urlsplit(referrer.strip())
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https", "android-app") or not host:
        return None
    result = {"url": referrer, "type": "other"}
    bare = host.removeprefix("www.")
    if (page_host and _same_site(bare, page_host.lower().removeprefix("www."))) or any(
        _same_site(bare, domain.lower()) for domain in internal
    ):
        result["type"] = "internal"
        return result
    if (found := _lookup(host, _SEARCH)) is not None:
        name, params = _SEARCH[found]
        result.update(type="search", name=name)
        query = parse_qs(parts.query)
        for param in params:
            if query.get(param):
                result["searchTerm"] = query[param][0]
                break
        return result
    if (found := _lookup(host, _SOCIAL)) is not None:
        result.update(type="social", name=_SOCIAL[found])
    return result
