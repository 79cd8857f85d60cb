"""The OpenAPI document describes every route the API has, and nothing it lacks."""

from __future__ import annotations

import re

from clicktrail.web.openapi import document
from tests.support.web import twin_app, twin_services

# The static pages' files (the debugger's and the API page's) answer with no error of their own.
PAGES = ("/debugger", "/docs")


def routes() -> set[tuple[str, str]]:
    app = twin_app(twin_services())
    found = set()
    for rule in app.url_map.iter_rules():
        # /v1/<any(track, page, ...):call_type> is one rule for six documented paths.
        choices = re.fullmatch(r"(.*)<any\((.*)\):\w+>", rule.rule)
        paths = (
            [choices.group(1) + c.strip() for c in choices.group(2).split(",")]
            if choices
            else [re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)]
        )
        for path in paths:
            for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
                found.add((path, method.lower()))
    return found


def documented() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    # Path parameters are named after the API's JSON fields (sessionId, userId).
    rename = {
        "{session_id}": "{sessionId}",
        "{user_id}": "{userId}",
        "{message_id}": "{messageId}",
    }
    served = set()
    for path, method in routes():
        for old, new in rename.items():
            path = path.replace(old, new)
        served.add((path, method))

    assert served == documented()


def test_the_app_serves_the_document() -> None:
    response = twin_app(twin_services()).test_client().get("/openapi.json")

    assert response.status_code == 200
    assert response.json["openapi"] == "3.1.0"
    assert set(response.json["paths"]) == {path for path, _ in documented()}


def test_every_operation_documents_its_errors_in_the_one_error_shape() -> None:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            static = path in ("/livez", "/readyz", "/openapi.json") or path.startswith(PAGES)
            if method == "parameters" or static:
                continue
            errors = [code for code in operation["responses"] if code.startswith(("4", "5"))]
            assert errors, f"{method} {path} documents no error"
            for code in errors:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
