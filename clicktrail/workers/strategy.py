"""How the worker's main process takes an ingest message: as Celery's default strategy does,
without decoding the body it only hands on.

Celery (5.7) tells a protocol-1 message wrapped in protocol-2 headers from a plain protocol-2
one by looking for ``args`` in the decoded body (``message.payload``), so its main process
decompresses and parses every message in full, then passes the raw body to a pool process,
which decodes it again: about a tenth of a worker's CPU on batches. Ingest messages are
protocol 2 (the API writes them so, and Celery sends retries and splits so), and nothing links
callbacks, errbacks, chains or chords to them. Such a message, one whose headers name its task
and id, gets in place of its decoded body one with no arguments and an empty embed, which is
all the main process reads of it (the task's arguments are shown from ``argsrepr``); the pool
process decodes the real body as always.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.worker.strategy import default

from clicktrail.queue import BODY_EXTRAS


def _body_left_undecoded() -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    return [], {}, dict(BODY_EXTRAS)


def ingest(task: Any, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    handle = default(task, app, consumer, **options)

    def task_message_handler(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **rest: Any
    ) -> Any:
        headers = message.headers
        if body is None and "id" in headers and "task" in headers and not message._decoded_cache:
            message._decoded_cache = _body_left_undecoded()
        return handle(message, body, ack, reject, callbacks, **rest)

    return task_message_handler
