"""Every component that reads the wall clock reads the one it is given: with a fake clock it
behaves by that clock, whatever the machine's says."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from clicktrail.clock import (
    FUTURE_TOLERANCE,
    epoch_ms,
    epoch_seconds,
    format_ts,
    minute_of,
    parse_duration,
)
from clicktrail.config import Settings
from clicktrail.profiles import Profile, ProfileWriter
from clicktrail.sessions import SessionStore, Touch
from clicktrail.sources import WriteKey
from clicktrail.web.services import Services
from clicktrail.workers.runtime import Runtime
from tests.support.twins import FixedClock

# Far from any machine's clock, so a component reading the system time instead shows.
FAKE_NOW = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)


class StubRedis:
    """Records what the session store sends; answers as a Redis holding one live session."""

    def __init__(self, ttl_ms: int = 90_000) -> None:
        self.ttl_ms = ttl_ms
        self.script_args: list[Any] = []
        self.zcount_min: Any = None

    def register_script(self, _: str) -> Any:
        def run(keys: list[str], args: list[Any]) -> bytes:
            self.script_args.append(args)
            batch = orjson.loads(args[0])
            return orjson.dumps([[t[2], 1, 1, t[7]] for t in batch["touches"]])

        return run

    def pipeline(self, transaction: bool = True) -> Any:
        stub = self

        class Pipe:
            def hgetall(self, _: str) -> None: ...

            def pttl(self, _: str) -> None: ...

            def execute(self) -> list[Any]:
                return [{"source": "src", "startedAt": "2031-03-04T05:00:00.000Z"}, stub.ttl_ms]

        return Pipe()

    def zcount(self, _: str, low: Any, high: Any) -> int:
        self.zcount_min = low
        return 0


def store(clock: FixedClock, client: StubRedis | None = None) -> tuple[SessionStore, StubRedis]:
    client = client or StubRedis()
    return SessionStore(client, timeout_seconds=60, clock=clock), client  # type: ignore[arg-type]


def test_sessions_count_as_live_by_the_injected_clock() -> None:
    clock = FixedClock(FAKE_NOW)
    sessions, client = store(clock)

    sessions.touch_many([Touch("src", None, "device", format_ts(FAKE_NOW), "new-id")])
    sessions.active_count()

    # The live index scores each session by its expiry on this clock, drops those ended by it,
    # and counts those whose expiry is after it.
    assert orjson.loads(client.script_args[0][0])["now_ms"] == epoch_ms(clock)
    assert client.zcount_min == int(FAKE_NOW.timestamp() * 1000)

    clock.moment = FAKE_NOW + timedelta(hours=1)
    sessions.active_count()
    assert client.zcount_min == int(clock.moment.timestamp() * 1000)


def test_a_session_s_expiry_is_its_remaining_time_on_the_injected_clock() -> None:
    sessions, _ = store(FixedClock(FAKE_NOW), StubRedis(ttl_ms=90_000))

    view = sessions.get("sid")

    assert view is not None
    assert view.expires_at == format_ts(FAKE_NOW + timedelta(seconds=90))


def test_a_write_key_is_live_until_its_expiry_on_the_caller_s_clock() -> None:
    key = WriteKey("abc", FAKE_NOW - timedelta(days=1), FAKE_NOW + timedelta(hours=1), None)

    assert key.live(FAKE_NOW)
    assert not key.live(FAKE_NOW + timedelta(hours=2))
    revoked = WriteKey("abc", FAKE_NOW, None, revoked_at=FAKE_NOW)
    assert not revoked.live(FAKE_NOW)


def test_a_trait_time_is_in_the_future_only_by_the_injected_clock() -> None:
    later = FAKE_NOW + FUTURE_TOLERANCE + timedelta(minutes=1)
    earlier_event = format_ts(FAKE_NOW - timedelta(days=1))

    def profile() -> Profile:
        return Profile("u", {"plan": "pro"}, {"plan": format_ts(later)})

    # At FAKE_NOW the stored time lies beyond the tolerance: a wrong clock's, so an earlier
    # event's trait wins; a day on, that time is past and the earlier event loses.
    wrong_clock = profile()
    wrong_clock.merge_traits({"plan": "free"}, earlier_event, FAKE_NOW)
    assert wrong_clock.traits == {"plan": "free"}

    past = profile()
    past.merge_traits({"plan": "free"}, earlier_event, FAKE_NOW + timedelta(days=1))
    assert past.traits == {"plan": "pro"}


class StubConnection:
    """Answers the profile writer's reads with one stored profile; records its writes."""

    def __init__(self, stored: tuple[Any, ...]) -> None:
        self.stored = stored
        self.written: list[Any] = []

    def execute(self, sql: str, _: Any = None) -> Any:
        rows = [self.stored] if sql.lstrip().startswith("SELECT user_id") else []

        class Result(list[Any]):
            def fetchall(self) -> list[Any]:
                return list(self)

        return Result(rows)

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        conn = self

        class Cursor:
            def executemany(self, sql: str, rows: list[Any]) -> None:
                if sql.startswith("INSERT INTO profiles"):
                    conn.written.extend(rows)

            def execute(self, sql: str, _: Any = None) -> None: ...

        yield Cursor()


