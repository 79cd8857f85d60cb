"""Rate limits shared by API processes, counted in a real Redis; and Redis at its limits (read-only
after a failover, out of memory) answered 503 with Retry-After by every path that touches it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.errors import RateLimited
from clicktrail.redisconn import make_redis
from clicktrail.sources import Source, SourceStore, new_write_key
from clicktrail.web.admission import Admission, RedisRateCounter
from tests.integration.conftest import SourceUnderTest
from tests.support.infra import RedisServer, start_api


class Broker:
    def llen(self, _: str) -> int:
        return 0


def admitted(admission: Admission, source: Source, tries: int, events: int = 1) -> int:
    count = 0
    for _ in range(tries):
        try:
            admission.check_rate(source, events)
        except RateLimited:
            continue
        count += 1
    return count


def processes(redis_url: str, limit: int, now: list[float], count: int = 2) -> list[Admission]:
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "RATE_LIMIT_EVENTS_PER_SECOND": str(limit)}
    )
    return [
        Admission(
            settings,
            Broker(),  # type: ignore[arg-type]
            rates=RedisRateCounter(make_redis(redis_url)),
            wall_clock=lambda: now[0],
        )
        for _ in range(count)
    ]


def test_two_api_processes_share_a_sources_limit(redis_url: str) -> None:
    now = [5000.5]
    one, other = processes(redis_url, 200, now)
    source = Source(f"src-{uuid.uuid4().hex}", "rated", {})

    # One process, then the other, then the first again, until refused: together no more than
    # the limit, and at most a slice each (a fiftieth) less.
    first = admitted(one, source, 150) + admitted(other, source, 150) + admitted(one, source, 10)
    with pytest.raises(RateLimited) as refused:
        one.check_rate(source, 1)
    # Half a second on, half a second's allowance is free again.
    now[0] += 0.5
    second = admitted(one, source, 150) + admitted(other, source, 150)

    assert 200 - 2 * 4 <= first <= 200
    assert refused.value.retry_after == 1
    assert 100 - 2 * 4 <= second <= 100


class SlowRates(RedisRateCounter):
    """Redis answering a lease in 20 ms: every request starting the second is in flight at once."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.leases = 0

    def lease(self, source_id: str, limit: int, wanted: int, needed: int, now: float) -> int:
        self.leases += 1
        time.sleep(0.02)
        return super().lease(source_id, limit, wanted, needed, now)


