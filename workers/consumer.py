"""The worker's consumer: Celery's own, made to survive Redis going away while it holds messages.

When the broker connection breaks, Celery (5.7) collects the connection and then closes it.
kombu's collect tries to close the Redis channel, fails midway (Redis is gone) and clears the
transport's client; the close then tries the channel again, and restoring the messages it holds
needs that client: an AttributeError, which Celery takes for unrecoverable, and the worker exits
with every task it held. Those messages are restored all the same, by the visibility timeout
(kombu's restore of unacknowledged messages), so the second attempt is let go and the worker
reconnects as it does after any other connection error.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


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


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Exception) -> None:
        if self.connection is not None:
            tolerate_collected_close(self.connection)
        super().on_connection_error_after_connected(exc)
