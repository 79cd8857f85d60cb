"""The synchronous checks at the HTTP edge, and the stamps the server puts on every event.

Only what must be answered at once lives here: the body is JSON, each event has a known
``type`` and an identity, sizes are within Segment's limits. Everything else (field types,
required per-type fields, per-event property schemas) is checked by the pipeline against the
JSON Schemas, and an event that fails goes to the dead-letter topic.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from clicktrail.clock import format_ts
from clicktrail.errors import ClicktrailError, Fault, InvalidInput, PayloadTooLarge
from clicktrail.message import MAX_EVENT_DEPTH

CALL_TYPES = ("track", "page", "screen", "identify", "group", "alias")
MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_MESSAGE_ID_CHARS = 100
# userId, anonymousId and previousId key profiles in Postgres: 512 characters are at most 2,048
# bytes of UTF-8, within what a btree index takes (2,704).
MAX_ID_CHARS = 512
# Other strings that name things and travel in headers, schema names and registry subjects.
NAMED_FIELDS = ("groupId", "event", "name")


@dataclass(frozen=True)
class Intake:
    """What one request brought: its events, stamped, and the write key found in the body."""

    events: list[dict[str, Any]]
    write_key: str | None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _DuplicateKey(ClicktrailError, ValueError):
    """Raised inside the JSON scanner, turned into InvalidInput by parse_json."""

    fault = Fault.CLIENT


class _NumberTooLarge(ClicktrailError, ValueError):
    """Raised inside the JSON scanner, turned into InvalidInput by parse_json."""

    fault = Fault.CLIENT


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _DuplicateKey
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _NumberTooLarge(text)
    return value


# The standard library's C scanner hands every object's pairs and every integer's text to these
# hooks, which is how a body that orjson accepted is checked for what orjson lets pass.
_STRICT = json.JSONDecoder(object_pairs_hook=_unique_pairs, parse_int=_int64)


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; 400 ``invalid_json`` naming the problem otherwise.

    Beyond what the parser checks: an object may not repeat a key (parsers disagree on which
    value wins), and an integer must fit in 64 bits (larger ones silently lose precision).
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("invalid_json", f"the body is not valid JSON: {exc}") from None
    try:
        _STRICT.decode(raw.decode())
    except _DuplicateKey:
        raise InvalidInput("duplicate_key", "a JSON object in the body repeats a key") from None
    except _NumberTooLarge as exc:
        raise InvalidInput(
            "number_too_large", f"integers must fit in 64 bits, not {str(exc)[:40]}"
        ) from None
    except RecursionError:  # the scanner recurses per level: some 900 within Python's limit
        raise InvalidInput("invalid_json", "the body is nested too deeply") from None
    return body


def read_body(body: Any, call_type: str | None, raw_size: int) -> Intake:
    """Check a parsed body sent to ``/v1/<call_type>`` (``None`` for ``/v1/batch``).

    Raises InvalidInput (400) or PayloadTooLarge (413) naming the offending field.
    """
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", "the body must be a JSON object")
    write_key = _write_key(body)
    if call_type is None:
        events = _batch_events(body)
        prefix = "batch[{}]."
    else:
        if raw_size > MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                "event_too_large", f"an event may be at most {MAX_EVENT_BYTES} bytes"
            )
        given = body.get("type", call_type)
        if given != call_type:
            raise InvalidInput(
                "invalid_type", f"type must be {call_type!r} on /v1/{call_type}", field="type"
            )
        body["type"] = call_type
        events = [body]
        prefix = ""
    # A body within the per-event limit cannot hold an event over it: skip re-encoding.
    check_sizes = call_type is None and raw_size > MAX_EVENT_BYTES
    for index, event in enumerate(events):
        where = prefix.format(index)
        event.pop("writeKey", None)
        _check_identity(event, where)
        _check_message_id(event, where)
        _check_names(event, where)
        if check_sizes and len(orjson.dumps(event)) > MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                "event_too_large",
                f"an event may be at most {MAX_EVENT_BYTES} bytes",
                field=where.rstrip("."),
            )
    return Intake(events=events, write_key=write_key)


def stamp(events: list[dict[str, Any]], received_at: datetime, client_ip: str | None) -> None:
    """Server stamps, in place: ``receivedAt``, a ``messageId`` when absent, ``context.ip``,
    and the ``traits`` of an identify that carries them in ``context.traits`` only.

    ``context.ip`` is filled from the connection only when the client did not send one (as
    Segment does); the pipeline anonymises it before anything leaves it. RudderStack's SDKs
    (Python, JavaScript) send an identify's traits in ``context.traits`` alone; a copy in
    ``traits``, where the Segment Spec puts them, is what the traits schema checks and the
    profile takes.
    """
    received = format_ts(received_at)
    for event in events:
        event["receivedAt"] = received
        if not event.get("messageId"):
            event["messageId"] = str(uuid.uuid4())
        context = event.get("context")
        if client_ip:
            if context is None:
                event["context"] = {"ip": client_ip}
            elif isinstance(context, dict) and not context.get("ip"):
                context["ip"] = client_ip
        if (
            event.get("type") == "identify"
            and "traits" not in event
            and isinstance(context, dict)
            and isinstance(context.get("traits"), dict)
        ):
            event["traits"] = dict(context["traits"])


def _write_key(body: dict[str, Any]) -> str | None:
    key = body.pop("writeKey", None)
    if key is not None and not isinstance(key, str):
        raise InvalidInput("invalid_write_key", "writeKey must be a string", field="writeKey")
    return key


def _batch_events(body: dict[str, Any]) -> list[dict[str, Any]]:
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise InvalidInput("invalid_batch", "batch must be an array of events", field="batch")
    if not batch:
        raise InvalidInput("invalid_batch", "batch must hold at least one event", field="batch")
    if len(batch) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(
            "batch_too_large",
            f"a batch may hold at most {MAX_BATCH_EVENTS} events, got {len(batch)}",
            field="batch",
        )
    # Batch-level context, integrations and sentAt apply to every call in the batch; a call's
    # own values win.
    shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
    sent_at = body.get("sentAt")
    for index, event in enumerate(batch):
        if not isinstance(event, dict):
            raise InvalidInput(
                "invalid_event", "each batch item must be a JSON object", field=f"batch[{index}]"
            )
        kind = event.get("type")
        if kind not in CALL_TYPES:
            raise InvalidInput(
                "invalid_type",
                f"type must be one of {', '.join(CALL_TYPES)}, got {kind!r}",
                field=f"batch[{index}].type",
            )
        for name, value in shared.items():
            own = event.get(name)
            if own is None:
                event[name] = dict(value)
            elif isinstance(own, dict):
                event[name] = {**value, **own}
        if sent_at is not None and "sentAt" not in event:
            event["sentAt"] = sent_at
    return batch


def _check_identity(event: dict[str, Any], where: str) -> None:
    previous = event.get("previousId")
    if isinstance(previous, str) and len(previous) > MAX_ID_CHARS:
        raise InvalidInput(
            "invalid_identity",
            f"previousId may be at most {MAX_ID_CHARS} characters",
            field=f"{where}previousId",
        )
    present = False
    for name in ("userId", "anonymousId"):
        value = event.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInput(
                "invalid_identity", f"{name} must be a string", field=f"{where}{name}"
            )
        if len(value) > MAX_ID_CHARS:
            raise InvalidInput(
                "invalid_identity",
                f"{name} may be at most {MAX_ID_CHARS} characters",
                field=f"{where}{name}",
            )
        present = present or bool(value)
    if not present:
        raise InvalidInput(
            "missing_identity",
            "every event needs a userId or an anonymousId",
            field=f"{where}userId",
        )


def nesting_error(events: list[dict[str, Any]], batch: bool) -> InvalidInput:
    """The 400 for events the queue could not encode: names the first event field that nests
    deeper than MAX_EVENT_DEPTH. Walks only on this path: the bound itself is checked by the
    encoder (clicktrail.message.Part.encode)."""
    for index, event in enumerate(events):
        for name, value in event.items():
            if _deeper_than(value, MAX_EVENT_DEPTH - 1):
                where = f"batch[{index}].{name}" if batch else name
                return InvalidInput(
                    "too_deep",
                    f"an event may nest at most {MAX_EVENT_DEPTH} levels of objects and arrays",
                    field=where,
                )
    return InvalidInput("invalid_event", "the events cannot be encoded as JSON")


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` nests more than ``levels`` objects and arrays (stops once it does)."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if levels <= 0:
        return True
    return any(_deeper_than(child, levels - 1) for child in children)


def _check_names(event: dict[str, Any], where: str) -> None:
    for name in NAMED_FIELDS:
        value = event.get(name)
        if isinstance(value, str) and len(value) > MAX_ID_CHARS:
            raise InvalidInput(
                "too_long",
                f"{name} may be at most {MAX_ID_CHARS} characters",
                field=f"{where}{name}",
            )


def _check_message_id(event: dict[str, Any], where: str) -> None:
    message_id = event.get("messageId")
    if message_id is None:
        return
    if not isinstance(message_id, str) or len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise InvalidInput(
            "invalid_message_id",
            f"messageId must be a string of at most {MAX_MESSAGE_ID_CHARS} characters",
            field=f"{where}messageId",
        )
