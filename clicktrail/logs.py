"""Logging: one JSON object per line (``LOG_FORMAT=json``) or readable console lines.

Code logs through the standard library (``logging.getLogger(__name__)``); structlog renders
every record, ours and the libraries' (granian's, Celery's, librdkafka's), adding the context
bound for the current request or task with ``bind`` (request_id, source_id, message_ids,
task_id) and the current trace and span ids. Values of sensitive keys (write keys, tokens,
passwords, IP addresses) are filtered from every line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import orjson
import structlog

from clicktrail.config import Settings
from clicktrail.telemetry import FILTERED, current_ids, is_sensitive

# A log line names this many message ids at most (and the count of all).
MAX_BOUND_MESSAGE_IDS = 10


def bind(**values: Any) -> None:
    """Add context to every log line of the current request or task."""
    structlog.contextvars.bind_contextvars(**values)


def message_id_fields(message_ids: list[str]) -> dict[str, Any]:
    """Log context naming these messages: the first few ids, and how many beyond them."""
    return {"message_ids": message_ids[:MAX_BOUND_MESSAGE_IDS], "message_count": len(message_ids)}


def bind_message_ids(message_ids: list[str]) -> None:
    bind(**message_id_fields(message_ids))


def bound(**values: Any) -> AbstractContextManager[None]:
    """Context added to the log lines written inside a ``with`` block only."""
    return structlog.contextvars.bound_contextvars(**values)


def clear() -> None:
    structlog.contextvars.clear_contextvars()


def _trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ids = current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _filter_sensitive(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if is_sensitive(key):
            event[key] = FILTERED
    return event


def _dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=str).decode()


# Libraries that install handlers of their own.
_OWN_HANDLERS = (
    "_granian",
    "granian.access",
    "gunicorn.error",
    "gunicorn.access",
    "celery",
    "flower",
)


def configure_logging(settings: Settings) -> None:
    """Route every log record of this process through one structlog formatter."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_ids,
        _filter_sensitive,
    ]
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        shared.append(structlog.processors.format_exc_info)
    else:
        # Plain tracebacks: a rich one shows local variables, write keys and tokens among them.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    # Libraries that bring their own handlers log through ours instead.
    for name in _OWN_HANDLERS:
        library = logging.getLogger(name)
        library.handlers = []
        library.propagate = True
    # Celery's two lines a task (received, succeeded) are request lines too: a busy worker runs
    # thousands of small tasks a second. Failures and retries are logged whatever this says.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(
            logging.NOTSET if settings.log_requests else max(logging.WARNING, root.level)
        )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
