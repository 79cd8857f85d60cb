"""Who is calling: a source (its write key, as the HTTP Basic username or ``writeKey`` in the
body) or an operator (``Authorization: Bearer $ADMIN_TOKEN``, compared in constant time)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import request

from clicktrail.errors import Forbidden, Unauthorized
from clicktrail.sources import Source
from clicktrail.web.services import Services


def basic_write_key() -> str | None:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    return auth.username or None


def authenticate(services: Services, write_key: str | None, charge: bool = True) -> Source:
    """The source of a write key; 401 when it is missing, unknown, revoked or expired.

    With ``charge`` the request costs the source one event of its rate limit (429 beyond it):
    every endpoint that takes a write key counts. Ingest and validate pass False and charge
    their events once they have read them."""
    if not write_key:
        raise Unauthorized(
            "missing_write_key",
            "send the source's write key as the HTTP Basic username or as writeKey in the body",
        )
    source = services.sources.by_write_key(write_key)
    if source is None:
        raise Unauthorized("invalid_write_key", "the write key is unknown, revoked or expired")
    if charge and services.admission is not None:
        services.admission.check_rate(source, 1)
    return source


def require_admin(services: Services) -> None:
    """The request carries the admin token: 401 when not, 403 when none is configured."""
    if services.admin_token is None:
        raise Forbidden("admin_disabled", "the admin API is off: set ADMIN_TOKEN to turn it on")
    auth = request.authorization
    token = auth.token if auth is not None and auth.type == "bearer" else None
    if not hmac.compare_digest((token or "").encode(), services.admin_token.encode()):
        raise Unauthorized("invalid_admin_token", "send Authorization: Bearer <ADMIN_TOKEN>")


def source_or_admin(services: Services) -> Source | None:
    """A bearer token is an operator's (None once checked); otherwise the write key's source."""
    auth = request.authorization
    if auth is not None and auth.type == "bearer":
        require_admin(services)
        return None
    return authenticate(services, basic_write_key())


def debugger_or_admin(services: Services, source_of: Callable[[str], str | None]) -> str | None:
    """The id of the source a debugger key (``Authorization: Bearer``) is for, or None for the
    admin token; 401 otherwise. A write key is refused: every page with a browser SDK shows it,
    and what a debugger key opens shows every visitor's events."""
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        raise Unauthorized(
            "write_key_not_accepted",
            "this does not take write keys (every page with a browser SDK shows them):"
            " send Authorization: Bearer <debugger key>"
            " (clicktrail sources debugger-key NAME) or the admin token",
        )
    token = auth.token if auth is not None and auth.type == "bearer" else None
    if not token:
        raise Unauthorized(
            "missing_debugger_key",
            "send Authorization: Bearer <debugger key> (clicktrail sources debugger-key NAME)"
            " or the admin token",
        )
    admin = services.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.encode()):
        return None
    source_id = source_of(token)
    if source_id is None:
        raise Unauthorized(
            "invalid_debugger_key", "the debugger key or admin token is unknown or revoked"
        )
    return source_id
