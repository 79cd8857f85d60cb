"""Who may read the live debugger's feed, through the real API: a source's debugger key (made
with the CLI) or the admin token; never the source's write key, which every page running a
browser SDK shows."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import requests

from tests.integration.conftest import ADMIN_TOKEN, ClicktrailCli, SourceUnderTest
from tests.support.infra import KafkaCollector

# Workers look up which sources are watched at most once a second.
WATCH_NOTICED = 1.5


def feed(base: str, **auth: Any) -> requests.Response:
    return requests.get(f"{base}/v1/debugger/events", timeout=10, **auth)


def bearer(token: str) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Bearer {token}"}}


def new_key(clicktrail_cli: ClicktrailCli, name: str) -> str:
    made = clicktrail_cli("sources", "debugger-key", name)
    assert made.returncode == 0, made.stderr
    found = re.search(r"debugger key: (\S+)", made.stdout)
    assert found is not None, made.stdout
    return found.group(1)


def source_name(clicktrail_cli: ClicktrailCli, source: SourceUnderTest) -> str:
    listed = clicktrail_cli("sources", "list")
    names = [line.split()[0] for line in listed.stdout.splitlines() if source.id in line]
    assert names, listed.stdout
    return names[0]


def test_the_write_key_opens_nothing_and_a_debugger_key_opens_its_source(
    pipeline: str, source: SourceUnderTest, clicktrail_cli: ClicktrailCli, kafka: KafkaCollector
) -> None:
    key = new_key(clicktrail_cli, source_name(clicktrail_cli, source))
    assert feed(pipeline, **bearer(key)).status_code == 200
    time.sleep(WATCH_NOTICED)
    message_id = f"access-{uuid.uuid4()}"
    sent = requests.post(
        f"{pipeline}/v1/identify",
        json={"messageId": message_id, "userId": "u-access", "traits": {"plan": "pro"}},
        auth=(source.write_key, ""),
        timeout=10,
    )
    assert sent.status_code == 200
    kafka.wait_for([message_id])

    by_write_key = feed(pipeline, auth=(source.write_key, ""))
    as_bearer = feed(pipeline, **bearer(source.write_key))
    sources_by_write_key = requests.get(
        f"{pipeline}/v1/debugger/sources", auth=(source.write_key, ""), timeout=10
    )
    deadline = time.monotonic() + 10
    seen: list[str] = []
    while message_id not in seen and time.monotonic() < deadline:
        seen = [e["messageId"] for e in feed(pipeline, **bearer(key)).json()["events"]]
        time.sleep(0.3)
    admin = feed(pipeline, params={"sourceId": source.id}, **bearer(ADMIN_TOKEN))

    assert (by_write_key.status_code, by_write_key.json()["code"]) == (
        401,
        "write_key_not_accepted",
    )
    assert "events" not in by_write_key.json()
    assert (as_bearer.status_code, as_bearer.json()["code"]) == (401, "invalid_debugger_key")
    assert sources_by_write_key.status_code == 401
    assert message_id in seen
    assert message_id in [e["messageId"] for e in admin.json()["events"]]


def test_a_new_debugger_key_stops_the_old_one(
    pipeline: str, source: SourceUnderTest, clicktrail_cli: ClicktrailCli
) -> None:
    name = source_name(clicktrail_cli, source)
    old = new_key(clicktrail_cli, name)
    assert feed(pipeline, **bearer(old)).status_code == 200
    new = new_key(clicktrail_cli, name)
    # The API remembers a key it found for SOURCE_CACHE_SECONDS (1 s in these tests).
    time.sleep(1.5)
    old_after_rotation = feed(pipeline, **bearer(old)).status_code
    new_after_rotation = feed(pipeline, **bearer(new)).status_code
    revoked = clicktrail_cli("sources", "debugger-key", name, "--revoke")
    time.sleep(1.5)

    assert (old_after_rotation, new_after_rotation) == (401, 200)
    assert feed(pipeline, **bearer(new)).status_code == 401
    assert revoked.returncode == 0
    assert "revoked 1 debugger key(s)" in revoked.stdout
    stored = clicktrail_cli("sources", "list")
    assert new not in stored.stdout
    assert old not in stored.stdout
