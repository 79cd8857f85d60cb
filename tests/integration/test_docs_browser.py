"""The API page at /docs in a real browser (headless Chromium) against the API under gunicorn:
Swagger UI renders every operation of the OpenAPI document and runs one, with no console error,
no breach of the page's policy and no request that leaves the API's origin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import ElementClickInterceptedException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import chromium, requested, screenshot

# Before the page's own scripts run: keep every policy violation the page would otherwise only
# print to the console.
RECORD_VIOLATIONS = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.violations.push(
  {directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile}));
"""


@pytest.fixture
def docs_browser(tmp_path: Path, logs_dir: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium that records each request the page makes and each policy violation."""
    log = logs_dir / f"chromedriver-{uuid.uuid4().hex[:6]}.log"
    driver = chromium(tmp_path / "profile", log, network_log=True)
    try:
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS}
        )
        yield driver
    finally:
        driver.quit()


def wait(driver: webdriver.Chrome, timeout: float = 30) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, timeout, poll_frequency=0.2)


def open_page(driver: webdriver.Chrome, url: str) -> None:
    requested(driver)  # forget what the browser asked for at its start (its own new tab page)
    driver.get(url)


def click(driver: webdriver.Chrome, element: WebElement) -> None:
    """Click as a user does once the page stands still: Swagger UI scrolls to and unfolds a
    deep-linked operation, and until it has, another element may lie over the one wanted."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)

    def clicked(_: Any) -> bool:
        element.click()
        return True

    WebDriverWait(
        driver, 30, poll_frequency=0.2, ignored_exceptions=(ElementClickInterceptedException,)
    ).until(clicked)


def operation(driver: webdriver.Chrome, tag: str, operation_id: str) -> WebElement:
    """An operation's block, as Swagger UI names it (#operations-<tag>-<operationId>)."""
    found: WebElement = wait(driver).until(
        lambda d: d.find_element(By.ID, f"operations-{tag}-{operation_id}")
    )
    return found


def assert_clean(driver: webdriver.Chrome, origin: str) -> list[str]:
    """No console error, no policy violation, no request to another origin; the requests."""
    urls = requested(driver)
    violations = driver.execute_script("return window.violations")
    console = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert violations == []
    assert console == []
    assert urls, "no request recorded"
    elsewhere = [u for u in urls if not u.startswith((f"{origin}/", "data:"))]  # data: icons
    assert elsewhere == []
    return urls


def documented_operations(api: str) -> dict[str, str]:
    """operationId: its first tag, for every operation of the served document."""
    document: dict[str, Any] = requests.get(f"{api}/openapi.json", timeout=10).json()
    return {
        op["operationId"]: op["tags"][0]
        for item in document["paths"].values()
        for method, op in item.items()
        if method != "parameters"
    }


def test_the_page_renders_every_operation_from_this_origin_alone(
    api: str, docs_browser: webdriver.Chrome
) -> None:
    expected = documented_operations(api)

    open_page(docs_browser, f"{api}/docs")
    batch = operation(docs_browser, "Tracking", "batch")
    rendered = {
        element.get_attribute("id")
        for element in docs_browser.find_elements(By.CSS_SELECTOR, ".opblock[id^=operations-]")
    }
    click(docs_browser, batch.find_element(By.CSS_SELECTOR, ".opblock-summary"))
    body = wait(docs_browser).until(
        lambda _: batch.find_element(By.CSS_SELECTOR, ".opblock-section-request-body")
    )
    shot = screenshot(docs_browser, "docs")
    urls = assert_clean(docs_browser, api)

    assert "/v1/batch" in batch.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text
    assert rendered == {f"operations-{tag}-{op}" for op, tag in expected.items()}
    assert "application/json" in body.text
    assert {urlsplit(u).path for u in urls} >= {
        "/docs",
        "/docs/docs.js",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/openapi.json",
    }
    assert shot.stat().st_size > 10_000


def test_try_it_out_calls_this_api_within_the_pages_policy(
    api: str, docs_browser: webdriver.Chrome
) -> None:
    open_page(docs_browser, f"{api}/docs#/Operations/livez")
    livez = operation(docs_browser, "Operations", "livez")

    def execute_button(_: Any) -> WebElement | bool:
        """The Execute button, once "Try it out" took: clicked again while the page, still
        unfolding the deep-linked operation, lets another element take the click."""
        found = livez.find_elements(By.CSS_SELECTOR, ".btn.execute")
        if found:
            return found[0]
        try_out = livez.find_element(By.CSS_SELECTOR, ".try-out__btn")
        if "cancel" not in try_out.text.lower():
            click(docs_browser, try_out)
        return False

    click(docs_browser, wait(docs_browser).until(execute_button))
    status = wait(docs_browser).until(
        lambda _: livez.find_element(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        )
    )
    answer = livez.find_element(
        By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description"
    )

    assert status.text.strip() == "200"
    assert '"status": "ok"' in answer.text
    assert f"{api}/livez" in assert_clean(docs_browser, api)
