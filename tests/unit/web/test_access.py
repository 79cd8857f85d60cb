"""Who may reach the API and how much it takes: CORS per source, the metrics token, backpressure
and rate limits (the rate counts in memory; the integration tests count in Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from clicktrail.config import Settings
from clicktrail.errors import Overloaded
from clicktrail.sources import Source, SourceStore, hash_write_key
from clicktrail.web.admission import Admission
from clicktrail.web.errors import status_of
from tests.support.twins import MemoryRateCounter, MemorySources, RecordingEnqueuer
from tests.support.web import basic, twin_app, twin_services

OPEN_KEY, SHOP_KEY = "wk-open", "wk-shop"
SOURCES = MemorySources(
    {
        OPEN_KEY: Source("src-open", "open", {}),
        SHOP_KEY: Source(
            "src-shop",
            "shop",
            {"allowed_origins": ["https://shop.example", "https://*.shop.example"]},
        ),
    }
)
TRACK = {"userId": "u", "event": "E"}


def client(**env: str) -> Any:
    return twin_app(twin_services(SOURCES), **env).test_client()


@pytest.mark.parametrize(
    ("key", "origin", "allowed"),
    [
        (OPEN_KEY, "https://anywhere.example", True),
        (SHOP_KEY, "https://shop.example", True),
        (SHOP_KEY, "https://eu.shop.example", True),
        (SHOP_KEY, "https://evil.example", False),
        (SHOP_KEY, "https://shop.example.evil.example", False),
        (SHOP_KEY, "http://shop.example", False),
    ],
)
def test_browser_requests_are_held_to_the_sources_origins(
    key: str, origin: str, allowed: bool
) -> None:
    response = client().post("/v1/track", json=TRACK, headers={**basic(key), "Origin": origin})

    if allowed:
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in response.headers["Vary"]
    else:
        assert (response.status_code, response.json["code"]) == (403, "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in response.headers


def test_a_preflight_is_answered_and_requests_without_origin_get_no_cors_headers() -> None:
    api = client()

    preflight = api.options(
        "/v1/batch",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, sentat, x-retry-count",
        },
    )
    server_to_server = api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY))

    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"].split(", ")
    assert {"Authorization", "Content-Type", "sentat", "x-retry-count"} <= set(allowed)
    assert server_to_server.status_code == 200
    assert "Access-Control-Allow-Origin" not in server_to_server.headers


def test_metrics_want_the_token_when_one_is_set() -> None:
    guarded = client(METRICS_TOKEN="s3cret-metrics")

    missing = guarded.get("/metrics")
    wrong = guarded.get("/metrics", headers={"Authorization": "Bearer s3cret-metric"})
    right = guarded.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})

    assert (missing.status_code, missing.json["code"]) == (401, "invalid_metrics_token")
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert b"clicktrail_" in right.data
    assert client().get("/metrics").status_code == 200  # no token configured: open (dev)


class Backlog:
    """The queue's length, as the Redis broker would report it."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.calls = 0

    def llen(self, _: str) -> int:
        self.calls += 1
        return self.depth


def admitting(
    backlog: Backlog, now: list[float], rates: MemoryRateCounter | None = None, **env: str
) -> tuple[Any, RecordingEnqueuer]:
    settings = Settings.from_env({"QUEUE_MAX_DEPTH": "100", **env})
    admission = Admission(
        settings,
        backlog,  # type: ignore[arg-type]
        clock=lambda: now[0],
        rates=rates or MemoryRateCounter(),
        wall_clock=lambda: 1000.0 + now[0],
    )
    queue = RecordingEnqueuer()
    app = twin_app(twin_services(SOURCES, queue, admission=admission), **env)
    return app.test_client(), queue


def test_a_full_queue_answers_503_with_retry_after_and_recovers() -> None:
    backlog, now = Backlog(100), [0.0]
    api, queue = admitting(backlog, now)

    full = api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY))
    backlog.depth = 10
    still_cached = api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY))
    now[0] += 1.5
    drained = api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY))

    assert (full.status_code, full.json["code"]) == (503, "queue_full")
    assert full.headers["Retry-After"] == "5"
    assert still_cached.status_code == 503  # the depth is read at most once a second
    assert drained.status_code == 200
    assert backlog.calls == 2
    assert len(queue.parts) == 1


def test_a_source_over_its_rate_gets_429_with_retry_after() -> None:
    api, queue = admitting(Backlog(0), [0.0], RATE_LIMIT_EVENTS_PER_SECOND="3")
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2}

    first = api.post("/v1/batch", json=batch, headers=basic(OPEN_KEY))
    second = api.post("/v1/batch", json=batch, headers=basic(OPEN_KEY))
    other_source = api.post("/v1/track", json=TRACK, headers=basic(SHOP_KEY))

    assert first.status_code == 200
    assert (second.status_code, second.json["code"]) == (429, "rate_limited")
    assert 1 <= int(second.headers["Retry-After"]) <= 2
    assert other_source.status_code == 200  # limits are per source
    assert len(queue.parts) == 2


def test_a_process_spends_its_slice_of_the_allowance_without_asking_redis_each_time() -> None:
    rates, now = MemoryRateCounter(), [0.0]
    api, queue = admitting(Backlog(0), now, rates, RATE_LIMIT_EVENTS_PER_SECOND="1000")

    first_second = [api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY)) for _ in range(60)]
    paid = rates.paid["src-open"]
    now[0] += 1.0
    next_second = api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY))

    assert {r.status_code for r in [*first_second, next_second]} == {200}
    assert rates.calls == 3 + 1  # slices of 20 events, then a new one in a new second
    assert paid == pytest.approx(1000.0 + 60 / 1000)  # 60 events charged at 1,000 a second
    assert len(queue.parts) == 61


