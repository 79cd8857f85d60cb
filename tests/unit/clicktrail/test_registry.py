"""The Confluent-compatible registry backend against confluent-kafka's in-process mock client.
(tests/integration/test_schema_registry.py runs the pipeline against a registry over HTTP.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from clicktrail.errors import DependencyUnavailable
from clicktrail.kafka import Record
from clicktrail.registry import (
    ConfluentSchemaRegistry,
    expected_subjects,
    missing_subjects,
    register_catalogue,
)
from clicktrail.schemas import FileSchemaRegistry
from clicktrail.validation import EventValidator
from tests.support.catalogue import (
    SCHEMAS,
    add_optional_color,
    copy_catalogue,
    evolved,
    require_sku,
)
from tests.support.data import valid_events
from tests.support.infra import free_port
from tests.support.registry_server import RegistryServer


class CountingClient:
    """Passes calls to a client, counting them by name."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attribute(*args, **kwargs)

        return counted


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def test_registering_the_catalogue_makes_one_subject_per_schema_and_model(
    client: SchemaRegistryClient,
) -> None:
    results = register_catalogue(client, FileSchemaRegistry(SCHEMAS))
    again = register_catalogue(client, FileSchemaRegistry(SCHEMAS))

    assert all(r.error is None for r in results)
    subjects = {r.subject for r in results}
    assert {
        "clicktrail.calls.track.v1",
        "clicktrail.events.product_viewed.v1",
        "clicktrail.events.product_viewed.v2",
        "clicktrail.traits.identify.v1",
    } <= subjects
    assert set(client.get_subjects()) == subjects
    assert [(r.subject, r.schema_id, r.version) for r in again] == [
        (r.subject, r.schema_id, r.version) for r in results
    ]


def test_lookups_find_the_registered_record_schemas_and_validate_with_them(
    client: SchemaRegistryClient,
) -> None:
    register_catalogue(client, FileSchemaRegistry(SCHEMAS))
    validator = EventValidator(ConfluentSchemaRegistry(client))

    good = validator.validate(valid_events()["track_product_viewed"])
    bad = validator.validate(
        {**valid_events()["track_product_viewed"], "properties": {"price": -1}}
    )

    assert good.valid
    assert good.schema == "events/product_viewed/2-0-0"
    assert (
        good.schema_id == client.get_latest_version("clicktrail.events.product_viewed.v2").schema_id
    )
    assert {(e["path"], e["keyword"]) for e in bad.errors} == {
        ("/properties/product_id", "required"),
        ("/properties/price", "minimum"),
    }


def test_new_versions_are_picked_up_after_the_refresh_and_old_ones_stay_reachable(
    client: SchemaRegistryClient, tmp_path: Path
) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    register_catalogue(client, FileSchemaRegistry(root))
    clock = Clock()
    registry = ConfluentSchemaRegistry(client, refresh_seconds=60, clock=clock)
    before = registry.record("events", "product_viewed")

    evolved(root, "events/product_viewed", "2-0-1", add_optional_color)
    register_catalogue(client, FileSchemaRegistry(root))
    still_cached = registry.record("events", "product_viewed")
    clock.now = 61
    after = registry.record("events", "product_viewed")
    old = registry.record("events", "product_viewed", "2-0-0")

    assert before is not None
    assert still_cached is not None
    assert after is not None
    assert old is not None
    assert (before.key, still_cached.key, after.key, old.key) == (
        "events/product_viewed/2-0-0",
        "events/product_viewed/2-0-0",
        "events/product_viewed/2-0-1",
        "events/product_viewed/2-0-0",
    )
    assert client.get_latest_version("clicktrail.events.product_viewed.v2").version == 2
    assert after.schema_id != old.schema_id


def test_a_new_model_is_a_new_subject_and_becomes_the_latest(
    client: SchemaRegistryClient, tmp_path: Path
) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "events/product_viewed", "3-0-0", require_sku)
    register_catalogue(client, FileSchemaRegistry(root))
    registry = ConfluentSchemaRegistry(client)

    latest = registry.record("events", "product_viewed")

    assert "clicktrail.events.product_viewed.v3" in client.get_subjects()
    assert latest is not None
    assert latest.key == "events/product_viewed/3-0-0"
    assert registry.record("events", "product_viewed", "2-0-0") is not None
    assert registry.record("events", "never_registered") is None


def test_lookups_are_cached(client: SchemaRegistryClient) -> None:
    register_catalogue(client, FileSchemaRegistry(SCHEMAS))
    counting = CountingClient(client)
    registry = ConfluentSchemaRegistry(counting)  # type: ignore[arg-type]

    def look_up() -> None:
        assert registry.record("events", "product_viewed") is not None
        assert registry.record("calls", "page", "1-0-0") is not None

    look_up()
    first = dict(counting.calls)
    for _ in range(99):
        look_up()

    assert first["get_subjects"] == 1
    assert first["get_versions"] == 2
    assert counting.calls == first


def test_subject_prefixes_keep_environments_apart(client: SchemaRegistryClient) -> None:
    register_catalogue(client, FileSchemaRegistry(SCHEMAS), subject_prefix="staging")

    assert ConfluentSchemaRegistry(client, "staging").record("calls", "page") is not None
    assert ConfluentSchemaRegistry(client, "production").record("calls", "page") is None


def test_a_record_in_the_wire_format_is_read_by_confluents_json_deserializer(
    client: SchemaRegistryClient,
) -> None:
    register_catalogue(client, FileSchemaRegistry(SCHEMAS))
    event = valid_events()["track_product_viewed"]
    verdict = EventValidator(ConfluentSchemaRegistry(client)).validate(event)
    record = Record("events", "u-1", event, schema_id=verdict.schema_id)

    decoded = JSONDeserializer(None, schema_registry_client=client)(
        record.encode_value(), SerializationContext("events", MessageField.VALUE)
    )

    assert decoded == event


