"""``clicktrail <command>``: the one command line (also ``python -m clicktrail``).

One group per concern: running the services (``run``, ``api``, ``sink``, ``flower``), set-up
(``migrate``, ``topics``, ``dev-source``), ``sources``, ``schemas``, ``deadletters``, ``users``,
``ledger``, ``tail`` and ``doctor``. The commands that need the API's services (sources,
schemas, dead letters, users, the ledger, doctor) run in its application context, built only
when one of them runs; ``clicktrail <group>`` runs the same groups."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from clicktrail.config import Settings
from clicktrail.db import Database, create_database, migrate
from clicktrail.kafka import create_pipeline_topics, decode_value, parse_headers


def cmd_migrate(settings: Settings) -> int:
    if create_database(settings.database_url):
        print("created the database")
    applied = migrate(settings.database_url)
    print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    return 0


def cmd_topics(settings: Settings) -> int:
    created = create_pipeline_topics(settings)
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


def cmd_dev_source(settings: Settings) -> int:
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


def cmd_tail(
    settings: Settings,
    topic: str | None,
    from_beginning: bool,
    most: int | None,
    seconds: float | None,
) -> int:
    """Print a topic's records as JSON lines (no consumer group, nothing committed)."""
    topic = topic or settings.topic_events
    consumer = Consumer(
        {**settings.kafka, "group.id": "clicktrail-tail", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            print(f"topic {topic!r} not found", file=sys.stderr)
            return 1
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in metadata.partitions])
        seen, deadline = 0, None if seconds is None else time.monotonic() + seconds
        while (deadline is None or time.monotonic() < deadline) and (most is None or seen < most):
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


def _web_app() -> Any:
    from clicktrail.web import create_app

    return create_app()


def _group() -> click.Group:
    from flask.cli import FlaskGroup

    group = FlaskGroup(
        name="clicktrail",
        help="Clicktrail's command line: the services, set-up, sources, schemas, dead letters,"
        " users, the ledger, tail and doctor. `clicktrail COMMAND --help` says more.",
        create_app=_web_app,
        add_default_commands=False,
        add_version_option=False,
        load_dotenv=False,
        set_debug_flag=False,
    )
    # The app is always the API's factory: no --app, --env-file or --debug to choose another.
    group.params = [p for p in group.params if p.name not in ("app", "env_file", "debug")]
    # sources, schemas, deadletters, users, ledger and doctor come from the app's own command line,
    # in its application context (clicktrail.web.cli), built only when one of them runs.
    for command in LOCAL_COMMANDS:
        group.add_command(command)
    return group


@click.command("migrate")
def migrate_command() -> None:
    """Create the database if missing and apply the migrations."""
    sys.exit(cmd_migrate(Settings.from_env()))


@click.command("topics")
def topics_command() -> None:
    """Create the Kafka topics that are missing."""
    sys.exit(cmd_topics(Settings.from_env()))


@click.command("dev-source")
def dev_source_command() -> None:
    """Ensure the development source and print its write key."""
    sys.exit(cmd_dev_source(Settings.from_env()))


@click.command("tail")
@click.argument("topic", required=False)
@click.option("--from-beginning", is_flag=True, help="not just new records")
@click.option("--max", "most", type=int, help="stop after this many records")
@click.option("--seconds", type=float, help="stop after this long")
def tail_command(
    topic: str | None, from_beginning: bool, most: int | None, seconds: float | None
) -> None:
    """Print a topic's records as JSON lines (default: KAFKA_TOPIC_EVENTS)."""
    sys.exit(cmd_tail(Settings.from_env(), topic, from_beginning, most, seconds))


@click.command("run")
def run_command() -> None:
    """Run the whole stack in the foreground, as make run does (the local extra)."""
    from clicktrail.local.stack import main as run_stack

    sys.exit(run_stack())


@click.command("api")
def api_command() -> None:
    """Run the API: granian, API_WORKERS processes of API_THREADS threads on API_BIND."""
    from clicktrail.web.server import main as run_api

    run_api()


@click.command("sink")
def sink_command() -> None:
    """Run the history sink: the events topic into Postgres history and profiles."""
    from clicktrail.workers.sink import main as run_sink

    sys.exit(run_sink())


@click.command(
    "flower", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def flower_command(options: tuple[str, ...]) -> None:
    """Run Flower for the workers (Flower's own options follow)."""
    from clicktrail.workers.flower import main as run_flower

    sys.argv = ["clicktrail flower", *options]
    run_flower()


LOCAL_COMMANDS = (
    migrate_command,
    topics_command,
    dev_source_command,
    tail_command,
    run_command,
    api_command,
    sink_command,
    flower_command,
)


def main(argv: list[str] | None = None) -> None:
    """The ``clicktrail`` console script: runs the command and exits with its status."""
    _group().main(args=argv, prog_name="clicktrail")
