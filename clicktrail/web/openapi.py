"""The API's OpenAPI 3.1 description, served at ``GET /openapi.json``.

Written by hand next to the code it describes; a test checks that every route is in it and
schemathesis checks the running API against it. Request schemas describe what the API checks
before it answers (the synchronous checks of clicktrail.intake); what the schemas of schemas/
check happens in the workers, so a call they refuse is still accepted here and dead-lettered.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from clicktrail.intake import (
    CALL_TYPES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    MAX_MESSAGE_ID_CHARS,
    MAX_REQUEST_BYTES,
    NAMED_FIELDS,
)
from clicktrail.message import MAX_EVENT_DEPTH
from clicktrail.web.shortpaths import SHORT_PATHS

VERSION = "1.0.0"

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    if retry_after:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return response


_REJECTIONS = {
    "400": _error("The body is not acceptable; `code` and `field` say why and where."),
    "401": _error("No write key, or one that is unknown, revoked or expired."),
    "403": _error("The request's Origin is not among the source's allowed origins."),
    "413": _error("The body, an event or the batch is over its size limit."),
    "415": _error("A Content-Encoding other than gzip."),
    "429": _error(
        "The source sends faster than its rate limit (a batch larger than a second's allowance "
        "passes only when the source owes nothing, and holds it back until paid for).",
        retry_after=True,
    ),
    "503": _error(
        "The queue is full or a dependency is down; nothing was accepted.", retry_after=True
    ),
}


def _ingest_operation(summary: str, body: dict[str, Any], tag: str = "Tracking") -> dict[str, Any]:
    return {
        "tags": [tag],
        "summary": summary,
        "security": [{"writeKey": []}, {}],
        "requestBody": {
            "required": True,
            "description": "JSON, optionally gzipped (Content-Encoding: gzip), whatever the "
            "Content-Type says: text/plain (navigator.sendBeacon) and "
            "application/x-www-form-urlencoded (RudderStack's Node.js SDK) are read as JSON too.",
            "content": _json(body),
        },
        "responses": {
            "200": {"description": "Accepted: the events are in the queue.",
                    "content": _json(_ref("Success"))},
            **_REJECTIONS,
        },
    }  # fmt: skip


# Fields of each call the pipeline's schemas check (schemas/calls, schemas/events, ...). The API
# accepts a call whatever they hold, so that one bad call never costs a batch its good ones; the
# pipeline dead-letters it with every error, and /v1/validate answers those errors at once.
_CALL_FIELDS = {
    "track": {"event": "string: the event's name", "properties": "object"},
    "page": {"name": "string", "category": "string", "properties": "object"},
    "screen": {"name": "string", "category": "string", "properties": "object"},
    "identify": {"traits": "object"},
    "group": {"groupId": "string", "traits": "object"},
    "alias": {"previousId": "string: the identity merged into userId"},
}


def _checked_downstream(expected: str) -> dict[str, str]:
    return {"description": f"{expected} (checked by the pipeline's schemas, not here)"}


def _call_schema(call_type: str) -> dict[str, Any]:
    fields: dict[str, dict[str, Any]] = {
        name: _checked_downstream(kind) for name, kind in _CALL_FIELDS[call_type].items()
    }
    for name in ("previousId", *NAMED_FIELDS):  # lengths checked here, like userId's
        if name in fields:
            fields[name] = {**fields[name], "maxLength": MAX_ID_CHARS}
    return {
        "allOf": [_ref("Call")],
        "type": "object",
        "properties": {"type": {"const": call_type}, "writeKey": _ref("WriteKey"), **fields},
    }


def _link(operation_id: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link: what a response lets a client call next, with which values."""
    return {"operationId": operation_id, "parameters": parameters}


def _admin_operation(
    tag: str, summary: str, responses: dict[str, Any], security: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"tags": [tag], "summary": summary, "security": security, "responses": responses}


