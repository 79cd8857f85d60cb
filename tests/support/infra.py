"""Real backing services for integration tests: a Kafka broker, a Redis database of our own, a
Postgres database of our own, and the API and worker as the processes they are in production."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from clicktrail.db import Database, create_database, drop_database, migrate
from clicktrail.kafka import decode_value, parse_headers
from clicktrail.local.stack import listening, spawn_redis, spawn_tansu
from tests.support.paths import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


class TansuBroker:
    """A Kafka-compatible broker (Tansu, in memory) on a port of its own."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TansuBroker:
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = spawn_tansu("127.0.0.1", self.port, out)
        wait_for(lambda: listening("127.0.0.1", self.port), f"Tansu on {self.port}", timeout=20)
        return self

    def pause(self) -> None:
        """The broker stops answering (SIGSTOP): connections hang, as with a frozen host."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


class RedisServer:
    """A redis-server of our own on a free port, for tests that restart it or fill it up.

    ``persistent`` turns on the append-only file as deployed (fsync on every write).
    """

    def __init__(self, workdir: Path, persistent: bool = True, maxmemory: str = "0") -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._persistent = persistent
        self._maxmemory = maxmemory
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self._workdir.mkdir(parents=True, exist_ok=True)
        log = open(self._workdir / "redis.log", "ab")  # noqa: SIM115
        self._proc = spawn_redis(
            "127.0.0.1", self.port, self._workdir, log,
            appendonly=self._persistent, appendfsync="always", maxmemory=self._maxmemory,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(ready, f"redis-server on {self.port}", timeout=20)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (the append-only file is flushed); SIGKILL: a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            self._proc.wait(20)
        self._proc = None


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A migrated Postgres database of the caller's own, dropped afterwards."""
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    create_database(url)
    migrate(url)
    try:
        yield url
    finally:
        drop_database(url)


def history_counts(
    database_url: str, ids: Iterable[str], table: str = "event_history"
) -> dict[str, int]:
    """How many rows of the history (or ``dead_letters``) each of these messageIds has
    (absent: none)."""
    db = Database(database_url)
    try:
        with db.connection() as conn:
            return dict(
                conn.execute(
                    sql.SQL(
                        "SELECT message_id, count(*) FROM {}"
                        " WHERE message_id = ANY(%s) GROUP BY message_id"
                    ).format(sql.Identifier(table)),
                    (list(ids),),
                ).fetchall()
            )
    finally:
        db.close()


def claim_redis_db(base_url: str = "redis://127.0.0.1:6379", owner: str = "") -> int:
    """An empty Redis database number, marked as ours until released (never one in use)."""
    owner = owner or uuid.uuid4().hex
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base_url}/{db}")
        if client.set("clicktrail-test:owner", owner, nx=True, ex=7200):
            if client.dbsize() == 1:
                return db
            client.delete("clicktrail-test:owner")
    raise RuntimeError("no empty Redis database to test in")


def release_redis_db(db: int, base_url: str = "redis://127.0.0.1:6379") -> None:
    redis.Redis.from_url(f"{base_url}/{db}").flushdb()


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: Any
    raw: bytes | None = None
    schema_id: int | None = None  # set when the value came in the Confluent wire format


