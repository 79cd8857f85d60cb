"""Exception types. Their type decides the handling, at the HTTP edge and in the workers:

- ``RequestRejected`` and its kinds (InvalidInput, Unauthorized, PayloadTooLarge, ...): the
  client's fault -> 4xx, nothing kept.
- ``DependencyUnavailable``: a dependency is down or slow -> the API answers 503 with Retry-After;
  a task retries with backoff. It is a ``TransientError``.
- ``TransientError``: try again later; never drop the work.
Invalid *events* are not exceptions: validation returns their errors and the pipeline sends them
to the dead-letter topic.
"""

from __future__ import annotations


class ClicktrailError(Exception):
    """Base of every error Clicktrail raises on purpose."""


class RequestRejected(ClicktrailError):
    """The client sent something we will not accept. ``field`` is a JSON path into the body."""

    status = 400

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


class Unauthorized(RequestRejected):
    status = 401


class Forbidden(RequestRejected):
    status = 403


class NotFound(RequestRejected):
    status = 404


class PayloadTooLarge(RequestRejected):
    status = 413


class UnsupportedMediaType(RequestRejected):
    status = 415


class RateLimited(RequestRejected):
    """The source sends faster than its limit: 429, retry after ``retry_after`` seconds."""

    status = 429


class Overloaded(RequestRejected):
    """More is queued than the pipeline may hold: 503, retry after ``retry_after`` seconds."""

    status = 503


class TransientError(ClicktrailError):
    """A failure that goes away by itself: retry later, keep the work."""


class DependencyUnavailable(TransientError):
    """A dependency (``name``: redis, postgres, kafka, queue) cannot be reached right now."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name} unavailable: {detail}")
        self.name = name
        self.detail = detail
