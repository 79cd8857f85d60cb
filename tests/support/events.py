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


def every_call(user: str) -> list[dict[str, Any]]:
    """One call of each type a user of the Segment Spec makes, and an anonymous one; each with
    a messageId of its own and a type, the way SDKs take them."""
    calls: list[dict[str, Any]] = [
        {"type": "identify", "userId": user, "traits": {"email": "a@example.com", "plan": "pro"}},
        {"type": "track", "userId": user, "event": "Product Viewed",
         "properties": {"product_id": "sku-1", "price": 9.5, "currency": "EUR"}},
        {"type": "track", "userId": user, "event": "Newsletter Opened", "properties": {"any": [1]}},
        {"type": "page", "userId": user, "name": "Home", "properties": {"path": "/", "extra": 1}},
        {"type": "screen", "userId": user, "name": "Dashboard", "properties": {"variant": "dark"}},
        {"type": "group", "userId": user, "groupId": "g-1", "traits": {"name": "Acme"}},
        {"type": "alias", "userId": user, "previousId": f"{user}-before"},
        {"type": "track", "anonymousId": f"{user}-anon", "event": "Anonymous Thing"},
    ]  # fmt: skip
    for call in calls:
        call["messageId"] = f"call-{uuid.uuid4()}"
    return calls
