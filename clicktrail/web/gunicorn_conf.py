"""Gunicorn settings for the API
(``gunicorn -c python:clicktrail.web.gunicorn_conf clicktrail.web.wsgi:app``), for deployments
that run it so. ``clicktrail api`` (granian, clicktrail.web.server) serves the same app for less
CPU a request; both take their bind, processes, threads and graceful stop from the same settings.

Threaded workers: a request spends most of its time waiting on Redis and Postgres. The app is
built in each worker after fork (no preload), so no connection crosses a fork. Override any of
these with GUNICORN_CMD_ARGS, but the workers and threads with API_WORKERS and API_THREADS
(the group commit waits for as many requests as a process has threads). With several workers,
/metrics needs PROMETHEUS_MULTIPROC_DIR (a directory of the API's own, emptied here at start).
"""

from typing import Any

from clicktrail.config import Settings
from clicktrail.logs import configure_logging
from clicktrail.metrics import clear_multiprocess_dir, mark_dead
from clicktrail.web.server import GRACEFUL_SECONDS

_settings = Settings.from_env()

bind = _settings.api_bind
worker_class = "gthread"
workers = _settings.api_workers
threads = _settings.api_threads
timeout = 30
graceful_timeout = GRACEFUL_SECONDS
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
