"""The pipeline as ``make run`` runs it, on dependencies of the benchmark's own: a redis-server
and a Tansu broker on free ports, a Postgres database made for the run, the API under gunicorn
with the Procfile's settings and Celery workers that can be stopped and started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
import requests

from bench.paths import PROJECT_ROOT
from clicktrail.config import Settings
from clicktrail.db import Database, create_database, drop_database, migrate
from clicktrail.kafka import create_pipeline_topics
from clicktrail.local.stack import listening, spawn_redis, spawn_tansu
from clicktrail.queue import QUEUE
from clicktrail.sources import SourceStore, new_write_key

# Our own variables are set below; none may leak in from the caller's environment.
_OURS = ("REDIS_", "CELERY_", "DATABASE_", "KAFKA_", "SCHEMA", "SESSION_", "API_", "WORKER_",
         "SINK_", "METRICS_", "OTEL_", "SENTRY_", "PROMETHEUS_", "QUEUE_", "RATE_",
         "DEV_")  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


def _status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    """The process's resident set now (VmRSS), in MB."""
    return _status_mb(pid, "VmRSS:")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and of its children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / _TICKS


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    peaks: dict[int, float] = field(default_factory=dict)

    def sample(self) -> None:
        """Note the peak RSS of the process and its children (pool processes come and go)."""
        for pid in process_tree(self.popen.pid):
            self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak_rss_mb(pid))

    def cpu(self) -> float:
        """CPU seconds the process and its children have used so far."""
        return sum(cpu_seconds(pid) for pid in process_tree(self.popen.pid))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        self.sample()
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