@cache
def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for call_type in CALL_TYPES:
        paths[f"/v1/{call_type}"] = {
            "post": {
                **_ingest_operation(
                    f"Send one {call_type} call (Segment's HTTP Tracking API).",
                    _call_schema(call_type),
                ),
                "operationId": call_type,
            }
        }
    # What an identify lets an operator do next with its userId: see the profile, erase it.
    paths["/v1/identify"]["post"]["responses"]["200"]["links"] = {
        "ShowUser": _link("showUser", userId="$request.body#/userId"),
        "EraseUser": _link("eraseUser", userId="$request.body#/userId"),
    }
    for letter, call_type in SHORT_PATHS.items():
        paths[f"/v1/{letter}"] = {
            "post": {
                **_ingest_operation(
                    f"The same as /v1/{call_type}: the path Segment's browser library posts to.",
                    _call_schema(call_type),
                ),
                "operationId": f"{call_type}Short",
            }
        }
    for path, operation_id in (("/v1/batch", "batch"), ("/v1/import", "import"), ("/v1/b", "b")):
        paths[path] = {
            "post": {
                **_ingest_operation("Send up to 2,500 calls of any type.", _ref("Batch")),
                "operationId": operation_id,
            }
        }
    validate = _ingest_operation(
        "Check calls against their schemas without sending them.",
        {
            "oneOf": [
                {"allOf": [_ref("TypedCall")], "properties": {"writeKey": _ref("WriteKey")}},
                _ref("Batch"),
            ]
        },
        tag="Schemas",
    )
    validate["responses"]["200"] = {
        "description": "The verdict on each call.",
        "content": _json(_ref("Validation")),
    }
    paths["/v1/validate"] = {"post": {**validate, "operationId": "validate"}}

    write_key_or_admin: list[dict[str, Any]] = [{"writeKey": []}, {"admin": []}]
    session_id = {
        "name": "sessionId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
    not_found = _error("No live session with that id (or not the caller's).")
    unauthorized = _error("Missing or wrong credentials.")
    paths["/v1/sessions"] = {
        "post": {
            "operationId": "createSession",
            "tags": ["Sessions"],
            "summary": "Start a server-issued session.",
            "security": [{"writeKey": []}, {}],
            "requestBody": {
                "required": False,
                "content": _json(
                    {"type": "object", "properties": {"writeKey": {"type": ["string", "null"]}}}
                ),
            },
            "responses": {
                "201": {
                    "description": "The new session.",
                    "content": _json(_ref("NewSession")),
                    "links": {
                        "ShowSession": _link("showSession", sessionId="$response.body#/sessionId"),
                        "EndSession": _link("endSession", sessionId="$response.body#/sessionId"),
                        # An event that joins the session it names.
                        "TrackInSession": {
                            "operationId": "track",
                            "requestBody": {"context": {"sessionId": "$response.body#/sessionId"}},
                        },
                        "IdentifyInSession": {
                            "operationId": "identify",
                            "requestBody": {"context": {"sessionId": "$response.body#/sessionId"}},
                        },
                    },
                },
                "400": _error("The body is not a JSON object, or its writeKey not a string."),
                "401": unauthorized,
                "403": _REJECTIONS["403"],
                "429": _REJECTIONS["429"],
                "503": _REJECTIONS["503"],
            },
        }
    }
    paths["/v1/sessions/{sessionId}"] = {
        "parameters": [session_id],
        "get": {
            "operationId": "showSession",
            **_admin_operation(
                "Sessions",
                "A live session.",
                {
                    "200": {"description": "The session.", "content": _json(_ref("Session"))},
                    "401": unauthorized,
                    "403": _error("The admin API is off (no ADMIN_TOKEN)."),
                    "404": not_found,
                    "429": _REJECTIONS["429"],
                    "503": _REJECTIONS["503"],
                },
                write_key_or_admin,
            ),
        },
        "delete": {
            "operationId": "endSession",
            **_admin_operation(
                "Sessions",
                "End a live session now.",
                {
                    "204": {"description": "Ended."},
                    "401": unauthorized,
                    "403": _error("The admin API is off (no ADMIN_TOKEN)."),
                    "404": not_found,
                    "429": _REJECTIONS["429"],
                    "503": _REJECTIONS["503"],
                },
                write_key_or_admin,
            ),
        },
    }
    user_id = {
        "name": "userId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
    }
    admin_only: list[dict[str, Any]] = [{"admin": []}]
    admin_errors = {
        "400": _error(f"The userId is longer than {MAX_ID_CHARS} characters."),
        "401": _error("Missing or wrong admin token."),
        "403": _error("The admin API is off (no ADMIN_TOKEN)."),
        "503": _REJECTIONS["503"],
    }
    paths["/v1/users/{userId}"] = {
        "parameters": [user_id],
        "get": {
            "operationId": "showUser",
            **_admin_operation(
                "Users",
                "A user's profile.",
                {
                    "200": {"description": "The profile.", "content": _json(_ref("Profile"))},
                    "404": _error("No profile for that userId."),
                    **admin_errors,
                },
                admin_only,
            ),
        },
        "delete": {
            "operationId": "eraseUser",
            **_admin_operation(
                "Users",
                "Erase a user: profile, history and sessions (done by the purge task).",
                {
                    "202": {"description": "Filed.", "content": _json(_ref("Erasure"))},
                    **admin_errors,
                },
                admin_only,
            ),
        },
    }
    _debugger_paths(paths, [{"debuggerKey": []}, {"admin": []}])
    paths["/v1/events/{messageId}"] = {
        "parameters": [
            {
                "name": "messageId",
                "in": "path",
                "required": True,
                "description": "The event's messageId, as its SDK sent it.",
                "schema": {"type": "string", "maxLength": MAX_MESSAGE_ID_CHARS},
            }
        ],
        "get": {
            "operationId": "eventReceipt",
            **_admin_operation(
                "Receipts",
                "What became of one event: received when and by which source, published where "
                "(topic, partition, offset, schema) or dead-lettered why, in the history, erased. "
                "A debugger key sees its own source's events only.",
                {
                    "200": {"description": "The receipt.", "content": _json(_ref("Receipt"))},
                    "400": _error("A messageId over its length limit."),
                    "401": _error("No debugger key or admin token, a wrong one, or a write key."),
                    "404": _error(
                        "Nothing is known of the event yet (`event_not_found`): it may still be "
                        "queued, or was never received. The body also holds the Receipt's "
                        "fields, with the queue's depth."
                    ),
                    "503": _REJECTIONS["503"],
                },
                [{"debuggerKey": []}, {"admin": []}],
            ),
        },
    }
    for path, operation_id in (
        ("/sourceConfig", "sourceConfig"),
        ("/sourceConfig/", "sourceConfigSlash"),
    ):
        paths[path] = {
            "get": {
                "operationId": operation_id,
                "tags": ["Tracking"],
                "summary": "The source configuration RudderStack's SDKs fetch from their control "
                "plane before sending: the write key's source, enabled, no device-mode "
                "destinations.",
                "security": [{"writeKey": []}],
                "responses": {
                    "200": {"description": "The source.", "content": _json(_ref("SourceConfig"))},
                    "401": unauthorized,
                    "403": _REJECTIONS["403"],
                    "429": _REJECTIONS["429"],
                    "503": _REJECTIONS["503"],
                },
            }
        }
    paths["/livez"] = {
        "get": {
            "operationId": "livez",
            "tags": ["Operations"],
            "summary": "The process is up (calls no dependency).",
            "security": [{}],
            "responses": {"200": {"description": "Up.", "content": _json(_ref("Status"))}},
        }
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "tags": ["Operations"],
            "summary": "Every dependency answers.",
            "security": [{}],
            "parameters": [
                {
                    "name": "scope",
                    "in": "query",
                    "description": "`intake`: only what taking events needs (Redis, the queue, "
                    "Postgres), for a load balancer's readiness check.",
                    "schema": {"type": "string", "enum": ["all", "intake"], "default": "all"},
                },
            ],
            "responses": {
                "200": {"description": "Ready.", "content": _json(_ref("Readiness"))},
                "400": _error("A scope other than all or intake."),
                "503": {"description": "Not ready.", "content": _json(_ref("Readiness"))},
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "tags": ["Operations"],
            "summary": "Prometheus metrics (a bearer token when METRICS_TOKEN is set).",
            "security": [{"metrics": []}, {}],
            "responses": {
                "200": {
                    "description": "The Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": _error("METRICS_TOKEN is set and the request lacks it."),
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "tags": ["Operations"],
            "summary": "This document.",
            "security": [{}],
            "responses": {
                "200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}
            },
        }
    }
    _docs_paths(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clicktrail",
            "version": VERSION,
            "summary": "Customer-behaviour events in, validated and enriched events out to Kafka.",
            "description": (
                "Segment's HTTP Tracking API (any Segment or RudderStack SDK works unchanged), "
                "plus sessions, schema validation, user erasure and operations endpoints. "
                "Every error is `{success: false, code, message, field?}`. Request bodies are "
                "JSON objects in which no object repeats a key and every integer fits in 64 bits "
                "(400 `duplicate_key`, `number_too_large` otherwise), and an event nests at most "
                f"{MAX_EVENT_DEPTH} levels of objects and arrays (400 `too_deep`). Every request "
                "with a write key counts against the source's rate limit: an ingest or validate "
                "request its events, any other one."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The source's write key as the username, no password "
                    "(or `writeKey` in the body).",
                },
                "admin": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN."},
                "debuggerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A source's debugger key (clicktrail sources "
                    "debugger-key NAME); never its write key.",
                },
                "metrics": {"type": "http", "scheme": "bearer", "description": "METRICS_TOKEN."},
            },
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
            "schemas": _schemas(),
        },
    }


