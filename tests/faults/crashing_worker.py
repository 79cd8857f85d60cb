"""The real worker, plus one fault: a message holding an event whose ``properties.crashWorker``
is true kills the pool process that handles it (SIGKILL), every time, as a segfault in a C
extension or the OOM killer would. Started as ``celery --app tests.faults.crashing_worker``."""

from __future__ import annotations

import os
import signal
from typing import Any

from clicktrail.pipeline import Outcome, Pipeline
from clicktrail.queue import payload_parts
from clicktrail.workers.celery_app import app

__all__ = ["app"]

_process = Pipeline.process


def _crashing_process(self: Pipeline, payload: dict[str, Any]) -> Outcome:
    for part in payload_parts(payload):
        for event in part.get("events") or []:
            properties = event.get("properties") if isinstance(event, dict) else None
            if isinstance(properties, dict) and properties.get("crashWorker") is True:
                os.kill(os.getpid(), signal.SIGKILL)
    return _process(self, payload)


Pipeline.process = _crashing_process  # type: ignore[method-assign]
