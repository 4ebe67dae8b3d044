"""Headless Chromium for the tests that check a page in a real browser (the search
page, TensorBoard): what is missing to run one, and a session driven by selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs
them where it can) and the ``selenium`` package (a test extra); the tests that use it
are skipped, saying which is missing, without them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Iterator

import pytest

WAIT = 60  # seconds for a page to show what a test waits for


def missing() -> list[str]:
    """What this machine lacks to drive headless Chromium (empty when nothing)."""
    lacking = []
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        lacking.append("no chromium on PATH (apt-get install chromium)")
    if not shutil.which("chromedriver"):
        lacking.append("no chromedriver on PATH (apt-get install chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        lacking.append("the selenium package is not installed (pip install selenium)")
    return lacking


MISSING = missing()
# Decided at collection, before fixtures build an experiment for nothing.
needs_chromium = pytest.mark.skipif(bool(MISSING), reason="needs headless Chromium: " + "; ".join(MISSING))


@contextlib.contextmanager
def headless_chromium(width: int = 1200, height: int = 1000) -> Iterator[object]:
    """A headless Chromium session (a selenium ``WebDriver``), closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run",
                # The machine's closed network refuses these connections, many at a time.
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    # Explicit driver path: selenium must not try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
