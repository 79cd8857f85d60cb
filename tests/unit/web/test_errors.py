"""The one handler of Clicktrail's errors: the status, body and Retry-After follow from the
error's fault (client -> 4xx, dependency -> 503 with Retry-After, internal -> 500)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask

from clicktrail.config import ConfigError
from clicktrail.errors import (
    ClicktrailError,
    Conflict,
    DependencyUnavailable,
    Fault,
    Forbidden,
    InvalidInput,
    InvalidSettings,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    TransientError,
    Unauthorized,
    UnsupportedMediaType,
)
from clicktrail.kafka import Delivery, Record
from clicktrail.pipeline import PublishIncomplete
from clicktrail.purge import PurgeFailed
from clicktrail.schemas import SchemaCatalogueError
from clicktrail.web.errors import register_error_handlers, status_of

RETRY_AFTER = 7


class ClientFault(ClicktrailError):
    fault = Fault.CLIENT


class DependencyFault(ClicktrailError):
    fault = Fault.DEPENDENCY


class InternalFault(ClicktrailError):
    fault = Fault.INTERNAL


def answer(error: BaseException) -> Any:
    app = Flask(__name__)
    app.config["RETRY_AFTER_SECONDS"] = RETRY_AFTER
    register_error_handlers(app)

    @app.get("/")
    def fail() -> None:
        raise error

    return app.test_client().get("/")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput("invalid_body", "the body must be a JSON object"), 400),
        (Unauthorized("missing_write_key", "no write key"), 401),
        (Forbidden("origin_not_allowed", "not from here"), 403),
        (NotFound("unknown_source", "no source named 'x'"), 404),
        (Conflict("write_key_taken", "taken"), 409),
        (PayloadTooLarge("event_too_large", "too large", field="batch[2]"), 413),
        (UnsupportedMediaType("unsupported_encoding", "gzip only"), 415),
        (ClientFault(), 400),
    ],
)
def test_the_client_s_fault_is_its_4xx_with_its_code_message_and_field(
    error: ClicktrailError, status: int
) -> None:
    response = answer(error)

    assert status_of(error) == status
    assert response.status_code == status
    body = response.get_json()
    assert body["success"] is False
    assert (body["code"], body["message"]) == (
        (error.code, error.message)
        if error.code
        else ("invalid_request", "the request was refused")
    )
    assert body.get("field") == error.field
    assert "Retry-After" not in response.headers


def test_a_client_told_to_wait_gets_retry_after() -> None:
    response = answer(RateLimited("rate_limited", "10 events a second", retry_after=3))

    assert (response.status_code, response.headers["Retry-After"]) == (429, "3")
    assert response.get_json()["code"] == "rate_limited"


def test_an_unavailable_dependency_is_a_503_naming_it_with_the_configured_retry_after() -> None:
    response = answer(DependencyUnavailable("postgres", "connection refused at 10.0.0.5"))

    assert (response.status_code, response.headers["Retry-After"]) == (503, str(RETRY_AFTER))
    assert response.get_json() == {
        "success": False,
        "code": "unavailable",
        "message": "postgres is unavailable; retry later",
    }


def test_an_overloaded_pipeline_is_a_503_with_its_own_code_and_retry_after() -> None:
    response = answer(Overloaded("queue_full", "9 messages are waiting", retry_after=2))

    assert (response.status_code, response.headers["Retry-After"]) == (503, "2")
    assert response.get_json()["code"] == "queue_full"


@pytest.mark.parametrize(
    "error",
    [
        TransientError("kafka slow"),
        PurgeFailed("1 profile record(s) not delivered"),
        PublishIncomplete([Delivery(Record("events", "u", {}), error="timed out")], {}),
        DependencyFault(),
    ],
    ids=["TransientError", "PurgeFailed", "PublishIncomplete", "any-dependency-fault"],
)
def test_any_dependency_fault_is_a_503_with_retry_after(error: ClicktrailError) -> None:
    response = answer(error)

    assert status_of(error) == 503
    assert (response.status_code, response.headers["Retry-After"]) == (503, str(RETRY_AFTER))
    assert response.get_json()["code"] == "unavailable"


def test_redis_refusing_is_a_dependency_s_fault() -> None:
    response = answer(redis.ResponseError("READONLY You can't write against a read only replica"))

    assert (response.status_code, response.headers["Retry-After"]) == (503, str(RETRY_AFTER))
    assert response.get_json()["message"] == "redis is unavailable; retry later"


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("SECRET_THING must be an integer, got 'hunter2'"),
        SchemaCatalogueError("schemas/events/x/1-0-0.json: not valid JSON"),
        InvalidSettings("tracking_plan must be an object"),
        InternalFault("a detail for us"),
    ],
    ids=["ConfigError", "SchemaCatalogueError", "InvalidSettings", "any-internal-fault"],
)
def test_our_fault_is_a_500_that_tells_nothing(error: ClicktrailError) -> None:
    response = answer(error)

    assert status_of(error) == 500
    assert response.status_code == 500
    assert response.get_json() == {
        "success": False,
        "code": "internal_error",
        "message": "an internal error occurred",
    }
    assert "Retry-After" not in response.headers


def test_a_status_outside_the_fault_s_family_is_not_taken() -> None:
    class Confused(DependencyFault):
        status = 404

    assert status_of(Confused()) == 503


def test_errors_not_ours_are_500() -> None:
    response = answer(RuntimeError("boom"))

    assert (response.status_code, response.get_json()["code"]) == (500, "internal_error")
