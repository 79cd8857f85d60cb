"""``python -m clicktrail.workers.health``: the readiness checks of /readyz, from the worker side.

Prints one JSON document (each dependency's state) and exits 0 when all are up, 1 otherwise;
usable as a container health check or by an operator.
"""

from __future__ import annotations

import os

# A run records no metrics, yet in the workers' environment (PROMETHEUS_MULTIPROC_DIR set)
# importing our metrics would create files named after this short-lived process, which outlive
# it: some 128 KiB a run, every run of a container health check. Dropped before any import.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

import sys
from typing import Any

import orjson

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.health import (
    CHECK_TIMEOUT,
    dependency_checks,
    run_checks,
    workers_check,
)


def main() -> int:
    from clicktrail.workers.celery_app import app

    settings = Settings.from_env()
    db = Database(settings.database_url, name="clicktrail-health", timeout=CHECK_TIMEOUT)
    try:
        checks = dependency_checks(settings, db)

        def ping() -> list[Any]:
            return list(app.control.ping(timeout=CHECK_TIMEOUT / 2, limit=1) or [])

        checks["workers"] = workers_check(ping)
        ready, results = run_checks(checks)
    finally:
        db.close()
    document = {"status": "ok" if ready else "unavailable", "checks": results}
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
