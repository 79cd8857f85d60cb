"""The worker's main process hands an ingest message's body to the pool undecoded."""

from __future__ import annotations

import base64
from typing import Any
from unittest import mock

import orjson
import pytest
from kombu.transport.virtual import Message as VirtualMessage

from clicktrail.config import Settings
from clicktrail.queue import INGEST_TASK, QUEUE, decode_body, task_message
from clicktrail.workers import strategy
from clicktrail.workers.celery_app import make_celery


def _message(raw: bytes) -> VirtualMessage:
    channel = mock.Mock(name="channel")
    channel.conn_info = None
    # What kombu's Redis channel does with a stored body (base64).
    channel.decode_body.side_effect = lambda body, encoding: base64.b64decode(body)
    payload = orjson.loads(raw)
    message = VirtualMessage(payload, channel=channel)
    message.accept = None
    return message


@pytest.fixture
def handler_and_requests() -> tuple[Any, list[Any]]:
    """The strategy's handler, on a consumer that keeps the requests it is handed."""
    app = make_celery(Settings())
    import clicktrail.tasks.ingest  # noqa: F401  (registers the task)

    task = app.tasks[INGEST_TASK]
    consumer = mock.MagicMock(name="consumer")
    consumer.disable_rate_limits = True
    consumer.controller.state.revoked = set()
    requests: list[Any] = []
    consumer.on_task_request = requests.append
    with mock.patch("celery.worker.strategy.task_reserved"):
        handler = strategy.ingest(task, app, consumer)
    return handler, requests


def test_the_main_process_never_decodes_an_ingest_body(
    handler_and_requests: tuple[Any, list[Any]],
) -> None:
    handler, requests = handler_and_requests
    args = [{"v": 2, "parts": []}]
    raw = task_message(INGEST_TASK, QUEUE, args, "1 request", "test")
    message = _message(raw)
    with mock.patch.object(message, "decode", side_effect=AssertionError("decoded")) as decode:
        handler(message, None, mock.Mock(), mock.Mock(), [])

    decode.assert_not_called()
    (request,) = requests
    assert request.id == orjson.loads(raw)["headers"]["id"]
    assert request.argsrepr == "1 request"
    # The pool process gets the body as it came, with what it needs to decode it.
    body = base64.b64decode(orjson.loads(raw)["body"])
    assert request.body == body
    assert decode_body(request.body)[0] == args
    assert request.content_type == message.content_type


def test_a_protocol_1_message_goes_the_default_way(
    handler_and_requests: tuple[Any, list[Any]],
) -> None:
    handler, requests = handler_and_requests
    raw = task_message(INGEST_TASK, QUEUE, [], "", "test")
    payload = orjson.loads(raw)
    del payload["headers"]["id"]  # as a protocol-1 message wrapped in headers would be
    message = _message(orjson.dumps(payload))
    with (
        mock.patch.object(
            type(message), "payload", new_callable=mock.PropertyMock, return_value={"args": []}
        ) as decoded,
        mock.patch("celery.worker.strategy.hybrid_to_proto2") as convert,
    ):
        convert.side_effect = RuntimeError("converted")
        with pytest.raises(RuntimeError, match="converted"):
            handler(message, None, mock.Mock(), mock.Mock(), [])

    assert decoded.called
    assert requests == []
