"""One JSON error shape for every failure the API reports:

    {"success": false, "code": "missing_identity", "message": "...", "field": "batch[3].userId"}

The status follows from the error's fault (``clicktrail.errors.Fault``), here and nowhere else:
the client's fault is a 4xx (400 unless the error names another: 401, 404, 413, 429, ...); a
dependency's is a 503 with Retry-After (the error's own, else RETRY_AFTER_SECONDS); ours is a
500 that tells the client nothing more. So is any error Redis answers that no caller turned into
one (read-only after a failover, out of memory, a failed script) a dependency's: the request may
succeed once Redis recovers, so never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from clicktrail.errors import ClicktrailError, DependencyUnavailable, Fault
from clicktrail.metrics import REQUESTS_REJECTED

log = logging.getLogger(__name__)

# What a client is told when the error does not say: by fault.
_DEFAULT_STATUS = {Fault.CLIENT: 400, Fault.DEPENDENCY: 503, Fault.INTERNAL: 500}
_DEFAULT_CODE = {
    Fault.CLIENT: "invalid_request",
    Fault.DEPENDENCY: "unavailable",
    Fault.INTERNAL: "internal_error",
}
_DEFAULT_MESSAGE = {
    Fault.CLIENT: "the request was refused",
    Fault.DEPENDENCY: "a dependency is unavailable; retry later",
    Fault.INTERNAL: "an internal error occurred",
}


def status_of(exc: ClicktrailError) -> int:
    """The HTTP status of an error: its own within its fault's family (4xx for the client's),
    else the fault's; a dependency's is always 503 and ours always 500."""
    if exc.fault is Fault.CLIENT and exc.status is not None and 400 <= exc.status < 500:
        return exc.status
    return _DEFAULT_STATUS[exc.fault]


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"success": False, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ClicktrailError)
    def clicktrail_error(exc: ClicktrailError) -> Response:
        """The one handler of our errors: status, body and Retry-After from the error."""
        fault = exc.fault
        if fault is Fault.INTERNAL:  # its message is for us, in the log
            log.exception("internal error")
            return error_response(500, _DEFAULT_CODE[fault], _DEFAULT_MESSAGE[fault])
        wait = exc.retry_after
        if fault is Fault.DEPENDENCY and wait is None:
            # A failure, not a refusal that says when to come back (as Overloaded does, which
            # under load would log every request it turns away).
            log.warning("answering 503: %s", exc)
            wait = current_app.config["RETRY_AFTER_SECONDS"]
        code = exc.code or _DEFAULT_CODE[fault]
        REQUESTS_REJECTED.labels(code).inc()
        response = error_response(
            status_of(exc), code, exc.message or _DEFAULT_MESSAGE[fault], exc.field
        )
        if wait is not None:
            response.headers["Retry-After"] = str(wait)
        return response

    @app.errorhandler(redis.RedisError)
    def redis_refused(exc: redis.RedisError) -> Response:
        return clicktrail_error(DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}"))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> Response:
        REQUESTS_REJECTED.labels("request_too_large").inc()
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, "request_too_large", f"a request may be at most {limit} bytes")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an internal error occurred")
