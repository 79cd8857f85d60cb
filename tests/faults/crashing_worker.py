"""The real worker, plus one fault: a message holding an event whose ``properties.crashWorker``
is true kills the pool process that handles it (SIGKILL), every time, as a segfault in a C
extension or the OOM killer would. Started as ``celery --app tests.faults.crashing_worker``."""

from __future__ import annotations

import os
import signal

from clicktrail.message import Message
from clicktrail.pipeline import Outcome, Pipeline
from clicktrail.workers.celery_app import app

__all__ = ["app"]

_process = Pipeline.process


def _crashing_process(self: Pipeline, message: Message, first_delivery: bool = True) -> Outcome:
    for part in message.parts:
        for event in part.events:
            properties = event.get("properties") if isinstance(event, dict) else None
            if isinstance(properties, dict) and properties.get("crashWorker") is True:
                os.kill(os.getpid(), signal.SIGKILL)
    return _process(self, message, first_delivery)


Pipeline.process = _crashing_process  # type: ignore[method-assign]
