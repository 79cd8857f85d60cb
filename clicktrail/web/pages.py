"""The API's static pages (the live debugger, the API docs): files from static/, served with one
strict policy. A page loads nothing but the API's own files and talks to nothing but the API."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flask import Response, request
from werkzeug.http import generate_etag

STATIC = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (the ETag makes that a 304), so a new release shows at once.
    "Cache-Control": "no-cache",
}


@cache
def _contents(path: Path) -> tuple[bytes, str]:
    """A page's file and its ETag, read and hashed once per process: they are package data, the
    same until the next release (the bundle of /docs is 1.7 MB)."""
    data = path.read_bytes()
    return data, generate_etag(data)


def static_file(path: Path, mimetype: str) -> Response:
    data, etag = _contents(path)
    response = Response(data, mimetype=mimetype, headers=PAGE_HEADERS)
    response.set_etag(etag)
    response.make_conditional(request)  # a 304 when If-None-Match names this ETag
    return response
