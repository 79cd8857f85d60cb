"""Headless Chromium for the browser tests: Debian's chromium and chromium-driver, driven by
Selenium with both paths given, so nothing is looked up or downloaded."""

from __future__ import annotations

import json
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from tests.support.paths import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
# Without the background-networking flags Chromium waits on services it cannot reach offline.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def chromium(user_data_dir: Path, log_path: Path, network_log: bool = False) -> webdriver.Chrome:
    """A fresh headless Chromium with its own profile; the caller quits it. With ``network_log``
    its DevTools events, each request among them, are kept for ``requested``."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise AssertionError(
            f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)"
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    logs = {"browser": "ALL", **({"performance": "ALL"} if network_log else {})}
    options.set_capability("goog:loggingPrefs", logs)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save the page as tests/artifacts/<name>.png (kept out of git) and return the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def requested(driver: webdriver.Chrome) -> list[str]:
    """The URLs the browser requested since the last call (one from ``chromium`` with
    ``network_log``). A request that the page's policy blocked was never made, so is not here:
    the page's console and its securitypolicyviolation events show those."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
