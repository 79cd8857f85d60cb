"""The load generator of ``make bench``: HTTP/1.1 keep-alive POSTs from one asyncio process.

    python -m bench.load --port 8000 --key KEY --events-per-request 100 --requests 2000 \
        --connections 16 --run r1

Each request carries ``--events-per-request`` track events with messageIds ``<run>-<n>``
(unique, so the pipeline's deduplication never drops one), to ``/v1/track`` (one event) or
``/v1/batch``. It runs closed-loop for ``--seconds`` or ``--requests``, or open-loop at ``--rate``
requests a second (latency then counts from when a request was due, so a stall is not hidden),
and prints one JSON object: requests, events, elapsed, rates, latency percentiles, statuses, and
the wall-clock time the first request went out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

# An event like those the sample front-end sends; the messageId is filled in per event.
EVENT = {
    "type": "track",
    "event": "Product Viewed",
    "userId": "user-{u}",
    "anonymousId": "anon-{u}",
    "timestamp": "2026-06-01T12:00:00.000Z",
    "sentAt": "2026-06-01T12:00:00.100Z",
    "properties": {"product_id": "sku-42", "name": "Trail shoe", "price": 89.5, "currency": "EUR"},
    "context": {
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "page": {
            "url": "https://shop.example/p/sku-42?utm_source=news&utm_medium=email",
            "referrer": "https://www.google.com/search?q=trail+shoes",
        },
        "library": {"name": "analytics.js", "version": "4.1.0"},
    },
}


def event_bytes(run: str, n: int) -> bytes:
    body = orjson.dumps({**EVENT, "messageId": f"{run}-{n}"})
    return body.replace(b"{u}", str(n % 500).encode())


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    events: int = 0
    first_sent: float = 0.0


class Bodies:
    """Request bodies with fresh messageIds, made as they are needed."""

    def __init__(self, run: str, per_request: int) -> None:
        self.run = run
        self.per_request = per_request
        self.numbers = itertools.count()

    def next(self) -> bytes:
        if self.per_request == 1:
            return event_bytes(self.run, next(self.numbers))
        events = [event_bytes(self.run, next(self.numbers)) for _ in range(self.per_request)]
        return b'{"batch":[' + b",".join(events) + b"]}"


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = 0
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str,
    port: int,
    head: bytes,
    bodies: Bodies,
    tickets: Iterator[float | None] | asyncio.Queue[float | None],
    result: Result,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            if isinstance(tickets, asyncio.Queue):
                due = await tickets.get()
            else:
                due = next(tickets, None)
            if due is None:
                return
            body = bodies.next()
            started = due if due > 0 else time.perf_counter()
            if not result.first_sent:
                result.first_sent = time.time()
            try:
                status = await _exchange(reader, writer, head, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                status = 0
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
            if status == 200:
                result.events += bodies.per_request
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    path = "/v1/track" if args.events_per_request == 1 else "/v1/batch"
    auth = base64.b64encode(f"{args.key}:".encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {args.host}\r\nAuthorization: Basic {auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    bodies, result = Bodies(args.run, args.events_per_request), Result()
    started = time.perf_counter()
    tickets: Iterator[float | None] | asyncio.Queue[float | None]
    scheduler = None
    if args.rate:
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        tickets = queue

        async def schedule() -> None:
            interval = 1.0 / args.rate
            for n in itertools.count():
                due = started + n * interval
                if due - started >= args.seconds:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                queue.put_nowait(due)
            for _ in range(args.connections):
                queue.put_nowait(None)

        scheduler = asyncio.ensure_future(schedule())
    elif args.requests:
        tickets = iter([0.0] * args.requests)
    else:
        deadline = started + args.seconds
        tickets = iter(lambda: 0.0 if time.perf_counter() < deadline else None, None)
        tickets = itertools.chain(tickets, [None] * args.connections)
    await asyncio.gather(
        *(
            _connection(args.host, args.port, head, bodies, tickets, result)
            for _ in range(args.connections)
        )
    )
    if scheduler is not None:
        await scheduler
    elapsed = time.perf_counter() - started
    latencies = sorted(result.latencies)

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "events": result.events,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "events_per_s": round(result.events / elapsed, 1),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "first_sent": result.first_sent,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--run", required=True, help="messageId prefix")
    parser.add_argument("--events-per-request", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=0, help="send this many, then stop")
    parser.add_argument("--rate", type=float, default=0.0, help="requests a second (open loop)")
    args = parser.parse_args()
    sys.stdout.write(orjson.dumps(asyncio.run(run(args))).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
