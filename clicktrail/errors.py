"""Exception types. Every error Clicktrail raises on purpose derives from ``ClicktrailError`` and
declares its ``fault``: whose fault it is decides the handling, at the HTTP edge and in the
workers.

- ``Fault.CLIENT``: the request is wrong, or asks too much (``RequestRejected`` and its kinds:
  InvalidInput, Unauthorized, NotFound, Conflict, PayloadTooLarge, RateLimited, ...) -> a 4xx
  (400 unless the class names another), nothing kept.
- ``Fault.DEPENDENCY``: something we rely on is down, slow or full (``TransientError``:
  DependencyUnavailable, Overloaded, the pipeline's PublishIncomplete) -> the API answers 503
  with Retry-After; a task retries with backoff and never drops the work.
- ``Fault.INTERNAL``: our own mistake or misconfiguration (ConfigError, SchemaCatalogueError,
  InvalidSettings, and any error that is not a ClicktrailError) -> 500, and the message stays in
  the log.

The HTTP status and body follow from the fault in one place, ``clicktrail.web.errors``; a class
names a ``status`` of its own only within its fault's family (404, 413, 429, ...).
Invalid *events* are not exceptions: validation returns their errors and the pipeline sends them
to the dead-letter topic.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Fault(StrEnum):
    CLIENT = "client"
    DEPENDENCY = "dependency"
    INTERNAL = "internal"


class ClicktrailError(Exception):
    """Base of every error Clicktrail raises on purpose.

    ``code``, ``message``, ``field`` and ``retry_after`` are what a client may be told: left
    None, the HTTP edge answers its fault's generic ones (it never shows an internal error's).
    """

    fault: ClassVar[Fault] = Fault.INTERNAL
    # A specific HTTP status within the fault's family; None: the fault's own (400, 503, 500).
    status: ClassVar[int | None] = None
    code: str | None = None
    message: str | None = None
    field: str | None = None
    retry_after: int | None = None


class RequestRejected(ClicktrailError):
    """The client sent something we will not accept. ``field`` is a JSON path into the body."""

    fault = Fault.CLIENT

    def __init__(
        self, code: str, message: str, field: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after


class InvalidInput(RequestRejected):
    status = 400


class Conflict(RequestRejected):
    """What the request would create is taken by another (a write key of another source)."""

    status = 409


class Unauthorized(RequestRejected):
    status = 401


class Forbidden(RequestRejected):
    status = 403


class NotFound(RequestRejected, LookupError):
    """Nothing by that name or id. A LookupError too, for callers outside the API."""

    status = 404


class PayloadTooLarge(RequestRejected):
    status = 413


class UnsupportedMediaType(RequestRejected):
    status = 415


class RateLimited(RequestRejected):
    """The source sends faster than its limit: 429, retry after ``retry_after`` seconds."""

    status = 429


class InvalidSettings(ClicktrailError, ValueError):
    """A source's settings are malformed; the message names the setting. They are checked before
    they are stored, so one met while serving events is our fault (or an operator's), never the
    client's: 500. A ValueError too, as it always was."""

    fault = Fault.INTERNAL


class TransientError(ClicktrailError):
    """A failure that goes away by itself: retry later, keep the work."""

    fault = Fault.DEPENDENCY


class Overloaded(TransientError):
    """More is queued (or looked up) than the pipeline may take now: 503, retry after
    ``retry_after`` seconds. Not the client's fault: the same request succeeds later."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class DependencyUnavailable(TransientError):
    """A dependency (``name``: redis, postgres, kafka, queue) cannot be reached right now.

    Clients are told which one, not the detail (that goes to the log)."""

    code = "unavailable"

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name} unavailable: {detail}")
        self.name = name
        self.detail = detail
        self.message = f"{name} is unavailable; retry later"