@dataclass
class KafkaCollector:
    """Reads topics from the beginning in the background (no consumer group) and indexes
    records by their ``event-id`` header."""

    bootstrap: str
    topics: list[str]
    messages: list[Message] = field(default_factory=list)
    by_id: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> KafkaCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"clicktrail-test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
        assigned: set[tuple[str, int]] = set()
        next_refresh = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_refresh:
                    assigned |= self._assign_new(consumer, assigned)
                    next_refresh = time.monotonic() + 1.0
                if not assigned:
                    time.sleep(0.2)
                    continue
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                key = message.key()
                raw = message.value()
                value, schema_id = decode_value(raw)
                record = Message(
                    topic=message.topic() or "",
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    key=key.decode() if isinstance(key, bytes) else key,
                    headers=parse_headers(message.headers()),
                    value=value,
                    raw=raw,
                    schema_id=schema_id,
                )
                with self._lock:
                    self.messages.append(record)
                    self.by_id[record.headers.get("event-id", "")].append(record)
        finally:
            consumer.close()

    def _assign_new(
        self, consumer: Consumer, assigned: set[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Add partitions that appeared (topics created late, or with more partitions)."""
        try:
            metadata = consumer.list_topics(timeout=2)
        except Exception:
            return set()
        new = {
            (topic, partition)
            for topic in self.topics
            if topic in metadata.topics and metadata.topics[topic].error is None
            for partition in metadata.topics[topic].partitions
        } - assigned
        if new:
            consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new])
        return new

    def wait_for(
        self, ids: Iterable[str], topic: str | None = None, timeout: float = 30.0
    ) -> dict[str, list[Message]]:
        """Block until every id has a record (in ``topic`` when given); return them."""
        wanted = list(ids)

        def found() -> dict[str, list[Message]] | None:
            with self._lock:
                got = {
                    i: [m for m in self.by_id.get(i, []) if topic in (None, m.topic)]
                    for i in wanted
                }
            return got if all(got.values()) else None

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = found()
            if result is not None:
                return result
            time.sleep(0.1)
        with self._lock:
            missing = [
                i
                for i in wanted
                if not [m for m in self.by_id.get(i, []) if topic in (None, m.topic)]
            ]
        where = topic or self.topics
        raise AssertionError(
            f"{len(missing)} of {len(wanted)} never arrived in {where}: {missing[:5]}"
        )

    def records(self, event_id: str) -> list[Message]:
        with self._lock:
            return list(self.by_id.get(event_id, []))


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=10).values():
        with contextlib.suppress(Exception):  # an absent topic is as good as a deleted one
            future.result()


class Service:
    """A Clicktrail process (API or worker) run as in production, its output kept in a file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, metrics_url: str = ""
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.metrics_url = metrics_url
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
                )
            return text in self.output()

        wait_for(seen, f"{self.name} printing {text!r}", timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def own_metrics(
    env: dict[str, str], log_path: Path, name: str, port_variable: str | None
) -> tuple[dict[str, str], str]:
    """A process's own metrics directory and port, so that several can run side by side."""
    metrics_dir = log_path.parent / f"metrics-{name}-{uuid.uuid4().hex[:8]}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    if port_variable is None:
        return env, ""
    port = free_port()
    return {**env, port_variable: str(port)}, f"http://127.0.0.1:{port}/metrics"


def start_worker(
    env: dict[str, str],
    log_path: Path,
    name: str,
    concurrency: int = 2,
    app: str = "clicktrail.workers.celery_app",
) -> Service:
    env, metrics_url = own_metrics(env, log_path, name, "WORKER_METRICS_PORT")
    worker = Service(
        name,
        [sys.executable, "-m", "celery", "--app", app, "worker", "--loglevel", "INFO",
         "--queues", "clicktrail", "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
         "--without-mingle", "--without-gossip"],
        env,
        log_path,
        metrics_url,
    )  # fmt: skip
    worker.wait_for_output(" ready.")
    return worker


def start_sink(env: dict[str, str], log_path: Path, name: str = "sink") -> Service:
    port = free_port()
    env = {**env, "SINK_METRICS_PORT": str(port)}
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    sink = Service(
        name, [sys.executable, "-m", "clicktrail.workers.sink"], env, log_path, metrics_url
    )
    sink.wait_for_output("history sink reading")
    return sink


def start_beat(env: dict[str, str], log_path: Path, name: str = "beat") -> Service:
    beat = Service(
        name,
        [sys.executable, "-m", "celery", "--app", "clicktrail.workers.celery_app", "beat", "--loglevel", "DEBUG",
         "--scheduler", "redbeat.RedBeatScheduler", "--max-interval", "1"],
        env,
        log_path,
    )  # fmt: skip
    beat.wait_for_output("beat: Starting")
    return beat


def start_api(
    env: dict[str, str], log_path: Path, name: str = "api", port: int | None = None
) -> tuple[Service, str]:
    port = port or free_port()
    env, _ = own_metrics({**env, "API_BIND": f"127.0.0.1:{port}"}, log_path, name, None)
    api = Service(
        name,
        [sys.executable, "-m", "clicktrail", "api"],
        env,
        log_path,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if api.proc.poll() is not None:
            raise AssertionError(f"API exited:\n{api.output()[-3000:]}")
        try:
            return requests.get(f"{base}/livez", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, "API /livez", timeout=30)
    return api, base


def start_worker_and_api(
    env: dict[str, str], logs_dir: Path, name: str
) -> tuple[Service, Service, str]:
    """A worker and an API of a test's own on ``env``: the worker, the API and its base URL."""
    worker = start_worker(env, logs_dir / f"{name}-worker.log", f"{name}-{uuid.uuid4().hex[:6]}")
    try:
        api, base = start_api(env, logs_dir / f"{name}-api.log", name=f"{name}-api")
    except BaseException:
        worker.stop()
        raise
    return worker, api, base


def child_env(**overrides: str) -> dict[str, str]:
    """The test process's environment minus anything Clicktrail reads, plus ``overrides``."""
    ours = (
        "REDIS_", "CELERY_", "DATABASE_", "KAFKA_", "SCHEMA", "SESSION_", "LOG_", "API_", "DEV_",
        "FLOWER_", "PROMETHEUS_", "WORKER_METRICS", "SINK_", "METRICS_", "OTEL_", "SENTRY_",
        "ADMIN_", "PURGE_", "PROFILE_", "GEOIP_", "VISIBILITY_", "RETRY_", "MAX_DELIVERIES",
        "DEDUPE_", "QUEUE_", "RATE_LIMIT_", "PSEUDONYMIZATION_", "TASK_", "DEBUGGER_", "LEDGER_",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update({"PYTHONUNBUFFERED": "1", "LOG_FORMAT": "console", **overrides})
    return env
