"""The running API against its OpenAPI document: schemathesis generates requests from it, valid
ones and broken ones, and checks every answer: never a 5xx, every status, header and body as
documented. (The document is the one the API serves at /openapi.json, as a unit test checks.)"""

from __future__ import annotations

import base64

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from clicktrail.db import Database
from clicktrail.debugger import DebuggerKeys, new_debugger_key
from tests.integration.conftest import ADMIN_TOKEN, SourceUnderTest
from web.openapi import document

# 413 (over a size limit) is as proper a refusal of a request that breaks the document as a 400.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 413, 415, 422, 429]
            }
        }
    }
)
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


@schema.hook
def filter_body(_: object, body: object) -> bool:
    """Bodies the document allows: it says in words what JSON Schema cannot, that integers must
    fit in 64 bits (the API answers 400 number_too_large otherwise, as a test below checks)."""
    return _within_int64(body)


def _within_int64(value: object) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, dict):
        return all(_within_int64(v) for v in value.values())
    if isinstance(value, list):
        return all(_within_int64(v) for v in value)
    return True


@pytest.fixture(scope="module")
def debugger_key(database_url: str, source: SourceUnderTest) -> str:
    db = Database(database_url)
    try:
        key = new_debugger_key()
        DebuggerKeys(db, cache_seconds=0).rotate(source.id, key)
    finally:
        db.close()
    return key


@schema.parametrize()
# Derandomized: the same examples on every run, so that CI never fails by chance.
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_contract(
    case: schemathesis.Case, pipeline: str, source: SourceUnderTest, debugger_key: str
) -> None:
    if case.operation.path.startswith("/v1/users/"):
        auth = f"Bearer {ADMIN_TOKEN}"
    elif case.operation.path.startswith("/v1/debugger/"):
        auth = f"Bearer {debugger_key}"
    else:
        auth = "Basic " + base64.b64encode(f"{source.write_key}:".encode()).decode()
    case.call_and_validate(
        base_url=pipeline, headers={"Authorization": auth, **(case.headers or {})}
    )
