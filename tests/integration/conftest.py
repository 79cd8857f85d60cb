"""The running pipeline for integration tests: real Kafka, Redis, Postgres, a Celery worker
process and the API under gunicorn, each test run with its own database, Redis database and
topics, all removed afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.debugger import DebuggerKeys, new_debugger_key
from clicktrail.kafka import ensure_topics
from clicktrail.local.stack import host_port, listening
from clicktrail.sources import SourceStore, new_write_key
from tests.support.browser import chromium
from tests.support.infra import (
    KafkaCollector,
    Service,
    TansuBroker,
    child_env,
    claim_redis_db,
    delete_topics,
    release_redis_db,
    scratch_database,
    start_api,
    start_sink,
    start_worker,
)
from tests.support.paths import PROJECT_ROOT

pytestmark = pytest.mark.integration

# Short enough for a test to watch a session end; the tests of one session post within it.
SESSION_TIMEOUT = 3
ADMIN_TOKEN = "test-admin-token"
PSEUDONYMIZATION_KEY = "test-pseudonymization-key"
# Consumer-group settings that make a group join take seconds rather than ~20 s on Tansu.
FAST_GROUP_JOIN = {"KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
# The purge runs this often while a test runs beat; retention purges profiles older than this.
PURGE_INTERVAL = 1
RETENTION_DAYS = 30


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def kafka_bootstrap(logs_dir: Path) -> Iterator[str]:
    """The broker at KAFKA_BOOTSTRAP_SERVERS when one answers, else a Tansu broker of our own."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    if listening(*host_port(configured, 9092)):
        yield configured
        return
    broker = TansuBroker(log_path=logs_dir / "tansu.log").start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@dataclass(frozen=True)
class TopicNames:
    events: str
    deadletter: str
    profiles: str

    def all(self) -> list[str]:
        return [self.events, self.deadletter, self.profiles]


@pytest.fixture(scope="session")
def topics(kafka_bootstrap: str, run_id: str) -> Iterator[TopicNames]:
    names = TopicNames(
        f"ct-{run_id}-events", f"ct-{run_id}-events.deadletter", f"ct-{run_id}-profiles"
    )
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, names.all(), partitions=3)
    yield names
    delete_topics(kafka_bootstrap, names.all())


@pytest.fixture(scope="session")
def redis_url(run_id: str) -> Iterator[str]:
    db = claim_redis_db(owner=run_id)
    yield f"redis://127.0.0.1:6379/{db}"
    release_redis_db(db)


@pytest.fixture(scope="session")
def database_url(run_id: str) -> Iterator[str]:
    with scratch_database(f"clicktrail_test_{run_id}") as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A connection pool on the run's database, closed after the test."""
    database = Database(database_url)
    yield database
    database.close()


@dataclass(frozen=True)
class SourceUnderTest:
    id: str
    write_key: str


@pytest.fixture(scope="session")
def source(database_url: str, run_id: str) -> SourceUnderTest:
    db = Database(database_url)
    try:
        key = new_write_key()
        created = SourceStore(db, cache_seconds=0).create(f"test-{run_id}", key)
    finally:
        db.close()
    return SourceUnderTest(created.id, key)


@pytest.fixture(scope="module")
def debugger_key(database_url: str, source: SourceUnderTest) -> str:
    """A fresh debugger key of the run's source, for each module that asks (a new one stops the
    source's earlier key)."""
    db = Database(database_url)
    try:
        key = new_debugger_key()
        DebuggerKeys(db, cache_seconds=0).rotate(source.id, key)
    finally:
        db.close()
    return key


@pytest.fixture(scope="session")
def stack_env(
    kafka_bootstrap: str, topics: TopicNames, redis_url: str, database_url: str
) -> dict[str, str]:
    return child_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPIC_EVENTS=topics.events,
        KAFKA_TOPIC_DEADLETTER=topics.deadletter,
        KAFKA_TOPIC_PROFILES=topics.profiles,
        SESSION_TIMEOUT_SECONDS=str(SESSION_TIMEOUT),
        ADMIN_TOKEN=ADMIN_TOKEN,
        PURGE_INTERVAL_SECONDS=str(PURGE_INTERVAL),
        PROFILE_RETENTION_DAYS=str(RETENTION_DAYS),
        # Key revocations and settings changes reach the API within a second.
        SOURCE_CACHE_SECONDS="1",
        PSEUDONYMIZATION_KEY=PSEUDONYMIZATION_KEY,
    )


ClicktrailCli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def clicktrail_cli(stack_env: dict[str, str]) -> ClicktrailCli:
    """Runs ``clicktrail <args>`` against the test run's stack."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clicktrail", *args],
            env=stack_env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return Settings.from_env(stack_env)


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], logs_dir: Path, run_id: str) -> Iterator[Service]:
    service = start_worker(stack_env, logs_dir / "worker.log", f"test-{run_id}")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def api(stack_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    service, base = start_api(stack_env, logs_dir / "api.log")
    yield base
    service.stop()


@pytest.fixture(scope="session")
def sink(stack_env: dict[str, str], logs_dir: Path) -> Iterator[Service]:
    """The history sink, writing the test run's events topic to its database."""
    service = start_sink({**stack_env, **FAST_GROUP_JOIN}, logs_dir / "sink.log")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def kafka(kafka_bootstrap: str, topics: TopicNames) -> Iterator[KafkaCollector]:
    collector = KafkaCollector(kafka_bootstrap, topics.all()).start()
    yield collector
    collector.stop()


@pytest.fixture(scope="session")
def pipeline(api: str, worker: Service, kafka: KafkaCollector) -> str:
    """The whole pipeline running; the API's base URL."""
    return api


@pytest.fixture
def browser(tmp_path: Path, logs_dir: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium, driven through Debian's chromedriver."""
    driver = chromium(tmp_path / "profile", logs_dir / f"chromedriver-{uuid.uuid4().hex[:6]}.log")
    try:
        yield driver
    finally:
        driver.quit()
