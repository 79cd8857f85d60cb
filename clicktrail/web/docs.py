"""The API page at /docs: the OpenAPI document (/openapi.json) in Swagger UI, vendored from npm
(static/docs/vendor, its README.txt says which version and how to update it) and configured by
static/docs/docs.js. Nothing is loaded from elsewhere: the page has the debugger's policy."""

from __future__ import annotations

from flask import Blueprint, Response

from clicktrail.web.pages import STATIC, static_file

bp = Blueprint("docs", __name__)

_FILES = STATIC / "docs"
_HTML = "text/html; charset=utf-8"
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"


@bp.get("/docs")
def page() -> Response:
    return static_file(_FILES / "index.html", _HTML)


@bp.get("/docs/docs.js")
def script() -> Response:
    return static_file(_FILES / "docs.js", _JS)


@bp.get("/docs/swagger-ui-bundle.js")
def swagger_ui() -> Response:
    return static_file(_FILES / "vendor" / "swagger-ui-bundle.js", _JS)


@bp.get("/docs/swagger-ui.css")
def swagger_ui_stylesheet() -> Response:
    return static_file(_FILES / "vendor" / "swagger-ui.css", _CSS)