def test_a_batch_bigger_than_the_rate_gets_through_alone_and_is_charged_in_full() -> None:
    now = [0.0]
    api, queue = admitting(Backlog(0), now, RATE_LIMIT_EVENTS_PER_SECOND="3")
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 10}

    big = api.post("/v1/batch", json=batch, headers=basic(OPEN_KEY))
    now[0] += 2.0
    held_back = api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY))
    now[0] += 1.0  # 10 events at 3 a second are paid for after 3.33 s, and one more fits
    paid_for = api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY))
    now[0] += 10.0  # and another big one only once nothing is owed
    again = api.post("/v1/batch", json=batch, headers=basic(OPEN_KEY))
    too_soon = api.post("/v1/batch", json=batch, headers=basic(OPEN_KEY))

    assert big.status_code == 200
    assert (held_back.status_code, held_back.headers["Retry-After"]) == (429, "1")
    assert paid_for.status_code == 200
    assert again.status_code == 200
    assert (too_soon.status_code, too_soon.headers["Retry-After"]) == (429, "4")
    assert len(queue.parts) == 3


def test_every_endpoint_taking_a_write_key_counts_against_the_rate() -> None:
    api, queue = admitting(Backlog(0), [0.0], RATE_LIMIT_EVENTS_PER_SECOND="2")
    validate = {"type": "track", "userId": "u", "event": "E"}

    answers = [
        api.post("/v1/validate", json=validate, headers=basic(OPEN_KEY)).status_code,
        api.post("/v1/sessions", headers=basic(OPEN_KEY)).status_code,
        api.post("/v1/sessions", headers=basic(OPEN_KEY)).status_code,
        api.post("/v1/validate", json=validate, headers=basic(OPEN_KEY)).status_code,
    ]

    assert answers == [200, 201, 429, 429]
    assert queue.parts == []


def test_a_sources_own_rate_overrides_the_default() -> None:
    sources = MemorySources({OPEN_KEY: Source("s", "s", {"rate_limit_events_per_second": 0})})
    settings = Settings.from_env({"RATE_LIMIT_EVENTS_PER_SECOND": "1"})
    admission = Admission(settings, Backlog(0), rates=MemoryRateCounter())  # type: ignore[arg-type]
    api = twin_app(twin_services(sources, admission=admission)).test_client()

    codes = {
        api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY)).status_code for _ in range(5)
    }

    assert codes == {200}


class CountingDatabase:
    """Postgres as SourceStore sees it: one live key, and a count of lookups."""

    def __init__(self, live_hash: str) -> None:
        self.live_hash = live_hash
        self.lookups = 0

    @contextmanager
    def connection(self) -> Iterator[Any]:
        yield self

    def execute(self, _: str, params: tuple[str]) -> Any:
        self.lookups += 1
        row = ("src-real", "real", {}) if params[0] == self.live_hash else None
        return SimpleNamespace(fetchone=lambda: row)


def test_unknown_write_keys_never_push_out_known_ones_nor_each_cost_a_lookup() -> None:
    db, now = CountingDatabase(hash_write_key("wk-real")), [0.0]
    store = SourceStore(
        db,  # type: ignore[arg-type]
        cache_seconds=60,
        max_entries=10,
        miss_lookups_per_second=5,
        clock=lambda: now[0],
    )
    assert store.by_write_key("wk-real") is not None

    refusals: list[Overloaded] = []
    for n in range(100):
        try:
            assert store.by_write_key(f"wk-made-up-{n}") is None
        except Overloaded as exc:
            refusals.append(exc)
    lookups, refused = db.lookups, len(refusals)
    known = store.by_write_key("wk-real")

    assert known is not None
    assert known.id == "src-real"
    assert {(status_of(r), r.retry_after) for r in refusals} == {(503, 1)}
    assert db.lookups == lookups  # still cached, although 100 unknown keys were tried
    # The budget, 5 lookups a second: the real key's first took one.
    assert (lookups, refused) == (5, 96)
    now[0] += 1.0
    assert store.by_write_key("wk-made-up-again") is None  # the budget refills


def test_a_key_known_once_is_looked_up_again_whatever_the_budget() -> None:
    db, now = CountingDatabase(hash_write_key("wk-real")), [0.0]
    store = SourceStore(
        db,  # type: ignore[arg-type]
        cache_seconds=60,
        miss_lookups_per_second=1,
        clock=lambda: now[0],
    )
    store.by_write_key("wk-real")  # spends the budget of one
    with pytest.raises(Overloaded):
        store.by_write_key("wk-made-up")
    store._known.clear()  # type: ignore[union-attr]  # its entry expired

    assert store.by_write_key("wk-real") is not None


class RefusingRates:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def lease(self, *_: Any) -> int:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.ResponseError("Error running script (call to f_0): @user_script:3: ERR"),
    ],
    ids=["read-only", "out-of-memory", "script-error"],
)
def test_a_rate_count_redis_refuses_is_503_for_ingest_validate_and_sessions(
    error: Exception,
) -> None:
    settings = Settings.from_env({"RATE_LIMIT_EVENTS_PER_SECOND": "100"})
    admission = Admission(settings, Backlog(0), rates=RefusingRates(error))  # type: ignore[arg-type]
    api = twin_app(twin_services(SOURCES, admission=admission)).test_client()

    answers = [
        api.post("/v1/track", json=TRACK, headers=basic(OPEN_KEY)),
        api.post("/v1/validate", json={**TRACK, "type": "track"}, headers=basic(OPEN_KEY)),
        api.post("/v1/sessions", headers=basic(OPEN_KEY)),
    ]

    assert [(a.status_code, a.json["code"]) for a in answers] == [(503, "unavailable")] * 3  # type: ignore[index]
    assert all(a.headers["Retry-After"] for a in answers)
