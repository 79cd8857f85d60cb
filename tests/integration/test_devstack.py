"""`make run` on a machine where the broker is missing and the database does not exist yet:
it starts what is missing, serves events end to end, is observable (metrics that move, one
trace id from the API's log line to the worker's and the Kafka record, readiness that follows
Kafka, Flower) and Ctrl-C stops everything it started. A second run works too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from clicktrail.db import drop_database
from clicktrail.local.stack import listening
from tests.support.infra import (
    KafkaCollector,
    Message,
    TansuBroker,
    child_env,
    claim_redis_db,
    free_port,
    release_redis_db,
    wait_for,
)
from tests.support.paths import PROJECT_ROOT

FLOWER = ("ops", "devstack-test")


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int]
    key: str
    topic: str

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def started_pid(self, process: str) -> int:
        """The pid make run's restart wrapper last started the process's command as."""
        found = re.findall(rf"clicktrail \| {process} started \(pid (\d+)\)", self.log.read_text())
        assert found, f"{process} never started"
        return int(found[-1])

    def lines(self, process: str) -> list[dict[str, Any]]:
        """The JSON log lines one Procfile process printed (honcho prefixes them with its name)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            prefix, _, content = line.partition("| ")
            if prefix.split()[-1:] == [process] and content.startswith("{"):
                found.append(orjson.loads(content))
        return found


