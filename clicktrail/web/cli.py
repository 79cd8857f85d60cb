"""Operator commands: ``clicktrail sources|schemas|deadletters|users|ledger|doctor ...``.

Each opens only what it needs and closes it when done; a dependency that is down ends a command
with a one-line error rather than a traceback."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import orjson
import psycopg
import redis
from confluent_kafka import OFFSET_BEGINNING, OFFSET_STORED, Consumer, Message, TopicPartition
from flask import current_app
from flask.cli import AppGroup

from clicktrail import doctor as checkup
from clicktrail.cli import schemas_check, schemas_register
from clicktrail.clock import SystemClock, parse_duration, parse_ts
from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.debugger import DebuggerKeys, new_debugger_key
from clicktrail.drafts import DEFAULT_LIMIT, DraftError, Window, try_draft
from clicktrail.errors import DependencyUnavailable, InvalidSettings, NotFound
from clicktrail.health import dependency_checks, workers_check
from clicktrail.history import erasure_cutoffs
from clicktrail.inference import UNCHANGED, infer_from_history, write_proposal
from clicktrail.intake import MAX_ID_CHARS
from clicktrail.kafka import decode_value
from clicktrail.ledger import Books, ledger_redis
from clicktrail.ledger import render as render_ledger
from clicktrail.ledger import to_json as ledger_json
from clicktrail.message import Part
from clicktrail.pipeline import is_summary
from clicktrail.profiles import ProfileStore
from clicktrail.sources import Source, SourceStore, new_write_key
from clicktrail.validation import TrackingPlan
from clicktrail.web.enqueue import CeleryEnqueuer

sources = AppGroup("sources", help="Sources and their write keys.")
schemas = AppGroup("schemas", help="The schema catalogue (SCHEMAS_DIR, or the registry).")
deadletters = AppGroup("deadletters", help="Events in the dead-letter topic.")
users = AppGroup("users", help="User profiles and their erasure.")
events = AppGroup("events", help="What became of one event (its receipt).")

_JSON = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


def _settings() -> Settings:
    """The app's settings; when the environment holds a malformed value, say which and stop."""
    error = current_app.config.get("CLICKTRAIL_CONFIG_ERROR")
    if error is not None:
        raise click.ClickException(f"{error} (clicktrail doctor lists every problem)")
    settings: Settings = current_app.config["CLICKTRAIL_SETTINGS"]
    return settings


@contextmanager
def _database() -> Iterator[Database]:
    """A connection pool for one command, closed when it ends."""
    db = Database(_settings().database_url, name="clicktrail-cli")
    try:
        yield db
    except DependencyUnavailable as exc:
        raise click.ClickException(f"{exc} (clicktrail doctor says what to fix)") from exc
    finally:
        db.close()


@contextmanager
def _store() -> Iterator[SourceStore]:
    """A source store without a cache."""
    with _database() as db:
        yield SourceStore(db, cache_seconds=0)


def _setting(pair: str) -> tuple[str, Any]:
    name, sep, value = pair.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{pair!r}: expected NAME=JSON, e.g. anonymize_ip=false")
    try:
        return name, orjson.loads(value)
    except orjson.JSONDecodeError:
        return name, value  # a bare word is a string


@sources.command("create")
@click.argument("name")
@click.option(
    "--setting", "pairs", multiple=True, metavar="NAME=JSON", help="a setting, repeatable"
)
def create_source(name: str, pairs: tuple[str, ...]) -> None:
    """Create a source and print its write key (shown once: only its hash is kept)."""
    key = new_write_key()
    with _store() as store:
        try:
            source = store.create(name, key, dict(_setting(p) for p in pairs))
        except InvalidSettings as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"source {source.name} ({source.id})")
    click.echo(f"write key: {key}")


@sources.command("list")
def list_sources() -> None:
    """Every source, its settings and its keys (by id: the start of their hash)."""
    with _store() as store:
        everything = store.all()
    now = SystemClock().now()
    for source, keys in everything:
        click.echo(f"{source.name}  {source.id}  {orjson.dumps(source.settings).decode()}")
        for key in keys:
            live = key.live(now)
            state = "live" if live else "revoked" if key.revoked_at else "expired"
            until = f" until {key.expires_at:%Y-%m-%d %H:%M}Z" if key.expires_at and live else ""
            click.echo(f"  key {key.id}  {state}{until}  created {key.created_at:%Y-%m-%d %H:%M}Z")


