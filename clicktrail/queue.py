"""The contract between the API (which enqueues) and the workers (which own Celery); what a
task message holds is ``clicktrail.message``'s.

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

# Task arguments are JSON written by orjson (several times faster than kombu's json on event
# batches) and compressed with zlib at its fastest level (a microsecond an event): a queued event
# then takes a tenth or less of the Redis memory, and every copy of a message (the queue, kombu's
# unacked copy, the hop to a pool process) shrinks with it. Workers still read plain json.
SERIALIZER = "zjson"
CONTENT_TYPE = "application/x-clicktrail-zjson"

# Celery holds a retry, unacked, until its countdown is due: at most this many per worker.
ETA_TASK_LIMIT = 1000


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
        # Task events (three a message, each a Redis publish: a tenth of a worker's time on single
        # events) are sent only once Flower asks for them: it tells every worker to, every 5 s.
        # Flower then shows tasks with each task's argsrepr, never its events.
        "worker_send_task_events": False,
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
# What a protocol-2 body embeds besides the arguments: nothing is ever linked to a task of ours.
BODY_EXTRAS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_NO_TIMELIMIT = (None, None)


def task_message(task: str, queue: str, args: list[Any], argsrepr: str, origin: str) -> bytes:
    """A task message (Celery's protocol 2) as kombu's Redis transport stores it in the list
    ``queue``: what ``send_task`` would write, built in a fraction of its time. A test compares
    the two, field by field, for the installed Celery and kombu."""
    task_id = str(uuid.uuid4())
    body = encode_body([args, {}, BODY_EXTRAS])
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
