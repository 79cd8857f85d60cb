"""The API over twins, for unit tests of its edge."""

from __future__ import annotations

import base64
from typing import Any

from flask import Flask

from clicktrail.config import Settings
from clicktrail.schemas import FileSchemaRegistry
from clicktrail.validation import EventValidator
from clicktrail.web import create_app
from clicktrail.web.services import Services
from tests.support.paths import PROJECT_ROOT
from tests.support.twins import (
    FixedClock,
    MemoryProfiles,
    MemorySessionViews,
    MemorySources,
    RecordingEnqueuer,
)

VALIDATOR = EventValidator(FileSchemaRegistry(PROJECT_ROOT / "schemas"))


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def twin_services(
    sources: MemorySources | None = None, enqueuer: RecordingEnqueuer | None = None, **more: Any
) -> Services:
    return Services(
        sources=sources or MemorySources({}),
        enqueuer=enqueuer or RecordingEnqueuer(),
        validator=VALIDATOR,
        sessions=more.pop("sessions", None) or MemorySessionViews(),
        profiles=more.pop("profiles", None) or MemoryProfiles(),
        clock=FixedClock(),
        **more,
    )


def twin_app(services: Services, **env: str) -> Flask:
    return create_app(Settings.from_env({"LOG_FORMAT": "console", **env}), services)
