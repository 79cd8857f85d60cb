"""The pipeline as plain functions: validate -> enrich -> publish, for one enqueued request.

A request's events are validated one by one; valid ones are enriched (IP protection, session,
clock skew) and go to the events topic, invalid ones go, one record each with every error, to
the dead-letter topic. Record order follows the request, so one user's events keep their order
within a partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from clicktrail.clock import Clock, format_ts
from clicktrail.enrich import attach_session, correct_clock_skew, protect_ip
from clicktrail.errors import TransientError
from clicktrail.kafka import Failure, Publisher, Record
from clicktrail.sessions import SessionTracker, Touch
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

    def __init__(self, failures: list[Failure], retry_payload: dict[str, Any]) -> None:
        super().__init__(f"{len(failures)} record(s) not delivered: {failures[0].error}")
        self.failures = failures
        self.retry_payload = retry_payload


def kafka_key(event: dict[str, Any]) -> str | None:
    """Partition key: userId, else anonymousId, so one user's events stay in order."""
    identity = event.get("userId") or event.get("anonymousId")
    return None if identity is None else str(identity)


def session_identity(event: dict[str, Any]) -> str:
    """Sessions follow the device (anonymousId) when known, so signing in does not split one."""
    return str(event.get("anonymousId") or event.get("userId"))


class Pipeline:
    def __init__(
        self,
        validator: EventValidator,
        sessions: SessionTracker,
        publisher: Publisher,
        topics: Topics,
        clock: Clock,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._validator = validator
        self._sessions = sessions
        self._publisher = publisher
        self._topics = topics
        self._clock = clock
        self._new_id = new_id

    def process(self, payload: dict[str, Any]) -> Outcome:
        """Publish a payload's events; raises PublishIncomplete (retry) or TransientError."""
        if "records" in payload:
            records = [Record.from_json(r) for r in payload["records"]]
        else:
            records = self.prepare(payload)
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

        plan = TrackingPlan.from_settings(settings)
        verdicts = [self._validator.validate(event, plan) for event in events]
        for event in events:
            protect_ip(event, anonymize=settings.get("anonymize_ip", True))
        valid = [i for i, verdict in enumerate(verdicts) if verdict.valid]
        sessions = self._sessions.touch_many(
            [
                Touch(
                    source_id, session_identity(events[i]), events[i]["receivedAt"], self._new_id()
                )
                for i in valid
            ]
        )
        session_of = dict(zip(valid, sessions, strict=True))

        records = []
        for index, (event, verdict) in enumerate(zip(events, verdicts, strict=True)):
            if verdict.valid:
                correct_clock_skew(event)
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
        error = {"path": "/", "keyword": reason, "message": message, "schema": ""}
        records = list(kept)
        for event in events:
            protect_ip(event, anonymize=settings.get("anonymize_ip", True))
            verdict = Verdict(schema="", errors=[error], reason=reason)
            records.append(self._dead_letter(event, verdict, source_id, traceparent))
        self._publish(records, payload)

    def _publish(self, records: list[Record], payload: dict[str, Any]) -> None:
        failures = self._publisher.publish(records)
        if failures:
            retry_payload = {k: v for k, v in payload.items() if k not in ("events", "records")}
            retry_payload["records"] = [f.record.to_json() for f in failures]
            raise PublishIncomplete(failures, retry_payload)

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
