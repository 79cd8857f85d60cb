"""The ingest task tells the pipeline whether a message is on its first delivery, so that the
ledger counts what the workers drop of it once, and marks what it splits off a redelivery."""

from __future__ import annotations

from typing import Any

import pytest

from clicktrail.message import Message, Part
from clicktrail.pipeline import Outcome
from clicktrail.tasks import ingest

TWO = Message.of([Part("src-1", events=[{"messageId": "a"}]), Part("src-2", events=[])])
ONE = Message.of([Part("src-1", events=[{"messageId": "a"}])])


class Request:
    id = "task-1"
    retries = 0


class Task:
    request = Request()

    def __init__(self) -> None:
        self.queued: list[Message] = []

    def apply_async(self, args: list[Any], **_: Any) -> None:
        self.queued.append(Message.decode(args[0]))


class Pipeline:
    def __init__(self) -> None:
        self.processed: list[tuple[Message, bool]] = []

    def process(self, message: Message, first_delivery: bool = True) -> Outcome:
        self.processed.append((message, first_delivery))
        return Outcome(0, 0)


class Deliveries:
    def __init__(self, number: int) -> None:
        self.number = number

    def count(self, task_id: str, retries: int) -> int:
        return self.number


class Settings:
    max_deliveries = 3
    retry_backoff_max_seconds = 300


class Runtime:
    def __init__(self, delivery: int) -> None:
        self.pipeline = Pipeline()
        self.deliveries = Deliveries(delivery)
        self.settings = Settings()


def run(monkeypatch: pytest.MonkeyPatch, message: Message, delivery: int) -> tuple[Runtime, Task]:
    current, task = Runtime(delivery), Task()
    monkeypatch.setattr(ingest, "runtime", lambda: current)
    ingest._run(task, message)  # type: ignore[arg-type]
    return current, task


def test_a_first_delivery_is_processed_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    current, _ = run(monkeypatch, TWO, delivery=1)

    assert [first for _, first in current.pipeline.processed] == [True]


def test_a_message_handed_out_again_is_processed_as_a_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current, _ = run(monkeypatch, ONE, delivery=2)

    assert [first for _, first in current.pipeline.processed] == [False]


def test_the_requests_split_off_a_redelivered_message_are_marked_redelivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current, task = run(monkeypatch, TWO, delivery=2)

    assert current.pipeline.processed == []
    assert [m.parts[0].redelivered for m in task.queued] == [True, True]
    assert [m.parts[0].source_id for m in task.queued] == ["src-1", "src-2"]


def test_the_requests_split_off_after_an_unexpected_error_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Failing(Pipeline):
        def process(self, message: Message, first_delivery: bool = True) -> Outcome:
            raise ValueError("a bug")

    current, task = Runtime(1), Task()
    current.pipeline = Failing()
    monkeypatch.setattr(ingest, "runtime", lambda: current)

    ingest._run(task, TWO)  # type: ignore[arg-type]

    assert [m.parts[0].redelivered for m in task.queued] == [False, False]
