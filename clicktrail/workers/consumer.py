"""The worker's consumer: Celery's own, made to survive Redis going away, or refusing writes,
while it holds messages.

When the broker connection breaks, Celery (5.7) collects the connection and then closes it.
kombu's collect tries to close the Redis channel, fails midway (Redis is gone) and clears the
transport's client; the close then tries the channel again, and restoring the messages it holds
needs that client: an AttributeError, which Celery takes for unrecoverable, and the worker exits
with every task it held. Those messages are restored all the same, by the visibility timeout
(kombu's restore of unacknowledged messages), so the second attempt is let go and the worker
reconnects as it does after any other connection error.

Redis refusing writes (at its maxmemory with noeviction, a read-only replica after a failover,
MISCONF...) answers an error where kombu's Redis transport expects none: its bookkeeping of
unacknowledged messages (written when a message is taken off the queue, removed on its ack, a
transaction even then, which a full Redis refuses), and its restore of messages past the
visibility timeout. The worker died of the first such error, having taken the message off the
queue. ``WriteRefusals`` keeps each channel's bookkeeping through them instead: what Redis
would not note is held and written once it takes writes again, a message held so counts
against the prefetch limit (the worker stops taking more), and one whose bookkeeping never
reached Redis is put back on the queue from memory when its task asks for a requeue.
"""

from __future__ import annotations

import logging
import time
from queue import Empty
from typing import Any

import redis
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import virtual
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

# How long the worker waits before taking from a queue whose Redis refused to hand one out.
QUEUE_PAUSE = 1.0


def tolerate_collected_close(connection: Any) -> None:
    """Make ``connection.close()`` let go of what a collected connection can no longer do."""
    close = connection.close

    def close_collected() -> None:
        try:
            close()
        except AttributeError as exc:
            log.warning(
                "the broken broker connection could not be closed cleanly (%s); the messages "
                "it held come back after the visibility timeout",
                exc,
            )

    connection.close = close_collected


def _release(qos: Any, tag: str) -> None:
    """Forget a message in this process only (kombu's in-memory ack)."""
    virtual.QoS.ack(qos, tag)  # type: ignore[no-untyped-call]


