"""The live debugger: a page at /debugger and the JSON feed it polls.

The page is static (HTML, CSS and JavaScript in static/debugger, nothing from elsewhere) and
holds no data; the feed wants a credential that is not public (Bearer): a source's debugger key
sees that source only; the admin token sees every source and picks one. A write key is refused:
it is in every page that runs a browser SDK, and the feed shows every visitor's events. Each poll of
``GET /v1/debugger/events`` marks its source as watched for a few seconds, which is what makes
the workers write its events to the debugger stream (see clicktrail.debugger). The page polls
once a second rather than holding a server-sent-events stream open: an open stream would take
one of the API's few threads away from ingest for as long as the page stays open.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from clicktrail.debugger import ENTRY_ID, WATCH_SECONDS
from clicktrail.errors import Forbidden, InvalidInput, NotFound
from clicktrail.web.auth import debugger_or_admin
from clicktrail.web.pages import STATIC, static_file
from clicktrail.web.services import DebugEvents, Services

bp = Blueprint("debugger", __name__)

MAX_LIMIT = 500
_DIGITS = re.compile(r"^[0-9]{1,4}$")
_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "debugger.js": "text/javascript; charset=utf-8",
    "debugger.css": "text/css; charset=utf-8",
}


def _asset(name: str) -> Response:
    return static_file(STATIC / "debugger" / name, _ASSETS[name])


@bp.get("/debugger")
def page() -> Response:
    return _asset("index.html")


@bp.get("/debugger/debugger.js")
def script() -> Response:
    return _asset("debugger.js")


@bp.get("/debugger/debugger.css")
def stylesheet() -> Response:
    return _asset("debugger.css")


def _feed(services: Services) -> DebugEvents:
    if services.debugger is None:
        raise Forbidden(
            "debugger_disabled",
            "the debugger is off: set DEBUGGER_RETENTION_SECONDS above 0 to turn it on",
        )
    return services.debugger


def _no_store(body: dict[str, Any]) -> Response:
    """Debugger answers hold events: no cache may keep them."""
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _caller(services: Services, feed: DebugEvents) -> str | None:
    return debugger_or_admin(services, feed.source_of)


@bp.get("/v1/debugger/sources")
def sources() -> Response:
    """The sources the caller may watch: its own, or every one for the admin token."""
    services: Services = current_app.extensions["clicktrail"]
    feed = _feed(services)
    caller = _caller(services, feed)
    listed = [s for s in services.sources.listing() if caller in (None, s.id)]
    return _no_store(
        {
            "admin": caller is None,
            "retentionSeconds": feed.retention_seconds,
            "sources": [{"id": s.id, "name": s.name} for s in listed],
        }
    )


@bp.get("/v1/debugger/events")
def events() -> Response:
    """A source's latest events newer than ``after``, newest first; marks the source as watched
    for the next ``watchSeconds``."""
    services: Services = current_app.extensions["clicktrail"]
    feed = _feed(services)
    caller = _caller(services, feed)
    source_id = _source_id(services, caller, request.args.get("sourceId") or None)
    after = request.args.get("after")
    if after is not None and not ENTRY_ID.match(after):
        raise InvalidInput(
            "invalid_cursor", "after must be an entry id such as 1767236645678-0", field="after"
        )
    limit = _limit(request.args.get("limit"))
    feed.watch(source_id)
    entries = feed.read(source_id, after, limit)
    return _no_store(
        {
            "sourceId": source_id,
            "retentionSeconds": feed.retention_seconds,
            "watchSeconds": WATCH_SECONDS,
            "cursor": entries[0]["id"] if entries else after,
            "events": entries,
        }
    )


def _source_id(services: Services, caller: str | None, wanted: str | None) -> str:
    """The source to watch: a debugger key's own (404 alike for any other: ids are not secrets,
    but which exist is none of another source's business), or the one the admin names."""
    if caller is not None:
        if wanted not in (None, caller):
            raise NotFound("source_not_found", "no such source for this debugger key")
        return caller
    if wanted is None:
        raise InvalidInput(
            "missing_source",
            "name the source to watch (GET /v1/debugger/sources lists them)",
            field="sourceId",
        )
    if wanted not in {source.id for source in services.sources.listing()}:
        raise NotFound("source_not_found", "no source with that id")
    return wanted


def _limit(raw: str | None) -> int:
    if raw is None:
        return 100
    if not _DIGITS.match(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(
            "invalid_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit"
        )
    return int(raw)
