"""Validations per second on one core, of the sample events against the shipped schemas.

``accept``: valid events through the compiled path (what the pipeline does for nearly every
event); ``reject``: invalid ones, with the detailed report; ``baseline_jsonschema``: the same
valid events through plain ``jsonschema`` validators, compiled once, in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from bench.paths import PROJECT_ROOT
from clicktrail.schemas import FileSchemaRegistry
from clicktrail.validation import EventValidator, specific_schema

SAMPLES = PROJECT_ROOT / "tests" / "data" / "events"


def _rate(work: Callable[[], int], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += work()
    return done / elapsed


def _samples(kind: str) -> list[dict[str, Any]]:
    loaded = [orjson.loads(p.read_bytes()) for p in sorted((SAMPLES / kind).glob("*.json"))]
    return [case["event"] if kind == "invalid" else case for case in loaded]


def measure(seconds: float = 2.0, schemas: Path = PROJECT_ROOT / "schemas") -> dict[str, Any]:
    registry = FileSchemaRegistry(schemas)
    validator = EventValidator(registry)
    valid, invalid = _samples("valid"), _samples("invalid")
    assert all(validator.validate(e).valid for e in valid)
    assert not any(validator.validate(e).valid for e in invalid)

    plain: list[tuple[Draft202012Validator, dict[str, Any]]] = []
    for event in valid:
        kind, name = specific_schema(event)
        record = registry.record(kind, name) or registry.record("calls", event["type"])
        assert record is not None
        plain.append(
            (
                Draft202012Validator(
                    record.document, format_checker=Draft202012Validator.FORMAT_CHECKER
                ),
                event,
            )
        )

    def accept() -> int:
        for event in valid:
            validator.validate(event)
        return len(valid)

    def reject() -> int:
        for event in invalid:
            validator.validate(event)
        return len(invalid)

    def baseline() -> int:
        for schema, event in plain:
            schema.is_valid(event)
        return len(plain)

    accepted, rejected, base = (
        _rate(accept, seconds),
        _rate(reject, seconds),
        _rate(baseline, seconds),
    )
    return {
        "accept_per_s": round(accepted),
        "reject_with_report_per_s": round(rejected),
        "baseline_jsonschema_per_s": round(base),
        "accept_ratio_vs_jsonschema": round(accepted / base, 1),
        "samples": {"valid": len(valid), "invalid": len(invalid)},
    }
