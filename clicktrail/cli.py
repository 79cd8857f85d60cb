"""``python -m clicktrail <command>``: set-up and inspection commands for operators."""

from __future__ import annotations

import argparse
import sys
import time

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from clicktrail.config import Settings
from clicktrail.db import Database, create_database, migrate
from clicktrail.kafka import ensure_topics, parse_headers


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    if create_database(settings.database_url):
        print("created the database")
    applied = migrate(settings.database_url)
    print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    return 0


def cmd_topics(settings: Settings, _: argparse.Namespace) -> int:
    topics = [settings.topic_events, settings.topic_deadletter, settings.topic_profiles]
    created = ensure_topics(
        settings.kafka, topics, settings.topic_partitions, settings.topic_replication_factor
    )
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


def cmd_dev_source(settings: Settings, _: argparse.Namespace) -> int:
    from clicktrail.devstack import dev_write_key
    from clicktrail.sources import DEV_SOURCE_NAME, SourceStore

    key = dev_write_key(settings)
    db = Database(settings.database_url)
    try:
        source = SourceStore(db, cache_seconds=0).ensure(DEV_SOURCE_NAME, key)
    finally:
        db.close()
    print(f"source {source.name} ({source.id}) write key: {key}")
    return 0


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    """Print a topic's records as JSON lines (no consumer group, nothing committed)."""
    topic = args.topic or settings.topic_events
    consumer = Consumer(
        {**settings.kafka, "group.id": "clicktrail-tail", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            print(f"topic {topic!r} not found", file=sys.stderr)
            return 1
        start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in metadata.partitions])
        seen, deadline = 0, None if args.seconds is None else time.monotonic() + args.seconds
        while (deadline is None or time.monotonic() < deadline) and (
            args.max is None or seen < args.max
        ):
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            seen += 1
            key, value = message.key(), message.value()
            line = {
                "partition": message.partition(),
                "offset": message.offset(),
                "key": key.decode() if isinstance(key, bytes) else key,
                "headers": parse_headers(message.headers()),
                "value": None if value is None else orjson.loads(value),
            }
            print(orjson.dumps(line).decode(), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def cmd_run(_: Settings, __: argparse.Namespace) -> int:
    from clicktrail.devstack import main

    return main()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clicktrail", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create the database if missing and apply migrations")
    commands.add_parser("topics", help="create the Kafka topics that are missing")
    commands.add_parser("dev-source", help="ensure the development source and print its key")
    tail = commands.add_parser("tail", help="print a topic's records as JSON lines")
    tail.add_argument("topic", nargs="?", help="default: KAFKA_TOPIC_EVENTS")
    tail.add_argument("--from-beginning", action="store_true", help="not just new records")
    tail.add_argument("--max", type=int, help="stop after this many records")
    tail.add_argument("--seconds", type=float, help="stop after this long")
    commands.add_parser("run", help="run the whole stack in the foreground (make run)")
    args = parser.parse_args(argv)
    handlers = {
        "migrate": cmd_migrate,
        "topics": cmd_topics,
        "dev-source": cmd_dev_source,
        "tail": cmd_tail,
        "run": cmd_run,
    }
    return handlers[args.command](Settings.from_env(), args)
