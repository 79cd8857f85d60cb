"""Browser access (CORS), per source.

A source's settings may list ``allowed_origins`` (``https://shop.example``,
``https://*.shop.example``); a browser request from any other origin is refused (403), and a
source without the list accepts every origin, as Segment's API does. Preflight requests carry
no credentials, so they are answered for any origin; the actual request, which names its
source, is where the list is enforced.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from flask import Flask, Response, g, request

from clicktrail.errors import Forbidden
from clicktrail.sources import Source

ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Request-ID, traceparent"
# Header names a preflight may ask for on top (SDKs add their own: X-Retry-Count, AnonymousId,
# SentAt, ...). Allowing them gives nothing away: what authorises a request is the write key it
# carries, never a cookie, and the source's allowed origins still apply to the request itself.
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
EXPOSED_HEADERS = "X-Request-ID, Retry-After"


def origin_allowed(source: Source, origin: str) -> bool:
    patterns = source.settings.get("allowed_origins")
    if not patterns:
        return True
    return any(fnmatchcase(origin, pattern) for pattern in patterns)


def check_origin(source: Source) -> None:
    """403 for a browser request from an origin the source does not allow."""
    origin = request.headers.get("Origin")
    if origin and not origin_allowed(source, origin):
        g.cors_denied = True
        raise Forbidden("origin_not_allowed", f"this source does not accept requests from {origin}")


def install(app: Flask) -> None:
    @app.after_request
    def cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin or g.get("cors_denied"):
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.vary.add("Origin")
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = _allowed_headers(
                request.headers.get("Access-Control-Request-Headers", "")
            )
            response.headers["Access-Control-Max-Age"] = "86400"
        return response


def _allowed_headers(requested: str) -> str:
    names = ALLOWED_HEADERS.split(", ")
    known = {name.lower() for name in names}
    for name in (n.strip() for n in requested.split(",")):
        if _HEADER_NAME.match(name) and name.lower() not in known:
            known.add(name.lower())
            names.append(name)
    return ", ".join(names[:50])