class WriteRefusals:
    """One Redis channel's bookkeeping of unacknowledged messages, kept through refused writes."""

    def __init__(self, qos: Any) -> None:
        self._qos = qos
        self._channel = qos.channel
        self._append, self._ack, self._reject = qos.append, qos.ack, qos.reject
        self._restore_visible, self._restore_unacked = qos.restore_visible, qos.restore_unacked
        self._can_consume = qos.can_consume
        self._brpop_read = self._channel.handlers["BRPOP"]
        self._paused_until = 0.0
        # Taken off the queue, never noted as unacknowledged: only this process has them.
        self.unrecorded: dict[str, tuple[Any, str, str]] = {}
        # Finished (False: acknowledged) or to requeue (True), Redis not told yet.
        self.pending: dict[str, bool] = {}

    def install(self) -> None:
        qos = self._qos
        qos.append, qos.ack, qos.reject = self.append, self.ack, self.reject
        qos.restore_visible, qos.restore_unacked = self.restore_visible, self.restore_unacked
        qos.can_consume = self.can_consume
        self._channel.handlers["BRPOP"] = self.brpop_read

    def can_consume(self) -> bool:
        return time.monotonic() >= self._paused_until and bool(self._can_consume())

    def brpop_read(self, **options: Any) -> Any:
        """Taking from the queue is a write too: refused, the worker waits a moment before it
        asks again rather than ask in a tight loop."""
        try:
            return self._brpop_read(**options)
        except redis.ResponseError as exc:
            log.warning(
                "redis refused to hand out a message (%s); asking again in %g s", exc, QUEUE_PAUSE
            )
            self._paused_until = time.monotonic() + QUEUE_PAUSE
            raise Empty() from exc

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            self._append(message, delivery_tag)
        except redis.ResponseError as exc:
            log.warning(
                "redis refused to note a message as taken (%s); it is held here until redis "
                "takes writes again",
                exc,
            )
            info = message.delivery_info
            self.unrecorded[delivery_tag] = (message._raw, info["exchange"], info["routing_key"])
            virtual.QoS.append(self._qos, message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        self.settle()
        if self.unrecorded.pop(delivery_tag, None) is not None:
            _release(self._qos, delivery_tag)  # nothing of it in Redis to remove
            return
        self._try(delivery_tag, requeue=False)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.settle()
        if not requeue and self.unrecorded.pop(delivery_tag, None) is not None:
            _release(self._qos, delivery_tag)
            return
        self._try(delivery_tag, requeue=requeue)

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        """Called every few seconds by the transport: the moment to write what Redis refused."""
        self.settle()
        try:
            return self._restore_visible(*args, **kwargs)
        except redis.ResponseError as exc:
            log.warning("redis refused the restore of unacknowledged messages: %s", exc)
            return None

    def restore_unacked(self, *args: Any, **kwargs: Any) -> Any:
        """On shutdown: what this process holds goes back to the queue."""
        self.settle()
        for tag in list(self.unrecorded):
            if self._requeue_unrecorded(tag):
                self._qos._delivered.pop(tag, None)
        if self.unrecorded:
            log.error(
                "%d message(s) taken off the queue could not be put back: redis refuses writes",
                len(self.unrecorded),
            )
        try:
            return self._restore_unacked(*args, **kwargs)
        except redis.ResponseError as exc:
            log.error(
                "redis refused to restore unacknowledged messages (%s); they come back after "
                "the visibility timeout",
                exc,
            )
            return None

    def settle(self) -> None:
        """Write what Redis refused before: acks and requeues, then the bookkeeping of messages
        still being worked on. Stops at the first refusal."""
        for tag, requeue in list(self.pending.items()):
            if not self._settle(tag, requeue):
                return
            del self.pending[tag]
        for tag in [t for t in self.unrecorded if t not in self.pending]:
            if not self._record(tag):
                return

    def _try(self, tag: str, requeue: bool) -> None:
        if not self._settle(tag, requeue):
            # Held: the message still counts against the prefetch limit.
            self.pending[tag] = requeue

    def _settle(self, tag: str, requeue: bool) -> bool:
        try:
            if tag in self.unrecorded:
                if not self._requeue_unrecorded(tag):
                    return False
                _release(self._qos, tag)
            elif requeue:
                self._reject(tag, requeue=True)
            else:
                self._ack(tag)
        except redis.ResponseError as exc:
            log.warning(
                "redis refused to %s a message (%s); retrying once it takes writes",
                "requeue" if requeue else "acknowledge",
                exc,
            )
            return False
        return True

    def _requeue_unrecorded(self, tag: str) -> bool:
        raw, exchange, routing_key = self.unrecorded[tag]
        try:
            with self._channel.conn_or_acquire() as client:
                pipe = client.pipeline()
                self._channel._do_restore_message(raw, exchange, routing_key, pipe, True)
                pipe.execute()
        except redis.ResponseError:
            return False
        del self.unrecorded[tag]
        return True

    def _record(self, tag: str) -> bool:
        raw, exchange, routing_key = self.unrecorded[tag]
        qos = self._qos
        try:
            with self._channel.conn_or_acquire() as client:
                pipe = client.pipeline()
                # kombu's own bookkeeping, which kombu compares with its own time.time() when
                # it restores unacked messages: its clock, not ours (no Clock replaces it).
                pipe.zadd(qos.unacked_index_key, {tag: time.time()})
                pipe.hset(qos.unacked_key, tag, dumps([raw, exchange, routing_key]))  # type: ignore[no-untyped-call]
                pipe.execute()
        except redis.ResponseError:
            return False
        del self.unrecorded[tag]
        return True


def tolerate_refused_writes(channel: Any) -> None:
    """Keep this channel's bookkeeping of unacknowledged messages through refused writes
    (Redis transports only: others have no such bookkeeping)."""
    qos = channel.qos
    if hasattr(qos, "unacked_key") and getattr(qos, "write_refusals", None) is None:
        qos.write_refusals = WriteRefusals(qos)
        qos.write_refusals.install()


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def connect(self) -> Any:
        connection = super().connect()
        tolerate_refused_writes(connection.default_channel)
        return connection

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        if self.connection is not None:
            tolerate_collected_close(self.connection)
        super().on_connection_error_after_connected(exc)
