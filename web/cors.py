"""Browser access (CORS), per source.

A source's settings may list ``allowed_origins`` (``https://shop.example``,
``https://*.shop.example``); a browser request from any other origin is refused (403), and a
source without the list accepts every origin, as Segment's API does. Preflight requests carry
no credentials, so they are answered for any origin; the actual request, which names its
source, is where the list is enforced.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from flask import Flask, Response, g, request

from clicktrail.errors import Forbidden
from clicktrail.sources import Source

# X-Retry-Count: Segment's browser library on a retry; AnonymousId: RudderStack's.
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, X-Request-ID, traceparent, X-Retry-Count, "
    "AnonymousId"
)
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
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "86400"
        return response
