"""Enrichment steps: plain functions on one event, each with its own tests."""

from __future__ import annotations

import ipaddress
from typing import Any

from clicktrail.clock import format_ts, parse_ts


def correct_clock_skew(event: dict[str, Any]) -> None:
    """Set ``timestamp`` on the server's clock: ``receivedAt - (sentAt - timestamp)``.

    The client's own value is kept as ``originalTimestamp``. Without ``sentAt`` the client's
    timestamp is trusted as is (server-side libraries send exact times); without a timestamp,
    the event happened when it was received.
    """
    received = parse_ts(event.get("receivedAt"))
    if received is None:
        return
    original = parse_ts(event.get("timestamp"))
    if original is None:
        event["timestamp"] = format_ts(received)
        return
    event.setdefault("originalTimestamp", event["timestamp"])
    sent = parse_ts(event.get("sentAt"))
    if sent is not None:
        event["timestamp"] = format_ts(received - (sent - original))


def anonymize_ip(ip: str) -> str | None:
    """Zero the last octet of an IPv4 address, the last 80 bits of an IPv6 one; None if no IP."""
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


def attach_session(event: dict[str, Any], session: dict[str, Any]) -> None:
    """``context.session``: id, index (the user's nth session), eventIndex, startedAt."""
    context = event.get("context")
    if not isinstance(context, dict):
        context = event["context"] = {}
    context["session"] = session