class BenchStack:
    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.dir = Path(tempfile.mkdtemp(prefix="clicktrail-bench-"))
        self.redis_port, self.kafka_port, self.api_port = free_port(), free_port(), free_port()
        self.database_url = f"postgresql://postgres@127.0.0.1:5432/clicktrail_bench_{self.run}"
        self.topic = "events"
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
        self.env = {
            **env,
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_port}",
            "API_BIND": f"127.0.0.1:{self.api_port}",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "WORKER_METRICS_PORT": "0",
            # The bench queues a backlog of a million events on purpose, and its one source sends
            # faster than the default limit: the checks run, but never refuse.
            "QUEUE_MAX_DEPTH": "10000000",
            "RATE_LIMIT_EVENTS_PER_SECOND": "100000000",
        }
        self.settings = Settings.from_env(self.env)
        self.key = new_write_key()
        self.infra: list[Proc] = []
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self.retired: list[Proc] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _spawn(self, name: str, argv: list[str], extra: dict[str, str] | None = None) -> Proc:
        log: IO[bytes] = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115
        popen = subprocess.Popen(
            argv,
            env={**self.env, **(extra or {})},
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return Proc(name, popen)

    def start(self) -> BenchStack:
        redis_log = open(self.dir / "redis.log", "ab")  # noqa: SIM115
        redis_server = spawn_redis(
            "127.0.0.1", self.redis_port, self.dir, redis_log, appendonly=False, own_session=True
        )
        self.infra.append(Proc("redis", redis_server))
        log = open(self.dir / "tansu.log", "ab")  # noqa: SIM115
        self.infra.append(Proc("kafka", spawn_tansu("127.0.0.1", self.kafka_port, log)))
        wait_until(lambda: listening("127.0.0.1", self.kafka_port), "the broker")
        wait_until(lambda: self._redis_answers(), "redis")
        create_database(self.database_url)
        migrate(self.database_url)
        db = Database(self.database_url)
        try:
            SourceStore(db, cache_seconds=0).create("bench", self.key)
        finally:
            db.close()
        create_pipeline_topics(self.settings)
        return self

    def _redis_answers(self) -> bool:
        try:
            return bool(self.redis().ping())
        except redis.RedisError:
            return False

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port)

    def queue_length(self) -> int:
        return int(self.redis().llen(QUEUE))

    def start_api(self, app: str = "clicktrail.web.server:load_app") -> Proc:
        """The API, or the app ``app`` (an app factory) on the API's server."""
        metrics = self.dir / f"metrics-api-{time.monotonic_ns()}"
        metrics.mkdir()
        # As `clicktrail api` serves it, whatever the app.
        serve = f"from clicktrail.web.server import main; main(target={app!r})"
        self.api = self._spawn(
            "api", [sys.executable, "-c", serve], {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        )

        def up() -> bool:
            try:
                return requests.post(f"{self.api_url}/v1/batch", timeout=1).status_code > 0
            except requests.RequestException:
                return False

        wait_until(up, "the API")
        return self.api

    def stop_api(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.retired.append(self.api)
            self.api = None

    def start_workers(
        self, count: int = 1, concurrency: int = 2, events_topic: str | None = None
    ) -> None:
        """Worker processes as the Procfile runs them; ``events_topic`` instead of the stack's."""
        topic = {"KAFKA_TOPIC_EVENTS": events_topic} if events_topic else {}
        for n in range(count):
            metrics = self.dir / f"metrics-worker-{time.monotonic_ns()}"
            metrics.mkdir()
            worker = self._spawn(
                f"worker-{n}",
                [sys.executable, "-m", "celery", "--app", "clicktrail.workers.celery_app", "worker",
                 "--loglevel", "WARNING", "--queues", QUEUE, "--concurrency", str(concurrency),
                 "--hostname", f"bench-{n}-{time.monotonic_ns()}@%h", "--without-mingle",
                 "--without-gossip"],
                {"PROMETHEUS_MULTIPROC_DIR": str(metrics), **topic},
            )  # fmt: skip
            self.workers.append(worker)
        wait_until(self._workers_ready, "the workers")

    def _workers_ready(self) -> bool:
        for worker in self.workers:
            if worker.popen.poll() is not None:
                raise RuntimeError(f"{worker.name} exited: see {self.dir}/{worker.name}.log")
        try:
            from celery import Celery

            from clicktrail.queue import celery_settings

            app = Celery("bench-ping", set_as_current=False)
            app.conf.update(celery_settings(self.settings))
            replies = app.control.ping(timeout=1.0) or []
            return len(replies) >= len(self.workers)
        except Exception:
            return False

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.retired += self.workers
        self.workers = []

    def sample(self) -> None:
        for proc in [*self.infra, *self.workers, *([self.api] if self.api else [])]:
            proc.sample()

    def cpu(self, kind: str) -> float:
        """CPU seconds used so far by the running processes of one kind (api, worker, redis,
        kafka)."""
        running = [*self.infra, *self.workers, *([self.api] if self.api else [])]
        return sum(proc.cpu() for proc in running if proc.name.split("-")[0] == kind)

    def rss(self) -> dict[str, float]:
        """Resident memory now of the largest running process of each kind (pool processes and
        gunicorn workers as ``<kind>_child``), in MB."""
        now: dict[str, float] = {}
        for proc in [*self.infra, *self.workers, *([self.api] if self.api else [])]:
            kind = proc.name.split("-")[0]
            for pid in process_tree(proc.popen.pid):
                label = kind if pid == proc.popen.pid else f"{kind}_child"
                now[label] = max(now.get(label, 0.0), rss_mb(pid))
        return dict(sorted(now.items()))

    def peak_rss(self) -> dict[str, Any]:
        """Peak RSS of each kind of process over the whole run, in MB."""
        self.sample()
        peaks: dict[str, float] = {}
        for proc in [*self.infra, *self.workers, *self.retired, *([self.api] if self.api else [])]:
            kind = proc.name.split("-")[0]
            main = proc.peaks.get(proc.popen.pid, 0.0)
            children = [v for pid, v in proc.peaks.items() if pid != proc.popen.pid]
            peaks[kind] = max(peaks.get(kind, 0.0), main)
            if children:
                label = f"{kind}_child"
                peaks[label] = max(peaks.get(label, 0.0), max(children))
        return dict(sorted(peaks.items()))

    def close(self) -> None:
        self.stop_workers()
        self.stop_api()
        for proc in reversed(self.infra):
            proc.stop()
        drop_database(self.database_url)
        shutil.rmtree(self.dir, ignore_errors=True)
