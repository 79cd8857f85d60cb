"""The API page at /docs at the edge: its files, their policy and caching, and that the page asks
for nothing but this API's own files (Swagger UI rendering the document is tested in a browser,
tests/integration/test_docs_browser.py)."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from clicktrail.web.pages import STATIC
from tests.support.web import twin_app, twin_services

VENDOR = STATIC / "docs" / "vendor"
FILES = {
    "/docs": "text/html",
    "/docs/docs.js": "text/javascript",
    "/docs/swagger-ui-bundle.js": "text/javascript",
    "/docs/swagger-ui.css": "text/css",
}


class References(HTMLParser):
    """Every URL the page names, and anything it would run or style inline."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data"):
                self.urls.append((tag, value or ""))
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}>")
        if tag == "style":
            self.inline.append("<style>")
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("<script> with a body")


def client() -> Any:
    return twin_app(twin_services()).test_client()


@pytest.mark.parametrize(("path", "mimetype"), FILES.items())
def test_each_file_is_served_with_its_type_the_policy_and_revalidation(
    path: str, mimetype: str
) -> None:
    api = client()

    response = api.get(path)
    again = api.get(path, headers={"If-None-Match": response.headers["ETag"]})

    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.mimetype_params == {"charset": "utf-8"}
    assert response.data
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert (again.status_code, again.data) == (304, b"")
    assert again.headers["Content-Security-Policy"] == response.headers["Content-Security-Policy"]


def test_the_page_has_the_debuggers_strict_policy() -> None:
    api = client()

    policy = api.get("/docs").headers["Content-Security-Policy"]

    assert policy == api.get("/debugger").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"  # Swagger UI's icons are data: SVGs
    assert directives["frame-ancestors"] == directives["base-uri"] == "'none'"
    assert "unsafe" not in policy


def test_the_page_names_only_this_apis_files_and_runs_nothing_inline() -> None:
    api = client()
    page = References()
    page.feed(api.get("/docs").get_data(as_text=True))

    named = [url for _, url in page.urls]

    assert page.inline == []
    assert ("link", "data:,") in page.urls  # no favicon request
    same_origin = [url for url in named if url != "data:,"]
    for url in same_origin:
        assert re.fullmatch(r"/[a-z0-9/._-]*", url), url  # a path here: no scheme, no //host
    assert {url for tag, url in page.urls if tag in ("script", "link") and url != "data:,"} == set(
        FILES
    ) - {"/docs"}
    for url in same_origin:
        assert api.get(url).status_code == 200, url


def test_swagger_ui_is_pointed_at_this_apis_document_and_nowhere_else() -> None:
    api = client()
    script = api.get("/docs/docs.js").get_data(as_text=True)

    [url] = re.findall(r'\burl: "([^"]*)"', script)
    document = api.get(url)

    assert url == "/openapi.json"
    assert document.status_code == 200
    assert "/docs" in document.json["paths"]
    assert "validatorUrl: null" in script  # the online validator is not asked
    assert "queryConfigEnabled: false" in script  # ?url= cannot load another document
    assert '"BaseLayout"' in script  # not the top bar that loads any URL typed into it
    assert "://" not in script


def test_the_vendored_files_are_the_ones_its_readme_lists() -> None:
    readme = (VENDOR / "README.txt").read_text()
    lines = re.findall(r"^  ([0-9a-f]{64})  (\S+)$", readme, re.M)
    listed = {name: digest for digest, name in lines}

    assert set(listed) == {p.name for p in VENDOR.iterdir()} - {"README.txt"}
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    version = re.search(r"swagger-ui-dist (5\.\d+\.\d+)", readme)
    assert version is not None
    assert f"swagger-ui-dist-{version.group(1)}.tgz" in readme