def _static_paths(
    paths: dict[str, Any], tag: str, note: str, files: tuple[tuple[str, str, str, str], ...]
) -> None:
    """A static page's files (clicktrail.web.pages): public, revalidated through their ETag."""
    for path, operation_id, media_type, what in files:
        paths[path] = {
            "get": {
                "operationId": operation_id,
                "tags": [tag],
                "summary": what + note,
                "security": [{}],
                "responses": {
                    "200": {
                        "description": what,
                        "content": {media_type: {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "Unchanged since the ETag sent in If-None-Match."},
                },
            }
        }


def _docs_paths(paths: dict[str, Any]) -> None:
    """The page that shows this document to people, and its files."""
    _static_paths(
        paths,
        "Operations",
        "",
        (
            ("/docs", "docsPage", "text/html", "This document in Swagger UI, for people."),
            ("/docs/docs.js", "docsScript", "text/javascript", "The page's script."),
            (
                "/docs/swagger-ui-bundle.js",
                "docsSwaggerUi",
                "text/javascript",
                "Swagger UI (swagger-ui-dist, vendored).",
            ),
            ("/docs/swagger-ui.css", "docsSwaggerUiStylesheet", "text/css", "Its stylesheet."),
        ),
    )


def _debugger_paths(paths: dict[str, Any], security: list[dict[str, Any]]) -> None:
    """The debugger's page and the JSON feed it polls."""
    _static_paths(
        paths,
        "Debugger",
        " Holds no data; the feed below wants credentials.",
        (
            ("/debugger", "debuggerPage", "text/html", "The live debugger's page."),
            ("/debugger/debugger.js", "debuggerScript", "text/javascript", "Its script."),
            ("/debugger/debugger.css", "debuggerStylesheet", "text/css", "Its stylesheet."),
        ),
    )
    errors = {
        "401": _error("No debugger key or admin token, a wrong one, or a write key."),
        "403": _error("The debugger is off."),
        "503": _REJECTIONS["503"],
    }
    paths["/v1/debugger/sources"] = {
        "get": {
            "operationId": "debuggerSources",
            **_admin_operation(
                "Debugger",
                "The sources the caller may watch: a debugger key's own, every one for the admin.",
                {
                    "200": {
                        "description": "The sources.",
                        "content": _json(_ref("DebuggerSources")),
                    },
                    **errors,
                },
                security,
            ),
        }
    }
    paths["/v1/debugger/events"] = {
        "get": {
            "operationId": "debuggerEvents",
            **_admin_operation(
                "Debugger",
                "A source's latest events, newest first, as the workers made them; marks the "
                "source as watched for the next watchSeconds (the workers record its events only "
                "while it is).",
                {
                    "200": {
                        "description": "Events newer than `after`.",
                        "content": _json(_ref("DebuggerEvents")),
                    },
                    "400": _error("A malformed `after` or `limit`, or no `sourceId` (admin)."),
                    "404": _error("No such source (or not the debugger key's)."),
                    **errors,
                },
                security,
            ),
            "parameters": [
                {
                    "name": "sourceId",
                    "in": "query",
                    "description": "The source to watch; a debugger key's own when omitted "
                    "(required with the admin token).",
                    "schema": {"type": "string"},
                },
                {
                    "name": "after",
                    "in": "query",
                    "description": "Only entries newer than this one (the last answer's cursor).",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,19}-[0-9]{1,19}$"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "description": "At most this many entries (the newest).",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                },
            ],
        }
    }


def _debugger_schemas() -> dict[str, Any]:
    json_object = {"type": ["object", "null"]}
    return {
        "DebuggerSources": {
            "type": "object",
            "properties": {
                "admin": {"type": "boolean"},
                "retentionSeconds": {"type": "integer"},
                "sources": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                        "required": ["id", "name"],
                    },
                },
            },
            "required": ["admin", "retentionSeconds", "sources"],
        },
        "DebuggerEntry": {
            "type": "object",
            "description": "One event as the workers made it, or (status skipped) how many "
            "events of a busy source were left out.",
            "properties": {
                "id": {"type": "string", "description": "Entry id: the cursor."},
                "at": {"type": "string", "description": "When the workers recorded it."},
                "status": {"enum": ["published", "dead_lettered", "skipped"]},
                "count": {"type": "integer", "description": "skipped: events left out."},
                "messageId": {"type": ["string", "null"]},
                "type": {"type": ["string", "null"]},
                "name": {"type": ["string", "null"]},
                "schema": {"type": ["string", "null"]},
                "receivedAt": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"]},
                "errors": {"type": "array", "items": _ref("ValidationError")},
                "raw": {
                    **json_object,
                    "description": "As received, IP anonymised and fields pseudonymised.",
                },
                "enriched": {**json_object, "description": "As published (null: dead letter)."},
            },
            "required": ["id", "at", "status"],
        },
        "DebuggerEvents": {
            "type": "object",
            "properties": {
                "sourceId": {"type": "string"},
                "retentionSeconds": {"type": "integer"},
                "watchSeconds": {"type": "integer"},
                "cursor": {"type": ["string", "null"]},
                "events": {"type": "array", "items": _ref("DebuggerEntry")},
            },
            "required": ["sourceId", "retentionSeconds", "watchSeconds", "cursor", "events"],
        },
    }