def test_requests_starting_a_second_together_share_one_lease(redis_url: str) -> None:
    # As many requests at once as the API's threads in one process, far under the limit.
    settings = Settings.from_env({"REDIS_URL": redis_url, "RATE_LIMIT_EVENTS_PER_SECOND": "1000"})
    rates = SlowRates(make_redis(redis_url))
    admission = Admission(settings, Broker(), rates=rates, wall_clock=lambda: 7000.25)  # type: ignore[arg-type]
    source = Source(f"src-{uuid.uuid4().hex}", "rated", {})
    start = threading.Barrier(64)
    refused: list[RateLimited] = []

    def request() -> None:
        start.wait()
        try:
            admission.check_rate(source, 1)
        except RateLimited as exc:
            refused.append(exc)

    threads = [threading.Thread(target=request) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert refused == []
    assert rates.leases == 4  # slices of 20: a lease per 20 requests


def test_batches_larger_than_the_limit_pass_alone_but_never_raise_the_rate(redis_url: str) -> None:
    """An SDK sending batches of 500 to a source allowed 100 a second: each batch passes once
    nothing is owed, so none is refused forever, and over time the source gets its rate."""
    now = [7000.0]
    one, other = processes(redis_url, 100, now)
    source = Source(f"src-{uuid.uuid4().hex}", "batching", {})

    sent, refusals = 0, []
    for step in range(200):  # 20 seconds, both processes trying every tenth of a second
        now[0] = 7000.0 + step / 10
        for admission in (one, other):
            try:
                admission.check_rate(source, 500)
                sent += 500
            except RateLimited as exc:
                refusals.append(exc.retry_after)

    assert 20 * 100 <= sent <= 20 * 100 + 500  # the rate, give or take the last batch
    assert max(refusals) == 5  # a batch of 500 at 100 a second is paid for in 5 s


def test_a_source_over_its_limit_is_held_back_on_every_endpoint_taking_its_key(
    pipeline: str, database_url: str
) -> None:
    db = Database(database_url)
    try:
        key = new_write_key()
        SourceStore(db, cache_seconds=0).create(
            f"rated-{uuid.uuid4().hex[:8]}", key, {"rate_limit_events_per_second": 3}
        )
    finally:
        db.close()
    event = {"type": "track", "userId": "u", "event": "Signed Up"}

    def post(path: str, body: object = None) -> requests.Response:
        return requests.post(f"{pipeline}{path}", json=body, auth=(key, ""), timeout=10)

    answers = [post("/v1/validate", event), post("/v1/sessions"), post("/v1/sessions")]
    answers += [post("/v1/validate", event), post("/v1/sessions"), post("/v1/track", event)]

    assert [a.status_code for a in answers[:3]] == [200, 201, 201]
    assert [a.status_code for a in answers[3:]] == [429, 429, 429]
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers[3:])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and a second server, each on a free port, for the API of one test."""
    primary = RedisServer(tmp_path / "primary", persistent=False).start()
    second = RedisServer(tmp_path / "second", persistent=False).start()
    yield primary, second
    second.stop()
    primary.stop()


def touch_redis(base: str, key: str) -> dict[str, requests.Response]:
    """One request of each kind that reaches Redis."""
    event = {"type": "track", "userId": "u", "event": "Signed Up"}
    auth = (key, "")
    return {
        "track": requests.post(f"{base}/v1/track", json=event, auth=auth, timeout=20),
        "batch": requests.post(f"{base}/v1/batch", json={"batch": [event]}, auth=auth, timeout=20),
        "validate": requests.post(f"{base}/v1/validate", json=event, auth=auth, timeout=20),
        "sessions": requests.post(f"{base}/v1/sessions", auth=auth, timeout=20),
    }


def assert_unavailable(answers: dict[str, requests.Response]) -> None:
    for name, answer in answers.items():
        assert answer.status_code == 503, (name, answer.status_code, answer.text)
        assert int(answer.headers["Retry-After"]) >= 1, name
        assert answer.json()["code"] in ("unavailable", "queue_full"), name


def assert_served(answers: dict[str, requests.Response]) -> None:
    assert {n: a.status_code for n, a in answers.items()} == {
        "track": 200,
        "batch": 200,
        "validate": 200,
        "sessions": 201,
    }


def own_api(stack_env: dict[str, str], url: str, logs_dir: Path, name: str) -> tuple[object, str]:
    env = {
        **stack_env,
        "REDIS_URL": url,
        "CELERY_BROKER_URL": url,
        "RATE_LIMIT_EVENTS_PER_SECOND": "1000",
    }
    return start_api(env, logs_dir / f"{name}.log", name=name)


def test_a_read_only_redis_after_a_failover_is_503_until_it_takes_writes(
    stack_env: dict[str, str],
    source: SourceUnderTest,
    logs_dir: Path,
    own_redis: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = own_redis
    promote = redis.Redis.from_url(replica.url)
    promote.replicaof("127.0.0.1", primary.port)  # a replica: it refuses writes
    api, base = own_api(stack_env, replica.url, logs_dir, "readonly-api")
    try:
        refused = touch_redis(base, source.write_key)
        promote.replicaof("NO", "ONE")  # the failover completes: it is the primary now
        time.sleep(0.5)
        recovered = touch_redis(base, source.write_key)
    finally:
        api.stop()  # type: ignore[attr-defined]

    assert_unavailable(refused)
    assert_served(recovered)


def test_an_out_of_memory_redis_is_503_until_it_has_room(
    stack_env: dict[str, str],
    source: SourceUnderTest,
    logs_dir: Path,
    own_redis: tuple[RedisServer, RedisServer],
) -> None:
    primary, _ = own_redis
    admin = redis.Redis.from_url(primary.url)
    api, base = own_api(stack_env, primary.url, logs_dir, "oom-api")
    try:
        assert_served(touch_redis(base, source.write_key))
        admin.config_set("maxmemory", "1")  # noeviction: every write is refused
        time.sleep(1.1)  # past the second of the rate allowance the API holds
        refused = touch_redis(base, source.write_key)
        admin.config_set("maxmemory", "0")
        recovered = touch_redis(base, source.write_key)
    finally:
        api.stop()  # type: ignore[attr-defined]

    assert_unavailable(refused)
    assert_served(recovered)
