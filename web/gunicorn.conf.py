"""Gunicorn settings for the API (``gunicorn -c web/gunicorn.conf.py web.wsgi:app``).

Threaded workers: a request spends most of its time waiting on Redis and Postgres. The app is
built in each worker after fork (no preload), so no connection crosses a fork. Override any of
these with GUNICORN_CMD_ARGS, e.g. ``--workers 4``.
"""

from clicktrail.config import Settings

bind = Settings.from_env().api_bind
worker_class = "gthread"
workers = 2
threads = 8
timeout = 30
graceful_timeout = 20
keepalive = 5
# Request lines and headers are bounded; bodies by the app (500 KB).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# No runtime control socket: it lives in $HOME and two instances on one host would collide.
control_socket_disable = True
