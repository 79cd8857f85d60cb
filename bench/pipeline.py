"""The pipeline's figures, each beside the baseline it is compared with, measured in one run.

- ``ack_single``: single-event ``POST /v1/track`` at 64 connections, the ack path alone (workers
  stopped: what the API can take), against ``bench.bare`` on the same gunicorn settings; three
  rounds each, taking turns, the median reported.
- ``e2e_batch``: batches of 100 events at 16 connections, from the first request out to the last
  record seen in Kafka, with the worker as the Procfile runs it; against one librdkafka producer
  publishing the same enriched records from one process. ``scale_out``: the same with one worker
  process of one pool process, then two such worker processes on the same queue.
- ``latency_e2e``: single events at 1,000 a second; receipt (``receivedAt``) to the record seen
  in Kafka, p50 and p99; ``at_half_rate`` and ``at_double_rate`` the same at 500 and 2,000.
- ``sustained``: batches of 100 at 80% of the ``e2e_batch`` rate for ``--sustained-seconds``
  (ten minutes unless told): the queue's depth and each kind of process's resident memory,
  sampled throughout, first third against last.
- ``backlog``: a backlog queued while the workers were stopped, then drained: events a second.
- ``capacity``: CPU each tier used for the work it did, as cores per unit of load.
- ``peak_rss_mb``: peak resident memory of each kind of process over the whole run.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import Producer

from bench.arrivals import Arrivals
from bench.paths import PROJECT_ROOT
from bench.stack import BenchStack, wait_until
from clicktrail.kafka import PRODUCER_DEFAULTS, ensure_topics

BASELINE_TOPIC = "bench-baseline"
# The single-event ack runs, ours and the bare endpoint's, take turns this many times each.
ACK_ROUNDS = 3


def load(stack: BenchStack, run: str, **options: Any) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.load", "--port", str(stack.api_port), "--key", stack.key,
            "--run", run]  # fmt: skip
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=3600)
    result: dict[str, Any] = orjson.loads(done.stdout)
    stack.sample()
    return result


def drain(stack: BenchStack, arrivals: Arrivals, run: str, events: int, timeout: float) -> float:
    """Wait for every event of the run in Kafka; the time the last arrived."""
    last = arrivals.wait_for(run, events, timeout)
    wait_until(lambda: stack.queue_length() == 0, "the queue empty", timeout=60)
    return last


class CpuMeter:
    """CPU seconds each kind of process used between ``start`` and ``stop``."""

    KINDS = ("api", "worker", "redis", "kafka")

    def __init__(self, stack: BenchStack) -> None:
        self._stack = stack
        self.used: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._before = {kind: self._stack.cpu(kind) for kind in self.KINDS}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {kind: self._stack.cpu(kind) - self._before[kind] for kind in self.KINDS}
        return self.used


def e2e(stack: BenchStack, arrivals: Arrivals, run: str, events: int) -> dict[str, Any]:
    meter = CpuMeter(stack).start()
    sent = load(stack, run, events_per_request=100, requests=events // 100, connections=16)
    last = drain(stack, arrivals, run, sent["events"], timeout=1800)
    used = meter.stop()
    seconds = last - sent["first_sent"]
    return {
        "events": sent["events"],
        "seconds": round(seconds, 2),
        "events_per_s": round(sent["events"] / seconds),
        "ack_p99_ms": sent["p99_ms"],
        "statuses": sent["statuses"],
        "cpu_us_per_event": {k: round(v / sent["events"] * 1e6, 1) for k, v in used.items()},
    }


def producer_baseline(stack: BenchStack, records: list[bytes], events: int) -> dict[str, Any]:
    """One librdkafka producer, configured as the pipeline's, publishing ``events`` records (the
    enriched records of the e2e run, in turn) and waiting for every report."""
    producer = Producer(
        {**PRODUCER_DEFAULTS, "bootstrap.servers": stack.settings.kafka_bootstrap_servers}
    )
    delivered = 0

    def report(error: Any, _: Any) -> None:
        nonlocal delivered
        delivered += error is None

    started = time.perf_counter()
    for n in range(events):
        value = records[n % len(records)]
        while True:
            try:
                producer.produce(
                    BASELINE_TOPIC,
                    value=value,
                    key=str(n % 500).encode(),
                    headers=[("event-id", f"base-{n}".encode())],
                    on_delivery=report,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    seconds = time.perf_counter() - started
    return {
        "events": delivered,
        "seconds": round(seconds, 2),
        "events_per_s": round(delivered / seconds),
    }


def enriched_sample(stack: BenchStack, limit: int = 1000) -> list[bytes]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap_servers,
                         "group.id": "bench-sample", "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(stack.topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < limit and time.monotonic() < deadline:
        for message in consumer.consume(500, timeout=0.5):
            value = message.value()
            if not message.error() and value:
                values.append(value)
    consumer.close()
    return values[:limit]


def measure(
    events: int = 100_000,
    backlog: int = 1_000_000,
    ack_seconds: float = 6.0,
    sustained_seconds: float = 600.0,
) -> dict[str, Any]:
    stack = BenchStack().start()
    ensure_topics(stack.settings.kafka, [BASELINE_TOPIC], stack.settings.topic_partitions)
    arrivals = Arrivals(stack.settings.kafka_bootstrap_servers, stack.topic).start()
    figures: dict[str, Any] = {}
    try:
        # Rounds taking turns, so that a slow spell of a shared machine falls on both sides.
        bares, acks = [], []
        for _ in range(ACK_ROUNDS):
            stack.start_api("bench.bare:create")
            bares.append(load(stack, "bare", seconds=ack_seconds, connections=64))
            stack.stop_api()
            stack.start_api()
            meter = CpuMeter(stack).start()
            ack = load(stack, "ack", seconds=ack_seconds, connections=64)
            ack["api_cpu"] = meter.stop()["api"]
            acks.append(ack)
            stack.stop_api()
        bare, ack = _median(bares), _median(acks)
        figures["ack_single"] = {
            "requests_per_s": ack["requests_per_s"],
            "p50_ms": ack["p50_ms"],
            "p99_ms": ack["p99_ms"],
            "statuses": ack["statuses"],
            "api_cpu_us_per_request": round(ack["api_cpu"] / ack["requests"] * 1e6),
            "rounds_requests_per_s": [a["requests_per_s"] for a in acks],
            "baseline_bare": {
                **{k: bare[k] for k in ("requests_per_s", "p50_ms", "p99_ms")},
                "rounds_requests_per_s": [b["requests_per_s"] for b in bares],
            },
            "ack_single_ratio": round(ack["requests_per_s"] / bare["requests_per_s"], 2),
        }
        stack.start_api()
        stack.start_workers(1)
        drain(stack, arrivals, "ack", sum(a["events"] for a in acks), timeout=1800)

        main = e2e(stack, arrivals, "e2e", events)
        stack.stop_workers()
        stack.start_workers(1, concurrency=1)
        one = e2e(stack, arrivals, "one", events)
        stack.stop_workers()
        stack.start_workers(2, concurrency=1)
        two = e2e(stack, arrivals, "two", events)
        stack.stop_workers()
        baseline = producer_baseline(stack, enriched_sample(stack), events)
        figures["e2e_batch"] = {
            **main,
            "baseline_librdkafka": baseline,
            "e2e_batch_ratio": round(main["events_per_s"] / baseline["events_per_s"], 3),
            "scale_out": {
                "one_worker_process": one,
                "two_worker_processes": two,
                "gain": round(two["events_per_s"] / one["events_per_s"], 2),
            },
        }

        figures["latency_e2e"] = {
            **latency(stack, "latency", rate=1000),
            "at_half_rate": latency(stack, "halfrate", rate=500),
            "at_double_rate": latency(stack, "doublerate", rate=2000),
        }

        queued = load(stack, "backlog", events_per_request=100, requests=backlog // 100,
                      connections=16)  # fmt: skip
        depth = stack.queue_length()
        redis_mb = stack.redis().info("memory")["used_memory"] / 1e6
        started = time.time()
        stack.start_workers(1)
        last = drain(stack, arrivals, "backlog", queued["events"], timeout=3600)
        stack.stop_workers()
        figures["backlog"] = {
            "events": queued["events"],
            "queued_messages": depth,
            "redis_used_mb": round(redis_mb),
            "queued_at_events_per_s": queued["events_per_s"],
            "drain_seconds": round(last - started, 1),
            "drain_events_per_s": round(queued["events"] / (last - started)),
        }
        # Last: it leaves the broker used here holding millions of records in memory, which
        # slows every later run on it.
        if sustained_seconds > 0:
            rate = round(main["events_per_s"] * 0.8)
            figures["sustained"] = sustained(stack, rate, sustained_seconds)
        figures["capacity"] = capacity(figures)
        figures["peak_rss_mb"] = stack.peak_rss()
    finally:
        arrivals.stop()
        stack.close()
    return figures


@contextmanager
def own_topic(stack: BenchStack, run: str, **arrivals: Any) -> Iterator[Arrivals]:
    """Workers publishing to a new topic of the run's own, and a consumer counting what reaches
    it: the broker used here (Tansu, in memory) spends more on every fetch and produce the more
    its topic holds, twice as much per event once the earlier runs have put a few hundred
    thousand records in it, which a Kafka broker does not."""
    # Workers left running on the stack's topic would take a share of the run's messages.
    assert not stack.workers, "workers of an earlier run still take from the queue"
    topic = f"{stack.topic}-{run}"
    ensure_topics(stack.settings.kafka, [topic], stack.settings.topic_partitions)
    stack.start_workers(1, events_topic=topic)
    counting = Arrivals(stack.settings.kafka_bootstrap_servers, topic, **arrivals).start()
    try:
        yield counting
    finally:
        counting.stop()
        stack.stop_workers()


def sustained(stack: BenchStack, events_per_s: int, seconds: float) -> dict[str, Any]:
    """Batches of 100 at ``events_per_s`` for ``seconds``, open loop, on a topic of its own:
    the queue's depth and every kind of process's resident memory, sampled every few seconds,
    should stay flat."""
    with own_topic(stack, "sustained") as arrivals:
        return _sustained(stack, arrivals, events_per_s, seconds)


def _sustained(
    stack: BenchStack, arrivals: Arrivals, events_per_s: int, seconds: float
) -> dict[str, Any]:
    rate = max(1, round(events_per_s / 100))
    sent: dict[str, Any] = {}

    def send() -> None:
        sent.update(load(stack, "sustained", events_per_request=100, rate=rate,
                         seconds=seconds, connections=16))  # fmt: skip

    sender = threading.Thread(target=send, name="sustained-load")
    samples: list[dict[str, Any]] = []
    interval = max(1.0, min(10.0, seconds / 30))
    started = time.monotonic()
    sender.start()
    while sender.is_alive():
        samples.append({"at_s": round(time.monotonic() - started, 1),
                        "queue": stack.queue_length(), "rss_mb": stack.rss()})  # fmt: skip
        sender.join(interval)
    load_ended = time.time()
    last = drain(stack, arrivals, "sustained", sent["events"], timeout=1800)
    third = max(1, len(samples) // 3)
    first, final = samples[:third], samples[-third:]

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 1)

    kinds = sorted({kind for sample in samples for kind in sample["rss_mb"]})
    return {
        "events": sent["events"],
        "seconds": round(seconds),
        "offered_events_per_s": rate * 100,
        "accepted_events_per_s": round(sent["events"] / sent["seconds"]),
        "statuses": sent["statuses"],
        "ack_p99_ms": sent["p99_ms"],
        "drained_s_after_load": round(max(0.0, last - load_ended), 1),
        "queue_depth": {
            "max": max(s["queue"] for s in samples),
            "mean_first_third": mean([s["queue"] for s in first]),
            "mean_last_third": mean([s["queue"] for s in final]),
        },
        "rss_mb": {
            kind: {
                "mean_first_third": mean([s["rss_mb"].get(kind, 0.0) for s in first]),
                "mean_last_third": mean([s["rss_mb"].get(kind, 0.0) for s in final]),
            }
            for kind in kinds
        },
        "samples": len(samples),
    }


def latency(stack: BenchStack, run: str, rate: int) -> dict[str, Any]:
    """Single events at ``rate`` a second for 15 s, on a topic of their own: receipt to
    arrival in Kafka."""
    with own_topic(stack, run, wait_ms=5, from_end=True) as timing:
        timing.measure_latency(run)
        meter = CpuMeter(stack).start()
        paced = load(stack, run, rate=rate, seconds=15, connections=64)
        drain(stack, timing, run, paced["events"], timeout=600)
        used = meter.stop()
    latencies = sorted(timing.latencies[run])
    return {
        "events_per_s": round(paced["events"] / paced["seconds"]),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "ack_p99_ms": paced["p99_ms"],
        "cpu_us_per_event": {k: round(v / paced["events"] * 1e6) for k, v in used.items()},
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput."""
    return sorted(runs, key=lambda run: float(run["requests_per_s"]))[len(runs) // 2]


def capacity(figures: dict[str, Any]) -> dict[str, float]:
    """Cores each tier needs, from the CPU it used in this run (the README's capacity table)."""
    per_event = figures["e2e_batch"]["cpu_us_per_event"]
    per_request = figures["ack_single"]["api_cpu_us_per_request"]
    return {
        "worker_cores_per_10k_events_s": round(per_event["worker"] * 1e4 / 1e6, 2),
        "api_cores_per_1k_requests_s": round(per_request * 1e3 / 1e6, 2),
        "api_cores_per_10k_events_s_in_batches_of_100": round(per_event["api"] * 1e4 / 1e6, 2),
        "redis_cores_per_10k_events_s": round(per_event["redis"] * 1e4 / 1e6, 2),
        "broker_cores_per_10k_events_s": round(per_event["kafka"] * 1e4 / 1e6, 2),
    }
