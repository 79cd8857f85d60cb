"""Rate limits shared by API processes, counted in a real Redis over a sliding window."""

from __future__ import annotations

import uuid

import pytest

from clicktrail.config import Settings
from clicktrail.errors import RateLimited
from clicktrail.redisconn import make_redis
from clicktrail.sources import Source
from web.admission import Admission, RedisRateCounter


class Broker:
    def llen(self, _: str) -> int:
        return 0


def admitted(admission: Admission, source: Source, tries: int) -> int:
    count = 0
    for _ in range(tries):
        try:
            admission.check_rate(source, 1)
        except RateLimited:
            continue
        count += 1
    return count


def test_two_api_processes_share_a_sources_limit_over_a_sliding_second(redis_url: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url, "RATE_LIMIT_EVENTS_PER_SECOND": "200"})
    now = [5000.5]
    processes = [
        Admission(
            settings,
            Broker(),  # type: ignore[arg-type]
            rates=RedisRateCounter(make_redis(redis_url)),
            wall_clock=lambda: now[0],
        )
        for _ in range(2)
    ]
    source = Source(f"src-{uuid.uuid4().hex}", "rated", {})

    # One process, then the other, then the first again, until refused: together no more than
    # the limit, and at most a slice each (a fiftieth) less.
    one, other = processes
    first = admitted(one, source, 150) + admitted(other, source, 150) + admitted(one, source, 10)
    with pytest.raises(RateLimited) as refused:
        one.check_rate(source, 1)
    # Half a second on, half of the last second's count has left the window.
    now[0] += 1.0
    second = sum(admitted(p, source, 150) for p in processes)

    assert 200 - 2 * 4 <= first <= 200
    assert refused.value.retry_after == 1
    assert 100 - 2 * 4 <= second <= 100 + 1