def run_stack(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clicktrail", "run"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def ctrl_c(stack: Stack) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    os.killpg(stack.proc.pid, signal.SIGINT)
    try:
        stack.proc.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(stack.proc.pid, signal.SIGKILL)
        raise AssertionError(
            f"make run did not stop on Ctrl-C:\n{stack.log.read_text()[-3000:]}"
        ) from None
    for name, port in stack.ports.items():
        assert not listening("127.0.0.1", port), f"{name} still listening after Ctrl-C"


def counter(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def send(stack: Stack, collector: KafkaCollector, traceparent: str | None = None) -> Message:
    message_id = f"dev-{uuid.uuid4()}"
    response = requests.post(
        f"{stack.api}/v1/track",
        json={"userId": "dev", "messageId": message_id, "event": "Tried It"},
        auth=(stack.key, ""),
        headers={"traceparent": traceparent} if traceparent else {},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    [record] = collector.wait_for([message_id], timeout=60)[message_id]
    return record


@pytest.fixture(scope="module")
def devstack(logs_dir: Path) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    ports = {
        name: free_port() for name in ("api", "flower", "kafka", "worker_metrics", "sink_metrics")
    }
    run = uuid.uuid4().hex[:8]
    # A Redis database of its own: a worker of another stack on the same queue would take its
    # messages.
    redis_db = claim_redis_db(owner=f"devstack-{run}")
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    database_url = f"postgresql://postgres@127.0.0.1:5432/clicktrail_devstack_{run}"
    env = child_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{ports['kafka']}",
        KAFKA_TOPIC_EVENTS=f"dev-{run}-events",
        KAFKA_TOPIC_DEADLETTER=f"dev-{run}-dlq",
        KAFKA_TOPIC_PROFILES=f"dev-{run}-profiles",
        API_BIND=f"127.0.0.1:{ports['api']}",
        FLOWER_PORT=str(ports["flower"]),
        FLOWER_BASIC_AUTH=":".join(FLOWER),
        WORKER_METRICS_PORT=str(ports["worker_metrics"]),
        SINK_METRICS_PORT=str(ports["sink_metrics"]),
        DEV_WRITE_KEY=f"dev-{run}",
        LOG_FORMAT="json",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_HEARTBEAT_INTERVAL_MS="500",
    )
    try:
        yield env, ports
    finally:
        drop_database(database_url)
        release_redis_db(redis_db)


def start(env: dict[str, str], ports: dict[str, int], log: Path) -> Stack:
    stack = Stack(run_stack(env, log), log, ports, env["DEV_WRITE_KEY"], env["KAFKA_TOPIC_EVENTS"])
    wait_for(
        lambda: stack.proc.poll() is None and listening("127.0.0.1", ports["api"]),
        "API up",
        timeout=90,
    )
    text = log.read_text()
    assert stack.key in text, "the development write key is printed"
    [token] = re.findall(r"admin token: (\S+)", text)[-1:]
    assert f"live debugger: http://127.0.0.1:{ports['api']}/debugger#token={token}" in text
    return stack


def test_make_run_serves_observably_and_stops_on_ctrl_c(
    devstack: tuple[dict[str, str], dict[str, int]], logs_dir: Path
) -> None:
    env, ports = devstack
    stack = start(env, ports, logs_dir / "devstack-1.log")
    collector = KafkaCollector(f"127.0.0.1:{ports['kafka']}", [stack.topic]).start()
    try:
        assert "started a Tansu broker" in stack.log.read_text()
        assert "created the database" in stack.log.read_text()
        worker_metrics = f"http://127.0.0.1:{ports['worker_metrics']}/metrics"
        send(stack, collector)  # the first event warms every process up
        before = (
            counter(f"{stack.api}/metrics", "clicktrail_events_accepted_total"),
            counter(worker_metrics, "clicktrail_events_published_total"),
        )
        trace_id = uuid.uuid4().hex

        record = send(stack, collector, traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")
        for _ in range(4):
            send(stack, collector)

        assert counter(f"{stack.api}/metrics", "clicktrail_events_accepted_total") - before[0] == 5
        wait_for(
            lambda: counter(worker_metrics, "clicktrail_events_published_total") - before[1] >= 5,
            "worker counters",
        )
        assert record.headers["traceparent"].split("-")[1] == trace_id
        wait_for(
            lambda: any(line.get("trace_id") == trace_id for line in stack.lines("api")),
            "the API's log line",
        )
        wait_for(
            lambda: any(
                line.get("trace_id") == trace_id and line.get("task_id")
                for line in stack.lines("worker")
            ),
            "the worker's log line",
        )

        # The worker dies: make run starts it again and everything else goes on serving.
        kill_tree(stack.started_pid("worker"))
        wait_for(lambda: "worker exited" in stack.log.read_text(), "the worker's exit noticed")
        send(stack, collector)
        assert stack.proc.poll() is None
        assert listening("127.0.0.1", ports["api"])
        assert listening("127.0.0.1", ports["kafka"])
    finally:
        collector.stop()
        ctrl_c(stack)


def kill_tree(pid: int) -> None:
    """SIGKILL a Procfile command's processes (the shell's children and theirs), as the
    kernel's OOM killer might; the restart wrapper above them lives on."""
    processes = psutil.Process(pid).children(recursive=True)
    assert processes, f"no processes under {pid}"
    for proc in processes:
        proc.kill()


def test_a_second_make_run_follows_kafka_in_readyz_and_shows_tasks_in_flower(
    devstack: tuple[dict[str, str], dict[str, int]], logs_dir: Path
) -> None:
    env, ports = devstack
    broker = TansuBroker(port=ports["kafka"], log_path=logs_dir / "devstack-tansu.log").start()
    ports = {
        name: port for name, port in ports.items() if name != "kafka"
    }  # not make run's to stop
    stack = start(env, ports, logs_dir / "devstack-2.log")
    collector = KafkaCollector(broker.bootstrap, [stack.topic]).start()
    try:
        assert "using the broker at" in stack.log.read_text()
        assert "schema up to date" in stack.log.read_text()  # the first run made the database
        wait_for(lambda: listening("127.0.0.1", ports["flower"]), "Flower up", timeout=60)
        record = send(stack, collector)
        wait_for(
            lambda: requests.get(f"{stack.api}/readyz", timeout=10).status_code == 200,
            "ready",
            timeout=60,
        )

        broker.pause()
        # (a Response is falsy when its status is an error, so the lambda returns the body)
        down = wait_for(
            lambda: (
                (r := requests.get(f"{stack.api}/readyz", timeout=15)).status_code == 503
                and r.json()
            ),
            "readyz 503",
        )
        broker.resume()
        wait_for(
            lambda: requests.get(f"{stack.api}/readyz", timeout=10).status_code == 200,
            "readyz back",
            timeout=60,
        )

        assert down["checks"]["kafka"]["status"] == "down"
        assert {name for name, check in down["checks"].items() if check["status"] == "down"} == {
            "kafka"
        }
        flower = f"http://127.0.0.1:{ports['flower']}"
        assert requests.get(f"{flower}/api/tasks", timeout=10).status_code == 401
        # Flower asks the workers for task events every 5 s: a task sent since then shows.
        sent = [record.headers["event-id"]]

        def shown() -> list[dict[str, Any]]:
            tasks = requests.get(f"{flower}/api/tasks", auth=FLOWER, timeout=10).json()
            mine = [t for t in tasks.values() if any(m in str(t.get("args")) for m in sent)]
            if not mine:
                sent.append(send(stack, collector).headers["event-id"])
            return mine

        tasks = wait_for(shown, "a task in Flower", timeout=60, every=1)
        assert tasks[0]["name"] == "clicktrail.ingest"
    finally:
        collector.stop()
        ctrl_c(stack)
        broker.stop()
