"""Sample events in tests/data/events: valid ones, and invalid ones with their expected errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

DATA = Path(__file__).resolve().parent.parent / "data" / "events"


def valid_events() -> dict[str, dict[str, Any]]:
    return {p.stem: orjson.loads(p.read_bytes()) for p in sorted((DATA / "valid").glob("*.json"))}


def invalid_events() -> dict[str, tuple[dict[str, Any], list[tuple[str, str]]]]:
    cases = {}
    for path in sorted((DATA / "invalid").glob("*.json")):
        case = orjson.loads(path.read_bytes())
        cases[path.stem] = (case["event"], [tuple(e) for e in case["expected"]])
    return cases