@sources.command("rotate")
@click.argument("name")
@click.option(
    "--grace-hours", default=24.0, show_default=True, help="how long the old keys keep working"
)
def rotate_key(name: str, grace_hours: float) -> None:
    """Issue a new write key; the old ones keep working for the grace period, then stop."""
    key = new_write_key()
    with _store() as store:
        try:
            noticed = store.rotate(name, key, timedelta(hours=grace_hours))
        except NotFound as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"new write key: {key}")
    click.echo(f"{noticed} older key(s) stop in {grace_hours:g} h")


@sources.command("revoke")
@click.argument("name")
@click.option("--key", "key_id", help="the key's id (from `sources list`); default: every key")
def revoke_key(name: str, key_id: str | None) -> None:
    """Stop a source's key (or all of them) now. The API notices within SOURCE_CACHE_SECONDS."""
    with _store() as store:
        try:
            stopped = store.revoke(name, key_id)
        except NotFound as exc:
            raise click.ClickException(str(exc)) from exc
    if not stopped:
        raise click.ClickException("no live key matched")
    click.echo(f"revoked {stopped} key(s)")


@sources.command("debugger-key")
@click.argument("name")
@click.option("--revoke", is_flag=True, help="only revoke the source's debugger key")
def debugger_key(name: str, revoke: bool) -> None:
    """Make a new debugger key for a source (shown once: only its hash is kept), which the live
    debugger takes to show this source's events; the source's earlier one stops now. Give it
    only to those who may see every visitor's events: unlike a write key, it is not public."""
    with _database() as db:
        source = SourceStore(db, cache_seconds=0).by_name(name)
        if source is None:
            raise click.ClickException(f"no source named {name!r}")
        keys = DebuggerKeys(db, cache_seconds=0)
        if revoke:
            click.echo(f"revoked {keys.revoke(source.id)} debugger key(s)")
            return
        key = new_debugger_key()
        stopped = keys.rotate(source.id, key)
    click.echo(f"debugger key: {key}")
    click.echo(f"{stopped} older debugger key(s) stopped; open /debugger#key=<debugger key>")


@sources.command("settings")
@click.argument("name")
@click.argument("pairs", nargs=-1, metavar="[NAME=JSON]...")
@click.option("--unset", "unset", multiple=True, help="remove a setting, repeatable")
def source_settings(name: str, pairs: tuple[str, ...], unset: tuple[str, ...]) -> None:
    """Show a source's settings, or change them (checked before they are stored)."""
    changes: dict[str, Any] = dict(_setting(p) for p in pairs)
    changes.update({key: None for key in unset})
    with _store() as store:
        try:
            source = store.update_settings(name, changes) if changes else store.by_name(name)
        except InvalidSettings as exc:
            raise click.ClickException(str(exc)) from exc
    if source is None:
        raise click.ClickException(f"no source named {name!r}")
    click.echo(orjson.dumps(source.settings, option=_JSON).decode())


@sources.command("plan")
@click.argument("name")
@click.option(
    "--event", "events", multiple=True, help="a track event the source may send, repeatable"
)
@click.option("--any-event", is_flag=True, help="any track event may be sent")
@click.option(
    "--unplanned",
    type=click.Choice(["allow", "deadletter"]),
    help="a track event no schema describes",
)
def tracking_plan(
    name: str, events: tuple[str, ...], any_event: bool, unplanned: str | None
) -> None:
    """Show or change a source's tracking plan."""
    with _store() as store:
        source = store.by_name(name)
        if source is None:
            raise click.ClickException(f"no source named {name!r}")
        plan = TrackingPlan.from_settings(source.settings)
        if events or any_event or unplanned:
            chosen = None if any_event else frozenset(events) if events else plan.events
            plan = TrackingPlan(chosen, unplanned or plan.unplanned)
            store.update_settings(name, {"tracking_plan": plan.to_settings()})
    click.echo(orjson.dumps({"source": name, "tracking_plan": plan.to_settings()}).decode())


def _read(consumer: Consumer, idle_seconds: float) -> Iterator[Message]:
    """Records until none came for ``idle_seconds`` (the only way to know the end: brokers may
    report the end of a partition late)."""
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_seconds:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        quiet_since = time.monotonic()
        yield message


