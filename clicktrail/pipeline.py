"""The pipeline as plain functions: validate -> enrich -> publish, for one enqueued request.

A request's events are validated one by one; valid ones are enriched (IP protection, session,
clock skew) and go to the events topic, invalid ones go, one record each with every error, to
the dead-letter topic. Record order follows the request, so one user's events keep their order
within a partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from clicktrail.clock import Clock, format_ts, parse_ts
from clicktrail.enrich import Enricher, EnrichmentSettings, attach_session
from clicktrail.errors import TransientError
from clicktrail.kafka import Delivery, Publisher, Record
from clicktrail.metrics import (
    DUPLICATES_DROPPED,
    END_TO_END_SECONDS,
    EVENTS_DEAD_LETTERED,
    EVENTS_PUBLISHED,
    EVENTS_VALIDATED,
)
from clicktrail.sessions import SessionTracker, Touch
from clicktrail.telemetry import context_of, current_traceparent, tracer
from clicktrail.validation import EventValidator, TrackingPlan, Verdict


@dataclass(frozen=True)
class Topics:
    events: str
    deadletter: str


@dataclass(frozen=True)
class Outcome:
    published: int
    dead_lettered: int


class PublishIncomplete(TransientError):
    """Some records got no clean delivery report. ``retry_payload`` carries only those records."""

    def __init__(self, failures: list[Delivery], retry_payload: dict[str, Any]) -> None:
        super().__init__(f"{len(failures)} record(s) not delivered: {failures[0].error}")
        self.failures = failures
        self.retry_payload = retry_payload


def kafka_key(event: dict[str, Any]) -> str | None:
    """Partition key: userId, else anonymousId, so one user's events stay in order."""
    identity = event.get("userId") or event.get("anonymousId")
    return None if identity is None else str(identity)