def test_an_unreachable_registry_is_dependency_unavailable() -> None:
    client = SchemaRegistryClient({"url": f"http://127.0.0.1:{free_port()}", "max.retries": 0})

    with pytest.raises(DependencyUnavailable) as caught:
        ConfluentSchemaRegistry(client).record("calls", "page")

    assert caught.value.name == "schema_registry"


def test_registering_again_leaves_what_the_subjects_hold_and_renews_a_changed_newest_version(
    client: SchemaRegistryClient, tmp_path: Path
) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "events/product_viewed", "2-0-1", add_optional_color)
    register_catalogue(client, FileSchemaRegistry(root))
    # The track envelope widens: every event record embeds the newest envelope.
    evolved(root, "calls/track", "1-0-2", lambda d: d["properties"]["event"].update(maxLength=300))

    again = {r.schema: r for r in register_catalogue(client, FileSchemaRegistry(root))}

    assert all(r.error is None for r in again.values())
    assert again["events/product_viewed/2-0-0"].note == (
        "registered before (with an earlier envelope)"
    )
    assert again["events/product_viewed/2-0-1"].note == ""  # the newest: registered anew
    assert again["calls/track/1-0-1"].note == "registered before"
    assert client.get_latest_version("clicktrail.events.product_viewed.v2").version == 3


def test_the_subjects_a_catalogue_needs_and_which_are_missing(tmp_path: Path) -> None:
    expected = expected_subjects(SCHEMAS, "ct")
    without_catalogue = expected_subjects(tmp_path / "nothing-here", "ct")

    assert "ct.calls.track.v1" in expected
    assert {"ct.events.product_viewed.v1", "ct.events.product_viewed.v2"} <= set(expected)
    assert not any(".common." in s for s in expected)
    assert "ct.calls.track.v*" in without_catalogue
    assert missing_subjects(["ct.calls.track.v3"], ["ct.calls.track.v*", "ct.calls.page.v*"]) == [
        "ct.calls.page.v*"
    ]
    assert missing_subjects(expected, expected) == []


@pytest.fixture
def served() -> Iterator[RegistryServer]:
    """The registry double over HTTP, holding the catalogue."""
    server = RegistryServer().start()
    try:
        register_catalogue(SchemaRegistryClient({"url": server.url}), FileSchemaRegistry(SCHEMAS))
        server.traffic.paths.clear()
        yield server
    finally:
        server.stop()


def timed(look_up: Callable[[], object]) -> float:
    started = time.monotonic()
    look_up()
    return time.monotonic() - started


def test_a_slow_subject_does_not_hold_back_lookups_of_another(served: RegistryServer) -> None:
    registry = ConfluentSchemaRegistry(SchemaRegistryClient({"url": served.url}))
    assert registry.record("calls", "page") is not None  # the listing is in
    served.traffic.slow["clicktrail.events.product_viewed.v2"] = 2.0
    slow = threading.Thread(target=registry.record, args=("events", "product_viewed"))

    slow.start()
    time.sleep(0.2)  # the slow lookup is waiting for the registry
    other = timed(lambda: registry.record("calls", "track"))
    versioned = timed(lambda: registry.record("traits", "identify", "1-0-0"))
    slow.join()

    assert other < 1.0
    assert versioned < 1.0
    assert registry.record("events", "product_viewed") is not None


def test_lookups_of_one_subject_wait_for_one_fetch(served: RegistryServer) -> None:
    registry = ConfluentSchemaRegistry(SchemaRegistryClient({"url": served.url}))
    registry.record("calls", "page")
    served.traffic.slow["clicktrail.calls.track.v1"] = 0.5
    served.traffic.paths.clear()
    found: list[object] = []
    threads = [
        threading.Thread(target=lambda: found.append(registry.record("calls", "track")))
        for _ in range(8)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(found) == 8
    assert all(f is not None for f in found)
    assert served.traffic.paths.count("/subjects/clicktrail.calls.track.v1/versions") == 1


def test_random_event_names_cost_one_listing_per_few_seconds_not_a_call_each(
    served: RegistryServer,
) -> None:
    clock = Clock()
    registry = ConfluentSchemaRegistry(SchemaRegistryClient({"url": served.url}), clock=clock)
    registry.record("calls", "page")
    served.traffic.paths.clear()

    for n in range(200):
        assert registry.record("events", f"random_{n}", "1-0-0") is None
        assert registry.record("events", f"other_{n}") is None
    clock.now += 6  # beyond the absence's few seconds: one more listing
    for n in range(200):
        assert registry.record("events", f"random_{n}", "1-0-0") is None

    assert served.traffic.paths == ["/subjects"]


def test_a_subject_registered_after_the_listing_is_found_within_seconds(
    served: RegistryServer, tmp_path: Path
) -> None:
    clock = Clock()
    client = SchemaRegistryClient({"url": served.url})
    registry = ConfluentSchemaRegistry(client, clock=clock)
    assert registry.record("events", "checkout_started", "1-0-0") is None
    assert registry.record("events", "checkout_started") is None
    catalogue = copy_catalogue(tmp_path / "schemas")
    (catalogue / "events" / "checkout_started").mkdir()
    (catalogue / "events" / "checkout_started" / "1-0-0.json").write_text(
        (SCHEMAS / "events" / "product_viewed" / "1-0-0.json")
        .read_text()
        .replace("product_viewed", "checkout_started")
    )
    register_catalogue(client, FileSchemaRegistry(catalogue))

    clock.now += 6

    assert registry.record("events", "checkout_started", "1-0-0") is not None
    assert registry.record("events", "checkout_started") is not None