def _schemas() -> dict[str, Any]:
    identity = {"type": ["string", "null"], "maxLength": MAX_ID_CHARS}
    timestamp = _checked_downstream("string: an ISO 8601 time")
    return {
        "WriteKey": {
            "type": ["string", "null"],
            "description": "The source's write key, instead of HTTP Basic auth.",
        },
        "Call": {
            "type": "object",
            "description": f"One call, at most {MAX_EVENT_BYTES} bytes. Needs a userId or an "
            "anonymousId; the server adds messageId when absent and receivedAt.",
            "properties": {
                "userId": identity,
                "anonymousId": identity,
                "messageId": {"type": ["string", "null"], "maxLength": MAX_MESSAGE_ID_CHARS},
                "timestamp": timestamp,
                "sentAt": timestamp,
                "context": _checked_downstream("object"),
                "integrations": _checked_downstream("object"),
            },
            "anyOf": [
                {
                    "properties": {"userId": {"type": "string", "minLength": 1}},
                    "required": ["userId"],
                },
                {
                    "properties": {"anonymousId": {"type": "string", "minLength": 1}},
                    "required": ["anonymousId"],
                },
            ],
        },
        "TypedCall": {
            "allOf": [_ref("Call")],
            "type": "object",
            "properties": {"type": {"enum": list(CALL_TYPES)}},
            "required": ["type"],
        },
        "Batch": {
            "type": "object",
            "description": f"At most {MAX_BATCH_EVENTS} calls and {MAX_REQUEST_BYTES} bytes; "
            "context, integrations and sentAt apply to every call that lacks its own.",
            "properties": {
                "batch": {
                    "type": "array",
                    "items": _ref("TypedCall"),
                    "minItems": 1,
                    "maxItems": MAX_BATCH_EVENTS,
                },
                "context": _checked_downstream("object: shared by every call"),
                "integrations": _checked_downstream("object: shared by every call"),
                "sentAt": timestamp,
                "writeKey": _ref("WriteKey"),
            },
            "required": ["batch"],
        },
        "Success": {
            "type": "object",
            "properties": {"success": {"const": True}},
            "required": ["success"],
        },
        "Error": {
            "type": "object",
            "properties": {
                "success": {"const": False},
                "code": {"type": "string", "description": "Stable, for programs."},
                "message": {"type": "string", "description": "For people."},
                "field": {
                    "type": "string",
                    "description": "Where in the body, e.g. batch[3].userId.",
                },
            },
            "required": ["success", "code", "message"],
        },
        "ValidationError": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "JSON pointer into the call."},
                "keyword": {"type": "string"},
                "message": {"type": "string"},
                "schema": {"type": "string"},
            },
            "required": ["path", "keyword", "message"],
        },
        "Validation": {
            "type": "object",
            "properties": {
                "valid": {"type": "boolean"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "messageId": {"type": "string"},
                            "type": {"type": "string"},
                            "valid": {"type": "boolean"},
                            "schema": {"type": ["string", "null"]},
                            "reason": {"type": "string"},
                            "errors": {"type": "array", "items": _ref("ValidationError")},
                        },
                        "required": ["messageId", "type", "valid", "errors"],
                    },
                },
            },
            "required": ["valid", "results"],
        },
        "Session": {
            "type": "object",
            "properties": {
                "sessionId": {"type": "string"},
                "sourceId": {"type": "string"},
                "userId": {"type": ["string", "null"]},
                "anonymousId": {"type": ["string", "null"]},
                "index": {"type": ["integer", "null"]},
                "startedAt": {"type": "string"},
                "lastSeen": {"type": ["string", "null"]},
                "eventCount": {"type": "integer"},
                "expiresAt": {"type": "string"},
            },
            "required": ["sessionId", "sourceId", "startedAt", "eventCount", "expiresAt"],
        },
        "NewSession": {
            "allOf": [_ref("Session")],
            "type": "object",
            "properties": {"timeoutSeconds": {"type": "integer"}},
            "required": ["timeoutSeconds"],
        },
        "Profile": {
            "type": "object",
            "properties": {
                "userId": {"type": "string"},
                "traits": {"type": "object"},
                "aliases": {"type": "array", "items": {"type": "string"}},
                "firstSeen": {"type": ["string", "null"]},
                "lastSeen": {"type": ["string", "null"]},
            },
            "required": ["userId", "traits", "aliases"],
        },
        "Erasure": {
            "type": "object",
            "properties": {
                "erasureId": {"type": "integer"},
                "userId": {"type": "string"},
                "status": {"const": "pending"},
                "new": {"type": "boolean"},
            },
            "required": ["erasureId", "userId", "status", "new"],
        },
        "Receipt": {
            "type": "object",
            "properties": {
                "messageId": {"type": "string"},
                "status": {
                    "enum": ["published", "dead_lettered", "erased", "delivered", "not_found"]
                },
                "explanation": {"type": "string"},
                "receipts": {
                    "type": "array",
                    "description": "One per request that carried the messageId, oldest first.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "status": {"enum": ["published", "dead_lettered", "erased"]},
                            "receivedAt": {"type": "string"},
                            "sourceId": {"type": "string"},
                            "erasedAt": {"type": "string"},
                            "type": {"type": ["string", "null"]},
                            "event": {"type": ["string", "null"]},
                            "inHistory": {"type": "boolean"},
                            "published": _ref("ReceiptRecord"),
                            "deadLettered": _ref("ReceiptRecord"),
                        },
                        "required": ["status", "receivedAt", "sourceId"],
                    },
                },
                "deliveredBy": {"type": "array", "items": {"type": "string"}},
                "queue": {
                    "type": "object",
                    "properties": {"depth": {"type": ["integer", "null"]}},
                    "required": ["depth"],
                },
                "dedupeWindowSeconds": {"type": "integer"},
            },
            "required": ["messageId", "status", "explanation", "receipts"],
        },
        "ReceiptRecord": {
            "type": "object",
            "properties": {
                "topic": {"type": "string"},
                "partition": {"type": ["integer", "null"]},
                "offset": {"type": ["integer", "null"]},
                "schema": {"type": ["string", "null"]},
                "at": {"type": ["string", "null"]},
                "reason": {"type": "string"},
                "errors": {"type": "array", "items": _ref("ValidationError")},
            },
            "required": ["topic", "partition", "offset"],
        },
        "Status": {
            "type": "object",
            "properties": {"status": {"const": "ok"}},
            "required": ["status"],
        },
        **_debugger_schemas(),
        "SourceConfig": {
            "type": "object",
            "properties": {
                "isHosted": {"const": False},
                "source": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "writeKey": {"type": "string"},
                        "enabled": {"const": True},
                        "workspaceId": {"type": "string"},
                        "config": {"type": "object"},
                        "destinations": {"type": "array", "maxItems": 0},
                        "updatedAt": {"type": "string"},
                    },
                    "required": [
                        "id",
                        "name",
                        "writeKey",
                        "enabled",
                        "workspaceId",
                        "config",
                        "destinations",
                        "updatedAt",
                    ],
                },
            },
            "required": ["source"],
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "checks": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "status": {"enum": ["ok", "down"]},
                            "error": {"type": "string"},
                        },
                        "required": ["status"],
                    },
                },
            },
            "required": ["status", "checks"],
        },
    }
