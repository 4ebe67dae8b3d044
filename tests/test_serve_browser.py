"""The search page in a real browser: headless Chromium driven by selenium uploads
an image through the page's file input (and by drag and drop), waits for the
results, and checks that a training image finds itself first.

Needs headless Chromium (:mod:`tests.browser`); skipped, saying what is missing,
without it. Set ``SERVE_SCREENSHOT=/path/shot.png`` to keep a screenshot of
the results page.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.serve_setup")  # before its import: it is also a plugin below
from tests.browser import WAIT, headless_chromium, needs_chromium
from tests.serve_setup import Server, training_file

# The fixtures `searchable` and `server` (shared with the HTTP test: one experiment and server per session).
pytest_plugins = ["tests.serve_setup"]

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium session, closed afterwards."""
    with headless_chromium() as driver:
        yield driver


def _results(driver) -> list[tuple[int, str]]:
    """(image id, class) of the results shown, once the first appears."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR,
                                                                                     "#results li")))
    return [(int(li.get_attribute("data-image-id")), li.get_attribute("data-class"))
            for li in driver.find_elements(By.CSS_SELECTOR, "#results li")]


def _thumbnails_loaded(driver) -> list[int]:
    """naturalWidth of every result thumbnail once loaded (0 = broken image)."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = ("const imgs = Array.from(document.querySelectorAll('#results img'));"
              "return imgs.every(i => i.complete) ? imgs.map(i => i.naturalWidth) : null;")
    return WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(script))


def test_uploading_through_the_file_input_shows_the_image_itself_first(server: Server, browser):
    from selenium.webdriver.common.by import By

    image_id, path = training_file(server.experiment, "RGB")
    browser.get(server.url)
    assert browser.title.startswith("Search epoch 2")
    browser.find_element(By.ID, "image").send_keys(str(path))  # the page's script submits on choice
    found = _results(browser)
    items = server.experiment.items.set_index("image_id")
    assert found[0] == (image_id, items.loc[image_id, "class_name"])
    assert len(found) == 10
    first = browser.find_element(By.CSS_SELECTOR, "#results li .dist").text
    assert first == "d = 0.000"
    assert all(width == 96 for width in _thumbnails_loaded(browser))
    assert browser.find_element(By.ID, "query-name").text == path.name
    shot = os.environ.get("SERVE_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(shot), f"could not write the screenshot {shot}"


def test_dropping_a_file_and_switching_epochs(server: Server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    image_id, path = training_file(server.experiment, "CMYK")
    browser.get(server.url)
    Select(browser.find_element(By.ID, "epoch")).select_by_value("1")  # the script reloads on change
    WebDriverWait(browser, WAIT).until(lambda d: d.title.startswith("Search epoch 1"))
    # What a drop from the file manager delivers: a DataTransfer holding the file.
    browser.execute_script(
        """const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
           const transfer = new DataTransfer();
           transfer.items.add(new File([bytes], arguments[1], {type: "image/jpeg"}));
           document.getElementById("drop").dispatchEvent(
               new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));""",
        base64.b64encode(path.read_bytes()).decode("ascii"), path.name)
    found = _results(browser)
    assert found[0][0] == image_id
    assert browser.title.startswith("Nearest images at epoch 1")