def _consumer(settings: Settings, group: str, start: int) -> tuple[Consumer, list[TopicPartition]]:
    consumer = Consumer(
        {
            **settings.kafka,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    topic = settings.topic_deadletter
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        consumer.close()
        raise click.ClickException(f"topic {topic!r} not found")
    partitions = [TopicPartition(topic, p, start) for p in metadata.partitions]
    consumer.assign(partitions)
    return consumer, partitions


@deadletters.command("list")
@click.option(
    "--reason",
    help="only this reason (schema_validation, unplanned, schema_missing, processing_failed, "
    "kafka_rejected, poison)",
)
@click.option("--limit", default=20, show_default=True, help="how many of the latest to show")
@click.option(
    "--idle", default=3.0, show_default=True, help="seconds without a record that mean the end"
)
def list_dead_letters(reason: str | None, limit: int, idle: float) -> None:
    """Count dead letters by reason and show the latest ones with their first error."""
    consumer, _ = _consumer(_settings(), "clicktrail-deadletters-list", OFFSET_BEGINNING)
    counts: Counter[str] = Counter()
    latest: list[dict[str, Any]] = []
    try:
        for message in _read(consumer, idle):
            value, _ = decode_value(message.value())
            if not isinstance(value, dict):
                continue
            counts[str(value.get("reason"))] += 1
            if reason in (None, value.get("reason")):
                latest = [*latest[-(limit - 1) :], value] if limit > 0 else []
    finally:
        consumer.close()
    for name, count in counts.most_common():
        click.echo(f"{count:8d}  {name}")
    for value in latest:
        error = (value.get("errors") or [{}])[0]
        event = value.get("event") or {}
        what = f"{event.get('type')} {event.get('event') or ''}".strip()
        click.echo(
            f"{value.get('failedAt')}  {value.get('reason')}  {event.get('messageId')}  {what}  "
            f"{error.get('path')}: {error.get('message')}"
        )


@deadletters.command("replay")
@click.option("--reason", required=True, help="replay dead letters of this reason")
@click.option("--source", "source_name", help="only this source's")
@click.option("--dry-run", is_flag=True, help="count what would be replayed, replay nothing")
@click.option(
    "--idle", default=3.0, show_default=True, help="seconds without a record that mean the end"
)
def replay_dead_letters(reason: str, source_name: str | None, dry_run: bool, idle: float) -> None:
    """Send dead-lettered events through the pipeline again (after a schema or plan fix).

    Each dead letter is replayed once: the position reached is kept in Kafka per reason (per
    reason and source with --source), so a second run replays only what was dead-lettered since.
    Events keep their messageId and receivedAt; those still invalid come back to the dead-letter
    topic.
    """
    settings = _settings()
    group = f"clicktrail-replay-{reason}" + (f"-{source_name}" if source_name else "")
    consumer, partitions = _consumer(settings, group, OFFSET_STORED)
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    summaries = 0
    try:
        for message in _read(consumer, idle):
            value, _ = decode_value(message.value())
            if (
                isinstance(value, dict)
                and value.get("reason") == reason
                and isinstance(value.get("event"), dict)
            ):
                if is_summary(value["event"]):
                    summaries += 1
                    continue
                by_source[str(value.get("sourceId"))].append(value["event"])
        with _database() as db:
            known = {source.id: source for source, _ in SourceStore(db, cache_seconds=0).all()}
            wanted = {sid: events for sid, events in by_source.items() if sid in known}
            if source_name is not None:
                wanted = {sid: evs for sid, evs in wanted.items() if known[sid].name == source_name}
            wanted, erased = _without_erased(db, wanted)
        total = sum(len(events) for events in wanted.values())
        if erased:
            click.echo(f"skipped {erased} event(s) of users erased after they were received")
        if summaries:
            click.echo(
                f"skipped {summaries} event(s) too large for Kafka: their dead letters hold only a "
                "summary (messageId, size, the start of the event)"
            )
        if dry_run:
            click.echo(f"would replay {total} event(s) dead-lettered as {reason}")
            return
        enqueuer = CeleryEnqueuer(settings)
        for source_id, events in wanted.items():
            _replay(enqueuer, known[source_id], events)
        reached = [p for p in consumer.position(partitions) if p.offset >= 0]
        if reached:  # nothing read: nothing to remember
            consumer.commit(offsets=reached, asynchronous=False)
    finally:
        consumer.close()
    click.echo(f"replayed {total} event(s) dead-lettered as {reason}")


def _without_erased(
    db: Database, by_source: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The events of users not erased since they were received, and how many were left out: an
    erasure covers its user's dead letters too, however long after it they are replayed."""
    ids = sorted(
        {
            str(event[name])
            for events in by_source.values()
            for event in events
            for name in ("userId", "anonymousId", "previousId")
            if event.get(name) not in (None, "")
        }
    )
    with db.connection() as conn:
        cutoffs = erasure_cutoffs(conn, ids)
    if not cutoffs:
        return by_source, 0

    def erased(event: dict[str, Any]) -> bool:
        received = parse_ts(event.get("receivedAt"))
        times = [
            cutoffs[str(event[name])]
            for name in ("userId", "anonymousId", "previousId")
            if event.get(name) not in (None, "") and str(event[name]) in cutoffs
        ]
        return bool(times) and (received is None or received <= max(times))

    kept = {sid: [e for e in events if not erased(e)] for sid, events in by_source.items()}
    left_out = sum(len(e) for e in by_source.values()) - sum(len(e) for e in kept.values())
    return kept, left_out


def _replay(
    enqueuer: CeleryEnqueuer, source: Source, events: list[dict[str, Any]], size: int = 500
) -> None:
    # A replay, which the ledger counts nowhere: its events were accepted once already.
    for start in range(0, len(events), size):
        enqueuer.enqueue(
            Part(source.id, source.settings, events[start : start + size], replay=True)
        )


_DIRECTORY = click.Path(exists=True, file_okay=False, path_type=Path)


@schemas.command("check")
@click.option("--dir", "directory", type=_DIRECTORY, help="the catalogue (default: SCHEMAS_DIR)")
def check_schemas(directory: Path | None) -> None:
    """Check the catalogue: every schema valid, every new version backward compatible with the
    one before it (exit 1 otherwise, with the reason)."""
    click.get_current_context().exit(schemas_check(_settings(), directory))


@schemas.command("register")
@click.option("--dir", "directory", type=_DIRECTORY, help="the catalogue (default: SCHEMAS_DIR)")
def register_schemas(directory: Path | None) -> None:
    """Check the catalogue, then register every record schema with the registry at
    SCHEMA_REGISTRY_URL, oldest version first (exit 2 when no registry is configured)."""
    click.get_current_context().exit(schemas_register(_settings(), directory))


def _since(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _source_id(db: Database, source_name: str | None) -> str | None:
    """The id of the source a command names (None: every source); an unknown one stops it."""
    if source_name is None:
        return None
    found = SourceStore(db, cache_seconds=0).by_name(source_name)
    if found is None:
        raise click.ClickException(f"no source named {source_name!r}")
    return found.id


def _window(db: Database, since: timedelta, source_name: str | None, limit: int) -> Window:
    """The window of the history a command reads."""
    return Window(SystemClock().now(), since, _source_id(db, source_name), limit)


def _history_options(since: str, verb: str) -> Callable[[Callable[..., None]], Any]:
    """--since, --source and --limit: the window of the history a command reads."""

    def add(command: Callable[..., None]) -> Any:
        command = click.option(
            "--limit",
            default=DEFAULT_LIMIT,
            show_default=True,
            type=click.IntRange(min=1),
            help=f"{verb} at most this many events, the newest",
        )(command)
        command = click.option("--source", "source_name", help="only this source's events")(command)
        return click.option(
            "--since",
            default=since,
            show_default=True,
            metavar="DURATION",
            callback=_since,
            help="how far back in the history (s, m, h, d, w)",
        )(command)

    return add


@schemas.command("try")
@click.argument("draft", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_history_options("24h", "try")
def try_schema(draft: Path, since: timedelta, source_name: str | None, limit: int) -> None:
    """Try a draft schema (a file in the catalogue's form, its version in "self") on the events
    of the history it would apply to, validated as the workers would with the draft in the
    catalogue at SCHEMAS_DIR, and check it against the version it follows as make
    schemas-check does. Prints how many passed and failed, each failing path with a few
    messageIds, and the compatibility verdict. Exit 0 when every tried event passes and the
    change is compatible, 1 otherwise."""
    settings = _settings()
    with _database() as db:
        window = _window(db, since, source_name, limit)
        try:
            report = try_draft(db, settings.schemas_dir, draft, window, source_name)
        except DraftError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(report.render())
    click.get_current_context().exit(0 if report.ok else 1)


@schemas.command("infer")
@click.argument("event_name")
@_history_options("7d", "infer from")
@click.option("--write", is_flag=True, help="write it into SCHEMAS_DIR")
@click.option(
    "--from-scratch",
    is_flag=True,
    help="infer from the history alone, not from the latest version",
)
def infer_schema(
    event_name: str,
    since: timedelta,
    source_name: str | None,
    limit: int,
    write: bool,
    from_scratch: bool,
) -> None:
    """Propose a schema for a track event's properties from its events: the next version of
    its schema in SCHEMAS_DIR, the step classified as ADDITION, REVISION or MODEL as make
    schemas-check judges it. For an event no schema describes, 1-0-0, inferred from the
    history. For one that has a schema, its latest version as written, with the properties
    the events (of the history, and those dead-lettered against the schema) carry beyond it
    added as optional ones; values it refuses are reported, not accepted; nothing when they
    carry nothing new. --from-scratch infers from the history alone instead. Prints the
    schema and where it goes; --write writes it there."""
    settings = _settings()
    with _database() as db:
        window = _window(db, since, source_name, limit)
        try:
            proposal = infer_from_history(
                db, settings.schemas_dir, event_name, window, from_scratch
            )
        except DraftError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(proposal.render(window))
    if proposal.change == UNCHANGED:
        click.echo("nothing to write")
    elif write:
        click.echo(f"written to {write_proposal(proposal)}")
    else:
        click.echo(f"would be written to {proposal.path} (--write writes it)")


def _user_id(user_id: str) -> str:
    if not user_id or len(user_id) > MAX_ID_CHARS:
        raise click.BadParameter(f"a userId has 1 to {MAX_ID_CHARS} characters")
    return user_id


@users.command("show")
@click.argument("user_id")
def show_user(user_id: str) -> None:
    """Show a user's profile: traits, aliases, first and last seen (an alias finds its user)."""
    with _database() as db:
        profile = ProfileStore(db).get(_user_id(user_id))
    if profile is None:
        raise click.ClickException(f"no profile for {user_id!r}")
    click.echo(orjson.dumps(profile.to_json(), option=_JSON).decode())


@users.command("erase")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def erase_user(user_id: str, yes: bool) -> None:
    """File an erasure request for a user (or the user an alias belongs to), as
    DELETE /v1/users/<userId> does. The purge task then removes the profile, its history and
    sessions, and publishes a profile_erased record and a tombstone to the profiles topic."""
    _user_id(user_id)
    if not yes:
        click.confirm(f"Erase everything Clicktrail holds about {user_id!r}?", abort=True)
    with _database() as db:
        request_id, canonical, created = ProfileStore(db).request_erasure(user_id)
    body = {"erasureId": request_id, "userId": canonical, "status": "pending", "new": created}
    click.echo(orjson.dumps(body, option=_JSON).decode())


@events.command("show")
@click.argument("message_id")
@click.option("--source", "source_name", help="only this source's event")
@click.option("--json", "as_json", is_flag=True, help="the receipt as GET /v1/events/<id> gives it")
def show_event(message_id: str, source_name: str | None, as_json: bool) -> None:
    """What became of an event, by its messageId: when and by which source it was received,
    where it was published (topic, partition, offset, schema) or why it was dead-lettered
    (every error), whether it is in the history or was erased; for an event none of those
    know yet, whether Kafka has it and how deep the queue is. Exits 1 when nothing is known
    of it."""
    from clicktrail.receipts import build_receipts

    with _database() as db:
        names = {source.id: source.name for source in SourceStore(db, cache_seconds=0).listing()}
        source_id = _source_id(db, source_name)
        try:
            receipt = build_receipts(_settings(), db, lambda: list(names), SystemClock()).find(
                message_id, source_id
            )
        except DependencyUnavailable as exc:
            raise click.ClickException(f"{exc} (clicktrail doctor says what to fix)") from exc
    body = receipt.to_json()
    if as_json:
        click.echo(orjson.dumps(body, option=_JSON).decode())
    else:
        click.echo(_render_receipt(body, names))
    if not receipt.found:
        click.get_current_context().exit(1)


def _render_receipt(body: dict[str, Any], names: dict[str, str]) -> str:
    lines = [f"{body['messageId']}: {body['status']} ({body['explanation']})"]
    for copy in body["receipts"]:
        source = f"{names.get(copy['sourceId'], '?')} ({copy['sourceId']})"
        lines.append(f"  received  {copy['receivedAt']} by {source}")
        if copy["status"] == "erased":
            lines.append(f"  erased    {copy['erasedAt']}")
            continue
        what = " ".join(str(p) for p in (copy["type"], copy["event"]) if p)
        lines.append(f"  event     {what}")
        letter = copy.get("deadLettered")
        if letter is not None:
            lines.append(
                f"  dead-lettered {letter['at']} to {letter['topic']} [{letter['partition']}]"
                f"@{letter['offset']}: {letter['reason']}"
                + (f" against {letter['schema']}" if letter["schema"] else "")
            )
            lines += [f"    {e.get('path')}: {e.get('message')}" for e in letter["errors"]]
        published = copy.get("published")
        if published is not None:
            lines.append(
                f"  published {published['at']} to {published['topic']} [{published['partition']}]"
                f"@{published['offset']}, schema {published['schema'] or '-'}; in the history"
            )
    if not body["receipts"]:
        if body.get("deliveredBy"):
            lines.append(f"  delivered to Kafka by {', '.join(body['deliveredBy'])}")
        depth = body["queue"]["depth"]
        lines.append(f"  queue     {'unknown' if depth is None else depth} message(s) waiting")
    return "\n".join(lines)


@click.command("doctor")
def doctor() -> None:
    """Check every configuration value, every dependency (Redis, the queue, Postgres, Kafka, the
    schema registry, the workers) and the set-up (migrations, topics, a source), and say what
    to fix. Exits 1 when something must be fixed (warnings alone exit 0)."""
    settings: Settings | None = current_app.config.get("CLICKTRAIL_SETTINGS")
    findings = checkup.configuration(settings)
    # The report says what is down; the clients' own complaints about it would only bury it.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if settings is not None and not any(f.level == "fail" for f in findings):
        settings = replace(settings, kafka={**settings.kafka, "log_level": "0"})
        db = Database(settings.database_url, name="clicktrail-doctor", timeout=2.0)
        try:
            checks = dependency_checks(settings, db)
            checks["workers"] = workers_check(CeleryEnqueuer(settings).ping_workers)
            found = checkup.dependencies(settings, checks)
            up = {f.name for f in found if f.level == "ok"}
            findings += found + checkup.setup(
                settings, db, "postgres" in up, "kafka" in up, "schema_registry" in up
            )
        finally:
            db.close()
    else:
        findings.append(
            checkup.Finding(
                "dependencies", "all", "warn", "not checked until the configuration is fixed"
            )
        )
    click.echo(checkup.render(findings))
    if any(f.level == "fail" for f in findings):
        click.get_current_context().exit(1)


@click.command("ledger")
@click.option("--source", "source_name", help="only this source's books")
@click.option(
    "--since", default="1h", show_default=True, help="how far back: 90s, 15m, 24h, 7d, 2w"
)
@click.option("--json", "as_json", is_flag=True, help="the books as JSON")
def ledger(source_name: str | None, since: str, as_json: bool) -> None:
    """The ledger's books, per source and minute of receipt (UTC): events accepted by the API,
    published, dead_lettered and dropped (as duplicates) by the workers, stored, duplicates,
    copies and erased by the history sink (erased: by the workers too). A minute balances when

    accepted = stored + duplicates + dropped + erased

    which it must once settled (LEDGER_SETTLE_SECONDS after it ended). A settled minute that
    does not balance is marked ! with how many events are missing (and whether Kafka has them)
    or extra. Exits 1 when a settled minute does not balance."""
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = _settings()
    clock = SystemClock()
    with _database() as db:
        store = SourceStore(db, cache_seconds=0)
        names = {source.id: source.name for source in store.listing()}
        source_id = None
        if source_name is not None:
            source_id = next((i for i, n in names.items() if n == source_name), None)
            if source_id is None:
                raise click.ClickException(f"no source named {source_name!r}")
        books = Books(ledger_redis(settings), db.connection, settings.ledger_settle_seconds, clock)
        now = clock.now()
        try:
            minutes = books.read(now - window, now, source_id)
        except (redis.RedisError, psycopg.Error) as exc:
            raise click.ClickException(
                f"cannot read the ledger: {exc} (clicktrail doctor says what to fix)"
            ) from exc
    if as_json:
        click.echo(orjson.dumps(ledger_json(minutes, names, now - window, now)).decode())
    else:
        click.echo(render_ledger(minutes, names, now - window))
    if any(minute.unbalanced for minute in minutes):
        click.get_current_context().exit(1)


def register(app: Any) -> None:
    for command in (sources, schemas, deadletters, users, events, doctor):
        app.cli.add_command(command)
    app.cli.add_command(ledger)
