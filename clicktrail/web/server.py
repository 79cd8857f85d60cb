"""The API's server (``clicktrail api``): granian serving ``clicktrail.web.wsgi:app``.

granian parses HTTP and runs the processes in Rust: about a third less CPU a request than
gunicorn's threaded workers for this app, measured (``make bench``). Each of API_WORKERS
processes builds the app itself after it starts (nothing connected crosses a fork) and runs
requests in API_THREADS threads, the most a group commit waits for (clicktrail.web.enqueue).

- Graceful stop: SIGTERM or SIGINT closes the listening socket, lets the requests under way
  finish (at most ``GRACEFUL_SECONDS``, then the processes are killed), then exits.
- A process that dies is started again; one that dies again within about 5 s of its restart
  stops the server, for its supervisor (compose, Kubernetes) to see.
- Limits: HTTP/1.1 only; a request's line and headers fit in ``HEAD_BYTES`` and in 100 headers
  (431 beyond), and must arrive within ``HEAD_SECONDS`` of the connection's last request
  (idle keep-alive connections close then); bodies are the app's (413 beyond 500 KB).
- /metrics sums the processes' values through PROMETHEUS_MULTIPROC_DIR, emptied here at start.

``gunicorn --config python:clicktrail.web.gunicorn_conf clicktrail.web.wsgi:app`` serves the same
app with the same settings.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Any

from clicktrail.config import ConfigError, Settings
from clicktrail.logs import configure_logging
from clicktrail.metrics import clear_multiprocess_dir

# A factory each process calls to load the app (``load_app``).
TARGET = "clicktrail.web.server:load_app"
GRACEFUL_SECONDS = 20
log = logging.getLogger(__name__)
HEAD_BYTES = 64 * 1024
HEAD_SECONDS = 10


def bind(value: str) -> dict[str, Any]:
    """API_BIND as granian's address and port, or its Unix socket (``unix:PATH``)."""
    if value.startswith("unix:"):
        return {"uds": Path(value.removeprefix("unix:"))}
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        if not sep or not host:
            raise ValueError
        if host != "localhost":
            ipaddress.ip_address(host)
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"API_BIND must be HOST:PORT (an IP address or localhost) or unix:PATH, got {value!r}"
        ) from None
    return {"address": "127.0.0.1" if host == "localhost" else host, "port": number}


def load_app() -> Any:
    """The app, as each process loads it. A process starts with the main process's signal
    handlers, which only flag the main process to stop: a SIGTERM or SIGINT that comes while it
    loads (most of its start) would be lost, and the process killed only after the graceful
    stop's timeout. Until granian's own handlers are set, once the app is loaded, a stop stops
    it at once."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_DFL)
    log.info("process %d loading the app", os.getpid())
    from clicktrail.web.wsgi import app

    return app


def options(settings: Settings, target: str = TARGET) -> dict[str, Any]:
    """Granian's keyword arguments for this configuration; ``target`` names an app factory."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    return {
        "target": target,
        "factory": True,
        **bind(settings.api_bind),
        "interface": Interfaces.WSGI,
        "http": HTTPModes.http1,
        "websockets": False,
        "workers": settings.api_workers,
        "blocking_threads": settings.api_threads,
        "http1_settings": HTTP1Settings(
            header_read_timeout=HEAD_SECONDS * 1000, max_buffer_size=HEAD_BYTES
        ),
        "log_level": LogLevels(settings.log_level.lower()),
        "respawn_failed_workers": True,
        "workers_kill_timeout": GRACEFUL_SECONDS,
    }


def main(settings: Settings | None = None, target: str = TARGET) -> None:
    """Serve the app ``target`` (``module:function``) builds, until stopped."""
    from granian import Granian

    settings = settings or Settings.from_env()
    server = Granian(**options(settings, target))
    # After granian's own set-up, which installs handlers of its own: its lines go through ours.
    configure_logging(settings)
    logging.getLogger("_granian").addFilter(_threads_are_intended)
    clear_multiprocess_dir(settings.prometheus_multiproc_dir)
    server.serve()


def _threads_are_intended(record: logging.LogRecord) -> bool:
    """granian warns at every start of more threads than twice the cores: ours mostly wait."""
    return not record.getMessage().startswith("Configuration allows spawning up to")
