"""A pipeline (API and worker) reading its schemas from a catalogue of the test's, or from a
registry that catalogue was registered with as ``make schemas-register`` does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra import claim_redis_db, release_redis_db, start_api, start_worker
from tests.support.paths import PROJECT_ROOT
from tests.support.registry_server import RegistryUnderTest


@dataclass(frozen=True)
class SchemaStack:
    backend: str  # "files" or "registry"
    api: str
    env: dict[str, str]
    catalogue: Path
    registry: RegistryUnderTest | None


def clicktrail_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``clicktrail <args>``, as the make targets run it."""
    return subprocess.run(
        [sys.executable, "-m", "clicktrail", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def registry_env(env: dict[str, str], registry: RegistryUnderTest) -> dict[str, str]:
    return {
        **env,
        "SCHEMA_REGISTRY_URL": registry.url,
        "SCHEMA_SUBJECT_PREFIX": registry.subject_prefix,
    }


@contextmanager
def schema_stack(
    stack_env: dict[str, str],
    logs_dir: Path,
    name: str,
    catalogue: Path,
    registry: RegistryUnderTest | None,
    register: bool = True,
) -> Iterator[SchemaStack]:
    """Register ``catalogue`` with ``registry`` (when given and ``register``), then run a worker
    and an API that read their schemas from there, with a Redis database of their own."""
    db = claim_redis_db(owner=name)
    env = {**stack_env, "REDIS_URL": f"redis://127.0.0.1:6379/{db}", "SCHEMAS_DIR": str(catalogue)}
    if registry is not None:
        env = registry_env(env, registry)
    if registry is not None and register:
        registered = clicktrail_cli(env, "schemas", "register")
        assert registered.returncode == 0, registered.stdout + registered.stderr
    worker = start_worker(env, logs_dir / f"{name}-worker.log", name)
    try:
        api, base = start_api(env, logs_dir / f"{name}-api.log", name=f"{name}-api")
        try:
            yield SchemaStack("registry" if registry else "files", base, env, catalogue, registry)
        finally:
            api.stop()
    finally:
        worker.stop()
        release_redis_db(db)
