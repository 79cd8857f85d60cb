"""Which schema an event is checked against, the source's tracking plan, and the verdict.

- ``track`` events are checked against their event schema (``events/<snake name>``), ``identify``
  and ``group`` against their traits schema (``traits/identify``, ``traits/group``), other calls
  against their envelope (``calls/<type>``). Without a specific schema, the envelope applies.
- An event may name the version it was written for in ``context.schema``
  (``product_viewed/1-0-0``, or ``events/product_viewed/1-0-0``); otherwise the latest applies,
  so old and new clients flow side by side.
- A source's tracking plan may list the track events it may send and say what happens to a
  track event with no schema: ``allow`` (the default) or ``deadletter`` (as unplanned).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clicktrail.errors import InvalidSettings
from clicktrail.intake import CALL_TYPES
from clicktrail.schemas import (
    RecordSchema,
    SchemaCatalogueError,
    SchemaRegistry,
    SchemaVer,
    error_entry,
    event_schema_name,
)

REASON_INVALID = "schema_validation"
REASON_UNPLANNED = "unplanned"
# The schema an event needs is not in the catalogue or the registry (replay once it is).
REASON_MISSING = "schema_missing"
UNPLANNED_POLICIES = ("allow", "deadletter")


@dataclass(frozen=True)
class TrackingPlan:
    """``events``: the track events a source may send (None: any); ``unplanned``: what happens to
    a track event without a schema."""

    events: frozenset[str] | None = None
    unplanned: str = "allow"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TrackingPlan:
        """The plan in a source's settings (``tracking_plan``); InvalidSettings (a ValueError)
        names what is wrong."""
        plan = settings.get("tracking_plan")
        if plan is None:
            return cls()
        if not isinstance(plan, dict):
            raise InvalidSettings("tracking_plan must be an object")
        events = plan.get("events")
        if events is not None and (
            not isinstance(events, list) or not all(isinstance(e, str) and e for e in events)
        ):
            raise InvalidSettings("tracking_plan.events must be a list of event names")
        unplanned = plan.get("unplanned", "allow")
        if unplanned not in UNPLANNED_POLICIES:
            raise InvalidSettings(
                f"tracking_plan.unplanned must be one of {', '.join(UNPLANNED_POLICIES)}"
            )
        return cls(None if events is None else frozenset(events), unplanned)

    def to_settings(self) -> dict[str, Any]:
        plan: dict[str, Any] = {"unplanned": self.unplanned}
        if self.events is not None:
            plan["events"] = sorted(self.events)
        return plan


ALLOW_ALL = TrackingPlan()


@dataclass(frozen=True)
class Verdict:
    """The outcome for one event: the schema it was checked against and every error."""

    schema: str
    errors: list[dict[str, str]]
    reason: str = REASON_INVALID
    schema_id: int | None = None

    @property
    def valid(self) -> bool:
        return not self.errors


def specific_schema(event: dict[str, Any]) -> tuple[str, str]:
    """(kind, name) of the most specific schema for an event of a known call type."""
    call_type = event["type"]
    if call_type == "track":
        name = event.get("event")
        if isinstance(name, str) and event_schema_name(name):
            return "events", event_schema_name(name)
        return "calls", "track"
    if call_type in ("identify", "group"):
        return "traits", call_type
    return "calls", call_type


class EventValidator:
    def __init__(self, registry: SchemaRegistry) -> None:
        self._registry = registry

    def validate(self, event: dict[str, Any], plan: TrackingPlan = ALLOW_ALL) -> Verdict:
        """Check one event; raises DependencyUnavailable when the schema registry is down."""
        call_type = event.get("type")
        if call_type not in CALL_TYPES:
            message = f"type must be one of {', '.join(CALL_TYPES)}"
            return Verdict(
                "calls/unknown", [error_entry("/type", "enum", message, "calls/unknown")]
            )
        kind, name = specific_schema(event)
        version, problem = requested_version(event, kind, name)
        specific = None if problem is not None else self._registry.record(kind, name, version)
        if specific is not None:
            record = specific
        else:  # the envelope decides, or reports what is wrong
            fallback = self._envelope(event, call_type, kind, name, version, problem)
            if isinstance(fallback, Verdict):
                return fallback
            record = fallback

        unplanned: list[dict[str, str]] = []
        if call_type == "track":
            event_name = event.get("event")
            if plan.events is not None and event_name not in plan.events:
                unplanned.append(
                    error_entry(
                        "/event",
                        "trackingPlan",
                        f"{event_name!r} is not in this source's tracking plan",
                        "",
                    )
                )
            elif specific is None and plan.unplanned == "deadletter":
                unplanned.append(
                    error_entry(
                        "/event",
                        "trackingPlan",
                        f"no schema describes {event_name!r} (events/{name})",
                        "",
                    )
                )
        errors = record.errors(event)
        if unplanned:
            for error in unplanned:
                error["schema"] = record.key
            return Verdict(record.key, [*unplanned, *errors], REASON_UNPLANNED, record.schema_id)
        return Verdict(record.key, errors, schema_id=record.schema_id)

    def _envelope(
        self,
        event: dict[str, Any],
        call_type: str,
        kind: str,
        name: str,
        version: str | None,
        problem: dict[str, str] | None,
    ) -> RecordSchema | Verdict:
        """The call's envelope, for an event without a schema of its own; or the verdict on an
        event whose ``context.schema`` is wrong or names what is missing, or whose envelope is."""
        envelope = self._registry.record("calls", call_type)
        if envelope is None:
            where = self._registry.locate("calls", call_type)
            message = f"no envelope schema for {call_type} calls: {where} is missing"
            key = f"calls/{call_type}"
            return Verdict(key, [error_entry("/type", "schema", message, key)], REASON_MISSING)
        if problem is not None:
            problem["schema"] = envelope.key
            return Verdict(
                envelope.key, [problem, *envelope.errors(event)], schema_id=envelope.schema_id
            )
        if version is not None:
            where = self._registry.locate(kind, name, version)
            message = f"context.schema names {kind}/{name}/{version}, which is missing: {where}"
            errors = [
                error_entry("/context/schema", "schema", message, envelope.key),
                *envelope.errors(event),
            ]
            return Verdict(envelope.key, errors, REASON_MISSING, envelope.schema_id)
        return envelope


def requested_version(
    event: dict[str, Any], kind: str, name: str
) -> tuple[str | None, dict[str, str] | None]:
    """The version named in ``context.schema``, or a problem with what it names."""
    context = event.get("context")
    requested = context.get("schema") if isinstance(context, dict) else None
    if requested is None:
        return None, None
    parts = requested.split("/") if isinstance(requested, str) else []
    if len(parts) == 3:
        named_kind, named, version = parts
    elif len(parts) == 2:
        named_kind, (named, version) = kind, parts
    else:
        return None, error_entry(
            "/context/schema", "schema", "context.schema must look like name/1-0-0", ""
        )
    try:
        SchemaVer.parse(version)
    except SchemaCatalogueError as exc:
        return None, error_entry("/context/schema", "schema", str(exc), "")
    if (named_kind, named) != (kind, name):
        message = (
            f"context.schema names {named_kind}/{named}, but this event's schema is {kind}/{name}"
        )
        return None, error_entry("/context/schema", "schema", message, "")
    return version, None
