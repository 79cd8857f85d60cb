"""The contract between the API (which enqueues) and the workers (which own Celery).

Tasks are sent by name with one JSON argument, so the API never imports task code. The Celery
settings live here as plain data because every process that touches the broker (API, worker,
beat, Flower) must use the same transport options: Redis honours the shortest
``visibility_timeout`` any client sets.
"""

from __future__ import annotations

import base64
import ssl
import uuid
import zlib
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from clicktrail.config import Settings

INGEST_TASK = "clicktrail.ingest"
PURGE_TASK = "clicktrail.purge_profiles"
QUEUE = "clicktrail"

# Payload format of INGEST_TASK (bump when it changes incompatibly; workers accept old ones):
#   a part, one request's events: {"v": 1, "source": {"id", "settings"}, "events": [...],
#                                  "traceparent": str | None}
#   or a group of parts, requests that reached one API process together: {"v": 2, "parts": [...]}
# A retry carries "records" (Kafka-ready, already enriched) instead of "events", so that a
# retried publish neither re-enriches nor re-counts sessions.
PAYLOAD_VERSION = 1
GROUP_VERSION = 2

# Task arguments are JSON written by orjson (several times faster than kombu's json on event
# batches) and compressed with zlib at its fastest level (a microsecond an event): a queued event
# then takes a tenth or less of the Redis memory, and every copy of a message (the queue, kombu's
# unacked copy, the hop to a pool process) shrinks with it. Workers still read plain json.
SERIALIZER = "zjson"
CONTENT_TYPE = "application/x-clicktrail-zjson"

# Celery holds a retry, unacked, until its countdown is due: at most this many per worker.
ETA_TASK_LIMIT = 1000

# How deep an event may nest (the event object is one level). orjson writes at most 254 levels;
# a task message puts an event 7 levels down, a retry's dead letter 9, and the consumers we know
# of read far deeper (Jackson 1,000, Python's json about as many), so 128 leaves room to spare.
MAX_EVENT_DEPTH = 128
_ORJSON_DEPTH = 254
# An event of a part sits in its third level ({"events": [event]}).
_PADDING = _ORJSON_DEPTH - 2 - MAX_EVENT_DEPTH


class Unencodable(ValueError):
    """A part orjson cannot write: an event nests deeper than MAX_EVENT_DEPTH."""


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery configuration shared by every process that talks to the broker."""
    tls: dict[str, Any] = {}
    sentinel: dict[str, Any] = {}
    url = settings.celery_broker_url
    if url.startswith("rediss://") and "ssl_cert_reqs" not in url:
        # TLS to Redis checks the server's certificate unless the URL says otherwise
        # (e.g. ?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/redis-ca.pem).
        tls["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if url.lower().startswith("sentinel://"):
        # kombu asks these Sentinels for the master they know by this name.
        sentinel["master_name"] = settings.redis_sentinel_master
    _register_serializer()
    return {
        **tls,
        "broker_url": settings.celery_broker_url,
        "broker_transport_options": {
            **sentinel,
            # Redis delivers again a message not acknowledged this long (a worker died).
            "visibility_timeout": settings.visibility_timeout_seconds,
            # How often workers look for such messages (kombu's default is about 100 s).
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
            "health_check_interval": 25,
            "retry_on_timeout": True,
        },
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        # No results are stored, so beat must not schedule Celery's daily result cleanup.
        "result_expires": None,
        "task_serializer": SERIALIZER,
        "accept_content": [SERIALIZER, "json"],
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Above the wait for Kafka's reports, under the visibility timeout (Settings checks).
        "task_soft_time_limit": settings.task_soft_time_limit_seconds,
        "task_time_limit": settings.task_time_limit_seconds,
        "worker_prefetch_multiplier": 4,
        "worker_eta_task_limit": ETA_TASK_LIMIT,
        # Task events let Flower show tasks (with each task's argsrepr, never its events).
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def encode_body(value: Any) -> bytes:
    """A message body in SERIALIZER's format."""
    return zlib.compress(orjson.dumps(value), 1)


def decode_body(body: bytes) -> Any:
    return orjson.loads(zlib.decompress(body))


def _register_serializer() -> None:
    from kombu.serialization import register

    register(  # type: ignore[no-untyped-call]
        SERIALIZER,
        encode_body,
        decode_body,
        content_type=CONTENT_TYPE,
        content_encoding="binary",
    )


# How kombu's Redis transport writes a message: a JSON envelope, the body in base64.
_BODY_EXTRAS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_NO_TIMELIMIT = (None, None)


def task_message(task: str, queue: str, args: list[Any], argsrepr: str, origin: str) -> bytes:
    """A task message (Celery's protocol 2) as kombu's Redis transport stores it in the list
    ``queue``: what ``send_task`` would write, built in a fraction of its time. A test compares
    the two, field by field, for the installed Celery and kombu."""
    task_id = str(uuid.uuid4())
    body = encode_body([args, {}, _BODY_EXTRAS])
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary",
            "content-type": CONTENT_TYPE,
            "headers": {
                "lang": "py",
                "task": task,
                "id": task_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": _NO_TIMELIMIT,
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": argsrepr,
                "kwargsrepr": "{}",
                "origin": origin,
                "ignore_result": None,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": task_id,
                "argsrepr": argsrepr,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def encode_part(part: dict[str, Any]) -> bytes:
    """One request's part as JSON, written in that request's thread so that whatever it holds
    costs that request alone; a group then only splices parts (``orjson.Fragment``).

    The part is written inside enough arrays that orjson's own depth limit refuses an event
    deeper than MAX_EVENT_DEPTH: the bound costs no walk of its own.
    """
    wrapped: Any = part
    for _ in range(_PADDING):
        wrapped = [wrapped]
    try:
        padded = orjson.dumps(wrapped)
    except orjson.JSONEncodeError as exc:
        raise Unencodable(str(exc)) from None
    return padded[_PADDING:-_PADDING]


def payload_parts(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts (one request's events or records each) of a task's payload."""
    parts = payload.get("parts")
    return list(parts) if isinstance(parts, list) else [payload]


def group_payload(parts: list[Any]) -> Any:
    """One payload for several parts (a lone part stays as it is); parts may be dicts or
    already-encoded ``orjson.Fragment``s."""
    return parts[0] if len(parts) == 1 else {"v": GROUP_VERSION, "parts": parts}


def describe_group(requests: int, items: int, first: str) -> str:
    """What monitors show of a group: its size and the description of its first part."""
    return f"requests={requests} items={items} first=({first})"


def describe_payload(payload: dict[str, Any]) -> str:
    """What monitors and logs show of a payload: no event contents, no personal data."""
    parts = payload_parts(payload)
    if len(parts) > 1:
        sizes = sum(len(p.get("events") or p.get("records") or []) for p in parts)
        return describe_group(len(parts), sizes, describe_payload(parts[0]))
    items = payload.get("events") or payload.get("records") or []
    first = items[0] if items else {}
    message_id = first.get("messageId") or (first.get("headers") or {}).get("event-id", "")
    kind = "events" if "events" in payload else "records"
    return f"source={payload.get('source', {}).get('id')} {kind}={len(items)} first={message_id}"


def ingest_payload(
    source_id: str,
    source_settings: dict[str, Any],
    events: list[dict[str, Any]],
    traceparent: str | None,
) -> dict[str, Any]:
    """The one argument of INGEST_TASK for one request."""
    return {
        "v": PAYLOAD_VERSION,
        "source": {"id": source_id, "settings": source_settings},
        "events": events,
        "traceparent": traceparent,
    }
