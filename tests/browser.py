"""Headless Chromium for the dashboard's browser tests (and docs/make_screenshots.py).

Debian's ``chromium`` and ``chromium-driver`` packages, driven through selenium (the
``test`` extra). :func:`missing` says why a browser cannot start here (the tests skip
with that reason); :func:`chromium` starts one with a fresh profile, flags that keep it
off the network (a closed network refuses its background connections), and the
browser's console log enabled, so a test can assert that a page raised no error.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

CHROMIUM = os.environ.get("ACTORRT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ACTORRT_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"needs {path} (apt-get install -y {package})"
    return None


def screenshot_dir() -> Path:
    """Where screenshots go: $ACTORRT_SCREENSHOTS, else a directory under the temp dir."""
    path = Path(os.environ.get("ACTORRT_SCREENSHOTS") or Path(tempfile.gettempdir()) / "actorrt-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Browser:
    """A page in headless Chromium, with the waits and checks the tests need."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    def css(self, selector: str) -> list:
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        found = self.css(selector)
        return found[0].text if found else ""

    def wait(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        """Poll ``predicate`` until it returns something true (its value), with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
            except Exception as e:  # an element replaced while read: look again
                if "stale element" not in str(e).lower():
                    raise
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not show {what or predicate} within {timeout} s "
                                     f"(at {self.driver.current_url})")
            time.sleep(0.05)

    def wait_live(self) -> None:
        """Until the page's websocket delivered its first push."""
        self.wait(lambda: self.text("#conn") == "live", what="a live connection")

    def errors(self) -> list[str]:
        """The console's errors since the last call (JavaScript errors, failed loads)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def screenshot(self, name: str, directory: Path | None = None) -> Path:
        path = (directory or screenshot_dir()) / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile, closed (and its profile removed) after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="actorrt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(20)
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
