"""`make run` on a machine where the broker is missing and the database does not exist yet:
it starts what is missing, serves events end to end, and Ctrl-C stops everything it started.
A second run (database and source already there) works too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import requests

from clicktrail.config import PROJECT_ROOT
from clicktrail.db import drop_database
from clicktrail.devstack import listening
from tests.support.infra import KafkaCollector, child_env, free_port, wait_for


def run_stack(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clicktrail", "run"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def ctrl_c(proc: subprocess.Popen[bytes], log: Path) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(
            f"make run did not stop on Ctrl-C:\n{log.read_text()[-3000:]}"
        ) from None


def serve_one_event(
    proc: subprocess.Popen[bytes], log: Path, ports: dict[str, int], key: str, topic: str
) -> None:
    wait_for(
        lambda: proc.poll() is None and listening("127.0.0.1", ports["api"]), "API up", timeout=90
    )
    text = log.read_text()
    assert key in text, "the development write key is printed"
    assert "started a Tansu broker" in text
    message_id = f"dev-{uuid.uuid4()}"

    response = requests.post(
        f"http://127.0.0.1:{ports['api']}/v1/track",
        json={"userId": "dev", "messageId": message_id, "event": "Tried It"},
        auth=(key, ""),
        timeout=10,
    )

    assert response.status_code == 200, response.text
    collector = KafkaCollector(f"127.0.0.1:{ports['kafka']}", [topic]).start()
    try:
        [record] = collector.wait_for([message_id], timeout=60)[message_id]
    finally:
        collector.stop()
    assert record.value["context"]["session"]["eventIndex"] >= 1
    wait_for(lambda: listening("127.0.0.1", ports["flower"]), "Flower up", timeout=60)
    assert (
        requests.get(f"http://127.0.0.1:{ports['flower']}/healthcheck", timeout=10).status_code
        == 200
    )


def test_make_run_serves_events_and_stops_everything_on_ctrl_c(
    redis_url: str, logs_dir: Path
) -> None:
    ports = {"api": free_port(), "flower": free_port(), "kafka": free_port()}
    run = uuid.uuid4().hex[:8]
    database_url = f"postgresql://postgres@127.0.0.1:5432/clicktrail_devstack_{run}"
    key = f"dev-{run}"
    env = child_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{ports['kafka']}",
        KAFKA_TOPIC_EVENTS=f"dev-{run}-events",
        KAFKA_TOPIC_DEADLETTER=f"dev-{run}-dlq",
        KAFKA_TOPIC_PROFILES=f"dev-{run}-profiles",
        API_BIND=f"127.0.0.1:{ports['api']}",
        FLOWER_PORT=str(ports["flower"]),
        DEV_WRITE_KEY=key,
    )
    try:
        for attempt in (1, 2):
            log = logs_dir / f"devstack-{attempt}.log"
            proc = run_stack(env, log)
            try:
                serve_one_event(proc, log, ports, key, f"dev-{run}-events")
            finally:
                ctrl_c(proc, log)
            for name, port in ports.items():
                assert not listening("127.0.0.1", port), f"{name} still listening after Ctrl-C"
            if attempt == 1:
                assert "created the database" in log.read_text()
    finally:
        drop_database(database_url)
