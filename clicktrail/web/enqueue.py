"""Hands requests to the workers through Celery, by task name; never imports task code.

Group commit: the requests one API process is handling at the same moment share a Redis
round-trip and a Celery message. A request whose payload arrives while another commit is in
flight waits for it, then goes out with every payload that arrived meanwhile; each request is
answered only once the message holding its payload is in Redis. Alone, a request commits at
once, so a quiet API adds no latency, and a busy one sends a few large messages instead of many
small ones (which the workers also handle faster).

Each request's payload is encoded in the request's own thread before it joins a group, so that
an event nested too deep (or anything else a payload may hold) costs that request a 400 and no
other request of its group anything: a group only splices encoded parts.

The ledger's ``accepted`` (``clicktrail.ledger``) is counted in the round-trip that queues: with
a Redis broker the LPUSH and the counts go in one MULTI/EXEC, so an acknowledged request is
counted exactly once and one whose enqueue failed not at all; each part's counts by minute were
taken when it was encoded, in its request's thread.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from clicktrail.config import Settings
from clicktrail.errors import DependencyUnavailable, Overloaded
from clicktrail.health import CHECK_TIMEOUT
from clicktrail.intake import MAX_BATCH_EVENTS
from clicktrail.ledger import ACCEPTED, LedgerCounter, Tally
from clicktrail.message import EncodedPart, Part, encode_group
from clicktrail.queue import INGEST_TASK, QUEUE, celery_settings, task_message
from clicktrail.redisconn import is_redis_url, pipeline_redis, queue_redis

# Publishing to a down Redis fails fast so the client gets its 503 quickly and retries later.
_PUBLISH_RETRY = {
    "max_retries": 2,
    "interval_start": 0.05,
    "interval_step": 0.1,
    "interval_max": 0.2,
}


@dataclass
class _Ticket:
    payload: Any
    size: int
    woken: threading.Event = field(default_factory=threading.Event)
    committed: bool = False
    error: BaseException | None = None
    lead: bool = False
    # Another request arrived less than a linger before this one: the process is busy.
    busy: bool = False


class GroupCommit:
    """Sends payloads in groups: ``submit`` returns once ``send`` took the group holding its
    payload, or raises what ``send`` raised for it.

    No thread of its own: the first request to find no commit in flight leads, committing what
    is pending until its own payload is sent, then hands the lead to the oldest waiting request.
    Before it commits, a leader waits up to ``linger`` seconds for ``target`` payloads, so that
    requests arriving a few milliseconds apart (single events from browsers) still share a
    message; a worker spends about as much on a message as on a hundred events in it. It waits
    only while requests keep coming (the one before it arrived less than a linger earlier): a
    request to an idle process goes at once.
    A group holds at most ``max_events`` events (one payload bigger than that goes alone), so a
    group's task is never larger than the largest request's.
    """

    def __init__(
        self,
        send: Callable[[list[Any]], None],
        max_events: int = MAX_BATCH_EVENTS,
        linger: float = 0.0,
        target: int = Settings.api_threads,
    ) -> None:
        self._send = send
        self._max_events = max_events
        self._linger = linger
        self.target = target
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._pending: list[_Ticket] = []
        self._pending_events = 0
        self._leading = False
        self._last_arrival = -math.inf

    def submit(self, payload: Any, size: int) -> None:
        """Returns once the group holding ``payload`` (of ``size`` events) was sent."""
        ticket = _Ticket(payload, size)
        with self._lock:
            now = time.monotonic()
            ticket.busy = now - self._last_arrival < self._linger
            self._last_arrival = now
            self._pending.append(ticket)
            self._pending_events += ticket.size
            self._arrived.notify()
            follow, self._leading = self._leading, True
        if follow:
            ticket.woken.wait()
            if not ticket.lead:
                self._outcome(ticket)
                return
        try:
            self._gather(ticket)
            while not ticket.committed:
                self._commit(self._take())
        finally:
            with self._lock:
                if self._pending:
                    successor = self._pending[0]
                    successor.lead = True
                    successor.woken.set()
                else:
                    self._leading = False
        self._outcome(ticket)

    def _gather(self, leader: _Ticket) -> None:
        """Wait (a leader of a busy process, at most ``linger``) for a group worth sending."""
        if self._linger <= 0 or not leader.busy:
            return
        deadline = time.monotonic() + self._linger
        with self._lock:
            while len(self._pending) < self.target and self._pending_events < self._max_events:
                left = deadline - time.monotonic()
                if left <= 0 or not self._arrived.wait(left):
                    return

    def _take(self) -> list[_Ticket]:
        with self._lock:
            size, count = self._pending[0].size, 1
            for ticket in self._pending[1:]:
                if size + ticket.size > self._max_events:
                    break
                size, count = size + ticket.size, count + 1
            group, self._pending = self._pending[:count], self._pending[count:]
            self._pending_events -= sum(t.size for t in group)
        return group

    def _commit(self, group: list[_Ticket]) -> None:
        error: BaseException | None = None
        try:
            self._send([t.payload for t in group])
        except Exception as exc:
            error = exc
        for ticket in group:
            ticket.error, ticket.committed = error, True
            ticket.woken.set()

    @staticmethod
    def _outcome(ticket: _Ticket) -> None:
        if ticket.error is not None:
            raise ticket.error


class CeleryEnqueuer:
    """Sends ingest tasks by name to the workers' queue.

    With a Redis broker (the architecture's) a group's message goes out as one LPUSH of the
    envelope kombu's Redis transport would write (``clicktrail.queue.task_message``), which costs
    a sixth of ``send_task``, in a MULTI with the ledger's counts of its parts; other brokers go
    through ``send_task``, the counts after it (at REDIS_URL, best effort).
    """

    def __init__(self, settings: Settings) -> None:
        self._celery = Celery("clicktrail-api", set_as_current=False)
        config = celery_settings(settings)
        config["broker_transport_options"] = {
            **config["broker_transport_options"],
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
        }
        self._celery.conf.update(config)
        self._retry_after = settings.retry_after_seconds
        self._queue = (
            queue_redis(settings, timeout=2) if is_redis_url(settings.celery_broker_url) else None
        )
        self._origin = f"{os.getpid()}@{socket.gethostname()}"
        self._ledger = LedgerCounter(
            self._queue if self._queue is not None else pipeline_redis(settings, timeout=2),
            settings.ledger_retention_seconds,
        )
        # A group waits for at most as many requests as the process handles at once, each
        # waiting in its thread for the group holding its payload: more could never come.
        self._group = GroupCommit(
            self._send, linger=settings.api_group_linger_ms / 1000, target=settings.api_threads
        )

    @property
    def group_target(self) -> int:
        """The most requests one queue message holds."""
        return self._group.target

    def enqueue(self, part: Part) -> None:
        """Returns once the broker has the message holding the part (an acknowledged write).

        Raises clicktrail.message.Unencodable, in the caller's thread, for a part that cannot
        be written (an event nested deeper than MAX_EVENT_DEPTH). The part's events count as
        accepted in the ledger (a replay's do not: they were accepted once already)."""
        encoded = part.encode()
        self._group.submit(encoded, encoded.size)

    def _send(self, parts: list[EncodedPart]) -> None:
        # Monitors (Flower) and logs show argsrepr instead of the events themselves.
        payload, argsrepr = encode_group(parts)
        accepted = Tally()
        for part in parts:
            accepted.add_minutes(ACCEPTED, part.source_id, part.minutes)
        try:
            if self._queue is not None:
                message = task_message(INGEST_TASK, QUEUE, [payload], argsrepr, self._origin)
                if accepted:
                    pipe = self._queue.pipeline(transaction=True)
                    pipe.lpush(QUEUE, message)
                    self._ledger.queue(pipe, accepted)
                    pipe.execute()
                else:
                    self._queue.lpush(QUEUE, message)
            else:
                self._celery.send_task(
                    INGEST_TASK,
                    args=[payload],
                    queue=QUEUE,
                    retry=True,
                    retry_policy=_PUBLISH_RETRY,
                    argsrepr=argsrepr,
                )
                self._ledger.note(accepted)
        except (OperationalError, ConnectionError, TimeoutError, redis.RedisError) as exc:
            if _out_of_memory(exc):
                # Redis at its maxmemory (noeviction, as a queue must be): nothing more fits.
                raise Overloaded(
                    "queue_full",
                    "the queue is out of memory; retry later",
                    retry_after=self._retry_after,
                ) from exc
            raise DependencyUnavailable("queue", str(exc)) from exc

    def ping_workers(self) -> list[Any]:
        """Replies of live workers to a broadcast ping (the first one is enough)."""
        return list(self._celery.control.ping(timeout=CHECK_TIMEOUT / 2, limit=1) or [])


def _out_of_memory(exc: BaseException | None) -> bool:
    """Redis refused a write for lack of memory (kombu may wrap the error)."""
    while exc is not None:
        if isinstance(exc, redis.OutOfMemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
