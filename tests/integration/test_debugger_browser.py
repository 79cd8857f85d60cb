"""The live debugger in a real browser (headless Chromium) against the running pipeline: a good and
a bad event sent with the source's key show up, newest first, with what the workers made of them,
and the bad one with its validation errors. The page is opened with the source's debugger key or
the admin token; its write key opens nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from clicktrail.config import Settings
from clicktrail.db import Database
from tests.integration.conftest import ADMIN_TOKEN, SourceUnderTest, TopicNames
from tests.support.browser import screenshot
from tests.support.infra import KafkaCollector

# Workers look up which sources are watched at most once a second.
WATCH_NOTICED = 1.5


def wait(driver: webdriver.Chrome, timeout: float = 30) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, timeout, poll_frequency=0.2)


def open_debugger(driver: webdriver.Chrome, base: str, fragment: str) -> None:
    driver.get(f"{base}/debugger#{fragment}")
    wait(driver).until(lambda d: "Watching" in d.find_element(By.ID, "status").text)
    assert "#" not in driver.current_url  # the secret left the address bar
    time.sleep(WATCH_NOTICED)


def row(driver: webdriver.Chrome, message_id: str) -> WebElement:
    found: WebElement = wait(driver).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'li[data-message-id="{message_id}"]')
    )
    return found


def expand(element: WebElement) -> None:
    element.find_element(By.TAG_NAME, "summary").click()


def send(base: str, key: str, body: dict[str, Any]) -> None:
    response = requests.post(f"{base}/v1/batch", json=body, auth=(key, ""), timeout=10)
    assert response.status_code == 200, response.text


def test_events_show_up_live_with_their_details_and_errors(
    pipeline: str,
    source: SourceUnderTest,
    debugger_key: str,
    browser: webdriver.Chrome,
    kafka: KafkaCollector,
    topics: TopicNames,
) -> None:
    open_debugger(browser, pipeline, f"key={debugger_key}")
    good_id, bad_id = f"dbg-good-{uuid.uuid4()}", f"dbg-bad-{uuid.uuid4()}"
    send(
        pipeline,
        source.write_key,
        {
            "batch": [
                {
                    "type": "track",
                    "messageId": good_id,
                    "userId": "debugger-user",
                    "event": "Product Viewed",
                    "properties": {"product_id": "sku-42", "price": 12.5},
                    "context": {"ip": "198.51.100.23"},
                },
                {
                    "type": "track",
                    "messageId": bad_id,
                    "userId": "debugger-user",
                    "event": "Order Completed",
                    "properties": {"total": "lots"},
                },
            ]
        },
    )

    good, bad = row(browser, good_id), row(browser, bad_id)
    listed = [
        e.get_attribute("data-message-id")
        for e in browser.find_elements(By.CSS_SELECTOR, "#events li.event")
    ]
    expand(good)
    expand(bad)
    shot = screenshot(browser, "debugger")

    assert listed.index(bad_id) < listed.index(good_id)  # newest first
    assert "published" in good.get_attribute("class")
    summary = good.find_element(By.TAG_NAME, "summary").text
    assert "Product Viewed" in summary
    assert "events/product_viewed/2-0-0" in summary
    raw = good.find_element(By.CSS_SELECTOR, ".raw pre").text
    enriched = good.find_element(By.CSS_SELECTOR, ".enriched pre").text
    assert '"ip": "198.51.100.0"' in raw
    assert "198.51.100.23" not in raw + enriched
    assert '"session"' in enriched
    assert '"receivedAt"' in enriched
    [published] = kafka.wait_for([good_id], topic=topics.events)[good_id]
    assert published.value["context"]["session"]["id"] in enriched

    assert "dead_lettered" in bad.get_attribute("class")
    assert "rejected: schema_validation" in bad.find_element(By.TAG_NAME, "summary").text
    errors = {cell.text for cell in bad.find_elements(By.CSS_SELECTOR, "table.errors td.path")}
    assert "/properties/order_id" in errors
    assert "/properties/total" in errors
    messages = bad.find_element(By.CSS_SELECTOR, "table.errors").text
    assert "'order_id' is a required property" in messages.replace('"', "'")
    assert "Dead-lettered: not published" in bad.text
    assert shot.stat().st_size > 10_000


def test_pausing_holds_new_events_back_until_resumed(
    pipeline: str,
    source: SourceUnderTest,
    debugger_key: str,
    browser: webdriver.Chrome,
    kafka: KafkaCollector,
) -> None:
    open_debugger(browser, pipeline, f"key={debugger_key}")
    pause = browser.find_element(By.ID, "pause")
    pause.click()
    held = f"dbg-held-{uuid.uuid4()}"
    send(
        pipeline,
        source.write_key,
        {"batch": [{"type": "page", "messageId": held, "anonymousId": "a-1", "name": "Home"}]},
    )

    wait(browser).until(lambda _: pause.text == "Resume (1 new)")
    hidden_while_paused = browser.find_elements(By.CSS_SELECTOR, f'li[data-message-id="{held}"]')
    pause.click()

    assert hidden_while_paused == []
    assert "Home" in row(browser, held).text
    assert pause.text == "Pause"


def test_the_admin_token_picks_a_source_and_a_write_key_opens_nothing(
    pipeline: str, source: SourceUnderTest, browser: webdriver.Chrome, kafka: KafkaCollector
) -> None:
    browser.get(f"{pipeline}/debugger")
    browser.find_element(By.ID, "secret").send_keys(source.write_key)
    browser.find_element(By.CSS_SELECTOR, "#connect button").click()
    wait(browser).until(lambda d: "invalid_debugger_key" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "watch").is_displayed() is False

    open_debugger(browser, pipeline, f"token={ADMIN_TOKEN}")
    picker = Select(browser.find_element(By.ID, "source"))
    picker.select_by_value(source.id)
    time.sleep(WATCH_NOTICED)
    seen = f"dbg-admin-{uuid.uuid4()}"
    send(
        pipeline,
        source.write_key,
        {"batch": [{"type": "identify", "messageId": seen, "userId": "u-admin"}]},
    )

    assert "identify" in row(browser, seen).text
    assert browser.find_element(By.ID, "source").is_enabled()


def test_the_lookup_box_shows_what_became_of_an_event(
    pipeline: str,
    sink: Any,
    source: SourceUnderTest,
    debugger_key: str,
    browser: webdriver.Chrome,
    kafka: KafkaCollector,
    topics: TopicNames,
    settings: Settings,
) -> None:
    open_debugger(browser, pipeline, f"key={debugger_key}")
    bad_id = f"dbg-lookup-{uuid.uuid4()}"
    send(
        pipeline,
        source.write_key,
        {"batch": [{"type": "track", "messageId": bad_id, "userId": "debugger-user",
                    "event": "Order Completed", "properties": {"total": "lots"}}]},
    )  # fmt: skip
    [letter] = kafka.wait_for([bad_id], topic=topics.deadletter)[bad_id]
    db = Database(settings.database_url)
    try:
        wait(browser, 60).until(lambda _: dead_letter_stored(db, bad_id))
    finally:
        db.close()

    def look_up(message_id: str) -> WebElement:
        box = browser.find_element(By.ID, "lookup-id")
        box.clear()
        box.send_keys(message_id)
        browser.find_element(By.CSS_SELECTOR, "#lookup button").click()
        return wait(browser).until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "#receipt .receipt-body")
                if message_id in d.find_element(By.ID, "receipt").text
                else None
            )
        )

    found = look_up(bad_id)
    text = found.text

    assert "dead lettered" in found.find_element(By.TAG_NAME, "h3").text
    assert f"{topics.deadletter} [{letter.partition}]@{letter.offset}" in text
    assert "schema_validation" in text
    paths = {cell.text for cell in found.find_elements(By.CSS_SELECTOR, "table.errors td.path")}
    assert "/properties/order_id" in paths
    missing = look_up(f"dbg-never-sent-{uuid.uuid4()}")
    assert "not found" in missing.find_element(By.TAG_NAME, "h3").text
    assert "Messages waiting in the queue:" in missing.text


def dead_letter_stored(db: Database, message_id: str) -> bool:
    with db.connection() as conn:
        found = conn.execute("SELECT 1 FROM dead_letters WHERE message_id = %s", (message_id,))
        return found.fetchone() is not None
