"""The worker's consumer lets go of closing a broker connection kombu has already collected."""

from __future__ import annotations

import logging

import pytest
from celery.worker.consumer import Consumer as CeleryConsumer

from clicktrail.workers.celery_app import make_celery
from clicktrail.workers.consumer import Consumer, tolerate_collected_close


class Collected:
    """A kombu connection after collect(): its transport has no client left to restore with."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = 0

    def close(self) -> None:
        self.closed += 1
        raise self.error


def test_closing_a_collected_connection_is_let_go(caplog: pytest.LogCaptureFixture) -> None:
    connection = Collected(AttributeError("'NoneType' object has no attribute 'hostname'"))

    tolerate_collected_close(connection)
    with caplog.at_level(logging.WARNING, logger="clicktrail.workers.consumer"):
        connection.close()

    assert connection.closed == 1
    assert "come back after the visibility timeout" in caplog.text


def test_other_errors_still_reach_celery() -> None:
    connection = Collected(ConnectionError("refused"))

    tolerate_collected_close(connection)

    with pytest.raises(ConnectionError):
        connection.close()


def test_the_worker_uses_it() -> None:
    assert make_celery().conf.worker_consumer == "clicktrail.workers.consumer:Consumer"
    assert issubclass(Consumer, CeleryConsumer)
