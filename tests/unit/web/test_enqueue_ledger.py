"""The API counts what it accepted in the round-trip that queues it: one MULTI with the LPUSH."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from clicktrail import metrics
from clicktrail.config import Settings
from clicktrail.errors import DependencyUnavailable
from clicktrail.message import Part
from clicktrail.queue import QUEUE
from clicktrail.web import enqueue
from clicktrail.web.enqueue import CeleryEnqueuer
from tests.support.data import valid_events
from tests.support.twins import RecordingRedis

MINUTE = "2026-01-02T03:04"


def events(*names: str, received_at: str = "2026-01-02T03:04:05.678Z") -> list[dict[str, Any]]:
    return [{**copy.deepcopy(valid_events()[n]), "receivedAt": received_at} for n in names]


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> RecordingRedis:
    client = RecordingRedis()
    monkeypatch.setattr(enqueue, "queue_redis", lambda *_, **__: client)
    return client


def test_an_acknowledged_request_is_counted_in_the_transaction_that_queued_it(
    queue: RecordingRedis,
) -> None:
    enqueuer = CeleryEnqueuer(Settings(ledger_retention_hours=2))

    enqueuer.enqueue(Part("src-1", {}, events("page", "identify")))

    assert queue.round_trips == [(True, ["lpush", "hincrby", "expire"])]
    assert len(queue.lists[QUEUE]) == 1
    assert queue.counted("accepted") == 2
    assert queue.ttls[f"ct:ledger:{MINUTE}"] == 2 * 3600


def test_a_group_counts_each_requests_events_by_source_and_minute(
    queue: RecordingRedis,
) -> None:
    enqueuer = CeleryEnqueuer(Settings())
    parts = [
        Part("src-1", {}, events("page")),
        Part("src-2", {}, events("identify", "screen")),
        Part("src-1", {}, events("group", received_at="2026-01-02T03:05:00.000Z")),
    ]

    enqueuer._send([p.encode() for p in parts])

    [(transaction, commands)] = queue.round_trips
    assert transaction
    assert commands == ["lpush", "hincrby", "hincrby", "hincrby", "expire", "expire"]
    assert (queue.counted("accepted"), queue.counted("accepted", "src-2")) == (1, 2)
    assert queue.counted("accepted", minute="2026-01-02T03:05") == 1


def test_a_failed_enqueue_counts_nothing(queue: RecordingRedis) -> None:
    queue.down = True
    enqueuer = CeleryEnqueuer(Settings())

    with pytest.raises(DependencyUnavailable):
        enqueuer.enqueue(Part("src-1", {}, events("page")))

    assert queue.hashes == {}
    assert queue.lists == {}


def test_a_replay_is_queued_without_counting_it_again(queue: RecordingRedis) -> None:
    enqueuer = CeleryEnqueuer(Settings())

    enqueuer.enqueue(Part("src-1", {}, events("page"), replay=True))

    assert queue.round_trips == [(False, ["lpush"])]
    assert queue.hashes == {}


class RecordingCelery:
    def __init__(self, down: bool = False) -> None:
        self.sent: list[Any] = []
        self.down = down

    def send_task(self, name: str, **options: Any) -> None:
        if self.down:
            raise ConnectionError("broker away")
        self.sent.append(options["args"])


def test_another_broker_counts_after_its_send_at_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = RecordingRedis()
    monkeypatch.setattr(enqueue, "pipeline_redis", lambda *_, **__: ledger)
    enqueuer = CeleryEnqueuer(Settings(celery_broker_url="amqp://guest@127.0.0.1//"))
    enqueuer._celery = RecordingCelery()  # type: ignore[assignment]

    enqueuer.enqueue(Part("src-1", {}, events("page")))

    assert ledger.round_trips == [(False, ["hincrby", "expire"])]
    assert ledger.counted("accepted") == 1


def test_another_broker_counts_nothing_it_did_not_send_and_a_lost_count_fails_no_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = RecordingRedis()
    monkeypatch.setattr(enqueue, "pipeline_redis", lambda *_, **__: ledger)
    enqueuer = CeleryEnqueuer(Settings(celery_broker_url="amqp://guest@127.0.0.1//"))
    enqueuer._celery = RecordingCelery(down=True)  # type: ignore[assignment]

    with pytest.raises(DependencyUnavailable):
        enqueuer.enqueue(Part("src-1", {}, events("page")))
    assert ledger.hashes == {}

    enqueuer._celery = RecordingCelery()  # type: ignore[assignment]
    ledger.down = True
    before = metrics.LEDGER_COUNT_FAILURES._value.get()
    enqueuer.enqueue(Part("src-1", {}, events("page")))  # sent: the request is acknowledged

    assert metrics.LEDGER_COUNT_FAILURES._value.get() == before + 1
