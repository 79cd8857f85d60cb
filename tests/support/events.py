"""Published-looking events for tests of what comes after the pipeline."""

from __future__ import annotations

import uuid
from typing import Any


def published(
    kind: str,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    at: str = "2026-03-01T10:00:00.000Z",
    received: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "messageId": f"m-{uuid.uuid4()}",
        "timestamp": at,
        "receivedAt": received or at,
        **fields,
    }
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    return event


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
