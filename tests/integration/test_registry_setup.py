"""A pipeline pointed at a registry the catalogue was never registered with: events are
dead-lettered as ``schema_missing`` with the subject named, /readyz and doctor say which
subjects are missing and how to fill them, and ``make schemas-register`` makes it ready."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from clicktrail.schemas import FileSchemaRegistry
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.catalogue import copy_catalogue
from tests.support.infra import KafkaCollector
from tests.support.paths import PROJECT_ROOT
from tests.support.registry_server import registry_under_test
from tests.support.schema_stack import SchemaStack, clicktrail_cli, schema_stack


@pytest.fixture(scope="module")
def unregistered(
    stack_env: dict[str, str], run_id: str, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SchemaStack]:
    catalogue = copy_catalogue(tmp_path_factory.mktemp("unregistered") / "schemas")
    with (
        registry_under_test(f"ct-setup-{run_id}") as registry,
        schema_stack(
            stack_env, logs_dir, f"unregistered-{run_id}", catalogue, registry, register=False
        ) as stack,
    ):
        yield stack


def doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clicktrail", "doctor"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_event_without_its_schema_is_dead_lettered_naming_the_subject(
    unregistered: SchemaStack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    assert unregistered.registry is not None
    message_id = f"missing-{uuid.uuid4()}"
    body = {"userId": "u", "messageId": message_id, "event": "Signed Up"}

    response = requests.post(
        f"{unregistered.api}/v1/track", json=body, auth=(source.write_key, ""), timeout=10
    )

    assert response.status_code == 200
    [dead] = kafka.wait_for([message_id], topic=topics.deadletter)[message_id]
    assert dead.value["reason"] == "schema_missing"
    assert dead.headers["error-kind"] == "schema_missing"
    [error] = dead.value["errors"]
    assert f"subject {unregistered.registry.subject_prefix}.calls.track.v" in error["message"]


def test_readyz_and_doctor_name_the_missing_subjects_until_they_are_registered(
    unregistered: SchemaStack,
) -> None:
    assert unregistered.registry is not None
    prefix = unregistered.registry.subject_prefix

    before = requests.get(f"{unregistered.api}/readyz", timeout=10)
    diagnosed = doctor(unregistered.env)
    registered = clicktrail_cli(unregistered.env, "schemas", "register")
    after = requests.get(f"{unregistered.api}/readyz", timeout=10)
    healthy = doctor(unregistered.env)

    assert before.status_code == 503
    check = before.json()["checks"]["schema_registry"]
    assert check["status"] == "down"
    assert f"missing subjects: {prefix}.calls.alias.v1" in check["error"]
    assert diagnosed.returncode == 1
    assert "FAIL  schema_registry: RuntimeError: missing subjects" in diagnosed.stdout
    assert "fix: register the catalogue: make schemas-register" in diagnosed.stdout
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert after.json()["checks"]["schema_registry"] == {"status": "ok"}
    records = len(list(FileSchemaRegistry(unregistered.catalogue).records()))
    assert f"ok    schemas: all {records} record schema versions registered" in healthy.stdout
    assert "HTTP Request" not in healthy.stdout  # the report, not the registry client's chatter
