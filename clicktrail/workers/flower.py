"""Flower for the pipeline (``clicktrail flower [flower options]``), with its Prometheus
``/metrics`` behind the same basic auth as every other page: Flower 2 leaves it open, and it
names workers, tasks and queues."""

from __future__ import annotations

import sys

import tornado.web
from celery.bin.celery import main as celery_main
from flower.views.monitor import Metrics

Metrics.get = tornado.web.authenticated(Metrics.get)


def main() -> None:
    sys.argv = ["celery", "--app", "clicktrail.workers.celery_app", "flower", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()
