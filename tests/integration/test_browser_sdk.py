"""The browser SDKs front-ends already use (Segment's Analytics.js 2.0 and RudderStack's
JavaScript SDK v3, vendored in examples/web) pointed at the running pipeline from the example page
in headless Chromium: their page and track calls arrive in Kafka unchanged in meaning, and nothing
is fetched from anywhere but this machine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.browser import screenshot
from tests.support.infra import KafkaCollector, Message, free_port
from tests.support.paths import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "examples" / "web"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def example_site() -> Iterator[str]:
    """examples/web served as a site of its own (another origin than the API's)."""
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(QuietHandler, directory=EXAMPLE))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)


def sent(driver: webdriver.Chrome, kind: str, count: int = 1) -> list[str]:
    """The messageIds of the calls of one type the page says it sent, once it sent ``count``."""
    selector = f'#sent li[data-type="{kind}"]'
    WebDriverWait(driver, 30, poll_frequency=0.2).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, selector)) >= count
    )
    items = driver.find_elements(By.CSS_SELECTOR, selector)
    assert not [i.text for i in items if "not delivered" in i.text]
    return [str(i.get_attribute("data-message-id")) for i in items]


@dataclass
class ShopVisit:
    """What one visit of the example page sent, as Kafka holds it, and what the page fetched."""

    page: Message
    viewed: Message
    invalid: Message
    fetched: list[str]


def visit_the_shop(
    browser: webdriver.Chrome, url: str, kafka: KafkaCollector, topics: TopicNames, name: str
) -> ShopVisit:
    """Open the page, view the product, send the invalid order; check what every SDK must get
    right: the page call, the track call validated against its event schema and joined to the
    page's session, the invalid one dead-lettered with its errors, nothing fetched from
    elsewhere, no error in the console."""
    browser.get(url)
    [page_id] = sent(browser, "page")
    browser.find_element(By.ID, "view").click()
    browser.find_element(By.ID, "invalid").click()
    track_ids = sent(browser, "track", count=2)
    screenshot(browser, name)

    got = kafka.wait_for([page_id, *track_ids])
    page = got[page_id][0]
    records = [got[i][0] for i in track_ids]
    by_event = {
        (r.value["event"]["event"] if r.topic == topics.deadletter else r.value["event"]): r
        for r in records
    }
    viewed, invalid = by_event["Product Viewed"], by_event["Order Completed"]
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )

    assert page.topic == topics.events
    assert (page.value["type"], page.value["category"], page.value["name"]) == (
        "page",
        "Shop",
        "Home",
    )
    assert page.value["context"]["userAgent"].startswith("Mozilla/")
    assert viewed.topic == topics.events
    assert viewed.headers["schema"] == "events/product_viewed/2-0-0"
    assert viewed.value["properties"] == {
        "product_id": "mug-blue", "name": "Blue mug", "price": 12.5, "currency": "EUR",
    }  # fmt: skip
    assert viewed.value["anonymousId"] == page.value["anonymousId"]
    assert viewed.value["context"]["session"]["id"] == page.value["context"]["session"]["id"]
    assert invalid.topic == topics.deadletter
    paths = {error["path"] for error in invalid.value["errors"]}
    assert {"/properties/order_id", "/properties/total"} <= paths
    assert fetched, "the page fetched nothing: the library did not load"
    assert [url for url in fetched if not url.startswith("http://127.0.0.1:")] == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    return ShopVisit(page, viewed, invalid, fetched)


def test_the_example_page_sends_page_and_track_calls_with_segments_library(
    pipeline: str,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    topics: TopicNames,
    example_site: str,
    browser: webdriver.Chrome,
) -> None:
    url = f"{example_site}/?host={pipeline}&writeKey={source.write_key}"

    visit = visit_the_shop(browser, url, kafka, topics, "example-shop")

    assert visit.page.value["properties"]["url"].startswith(example_site)
    assert visit.page.value["context"]["library"]["name"] == "analytics.js"
    assert "1.84.3" in visit.page.value["context"]["library"]["version"]
    assert any(url.endswith("/v1/p") for url in visit.fetched)
    assert any(url.endswith("/v1/t") for url in visit.fetched)


def test_the_example_page_sends_page_and_track_calls_with_rudderstacks_sdk(
    pipeline: str,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    topics: TopicNames,
    example_site: str,
    browser: webdriver.Chrome,
) -> None:
    url = f"{example_site}/?sdk=rudderstack&host={pipeline}&writeKey={source.write_key}"

    visit = visit_the_shop(browser, url, kafka, topics, "example-shop-rudderstack")

    page, viewed = visit.page.value, visit.viewed.value
    assert page["properties"]["url"].startswith(example_site)
    library = page["context"]["library"]
    assert (library["name"], library["version"]) == ("RudderLabs JavaScript SDK", "3.34.1")
    # Anonymous: an empty userId beside the anonymousId, and RudderStack's own numeric session
    # id, kept as sent beside the pipeline's session.
    assert page["userId"] == ""
    assert isinstance(page["context"]["sessionId"], int)
    assert viewed["context"]["sessionId"] == page["context"]["sessionId"]
    assert visit.viewed.key == viewed["anonymousId"]
    assert any("/sourceConfig" in url for url in visit.fetched)
    assert any(url.endswith("/v1/track") for url in visit.fetched)
