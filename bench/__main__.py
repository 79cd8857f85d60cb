"""`make bench`: run every benchmark and print one JSON document."""

from __future__ import annotations

import os
import platform
import sys

import orjson

from bench import validation


def main() -> int:
    figures = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "validate_per_core": validation.measure(),
    }
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
