"""`make bench`: run every benchmark and print one JSON document.

python -m bench                       # the full run (20 to 35 minutes on 2 cores)
python -m bench --events 20000 --backlog 100000 --ack-seconds 5 --sustained-seconds 60
                                      # a quick one
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import orjson

from bench import pipeline, tracing, validation


def main() -> int:
    parser = argparse.ArgumentParser(description="Clicktrail's benchmark: one JSON document.")
    parser.add_argument("--events", type=int, default=100_000, help="events per e2e_batch run")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="events of the backlog")
    parser.add_argument("--ack-seconds", type=float, default=6.0, help="length of each ack run")
    parser.add_argument(
        "--sustained-seconds",
        type=float,
        default=600.0,
        help="length of the sustained run at 80%% of the e2e rate (0: none)",
    )
    args = parser.parse_args()
    started = time.time()
    figures = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "validate_per_core": validation.measure(),
        **pipeline.measure(args.events, args.backlog, args.ack_seconds, args.sustained_seconds),
        # What recording spans costs the worker's pipeline (tracing off is the baseline).
        "tracing": tracing.measure(tasks=200, rounds=3),
    }
    figures["bench_seconds"] = round(time.time() - started)
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
