"""One JSON error shape for every failure the API reports:

    {"success": false, "code": "missing_identity", "message": "...", "field": "batch[3].userId"}

Client errors keep their 4xx status; an unavailable dependency is a 503 with Retry-After, and so
is any error Redis answers that no caller turned into one (read-only after a failover, out of
memory, a failed script): the request may succeed once Redis recovers, so never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from clicktrail.errors import DependencyUnavailable, RequestRejected
from clicktrail.metrics import REQUESTS_REJECTED

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"success": False, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RequestRejected)
    def rejected(exc: RequestRejected) -> Response:
        REQUESTS_REJECTED.labels(exc.code).inc()
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(DependencyUnavailable)
    def unavailable(exc: DependencyUnavailable) -> Response:
        REQUESTS_REJECTED.labels("unavailable").inc()
        log.warning("%s unavailable, answering 503: %s", exc.name, exc.detail)
        response = error_response(
            503, "unavailable", f"{exc.name} is unavailable; retry later", None
        )
        response.headers["Retry-After"] = str(current_app.config["RETRY_AFTER_SECONDS"])
        return response

    @app.errorhandler(redis.RedisError)
    def redis_refused(exc: redis.RedisError) -> Response:
        return unavailable(DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}"))

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
