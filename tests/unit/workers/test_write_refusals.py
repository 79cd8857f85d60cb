"""The consumer's bookkeeping of unacknowledged messages through writes Redis refuses, with a
twin of kombu's Redis channel (the real one is exercised in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

import pytest
import redis
from kombu.transport import virtual

from clicktrail.workers.consumer import WriteRefusals, tolerate_refused_writes

OOM = redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")


class Redis:
    """Records what it is told; refuses every write while ``refusing``."""

    def __init__(self) -> None:
        self.refusing = False
        self.writes: list[tuple[Any, ...]] = []

    def write(self, *command: Any) -> None:
        if self.refusing:
            raise OOM
        self.writes.append(command)


class Pipe:
    def __init__(self, server: Redis) -> None:
        self.server = server
        self.queued: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.queued.append((name, *args))

    def execute(self) -> None:
        for command in self.queued:
            self.server.write(*command)


class Client:
    def __init__(self, server: Redis) -> None:
        self.server = server

    def pipeline(self) -> Pipe:
        return Pipe(self.server)


class Channel:
    def __init__(self, server: Redis) -> None:
        self.server = server
        self.handlers = {"BRPOP": self.brpop}
        self.do_restore = True

    def brpop(self, **_: Any) -> bool:
        self.server.write("brpop")
        return True

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Client]:
        yield Client(self.server)

    def _do_restore_message(self, raw: Any, ex: str, rk: str, pipe: Pipe, leftmost: bool) -> None:
        pipe.lpush(rk, raw)


class QoS(virtual.QoS):  # type: ignore[misc]
    """kombu's Redis QoS in what it writes: bookkeeping on append, removal on ack."""

    unacked_key = "unacked"
    unacked_index_key = "unacked_index"
    # Nothing to put back when the test process exits (kombu would log it to a closed stream).
    restore_at_shutdown = False

    def append(self, message: Any, delivery_tag: str) -> None:
        self.channel.server.write("hset", self.unacked_key, delivery_tag)
        super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self.channel.server.write("hdel", self.unacked_key, delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.channel.server.write("restore" if requeue else "hdel", delivery_tag)
        super().ack(delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        self.channel.server.write("restore_visible")

    def restore_unacked(self, *args: Any, **kwargs: Any) -> None:
        self._delivered.clear()


class Message:
    def __init__(self, tag: str) -> None:
        self._raw = {"body": tag}
        self.delivery_info = {"exchange": "clicktrail", "routing_key": "clicktrail"}


@pytest.fixture
def server() -> Redis:
    return Redis()


@pytest.fixture
def qos(server: Redis) -> Any:
    channel = Channel(server)
    qos = QoS(channel, prefetch_count=2)
    channel.qos = qos
    tolerate_refused_writes(channel)
    return qos


def test_a_message_taken_while_redis_refuses_is_held_and_noted_once_it_takes_writes(
    server: Redis, qos: Any
) -> None:
    server.refusing = True
    qos.append(Message("a"), "a")  # kombu's append raised here, and the worker died

    assert qos.write_refusals.unrecorded.keys() == {"a"}
    assert qos.get("a") is not None  # held in this process, counted against prefetch
    qos.restore_visible()  # still refusing: nothing lost, nothing raised

    server.refusing = False
    qos.restore_visible()

    assert [c[:2] for c in server.writes if c[0] == "zadd"] == [("zadd", "unacked_index")]
    assert ("hset", "unacked", "a", '[{"body": "a"}, "clicktrail", "clicktrail"]') in server.writes
    assert not qos.write_refusals.unrecorded


def test_an_ack_redis_refuses_keeps_its_prefetch_slot_until_it_is_written(
    server: Redis, qos: Any
) -> None:
    qos.append(Message("a"), "a")
    qos.append(Message("b"), "b")
    server.refusing = True

    qos.ack("a")

    assert not qos.can_consume()  # the worker takes no more while Redis refuses
    server.refusing = False
    qos.restore_visible()
    assert ("hdel", "unacked", "a") in server.writes
    assert qos.can_consume()


def test_a_requeue_of_a_message_redis_never_noted_puts_its_copy_back(
    server: Redis, qos: Any
) -> None:
    server.refusing = True
    qos.append(Message("a"), "a")
    qos.reject("a", requeue=True)
    assert qos.write_refusals.pending == {"a": True}

    server.refusing = False
    qos.restore_visible()

    assert ("lpush", "clicktrail", {"body": "a"}) in server.writes
    assert not qos.write_refusals.pending
    assert not qos.write_refusals.unrecorded


def test_an_ack_of_a_message_redis_never_noted_needs_no_write(server: Redis, qos: Any) -> None:
    server.refusing = True
    qos.append(Message("a"), "a")

    qos.ack("a")

    assert not qos.write_refusals.pending
    assert qos.can_consume()


def test_a_refused_take_from_the_queue_pauses_taking(server: Redis, qos: Any) -> None:
    server.refusing = True

    with pytest.raises(Empty):
        qos.channel.handlers["BRPOP"]()

    assert not qos.can_consume()


def test_installed_once() -> None:
    channel = Channel(Redis())
    channel.qos = QoS(channel, prefetch_count=2)
    tolerate_refused_writes(channel)
    first = channel.qos.write_refusals
    tolerate_refused_writes(channel)

    assert channel.qos.write_refusals is first
    assert isinstance(first, WriteRefusals)
