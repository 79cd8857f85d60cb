"""The books: what balances, what is marked, how the command and the gauges show it."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from clicktrail.ledger import MinuteBooks, by_source, render, to_json
from clicktrail.metrics import LedgerGauges, LedgerReading

SINCE = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def at(minute: int, **counts: int) -> MinuteBooks:
    return MinuteBooks(
        counts.pop("source", "src-1"),  # type: ignore[arg-type]
        SINCE.replace(minute=minute),
        settled=bool(counts.pop("settled", True)),
        **counts,
    )


def test_a_minute_balances_when_every_accepted_event_is_stored_dropped_or_erased() -> None:
    books = at(
        1, accepted=10, published=8, dead_lettered=1, dropped=1, stored=8, duplicates=1, copies=3
    )
    books.erased_by_workers = 0
    short = at(2, accepted=10, published=10, stored=9, erased_by_sink=0)

    assert (books.balance, books.unbalanced, books.stopped) == (0, False, None)
    assert (short.balance, short.unbalanced) == (1, True)


def test_where_missing_events_stopped_is_told_by_what_kafka_confirmed() -> None:
    never_published = at(1, accepted=10, published=6, dropped=1, erased_by_workers=1, stored=6)
    not_stored = at(2, accepted=10, published=9, dead_lettered=1, stored=7)

    assert (never_published.balance, never_published.stopped) == (2, "queue")
    assert (not_stored.balance, not_stored.stopped) == (3, "sink")


def test_a_minute_still_settling_is_never_unbalanced_and_extra_events_are_told_apart() -> None:
    settling = at(5, accepted=10, settled=False)
    extra = at(6, accepted=3, stored=5)

    assert (settling.balance, settling.unbalanced) == (10, False)
    assert (extra.balance, extra.unbalanced, extra.stopped) == (-2, True, None)


def test_each_sources_totals_count_the_missing_and_the_extra_of_settled_minutes_only() -> None:
    minutes = [
        at(1, accepted=5, stored=5),
        at(2, accepted=5, stored=3),
        at(3, accepted=1, stored=2),
        at(4, accepted=9, settled=False),
        at(1, source="src-2", accepted=1, stored=1),
    ]

    sources = by_source(minutes)

    one = sources["src-1"]
    assert (one.settled_minutes, one.unbalanced_minutes, one.missing, one.extra) == (3, 2, 2, 1)
    assert (one.total.accepted, one.total.stored) == (20, 10)
    assert sources["src-2"].unbalanced_minutes == 0


def test_the_table_marks_each_unbalanced_settled_minute_and_says_what_is_off() -> None:
    minutes = [
        at(1, accepted=250, published=240, dead_lettered=10, stored=250),
        at(2, accepted=180, published=150, stored=150),
        at(3, accepted=20, published=20, stored=18),
        at(4, accepted=3, published=3, stored=4),
        at(5, accepted=40, published=40, stored=12, settled=False),
    ]

    lines = render(minutes, {"src-1": "shop"}, SINCE).splitlines()

    header, *rows, total, verdict = lines
    assert header.split() == [
        "source", "minute", "(UTC)", "accepted", "published", "dead_lettered", "dropped",
        "stored", "duplicates", "copies", "erased", "balance",
    ]  # fmt: skip
    assert [row[0] for row in rows] == [" ", "!", "!", "!", " "]
    assert rows[0].split()[:3] == ["shop", "2026-12-04", "10:01"]
    assert rows[0].endswith("  0")
    assert rows[1].endswith("30 missing: not in Kafka (queue, workers)")
    assert rows[2].endswith("2 missing: in Kafka, not stored (sink)")
    assert rows[3].endswith("1 extra")
    assert rows[4].endswith("settling (28 to come)")
    assert total.split()[:3] == ["total", "493", "453"]
    assert total.endswith("32 missing, 1 extra")
    assert (
        verdict == "3 of 4 settled minute(s) do not balance: 32 missing, 1 extra, 1 still settling"
    )


def test_the_table_of_books_that_balance_says_so_and_an_empty_one_says_since_when() -> None:
    balanced = render([at(1, accepted=2, stored=2)], {}, SINCE)

    assert balanced.splitlines()[1].split()[0] == "src-1"  # no name known: the id
    assert balanced.splitlines()[-1] == "every settled minute balances (1 settled)"
    assert render([], {}, SINCE) == "nothing counted since 2026-12-04 10:00 UTC"


def test_the_json_holds_every_minute_and_what_did_not_balance() -> None:
    body = to_json(
        [at(1, accepted=2, stored=2), at(2, accepted=3, published=3, stored=1)],
        {"src-1": "shop"},
        SINCE,
        SINCE.replace(minute=30),
    )

    assert (body["since"], body["until"]) == ("2026-12-04T10:00Z", "2026-12-04T10:30Z")
    assert (body["unbalancedMinutes"], body["missing"], body["extra"]) == (1, 2, 0)
    second = body["minutes"][1]
    assert second["source"] == "shop"
    assert second["minute"] == "2026-12-04T10:02Z"
    assert (second["balance"], second["stopped"], second["settled"]) == (2, "sink", True)


def test_the_gauges_read_the_books_at_most_once_a_minute_and_survive_a_failed_read() -> None:
    calls: list[float] = []
    now = [0.0]
    fail = [False]

    def read() -> list[LedgerReading]:
        calls.append(now[0])
        if fail[0]:
            raise ConnectionError("redis away")
        return [LedgerReading("src-1", 2, 5, 0, {"accepted": 7, "stored": 7})]

    gauges = LedgerGauges(read, every=60, monotonic=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(gauges)  # describing reads nothing

    assert calls == []
    assert (
        registry.get_sample_value("clicktrail_ledger_unbalanced_minutes", {"source": "src-1"}) == 2
    )
    assert registry.get_sample_value("clicktrail_ledger_missing_events", {"source": "src-1"}) == 5
    assert (
        registry.get_sample_value(
            "clicktrail_ledger_minute_events", {"source": "src-1", "column": "stored"}
        )
        == 7
    )
    now[0] = 30.0
    registry.get_sample_value("clicktrail_ledger_extra_events", {"source": "src-1"})
    assert calls == [0.0]  # cached
    now[0], fail[0] = 61.0, True
    assert (
        registry.get_sample_value("clicktrail_ledger_unbalanced_minutes", {"source": "src-1"})
        is None
    )
    assert calls == [0.0, 61.0]
