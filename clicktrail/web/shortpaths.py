"""The short paths Segment's browser library (analytics.js) posts single calls to, ``/v1/t``,
``/p``, ``/s``, ``/i``, ``/g`` and ``/a``, and its batching mode and mobile libraries post
batches to, ``/v1/b``. Segment's API answers them as it does ``/v1/track`` ... ``/v1/batch``;
so does this one, through the very same views."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from clicktrail.web import ingest

bp = Blueprint("shortpaths", __name__)

SHORT_PATHS = {
    "t": "track",
    "p": "page",
    "s": "screen",
    "i": "identify",
    "g": "group",
    "a": "alias",
}


@bp.post(f"/v1/<any({', '.join(SHORT_PATHS)}):letter>")
def single(letter: str) -> dict[str, Any]:
    return ingest.single(SHORT_PATHS[letter])


@bp.post("/v1/b")
def batch() -> dict[str, Any]:
    return ingest.batch()
