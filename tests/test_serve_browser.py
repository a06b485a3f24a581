"""The page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_serve import served, toy_tag

from tagseg import toy
from tagseg.serve import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs Selenium: pip install selenium")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "the browser test needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with served(create_app(toy_tag(), ServeSettings(database_writes=True))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tagseg-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1200,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def hover_pixel(browser: webdriver.Chrome, x: int, y: int, width: int, height: int) -> str:
    """Move the mouse over image pixel (x, y) of the canvas; the name the page then shows."""
    canvas = browser.find_element(By.ID, "view")
    size = canvas.size
    dx = round((x + 0.5) * size["width"] / width - size["width"] / 2)
    dy = round((y + 0.5) * size["height"] / height - size["height"] / 2)
    ActionChains(browser).move_to_element_with_offset(canvas, dx, dy).perform()
    return browser.find_element(By.ID, "seg-name").text


def test_upload_hover_add_concept_and_phone_layout(base_url: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    image, regions, names = toy.toy_scene(11, size=(180, 240))
    path = tmp_path / "scene.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    expected = toy_tag()(image)
    # A pixel deep inside the first shape: the median of its ground-truth pixels.
    ys, xs = np.nonzero(regions == 1)
    x, y = int(np.median(xs)), int(np.median(ys))
    label = expected.segments[int(expected.label_map[y, x])].label

    browser.get(base_url + "/")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "view").get_attribute("data-ready") == "true")
    assert hover_pixel(browser, x, y, 240, 180) == label == names[1]
    candidates = browser.find_element(By.ID, "seg-candidates").text
    assert label in candidates
    assert browser.find_element(By.ID, "seg-retrieved").text
    legend = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#legend button")]
    assert legend == expected.labels

    concepts = browser.find_element(By.ID, "concepts")
    assert concepts.is_displayed()
    browser.find_element(By.ID, "concept-text").send_keys(f"a {label} kayak on the lake, {label} kayak race")
    concepts.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda b: b.find_element(By.ID, "view").get_attribute("data-runs") == "2")
    assert browser.find_element(By.ID, "status").text.startswith("Added 2 text(s)")
    hover_pixel(browser, 0, 0, 240, 180)
    assert hover_pixel(browser, x, y, 240, 180) == label
    assert f"{label} kayak race" in browser.find_element(By.ID, "seg-retrieved").text
    assert f"{label} kayak" not in browser.find_element(By.ID, "seg-candidates").text  # single words

    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "names")).select_by_value("phrases")
    wait.until(lambda b: b.find_element(By.ID, "view").get_attribute("data-runs") == "3")
    hover_pixel(browser, 0, 0, 240, 180)
    assert hover_pixel(browser, x, y, 240, 180) == label
    assert f"{label} kayak" in browser.find_element(By.ID, "seg-candidates").text

    browser.set_window_size(390, 844)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    canvas_width = browser.find_element(By.ID, "view").size["width"]
    assert 300 <= canvas_width <= 390
    assert hover_pixel(browser, x, y, 240, 180) == label
