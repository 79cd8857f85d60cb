"""Faults inflicted on the running pipeline while an SDK-like client sends thousands of events:
every accepted event must come out in Kafka (or, for the history sink, in Postgres); duplicates
are counted and must stay few; and the ledger's books of the scenario's minutes must balance,
the resends and the pipeline's copies accounted for."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import requests
from celery import Celery

from clicktrail.config import Settings
from clicktrail.message import Message, Part
from clicktrail.queue import INGEST_TASK, QUEUE, celery_settings
from tests.faults.conftest import TALLIES, TIMEOUTS
from tests.faults.harness import FaultStack, Sender, Tally, settle_ledger, wait_until_delivered
from tests.support.infra import KafkaCollector, free_port, history_counts, wait_for

pytestmark = pytest.mark.integration

EVENTS = 3000
# A client's retry of a request whose answer was lost, and a message handed out again after its
# worker died having published part of it, are dropped by messageId. What can still come twice:
# records whose delivery report was lost with the broker (published, but reported failed): at
# most the records in flight when it froze, those of the messages the pool processes were
# publishing, each holding the requests that reached the API together.
MAX_DUPLICATE_SHARE = 0.05


def run(
    name: str,
    stack: FaultStack,
    kafka: KafkaCollector,
    write_key: str,
    inflict: Callable[[], None],
    *,
    total: int = EVENTS,
    timeout: float = 150.0,
    batch: int = 25,
) -> tuple[Tally, Sender]:
    """Send ``total`` events, inflict the fault once a quarter has gone, count what arrived in
    Kafka, and read the ledger's books of the scenario."""
    started = datetime.now(UTC)
    sender = Sender(stack.api_url, write_key, total, batch=batch).start()
    wait_for(lambda: sender.sent >= total // 4, f"{name}: a quarter sent", timeout=60)
    inflict()
    sender.join()
    topics = (stack.env["KAFKA_TOPIC_EVENTS"], stack.env["KAFKA_TOPIC_DEADLETTER"])
    wait_until_delivered(sender, lambda ids: in_kafka(kafka, ids, topics), timeout, name)
    wait_for(stack.drained, f"{name}: queue drained", timeout=timeout)
    time.sleep(2)  # a late duplicate, if any, arrives now
    tally = Tally.of_kafka(name, sender, kafka, topics)
    tally.source_id, tally.since = stack.source_id(write_key), started
    settle_ledger(stack, tally)
    TALLIES.append(tally)
    return tally, sender


def in_kafka(kafka: KafkaCollector, ids: set[str], topics: tuple[str, ...]) -> set[str]:
    return {i for i in ids if any(m.topic in topics for m in kafka.records(i))}


def assert_nothing_lost(tally: Tally) -> None:
    assert tally.server_errors == 0, tally.client_saw
    assert tally.accepted == tally.sent, "the client gave up on some events"
    assert tally.missing == 0
    assert tally.duplicates <= tally.sent * MAX_DUPLICATE_SHARE
    if tally.where == "kafka":  # the ledger's books are read once per scenario
        assert not tally.ledger_off, f"the ledger: {tally.ledger}\n{tally.ledger_off}"


def test_a_worker_pool_process_killed_mid_batch(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    assert running.worker is not None
    log_before = len(running.worker.output())

    def kill_pool_processes() -> None:
        for child in running.pool_children():
            child.kill()
            time.sleep(1.5)

    tally, _ = run("worker pool process SIGKILL", running, kafka, write_key, kill_pool_processes)

    assert_nothing_lost(tally)
    assert "exited with 'signal 9 (SIGKILL)'" in running.worker.output()[log_before:]


def test_the_whole_worker_killed_and_restarted(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    def kill_and_restart() -> None:
        running.kill_worker()
        time.sleep(2)
        running.ensure_running()

    # What the dead worker held comes back after VISIBILITY_TIMEOUT_SECONDS (30 s here).
    tally, _ = run("worker SIGKILL + restart", running, kafka, write_key, kill_and_restart)
    assert_nothing_lost(tally)


def test_the_broker_paused_longer_than_the_message_timeout(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    pause = int(TIMEOUTS["KAFKA_MESSAGE_TIMEOUT_MS"]) / 1000 + 5

    def pause_broker() -> None:
        running.broker.pause()
        time.sleep(pause)
        running.broker.resume()

    assert running.worker is not None
    log_before = len(running.worker.output())

    tally, sender = run("broker SIGSTOP 10 s", running, kafka, write_key, pause_broker)

    assert_nothing_lost(tally)
    assert "publish incomplete, retrying" in running.worker.output()[log_before:]
    assert sender.statuses["503"] > 0  # the queue filled up and the API pushed back


def test_the_broker_unreachable_when_the_worker_starts(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    running.kill_worker()
    running.broker_proxy.cut()
    running.ensure_running()  # starts with no broker to talk to

    def bring_the_broker_back() -> None:
        time.sleep(8)
        running.broker_proxy.restore()

    try:
        tally, _ = run(
            "broker unreachable at worker start", running, kafka, write_key, bring_the_broker_back
        )
    finally:
        running.broker_proxy.restore()

    assert_nothing_lost(tally)
    assert running.worker is not None
    assert "kafka client error" in running.worker.output()  # it did start without a broker


def test_redis_killed_and_restarted(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    def crash_and_restart_redis() -> None:
        running.redis_server.stop(signal.SIGKILL)  # a crash: only what was fsynced survives
        time.sleep(3)
        running.redis_server.start()

    # The API answers 503 while Redis is away (the client retries); messages workers held when
    # it went come back after the visibility timeout.
    tally, sender = run(
        "redis SIGKILL + restart (AOF)", running, kafka, write_key, crash_and_restart_redis
    )

    assert_nothing_lost(tally)
    assert sender.statuses["503"] > 0  # the API refused what it could not keep, and said so


def test_redis_at_its_maxmemory_under_load(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    client = running.queue()

    def fill_redis() -> None:
        # noeviction, as a queue must be: from now on every write that needs memory is refused.
        client.config_set("maxmemory", str(client.info("memory")["used_memory"]))
        time.sleep(20)
        client.config_set("maxmemory", "0")

    assert running.worker is not None
    log_before = len(running.worker.output())
    try:
        tally, sender = run(
            "redis at maxmemory 20 s", running, kafka, write_key, fill_redis, batch=10
        )
    finally:
        client.config_set("maxmemory", "0")

    assert_nothing_lost(tally)
    assert sender.statuses["503"] > 0  # refused with Retry-After while nothing fitted
    assert running.worker.proc.poll() is None, "the worker exited"
    assert "Unrecoverable error" not in running.worker.output()[log_before:]


def test_redis_turned_read_only_as_after_a_failover(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    client = running.queue()

    def demote_and_promote() -> None:
        # A replica of a master that is not there: it keeps its data and refuses every write,
        # as a demoted master does until the failover is over.
        client.replicaof("127.0.0.1", str(free_port()))
        time.sleep(15)
        client.replicaof("NO", "ONE")

    assert running.worker is not None
    log_before = len(running.worker.output())
    try:
        tally, sender = run("redis read-only 15 s", running, kafka, write_key, demote_and_promote)
    finally:
        client.replicaof("NO", "ONE")

    assert_nothing_lost(tally)
    assert sender.statuses["503"] > 0
    assert running.worker.proc.poll() is None, "the worker exited"
    assert "Unrecoverable error" not in running.worker.output()[log_before:]


def test_the_api_restarted_with_requests_in_flight(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    def kill_and_restart_api() -> None:
        assert running.api is not None
        running.api.stop(sig=9)
        time.sleep(1)  # long enough for the client's next requests to find nobody listening
        running.ensure_running()

    tally, sender = run("API SIGKILL + restart", running, kafka, write_key, kill_and_restart_api)

    assert_nothing_lost(tally)
    assert sender.statuses["ConnectionError"] > 0


def test_postgres_down_under_the_history_sink(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    def cut_postgres() -> None:
        running.postgres_proxy.cut()
        time.sleep(8)
        running.postgres_proxy.restore()

    name = "postgres down under sink"
    in_kafka, sender = run(name, running, kafka, write_key, cut_postgres)
    database = running.env["DATABASE_URL"]
    wait_until_delivered(
        sender, lambda ids: set(history_counts(database, ids)), 120, f"{name}: history rows"
    )
    time.sleep(2)
    in_history = Tally.of_counts(
        name, sender, history_counts(database, sender.accepted), "postgres"
    )
    TALLIES.append(in_history)

    assert_nothing_lost(in_kafka)
    assert_nothing_lost(in_history)
    assert in_history.duplicates == 0  # (day, messageId) is the history's key


def test_a_poison_request_is_dead_lettered_after_a_bounded_number_of_attempts(
    running: FaultStack, kafka: KafkaCollector, write_key: str
) -> None:
    poison_id = f"poison-{time.time_ns()}"
    body = {
        "userId": "poison",
        "event": "Crash",
        "messageId": poison_id,
        "properties": {"crashWorker": True},
    }

    assert running.worker is not None
    log_before = len(running.worker.output())

    def send_poison() -> None:
        response = requests.post(
            f"{running.api_url}/v1/track", json=body, auth=(write_key, ""), timeout=10
        )
        assert response.status_code == 200

    tally, _ = run(
        "poison request among good ones", running, kafka, write_key, send_poison, total=1000
    )
    [dead] = kafka.wait_for([poison_id], topic=running.env["KAFKA_TOPIC_DEADLETTER"], timeout=60)[
        poison_id
    ]
    settle_ledger(running, tally)  # the poison request is in the books, once dead-lettered

    assert_nothing_lost(tally)
    assert dead.headers["error-kind"] == "poison"
    assert dead.value["event"]["messageId"] == poison_id
    assert not [m for m in kafka.records(poison_id) if m.topic == running.env["KAFKA_TOPIC_EVENTS"]]
    deaths = running.worker.output()[log_before:].count("exited with 'signal 9 (SIGKILL)'")
    # One more when the poison first came in a message shared with other requests (then split).
    assert int(TIMEOUTS["MAX_DELIVERIES"]) <= deaths <= int(TIMEOUTS["MAX_DELIVERIES"]) + 1


def test_a_message_shared_with_a_poison_request_is_split_and_the_others_go_through(
    running: FaultStack, kafka: KafkaCollector
) -> None:
    run_id = time.time_ns()
    good = [
        {"type": "track", "userId": f"u{n}", "event": "Signed Up", "messageId": f"ok-{run_id}-{n}"}
        for n in range(20)
    ]
    poison = {
        "type": "track",
        "userId": "poison",
        "event": "Crash",
        "messageId": f"poison-{run_id}",
        "properties": {"crashWorker": True},
    }
    received = "2026-01-01T00:00:00.000Z"
    parts = [
        Part("split-good", {}, [{**e, "receivedAt": received} for e in good]),
        Part("split-poison", {}, [{**poison, "receivedAt": received}]),
    ]
    assert running.worker is not None
    log_before = len(running.worker.output())
    celery = Celery("split-test", set_as_current=False)
    celery.conf.update(celery_settings(Settings.from_env(running.env)))

    celery.send_task(INGEST_TASK, args=[Message.of(parts).to_wire()], queue=QUEUE)

    events, deadletters = running.env["KAFKA_TOPIC_EVENTS"], running.env["KAFKA_TOPIC_DEADLETTER"]
    got = kafka.wait_for([e["messageId"] for e in good], topic=events, timeout=90)
    [dead] = kafka.wait_for([poison["messageId"]], topic=deadletters, timeout=90)[
        poison["messageId"]
    ]
    assert all(len(records) == 1 for records in got.values())
    assert dead.headers["error-kind"] == "poison"
    assert "splitting into 2 requests" in running.worker.output()[log_before:]