class ProfileTraits(Protocol):
    def traits_for(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...


class DeliveredIds(Protocol):
    """Which messageIds of a source Kafka already has (``clicktrail.delivery.SeenIds``)."""

    def seen(self, source_id: str, message_ids: Iterable[str]) -> set[str]: ...

    def remember(self, source_id: str, message_ids: Iterable[str]) -> None: ...


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def touch_of(event: dict[str, Any], source_id: str, new_id: str) -> Touch:
    """The session claim of a valid event (``context.sessionId`` names a session to join)."""
    context = event.get("context")
    named = context.get("sessionId") if isinstance(context, dict) else None
    return Touch(
        source_id=source_id,
        user_id=_text(event.get("userId")),
        anonymous_id=_text(event.get("anonymousId")),
        at=event["receivedAt"],
        new_id=new_id,
        named_id=named if isinstance(named, str) and named else None,
    )


class Tap(Protocol):
    """Sees every prepared request (``clicktrail.debugger.DebugTap``); must never raise."""

    def offer(self, payload: dict[str, Any], records: list[Record]) -> None: ...


class Pipeline:
    def __init__(
        self,
        validator: EventValidator,
        sessions: SessionTracker,
        publisher: Publisher,
        topics: Topics,
        clock: Clock,
        enricher: Enricher | None = None,
        profiles: ProfileTraits | None = None,
        seen: DeliveredIds | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        tap: Tap | None = None,
    ) -> None:
        self._validator = validator
        self._sessions = sessions
        self._publisher = publisher
        self._topics = topics
        self._clock = clock
        self._enricher = enricher or Enricher()
        self._profiles = profiles
        self._seen = seen
        self._new_id = new_id
        self._tap = tap

    def process(self, payload: dict[str, Any]) -> Outcome:
        """Publish a payload's events; raises PublishIncomplete (retry) or TransientError."""
        if "records" in payload:
            records = [Record.from_json(r) for r in payload["records"]]
        else:
            records = self.prepare(payload)
            if self._tap is not None:
                self._tap.offer(payload, records)
        self._publish(records, payload)
        dead = sum(1 for r in records if r.topic == self._topics.deadletter)
        return Outcome(published=len(records) - dead, dead_lettered=dead)

    def prepare(self, payload: dict[str, Any]) -> list[Record]:
        """Validate and enrich a payload's events into Kafka records (events and dead letters)."""
        source = payload["source"]
        source_id: str = source["id"]
        settings: dict[str, Any] = source.get("settings") or {}
        traceparent: str | None = payload.get("traceparent")
        # Work on a copy: a retried task is handed the very payload this call received.
        events: list[dict[str, Any]] = orjson.loads(orjson.dumps(payload["events"]))
        if self._seen is not None:
            delivered = self._seen.seen(source_id, [str(e.get("messageId")) for e in events])
            if delivered:
                DUPLICATES_DROPPED.labels(source_id).inc(len(delivered))
                events = [e for e in events if str(e.get("messageId")) not in delivered]

        plan = TrackingPlan.from_settings(settings)
        switches = EnrichmentSettings.from_settings(settings)
        verdicts = [self._validator.validate(event, plan) for event in events]
        for event, verdict in zip(events, verdicts, strict=True):
            outcome = "valid" if verdict.valid else _OUTCOMES.get(verdict.reason, verdict.reason)
            EVENTS_VALIDATED.labels(source_id, str(event.get("type")), outcome).inc()
        valid = [i for i, verdict in enumerate(verdicts) if verdict.valid]
        traits: dict[str, dict[str, Any]] = {}
        if switches.profile_traits and self._profiles is not None:
            user_ids = {str(events[i]["userId"]) for i in valid if events[i].get("userId")}
            traits = self._profiles.traits_for(user_ids) if user_ids else {}
        for index, event in enumerate(events):
            if verdicts[index].valid:
                user_id = event.get("userId")
                self._enricher.enrich(
                    event, switches, traits.get(str(user_id)) if user_id else None
                )
            else:
                self._enricher.protect(event, switches)
        sessions = self._sessions.touch_many(
            [touch_of(events[i], source_id, self._new_id()) for i in valid]
        )
        session_of = dict(zip(valid, sessions, strict=True))

        records = []
        for index, (event, verdict) in enumerate(zip(events, verdicts, strict=True)):
            if verdict.valid:
                attach_session(event, session_of[index])
                records.append(self._event_record(event, verdict, source_id, traceparent))
            else:
                records.append(self._dead_letter(event, verdict, source_id, traceparent))
        return records

    def dead_letter_all(self, payload: dict[str, Any], reason: str, message: str) -> None:
        """Give up on a payload that cannot be processed: every event to the dead-letter topic.

        Raises PublishIncomplete when the dead-letter topic cannot take them either.
        """
        source_id = payload["source"]["id"]
        traceparent = payload.get("traceparent")
        if "records" in payload:
            events = [
                r["value"] for r in payload["records"] if r["topic"] != self._topics.deadletter
            ]
            kept = [
                Record.from_json(r)
                for r in payload["records"]
                if r["topic"] == self._topics.deadletter
            ]
        else:
            events, kept = orjson.loads(orjson.dumps(payload["events"])), []
        settings = payload["source"].get("settings") or {}
        try:
            switches = EnrichmentSettings.from_settings(settings)
        except ValueError:  # unreadable settings: protect as much as the defaults do
            switches = EnrichmentSettings()
        error = {"path": "/", "keyword": reason, "message": message, "schema": ""}
        records = list(kept)
        for event in events:
            self._enricher.protect(event, switches)
            verdict = Verdict(schema="", errors=[error], reason=reason)
            records.append(self._dead_letter(event, verdict, source_id, traceparent))
        self._publish(records, payload)

    def _publish(self, records: list[Record], payload: dict[str, Any]) -> None:
        """Publish in one produce span, whose context every record carries as its traceparent.
        Under the caller's span (the task's), else continuing the payload's trace."""
        active = trace.get_current_span().get_span_context().is_valid
        with tracer.start_as_current_span(
            "kafka produce",
            context=None if active else context_of(payload.get("traceparent")),
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(records)},
        ):
            traceparent = current_traceparent()
            if traceparent:
                records = [
                    replace(r, headers={**r.headers, "traceparent": traceparent}) for r in records
                ]
            deliveries = self._publisher.publish(records)
        _count(deliveries, self._topics, self._clock)
        if self._seen is not None:
            self._remember(deliveries)
        failures = [d for d in deliveries if d.error is not None]
        if failures:
            retry_payload = {k: v for k, v in payload.items() if k not in ("events", "records")}
            retry_payload["records"] = [f.record.to_json() for f in failures]
            raise PublishIncomplete(failures, retry_payload)

    def _remember(self, deliveries: list[Delivery]) -> None:
        """Mark delivered events as seen, once Kafka has them: a crash before this costs at most
        a duplicate, never an event."""
        by_source: dict[str, list[str]] = {}
        for delivery in deliveries:
            headers = delivery.record.headers
            # Dead letters are not remembered: a replay after a schema fix must go through.
            if delivery.record.topic != self._topics.events:
                continue
            if delivery.error is None and "event-id" in headers:
                by_source.setdefault(headers.get("source-id", ""), []).append(headers["event-id"])
        assert self._seen is not None
        for source_id, ids in by_source.items():
            self._seen.remember(source_id, ids)

    def _event_record(
        self, event: dict[str, Any], verdict: Verdict, source_id: str, traceparent: str | None
    ) -> Record:
        return Record(
            topic=self._topics.events,
            key=kafka_key(event),
            value=event,
            headers=_headers(event, verdict.schema, source_id, traceparent),
            schema_id=verdict.schema_id,
        )

    def _dead_letter(
        self,
        event: dict[str, Any],
        verdict: Verdict,
        source_id: str,
        traceparent: str | None,
    ) -> Record:
        headers = _headers(event, verdict.schema, source_id, traceparent)
        headers["error-kind"] = verdict.reason
        return Record(
            topic=self._topics.deadletter,
            key=kafka_key(event),
            value={
                "reason": verdict.reason,
                "sourceId": source_id,
                "schema": verdict.schema,
                "errors": verdict.errors,
                "failedAt": format_ts(self._clock.now()),
                "event": event,
            },
            headers=headers,
        )


_OUTCOMES = {"schema_validation": "invalid"}


def _count(deliveries: list[Delivery], topics: Topics, clock: Clock) -> None:
    """Published and dead-lettered events, and end-to-end latency, of the delivered records."""
    now = clock.now()
    for delivery in deliveries:
        if delivery.error is not None:
            continue
        record, headers = delivery.record, delivery.record.headers
        source, kind = headers.get("source-id", ""), headers.get("event-type", "")
        if record.topic == topics.deadletter:
            EVENTS_DEAD_LETTERED.labels(source, kind, headers.get("error-kind", "")).inc()
        else:
            EVENTS_PUBLISHED.labels(source, kind).inc()
            received = parse_ts(record.value.get("receivedAt")) if record.value else None
            if received is not None:
                END_TO_END_SECONDS.observe(max(0.0, (now - received).total_seconds()))


def _headers(
    event: dict[str, Any], schema: str, source_id: str, traceparent: str | None
) -> dict[str, str]:
    headers = {
        "event-id": str(event.get("messageId", "")),
        "event-type": str(event.get("type", "")),
        "schema": schema,
        "source-id": source_id,
    }
    if traceparent:
        headers["traceparent"] = traceparent
    return headers