@pytest.mark.parametrize(
    ("now", "plan"), [(FAKE_NOW, "free"), (FAKE_NOW + timedelta(days=1), "pro")]
)
def test_the_profile_writer_judges_trait_times_by_its_clock(now: datetime, plan: str) -> None:
    later = format_ts(FAKE_NOW + FUTURE_TOLERANCE + timedelta(minutes=1))
    conn = StubConnection(("u", {"plan": "pro"}, {"plan": later}, None, None))
    at = format_ts(FAKE_NOW - timedelta(days=1))
    identify = {
        "type": "identify",
        "userId": "u",
        "traits": {"plan": "free"},
        "timestamp": at,
        "receivedAt": at,
    }

    ProfileWriter(FixedClock(now)).apply(conn, [identify])  # type: ignore[arg-type]

    [(_, traits, *_)] = conn.written
    assert traits.obj == {"plan": plan}


def test_the_api_s_services_read_time_from_the_clock_they_are_built_with() -> None:
    clock = FixedClock(FAKE_NOW)

    services = Services.build(Settings.from_env({}), clock)

    assert services.clock is clock
    assert services.sessions._clock is clock  # type: ignore[attr-defined]
    assert services.admission is not None
    assert services.admission._wall_clock() == FAKE_NOW.timestamp()


def test_a_worker_s_parts_read_time_from_the_clock_the_runtime_is_built_with() -> None:
    clock = FixedClock(FAKE_NOW)

    runtime = Runtime.build(Settings.from_env({}), clock)
    try:
        pipeline = runtime.pipeline
        assert pipeline._clock is clock
        assert pipeline._sessions._clock is clock  # type: ignore[attr-defined]
        assert pipeline._seen is not None
        assert pipeline._seen._clock() == FAKE_NOW.timestamp()  # type: ignore[attr-defined]
        assert runtime.purger._clock is clock
    finally:
        runtime.close()


def test_epoch_seconds_follows_the_clock() -> None:
    clock = FixedClock(FAKE_NOW)
    seconds = epoch_seconds(clock)
    clock.moment += timedelta(seconds=5)

    assert seconds() == FAKE_NOW.timestamp() + 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("24h", timedelta(days=1)),
     ("7d", timedelta(days=7)), ("2W", timedelta(weeks=2)), (" 1h ", timedelta(hours=1))],
)  # fmt: skip
def test_a_duration_is_a_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "24", "1.5h", "-1h", "0m", "1y", "9999999999d", "4000d"])
def test_anything_else_is_refused_naming_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 24h|at most ten years"):
        parse_duration(text)


def test_a_minute_is_its_utc_start() -> None:
    moment = datetime(2026, 12, 4, 3, 4, 59, 999000, tzinfo=timezone(timedelta(hours=2)))
    assert minute_of(moment) == datetime(2026, 12, 4, 1, 4, tzinfo=UTC)
