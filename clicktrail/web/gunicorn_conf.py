"""Gunicorn settings for the API
(``gunicorn -c python:clicktrail.web.gunicorn_conf clicktrail.web.wsgi:app``).

Threaded workers: a request spends most of its time waiting on Redis and Postgres. The app is
built in each worker after fork (no preload), so no connection crosses a fork. Override any of
these with GUNICORN_CMD_ARGS, e.g. ``--workers 4``. With several workers, /metrics needs
PROMETHEUS_MULTIPROC_DIR (a directory of the API's own, emptied here at start).
"""

import gc
from typing import Any

from clicktrail.config import Settings
from clicktrail.logs import configure_logging
from clicktrail.metrics import clear_multiprocess_dir, mark_dead

_settings = Settings.from_env()

bind = _settings.api_bind
worker_class = "gthread"
workers = 2
# A request mostly waits: for Redis, and for the group commit that queues it with the requests
# arriving beside it (clicktrail.web.enqueue.GROUP_TARGET); the more wait together, the fewer
# and larger the queue messages, which the workers and Kafka handle for less per event.
threads = 32
timeout = 30
graceful_timeout = 20
keepalive = 5
# Request lines and headers are bounded; bodies by the app (500 KB).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# No runtime control socket: it lives in $HOME and two instances on one host would collide.
control_socket_disable = True


def on_starting(server: Any) -> None:
    configure_logging(_settings)
    clear_multiprocess_dir(_settings.prometheus_multiproc_dir)


def child_exit(server: Any, worker: Any) -> None:
    mark_dead(worker.pid, _settings.prometheus_multiproc_dir)


def post_worker_init(worker: Any) -> None:
    # What the app built at start lives as long as the process: out of the collector's sight, a
    # full collection no longer walks it (about a twentieth of a request's time, measured).
    gc.freeze()
