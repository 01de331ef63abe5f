"""Headless Debian Chromium driven by Selenium through the system chromedriver (never a downloaded browser).

Shared by the browser test and ``scripts/app_screenshots.py``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

#: where Debian's packages ``chromium`` and ``chromium-driver`` put them
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

# Root needs --no-sandbox; the background-networking/update/sync switches stop Chromium's own calls home,
# which the closed network refuses (and which would show up as outside requests).
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
]


def missing_browser() -> str | None:
    """Why the browser cannot run here (a sentence), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    chromium = shutil.which("chromium") or (CHROMIUM if shutil.os.path.exists(CHROMIUM) else None)
    driver = shutil.which("chromedriver") or (CHROMEDRIVER if shutil.os.path.exists(CHROMEDRIVER) else None)
    if not chromium or not driver:
        return (
            "Debian's chromium and chromium-driver are not installed "
            "(apt-get install -y chromium chromium-driver; .ci/run does this where apt is usable)"
        )
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium WebDriver with network logging on; quits and removes its profile afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="attn-app-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    service = Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def outside_requests(urls: list[str]) -> list[str]:
    """The URLs that leave this machine (not loopback, not inline data/blob URLs)."""
    local = {"127.0.0.1", "localhost", "::1", "[::1]"}
    return [
        u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).hostname not in local
    ]
