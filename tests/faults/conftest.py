"""The fault-injection suite's stack: a broker, a persistent Redis and a database of its own, so
that killing, pausing and cutting them disturbs no other test. Prints a table of what every
scenario sent, what arrived, and what the ledger's books of it say."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clicktrail.db import Database
from clicktrail.kafka import ensure_topics
from clicktrail.sources import SourceStore, new_write_key
from tests.faults.harness import FaultStack, Tally, format_table
from tests.support.infra import (
    KafkaCollector,
    RedisServer,
    Service,
    TansuBroker,
    child_env,
    free_port,
    scratch_database,
    start_api,
    start_sink,
    start_worker,
)
from tests.support.proxy import TcpProxy

TALLIES: list[Tally] = []

# Short timeouts, so that a scenario sees a whole recovery in seconds: a message undelivered in
# 5 s is reported failed and retried within 3 s; one held by a dead worker is handed out again
# after 30 s. A small queue bound, so that a stalled pipeline pushes back on the client.
TIMEOUTS = {
    "KAFKA_MESSAGE_TIMEOUT_MS": "5000",
    "TASK_TIME_LIMIT_SECONDS": "20",
    "RETRY_BACKOFF_MAX_SECONDS": "3",
    "VISIBILITY_TIMEOUT_SECONDS": "30",
    "MAX_DELIVERIES": "3",
    "QUEUE_MAX_DEPTH": "25",
}
EVENTS_TOPIC_PARTITIONS = 3


@pytest.fixture(scope="session")
def fault_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def fault_run() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def broker(fault_logs: Path) -> Iterator[TansuBroker]:
    tansu = TansuBroker(log_path=fault_logs / "tansu.log").start()
    yield tansu
    tansu.stop()


@pytest.fixture(scope="session")
def fault_topics(broker: TansuBroker, fault_run: str) -> dict[str, str]:
    names = {
        "KAFKA_TOPIC_EVENTS": f"faults-{fault_run}-events",
        "KAFKA_TOPIC_DEADLETTER": f"faults-{fault_run}-events.deadletter",
        "KAFKA_TOPIC_PROFILES": f"faults-{fault_run}-profiles",
    }
    ensure_topics(
        {"bootstrap.servers": broker.bootstrap},
        list(names.values()),
        partitions=EVENTS_TOPIC_PARTITIONS,
    )
    return names


@pytest.fixture(scope="session")
def fault_database(fault_run: str) -> Iterator[str]:
    with scratch_database(f"clicktrail_faults_{fault_run}") as url:
        yield url


@pytest.fixture
def write_key(fault_database: str, fault_run: str) -> str:
    """A source of the scenario's own: the ledger's books of its minutes are the scenario's."""
    db = Database(fault_database)
    try:
        key = new_write_key()
        SourceStore(db, cache_seconds=0).create(f"faults-{fault_run}-{uuid.uuid4().hex[:6]}", key)
    finally:
        db.close()
    return key


@pytest.fixture(scope="session")
def stack(
    broker: TansuBroker,
    fault_topics: dict[str, str],
    fault_database: str,
    fault_logs: Path,
) -> Iterator[FaultStack]:
    redis_server = RedisServer(fault_logs / "redis", persistent=True).start()
    broker_proxy = TcpProxy("127.0.0.1", broker.port).start()
    postgres_proxy = TcpProxy("127.0.0.1", 5432).start()
    env = child_env(
        REDIS_URL=redis_server.url,
        DATABASE_URL=fault_database,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{broker_proxy.port}",
        SOURCE_CACHE_SECONDS="1",
        **fault_topics,
        **TIMEOUTS,
    )
    api_port = free_port()
    workers = iter(range(1, 1000))
    apis = iter(range(1, 1000))

    def new_worker() -> Service:
        n = next(workers)
        return start_worker(
            env, fault_logs / f"worker-{n}.log", f"faults-{n}", app="tests.faults.crashing_worker"
        )

    def new_api() -> Service:
        service, _ = start_api(env, fault_logs / f"api-{next(apis)}.log", port=api_port)
        return service

    sinks = iter(range(1, 1000))
    # The history sink reads the broker directly (a cut of the workers' link spares it) and
    # reaches Postgres through a proxy a scenario can cut.
    sink_env = {
        **env,
        "DATABASE_URL": fault_database.replace(":5432/", f":{postgres_proxy.port}/"),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "SINK_BATCH_SIZE": "200",
    }

    def new_sink() -> Service:
        return start_sink(sink_env, fault_logs / f"sink-{next(sinks)}.log")

    fault_stack = FaultStack(
        env=env,
        logs=fault_logs,
        broker=broker,
        broker_proxy=broker_proxy,
        postgres_proxy=postgres_proxy,
        redis_server=redis_server,
        start_worker=new_worker,
        start_api=new_api,
        start_sink=new_sink,
        api_url=f"http://127.0.0.1:{api_port}",
    )
    yield fault_stack
    for service in (fault_stack.worker, fault_stack.api, fault_stack.sink):
        if service is not None:
            service.stop()
    broker_proxy.cut()
    postgres_proxy.cut()
    redis_server.stop()


@pytest.fixture
def running(stack: FaultStack) -> FaultStack:
    stack.ensure_running()
    return stack


@pytest.fixture(scope="session")
def kafka(broker: TansuBroker, fault_topics: dict[str, str]) -> Iterator[KafkaCollector]:
    collector = KafkaCollector(broker.bootstrap, list(fault_topics.values())).start()
    yield collector
    collector.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLIES:
        terminalreporter.write_sep("=", "fault injection: every accepted event, counted")
        terminalreporter.write_line(format_table(TALLIES))
        for tally in TALLIES:
            if tally.ledger_off:
                terminalreporter.write_line(
                    f"\nthe ledger of {tally.scenario}:\n{tally.ledger_off}"
                )
