"""The pipeline as plain functions: validate -> enrich -> publish, for one task's message.

A message (``clicktrail.message``) holds the events of one request, or of several that reached
one API process at once.
Events are validated one by one; valid ones are enriched (IP protection, session, clock skew)
and go to the events topic, invalid ones go, one record each with every error, to the
dead-letter topic, as does (``processing_failed``, with the error) an event that made
validation, enrichment or encoding raise: the rest of its request flows. Record order follows
the requests, so one user's events keep their order within a partition. Each request keeps its
own trace: a task span and a produce span per request, and one log line per request once Kafka
confirmed its records.

The ledger's worker side (``clicktrail.ledger``) is counted along the way and noted with the
delivered ids, in one round-trip: what Kafka confirmed (published, dead-lettered), and on a
message's first delivery what the deduplication and the erasure marks dropped.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from clicktrail.clock import Clock, format_ts, parse_ts
from clicktrail.enrich import Enricher, EnrichmentSettings, attach_session
from clicktrail.errors import InvalidSettings, TransientError
from clicktrail.kafka import Delivery, Publisher, Record, refused_for_size
from clicktrail.ledger import DEAD_LETTERED, DROPPED, ERASED, PUBLISHED, Tally
from clicktrail.logs import bound, message_id_fields
from clicktrail.message import Message, Part
from clicktrail.metrics import (
    DUPLICATES_DROPPED,
    END_TO_END_SECONDS,
    EVENTS_DEAD_LETTERED,
    EVENTS_PUBLISHED,
    EVENTS_VALIDATED,
)
from clicktrail.queue import INGEST_TASK
from clicktrail.sessions import SessionTracker, Touch
from clicktrail.telemetry import request_spans, start_span, traceparent_of
from clicktrail.validation import EventValidator, TrackingPlan, Verdict

try:  # a Celery soft time limit raises inside whatever runs: it is the task's, not an event's
    from billiard.exceptions import SoftTimeLimitExceeded  # type: ignore[import-untyped]

    _NOT_THE_EVENTS: tuple[type[BaseException], ...] = (TransientError, SoftTimeLimitExceeded)
except ImportError:  # pragma: no cover - outside a worker
    _NOT_THE_EVENTS = (TransientError,)

log = logging.getLogger(__name__)

# An error one event raised in validation, enrichment or encoding: that event alone goes to the
# dead-letter topic, the rest of its request flows.
REASON_FAILED = "processing_failed"
# Dead letters of events that could not be encoded carry them cut at this depth.
_SAFE_DEPTH = 64
_MAX_ERROR_MESSAGE = 1000


@dataclass(frozen=True)
class Topics:
    events: str
    deadletter: str


@dataclass(frozen=True)
class Outcome:
    published: int
    dead_lettered: int


class PublishIncomplete(TransientError):
    """Some records got no clean delivery report. ``retry`` carries only those records."""

    def __init__(self, failures: list[Delivery], retry: Message) -> None:
        super().__init__(f"{len(failures)} record(s) not delivered: {failures[0].error}")
        self.failures = failures
        self.retry = retry


def kafka_key(event: dict[str, Any]) -> str | None:
    """Partition key: userId, else anonymousId, so one user's events stay in order."""
    identity = event.get("userId") or event.get("anonymousId")
    return None if identity is None else str(identity)


