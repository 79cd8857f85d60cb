from __future__ import annotations

from typing import Any

import pytest

from clicktrail.enrich import anonymize_ip, attach_session, correct_clock_skew, protect_ip


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


def test_attach_session_makes_a_context_when_there_is_none() -> None:
    event: dict[str, Any] = {"context": None}
    session = {"id": "s", "index": 1, "eventIndex": 3, "startedAt": "2026-01-01T00:00:00.000Z"}

    attach_session(event, session)

    assert event["context"] == {"session": session}
