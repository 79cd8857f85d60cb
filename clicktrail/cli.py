"""``python -m clicktrail <command>``: set-up and inspection commands for operators."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from clicktrail.config import Settings
from clicktrail.db import Database, create_database, migrate
from clicktrail.kafka import create_pipeline_topics, decode_value, parse_headers


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    if create_database(settings.database_url):
        print("created the database")
    applied = migrate(settings.database_url)
    print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    return 0


def cmd_topics(settings: Settings, _: argparse.Namespace) -> int:
    created = create_pipeline_topics(settings)
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


def cmd_dev_source(settings: Settings, _: argparse.Namespace) -> int:
    from clicktrail.local.stack import dev_write_key
    from clicktrail.sources import DEV_SOURCE_NAME, SourceStore

    key = dev_write_key(settings)
    db = Database(settings.database_url)
    try:
        source = SourceStore(db, cache_seconds=0).ensure(DEV_SOURCE_NAME, key)
    finally:
        db.close()
    print(f"source {source.name} ({source.id}) write key: {key}")
    return 0


def schemas_check(settings: Settings, root: Path | None = None) -> int:
    """Check the catalogue (valid schemas, every version backward compatible); the exit code."""
    from clicktrail.compat import check_catalogue

    report = check_catalogue(root or settings.schemas_dir)
    print(report.render())
    return 0 if report.ok else 1


def schemas_register(settings: Settings, root: Path | None = None) -> int:
    """Check the catalogue, then register it with the registry at SCHEMA_REGISTRY_URL; the exit
    code (2: no registry configured)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from clicktrail.compat import check_catalogue
    from clicktrail.registry import register_catalogue
    from clicktrail.schemas import FileSchemaRegistry

    if not settings.schema_registry:
        print("SCHEMA_REGISTRY_URL is not set: nothing to register with", file=sys.stderr)
        return 2
    root = root or settings.schemas_dir
    report = check_catalogue(root)
    if not report.ok:
        print(report.render(), file=sys.stderr)
        return 1
    client = SchemaRegistryClient.new_client(dict(settings.schema_registry))
    failed = 0
    catalogue = FileSchemaRegistry(root)
    for result in register_catalogue(client, catalogue, settings.schema_subject_prefix):
        if result.error:
            failed += 1
            print(f"REFUSED {result.subject} <- {result.schema}: {result.error}")
        else:
            where = f"{result.subject} v{result.version} (id {result.schema_id})"
            note = f" ({result.note})" if result.note else ""
            print(f"ok      {where} <- {result.schema}{note}")
    if failed:
        print(
            f"{failed} version(s) not registered, though make schemas-check passed them: the "
            "subject's compatibility level or the registry's rules are stricter than BACKWARD's "
            "(README: When a registry refuses a version)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def cmd_schemas_check(settings: Settings, args: argparse.Namespace) -> int:
    return schemas_check(settings, Path(args.dir) if args.dir else None)


def cmd_schemas_register(settings: Settings, args: argparse.Namespace) -> int:
    return schemas_register(settings, Path(args.dir) if args.dir else None)


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
            key = message.key()
            value, schema_id = decode_value(message.value())
            line = {
                "partition": message.partition(),
                "offset": message.offset(),
                "key": key.decode() if isinstance(key, bytes) else key,
                "headers": parse_headers(message.headers()),
                "value": value,
            }
            if schema_id is not None:
                line["schemaId"] = schema_id
            print(orjson.dumps(line).decode(), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def cmd_run(_: Settings, __: argparse.Namespace) -> int:
    from clicktrail.local.stack import main

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
    schemas = commands.add_parser("schemas", help="the schema catalogue").add_subparsers(
        dest="schemas_command", required=True
    )
    for name, text in (
        ("check", "check the catalogue: valid schemas, every version backward compatible"),
        ("register", "register the catalogue with the registry at SCHEMA_REGISTRY_URL"),
    ):
        sub = schemas.add_parser(name, help=text)
        sub.add_argument("--dir", help="the catalogue (default: SCHEMAS_DIR or schemas/)")
    commands.add_parser("run", help="run the whole stack in the foreground (make run)")
    args = parser.parse_args(argv)
    if args.command == "schemas":
        schema_handlers = {"check": cmd_schemas_check, "register": cmd_schemas_register}
        return schema_handlers[args.schemas_command](Settings.from_env(), args)
    handlers = {
        "migrate": cmd_migrate,
        "topics": cmd_topics,
        "dev-source": cmd_dev_source,
        "tail": cmd_tail,
        "run": cmd_run,
    }
    return handlers[args.command](Settings.from_env(), args)