class ProfileTraits(Protocol):
    def traits_for(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...


class DeliveredIds(Protocol):
    """Which messageIds of each source Kafka already has (``clicktrail.delivery.SeenIds``);
    ``remember`` notes the ledger's counts in the same round-trip."""

    def seen(self, ids: Mapping[str, list[str]]) -> dict[str, set[str]]: ...

    def remember(self, ids: Mapping[str, list[str]], counts: Tally | None = None) -> None: ...


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


class Erasures(Protocol):
    """Drops the events of erased users received before their erasure
    (``clicktrail.purge.ErasureMarks``)."""

    def without_erased(self, parts: Sequence[Part]) -> list[Part]: ...


class Tap(Protocol):
    """Sees each request's records once prepared (``clicktrail.debugger.DebugTap``); must never
    raise."""

    def offer(self, prepared: list[tuple[Part, list[Record]]]) -> None: ...


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
        log_requests: bool = False,
        tap: Tap | None = None,
        erasures: Erasures | None = None,
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
        self._log_requests = log_requests
        self._tap = tap
        self._erasures = erasures

    def process(self, message: Message, first_delivery: bool = True) -> Outcome:
        """Publish a message's events; raises PublishIncomplete (retry) or TransientError.

        A message holds one request's events or records, or several requests' (its parts): they
        are validated and enriched together, with one Redis round-trip for all their sessions
        and one wait for all their delivery reports.

        ``first_delivery`` is False when the message was handed out before, to a worker that
        died: what the deduplication skips then is the pipeline's own copies (that worker may
        have published them), so the ledger counts no drop of it (a retry is a message of its
        own, holding only what its predecessor did not finish: its first delivery counts).
        """
        parts = list(message.parts)
        tally = Tally()
        drops = tally if first_delivery else None
        with _part_spans(parts) as spans:
            if self._erasures is not None:  # within the spans: its Redis round-trip is traced
                kept = self._erasures.without_erased(parts)
                if drops is not None:
                    _count_erased(parts, kept, drops)
                parts = kept
            fresh = [i for i, part in enumerate(parts) if not part.is_retry]
            prepared = (
                dict(zip(fresh, self.prepare([parts[i] for i in fresh], drops), strict=True))
                if fresh
                else {}
            )
            if self._tap is not None and prepared:
                self._tap.offer([(parts[i], rs) for i, rs in prepared.items()])
            records = [
                prepared[i] if i in prepared else list(part.records or ())
                for i, part in enumerate(parts)
            ]
            self._publish(parts, records, spans, tally)
        dead = sum(1 for rs in records for r in rs if r.topic == self._topics.deadletter)
        return Outcome(published=sum(len(rs) for rs in records) - dead, dead_lettered=dead)

    def prepare(self, parts: Sequence[Part], drops: Tally | None = None) -> list[list[Record]]:
        """Validate and enrich the events of each part into Kafka records (events and dead
        letters), in the order of the events. Whatever one event raises (but a dependency
        being away) dead-letters that event alone as ``processing_failed``. The events dropped
        as delivered already are counted in ``drops`` (but a replay's or a redelivered part's)."""
        sources = [part.source_id for part in parts]
        # Work on copies: a retried task is handed the very message this call received.
        batches, failed = _copies(parts)
        if self._seen is not None:
            batches = self._drop_delivered(parts, batches, drops)

        jobs: list[_Job] = []
        for part, source_id, events in zip(parts, sources, batches, strict=True):
            settings = part.settings
            plan = TrackingPlan.from_settings(settings)
            verdicts = [failed.get(id(event)) or self._validate(event, plan) for event in events]
            outcomes = Counter(
                (str(event.get("type")), _outcome(verdict))
                for event, verdict in zip(events, verdicts, strict=True)
            )
            for (kind, outcome), count in outcomes.items():
                EVENTS_VALIDATED.labels(source_id, kind, outcome).inc(count)
            jobs.append(
                _Job(source_id, EnrichmentSettings.from_settings(settings), events, verdicts)
            )

        traits: dict[str, dict[str, Any]] = {}
        if self._profiles is not None:
            user_ids = {
                str(event["userId"])
                for job in jobs
                if job.switches.profile_traits
                for event, verdict in zip(job.events, job.verdicts, strict=True)
                if verdict.valid and event.get("userId")
            }
            traits = self._profiles.traits_for(user_ids) if user_ids else {}
        touches: list[Touch] = []
        for job in jobs:
            for index, (event, verdict) in enumerate(zip(job.events, job.verdicts, strict=True)):
                if verdict.valid:
                    user_id = event.get("userId")
                    try:
                        self._enricher.enrich(
                            event, job.switches, traits.get(str(user_id)) if user_id else None
                        )
                        touch = touch_of(event, job.source_id, self._new_id())
                    except _NOT_THE_EVENTS:
                        raise
                    except Exception as exc:
                        job.verdicts[index] = _failure(event, exc, verdict.schema)
                        job.events[index] = self._protected(event, job.switches)
                    else:
                        touches.append(touch)
                else:
                    job.events[index] = self._protected(event, job.switches)
        sessions = iter(self._sessions.touch_many(touches))

        prepared = []
        for job in jobs:
            records = []
            for event, verdict in zip(job.events, job.verdicts, strict=True):
                if verdict.valid:
                    attach_session(event, next(sessions))
                    record = self._event_record(event, verdict, job.source_id)
                    if isinstance(record, Record):
                        records.append(record)
                        continue
                    failure = _failure(event, record, verdict.schema)
                    records.append(self._safe_dead_letter(event, failure, job.source_id))
                else:
                    records.append(self._safe_dead_letter(event, verdict, job.source_id))
            prepared.append(records)
        return prepared

    def _validate(self, event: dict[str, Any], plan: TrackingPlan) -> Verdict:
        try:
            return self._validator.validate(event, plan)
        except _NOT_THE_EVENTS:
            raise
        except Exception as exc:
            return _failure(event, exc, "")

    def _protected(self, event: dict[str, Any], switches: EnrichmentSettings) -> dict[str, Any]:
        """The event as it may leave (IP masked, fields pseudonymised); when that fails, only
        its identifying fields, so a dead letter never carries what the source protects."""
        try:
            self._enricher.protect(event, switches)
            return event
        except _NOT_THE_EVENTS:
            raise
        except Exception:
            log.warning("could not protect event %s", event.get("messageId"), exc_info=True)
            return {name: event[name] for name in _IDENTIFYING if name in event}

    def _safe_dead_letter(self, event: dict[str, Any], verdict: Verdict, source_id: str) -> Record:
        """A dead letter that can always be encoded: the event made encodable when it is not."""
        record = _encoded(self._dead_letter(event, verdict, source_id))
        if isinstance(record, Record):
            return record
        verdict = replace(verdict, errors=[*verdict.errors, _error_of(record)])
        encoded = _encoded(self._dead_letter(_json_safe(event), verdict, source_id))
        assert isinstance(encoded, Record)  # JSON-safe by construction
        return encoded

    def _drop_delivered(
        self,
        parts: Sequence[Part],
        batches: list[list[dict[str, Any]]],
        drops: Tally | None,
    ) -> list[list[dict[str, Any]]]:
        """The events of each part that Kafka does not have yet (one round-trip for all)."""
        assert self._seen is not None
        ids: dict[str, list[str]] = {}
        for part, events in zip(parts, batches, strict=True):
            ids.setdefault(part.source_id, []).extend(str(e.get("messageId")) for e in events)
        delivered = self._seen.seen(ids)
        if not any(delivered.values()):
            return batches
        kept = []
        for part, events in zip(parts, batches, strict=True):
            known = delivered.get(part.source_id, set())
            fresh = [e for e in events if str(e.get("messageId")) not in known]
            if len(fresh) < len(events):
                DUPLICATES_DROPPED.labels(part.source_id).inc(len(events) - len(fresh))
                if drops is not None and _counts_drops(part):
                    for event in events:
                        if str(event.get("messageId")) in known:
                            drops.add(DROPPED, part.source_id, event.get("receivedAt"))
            kept.append(fresh)
        return kept

    def dead_letter_all(self, message: Message, reason: str, why: str) -> None:
        """Give up on a message that cannot be processed: every event to the dead-letter topic.

        Raises PublishIncomplete when the dead-letter topic cannot take them either.
        """
        parts = list(message.parts)
        error = {"path": "/", "keyword": reason, "message": why, "schema": ""}
        with _part_spans(parts) as spans:
            records = []
            for part in parts:
                source_id = part.source_id
                if part.records is not None:
                    events = [
                        r.value
                        for r in part.records
                        if r.topic != self._topics.deadletter and r.value is not None
                    ]
                    kept = [r for r in part.records if r.topic == self._topics.deadletter]
                else:
                    events, kept = [_copy(event) for event in part.events], []
                try:
                    switches = EnrichmentSettings.from_settings(part.settings)
                except InvalidSettings:  # unreadable settings: protect as much as the defaults do
                    switches = EnrichmentSettings()
                part_records = list(kept)
                for event in events:
                    verdict = Verdict(schema="", errors=[error], reason=reason)
                    event = self._protected(event, switches)
                    part_records.append(self._safe_dead_letter(event, verdict, source_id))
                records.append(part_records)
            self._publish(parts, records, spans)

    def _publish(
        self,
        parts: list[Part],
        records: list[list[Record]],
        spans: list[Span],
        tally: Tally | None = None,
    ) -> None:
        """Publish every part's records with one wait for all reports. Each part gets a produce
        span under its own span, whose context its records carry as their traceparent. What
        Kafka confirmed is added to ``tally`` (but a replay's), which goes to the ledger with the
        delivered ids."""
        produce_spans = [
            start_span("kafka produce", trace.set_span_in_context(span), SpanKind.PRODUCER)
            for span in spans
        ]
        for produce, part_records in zip(produce_spans, records, strict=True):
            if produce.is_recording():
                produce.set_attributes(
                    {
                        "messaging.system": "kafka",
                        "messaging.batch.message_count": len(part_records),
                    }
                )
        flat: list[Record] = []
        for produce, part_records in zip(produce_spans, records, strict=True):
            traceparent = traceparent_of(produce)
            flat += [
                replace(r, headers={**r.headers, "traceparent": traceparent}) if traceparent else r
                for r in part_records
            ]
        try:
            deliveries = self._publisher.publish(flat)
            if any(d.permanent for d in deliveries):
                deliveries = self._divert_rejected(deliveries)
        finally:
            for produce in produce_spans:
                produce.end()
        _count(deliveries, self._topics, self._clock)
        tally = Tally() if tally is None else tally

        failed: list[list[Delivery]] = []
        offset = 0
        for part, span, part_records in zip(parts, spans, records, strict=True):
            mine = deliveries[offset : offset + len(part_records)]
            offset += len(part_records)
            failed.append([d for d in mine if d.error is not None])
            if not part.replay:
                self._tally_delivered(part.source_id, mine, tally)
            if self._log_requests:
                self._log_part(span, mine, len(failed[-1]))
        if self._seen is not None:
            self._remember(deliveries, tally)
        failures = [d for part_failures in failed for d in part_failures]
        if failures:
            retry = Message.of(
                part.retrying([d.record for d in part_failures])
                for part, part_failures in zip(parts, failed, strict=True)
                if part_failures
            )
            raise PublishIncomplete(failures, retry)

    def _divert_rejected(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Records Kafka will never take go to the dead-letter topic instead, with Kafka's error
        (``kafka_rejected``), made small enough when their size was the problem; the others of
        their batch are not held back. The deliveries, those of the diverted in their place."""
        diverted: dict[int, Record] = {}
        for index, delivery in enumerate(deliveries):
            if delivery.permanent:
                letter = self._rejected_letter(delivery)
                if letter is not None:
                    diverted[index] = letter
        result = [
            replace(d, permanent=False) if d.permanent and i not in diverted else d
            for i, d in enumerate(deliveries)
        ]
        if not diverted:
            return result
        for delivery in (deliveries[i] for i in diverted):
            log.error(
                "kafka refused event %s for good (%s: %s), dead-lettering it",
                _event_id(delivery),
                delivery.code,
                delivery.error,
            )
        reports = self._publisher.publish(list(diverted.values()))
        for index, report in zip(diverted, reports, strict=True):
            # A dead letter that fails in turn is retried as it is, never diverted again.
            result[index] = replace(report, permanent=False)
        return result

    def _rejected_letter(self, delivery: Delivery) -> Record | None:
        """The dead letter of a record Kafka refused for good; None when nothing can be sent
        instead (a dead letter refused for another reason than its size: the dead-letter topic
        itself is unknown or forbidden, and only an operator can help; it is retried)."""
        record = delivery.record
        too_large = refused_for_size(delivery)
        error = {
            "path": "/",
            "keyword": delivery.code or "",
            "message": delivery.error or "",
            "schema": "",
        }
        headers = dict(record.headers)
        if record.topic == self._topics.deadletter:
            if not too_large or not isinstance(record.value, dict):
                return None
            errors = list(record.value.get("errors") or [])[:_MAX_KEPT_ERRORS]
            value = {
                **record.value,
                "errors": [*errors, error],
                "event": _summary(record.value.get("event")),
            }
            return Record(self._topics.deadletter, record.key, value, headers)
        headers["error-kind"] = REJECTED
        value = {
            "reason": REJECTED,
            "sourceId": headers.get("source-id", ""),
            "schema": headers.get("schema", ""),
            "errors": [error],
            "failedAt": format_ts(self._clock.now()),
            "event": _summary(record.value) if too_large else record.value,
        }
        return Record(self._topics.deadletter, record.key, value, headers)

    def _log_part(self, span: Span, deliveries: list[Delivery], failed: int) -> None:
        """One line per request (LOG_REQUESTS), with its trace id and message ids."""
        ids = [_event_id(d) for d in deliveries]
        with trace.use_span(span), bound(**message_id_fields(ids)):
            dead = sum(1 for d in deliveries if d.record.topic == self._topics.deadletter)
            log.info(
                "published %d event(s), dead-lettered %d, %d to retry",
                len(deliveries) - dead - failed,
                dead,
                failed,
            )

    def _tally_delivered(self, source_id: str, deliveries: list[Delivery], tally: Tally) -> None:
        """Count one part's records Kafka confirmed, by the minute their event was received."""
        counts: Counter[tuple[str, Any]] = Counter()
        for delivery in deliveries:
            if delivery.error is not None:
                continue
            record = delivery.record
            if record.topic == self._topics.deadletter:
                letter = record.value if isinstance(record.value, dict) else {}
                event = letter.get("event")
                received = event.get("receivedAt") if isinstance(event, dict) else None
                counts[DEAD_LETTERED, received] += 1
            else:
                value = record.value if isinstance(record.value, dict) else {}
                counts[PUBLISHED, value.get("receivedAt")] += 1
        for (stage, received), count in counts.items():
            tally.add(stage, source_id, received, count)

    def _remember(self, deliveries: list[Delivery], tally: Tally) -> None:
        """Mark delivered events as seen, once Kafka has them: a crash before this costs at most
        a duplicate, never an event. The ledger's counts go in the same round-trip."""
        by_source: dict[str, list[str]] = {}
        for delivery in deliveries:
            headers = delivery.record.headers
            # Dead letters are not remembered: a replay after a schema fix must go through.
            if delivery.record.topic != self._topics.events:
                continue
            if delivery.error is None and "event-id" in headers:
                by_source.setdefault(headers.get("source-id", ""), []).append(headers["event-id"])
        assert self._seen is not None
        if by_source or tally:
            self._seen.remember(by_source, tally)

    def _event_record(
        self, event: dict[str, Any], verdict: Verdict, source_id: str
    ) -> Record | Exception:
        """The event's record, its value encoded; or why it cannot be encoded."""
        try:
            encoded = orjson.dumps(event)
        except (TypeError, orjson.JSONEncodeError) as exc:
            return exc
        return _EncodedRecord(
            self._topics.events,
            kafka_key(event),
            event,
            _headers(event, verdict.schema, source_id),
            verdict.schema_id,
            encoded,
            event,
        )

    def _dead_letter(self, event: dict[str, Any], verdict: Verdict, source_id: str) -> Record:
        headers = _headers(event, verdict.schema, source_id)
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


# What a dead letter keeps of an event that could not be protected.
_IDENTIFYING = ("type", "messageId", "userId", "anonymousId", "event", "receivedAt", "timestamp")


@dataclass(frozen=True)
class _EncodedRecord(Record):
    """A record whose value was encoded while it was prepared, so that an event that cannot be
    encoded is dead-lettered alone, and no value is encoded twice. The bytes stand for
    ``encoded_from``: a copy with another value (``dataclasses.replace``) encodes its own."""

    encoded: bytes = field(default=b"", compare=False, repr=False)
    encoded_from: Any = field(default=None, compare=False, repr=False)

    def encode_value(self) -> bytes | None:
        if self.value is None or self.value is not self.encoded_from:
            return super().encode_value()
        if self.schema_id is None:
            return self.encoded
        return b"\x00" + self.schema_id.to_bytes(4, "big") + self.encoded


def _encoded(record: Record) -> Record | Exception:
    """The record with its value encoded, or why the value cannot be."""
    try:
        encoded = orjson.dumps(record.value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        return exc
    return _EncodedRecord(
        record.topic,
        record.key,
        record.value,
        record.headers,
        record.schema_id,
        encoded=encoded,
        encoded_from=record.value,
    )


def _counts_drops(part: Part) -> bool:
    """Whether the events the workers drop of this part count in the ledger: not a replay's
    (accepted long ago), nor a redelivered part's (the pipeline's own copies)."""
    return not part.replay and not part.redelivered


def _count_erased(before: Sequence[Part], after: Sequence[Part], drops: Tally) -> None:
    """Count the events (or queued records) the erasure marks took out of each part."""
    for original, kept in zip(before, after, strict=True):
        if original.size == kept.size or not _counts_drops(original):
            continue
        if original.records is not None:
            left = {id(r) for r in kept.records or ()}
            gone = [_queued_event(r) for r in original.records if id(r) not in left]
        else:
            remaining = {id(e) for e in kept.events}
            gone = [e for e in original.events if id(e) not in remaining]
        for event in gone:
            received = event.get("receivedAt") if isinstance(event, dict) else None
            drops.add(ERASED, original.source_id, received)


def _queued_event(record: Record) -> Any:
    """The event a queued record carries (a dead letter wraps it)."""
    value = record.value
    if isinstance(value, dict) and isinstance(value.get("event"), dict) and "reason" in value:
        return value["event"]
    return value


def _copy(event: Any) -> Any:
    """A JSON copy of an event; one that cannot be encoded, made encodable."""
    try:
        return orjson.loads(orjson.dumps(event))
    except (TypeError, orjson.JSONEncodeError):
        return _json_safe(event)


def _copies(parts: Sequence[Part]) -> tuple[list[list[dict[str, Any]]], dict[int, Verdict]]:
    """JSON copies of each part's events (one encoding for all of them), and the failure of each
    event that could not be encoded (keyed by the id of its copy)."""
    try:
        return orjson.loads(orjson.dumps([part.events for part in parts])), {}
    except (TypeError, orjson.JSONEncodeError):
        pass
    failed: dict[int, Verdict] = {}
    batches = []
    for part in parts:
        events = []
        for event in part.events:
            try:
                events.append(orjson.loads(orjson.dumps(event)))
            except (TypeError, orjson.JSONEncodeError) as exc:
                events.append(safe := _json_safe(event))
                failed[id(safe)] = _failure(safe, exc, "")
        batches.append(events)
    return batches, failed


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON that always encodes: strings with their lone surrogates replaced,
    integers beyond 64 bits and other values as text, keys as text, cut at _SAFE_DEPTH."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth >= _SAFE_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    return _json_safe(repr(value))


def _error_of(exc: BaseException) -> dict[str, str]:
    message = f"{type(exc).__name__}: {exc}"
    if len(message) > _MAX_ERROR_MESSAGE:
        message = message[: _MAX_ERROR_MESSAGE - 1] + "…"
    return {"path": "/", "keyword": REASON_FAILED, "message": message, "schema": ""}


def _failure(event: Any, exc: BaseException, schema: str) -> Verdict:
    """The verdict on an event that raised: dead-lettered alone, with the error."""
    message_id = event.get("messageId") if isinstance(event, dict) else None
    log.warning("event %s dead-lettered, it raised %r", message_id, exc, exc_info=exc)
    return Verdict(schema=schema, errors=[_error_of(exc)], reason=REASON_FAILED)


_OUTCOMES = {"schema_validation": "invalid"}

# The dead-letter reason of a record Kafka will never accept (its size, an unknown or forbidden
# topic), and what such a dead letter keeps of an event too large for Kafka.
REJECTED = "kafka_rejected"
_PREVIEW_CHARS = 1000
_MAX_KEPT_ERRORS = 20


def _summary(event: Any) -> dict[str, Any]:
    """What a dead letter carries of an event too large for Kafka: enough to find it (its
    messageId, type, name and receipt time) and see what made it large (its size, the start
    of it)."""
    text = orjson.dumps(event).decode()
    fields = event if isinstance(event, dict) else {}
    return {
        "messageId": fields.get("messageId"),
        "type": fields.get("type"),
        "event": fields.get("event"),
        "receivedAt": fields.get("receivedAt"),
        "size": len(text.encode()),
        "preview": text[:_PREVIEW_CHARS],
        "truncated": True,
    }


def is_summary(event: Any) -> bool:
    """Whether a dead letter's event is a summary of one too large for Kafka (``_summary``):
    it cannot be replayed, the event itself being gone."""
    return isinstance(event, dict) and event.get("truncated") is True and "preview" in event


def _outcome(verdict: Verdict) -> str:
    return "valid" if verdict.valid else _OUTCOMES.get(verdict.reason, verdict.reason)


def _count(deliveries: list[Delivery], topics: Topics, clock: Clock) -> None:
    """Published and dead-lettered events, and end-to-end latency, of the delivered records."""
    now = clock.now()
    published: Counter[tuple[str, str]] = Counter()
    dead: Counter[tuple[str, str, str]] = Counter()
    requests: set[str] = set()  # a request's events share their receivedAt
    for delivery in deliveries:
        if delivery.error is not None:
            continue
        record, headers = delivery.record, delivery.record.headers
        source, kind = headers.get("source-id", ""), headers.get("event-type", "")
        if record.topic == topics.deadletter:
            dead[source, kind, headers.get("error-kind", "")] += 1
        else:
            published[source, kind] += 1
            if record.value and isinstance(record.value.get("receivedAt"), str):
                requests.add(record.value["receivedAt"])
    for received_at in requests:
        received = parse_ts(received_at)
        if received is not None:
            END_TO_END_SECONDS.observe(max(0.0, (now - received).total_seconds()))
    for labels, count in published.items():
        EVENTS_PUBLISHED.labels(*labels).inc(count)
    for dead_labels, count in dead.items():
        EVENTS_DEAD_LETTERED.labels(*dead_labels).inc(count)


def _headers(event: dict[str, Any], schema: str, source_id: str) -> dict[str, str]:
    return {
        "event-id": str(event.get("messageId", "")),
        "event-type": str(event.get("type", "")),
        "schema": schema,
        "source-id": source_id,
    }


def _event_id(delivery: Delivery) -> str:
    return delivery.record.headers.get("event-id", "")


@dataclass
class _Job:
    """One part's events on their way through ``prepare``."""

    source_id: str
    switches: EnrichmentSettings
    events: list[dict[str, Any]]
    verdicts: list[Verdict]


def _part_spans(parts: Sequence[Part]) -> AbstractContextManager[list[Span]]:
    """The span of the ingest task for each part, continuing its request's trace; the first
    recorded one is current, so the task's Redis and Postgres round-trips are its children and
    link to the others (``telemetry.request_spans``); an error is recorded on all of them."""
    return request_spans(INGEST_TASK, [part.traceparent for part in parts])
