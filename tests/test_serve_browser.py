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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
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


def canvas_pixels(browser: webdriver.Chrome) -> np.ndarray:
    """The canvas as drawn, (height, width, 3) RGB."""
    data = browser.execute_script(
        "const c = document.getElementById('view');"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];"
    )
    width, height, flat = data
    return np.array(flat, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]


def test_names_on_the_canvas_no_zero_candidates_errors_hide_the_result(
    base_url: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    import json

    from PIL import Image

    image, _, _ = toy.toy_scene(5, size=(180, 240))
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    expected = toy_tag()(image)
    browser.get_log("browser")  # drop what earlier tests logged
    browser.set_window_size(1200, 900)
    browser.get(base_url + "/")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "view").get_attribute("data-ready") == "true")
    browser.save_screenshot(str(tmp_path / "page.png"))

    # Every name on a tag of its segment's colour, centred inside that segment, ink on it.
    tags = json.loads(browser.find_element(By.ID, "view").get_attribute("data-names"))
    assert sorted(t["label"] for t in tags) == sorted(expected.labels)
    pixels = canvas_pixels(browser)
    for tag in tags:
        left, top, right, bottom = tag["box"]
        centre = ((top + bottom) // 2, (left + right) // 2)
        assert expected.labels[int(expected.label_map[centre])] == tag["label"], "the tag sits on its segment"
        box = pixels[top:bottom, left:right].reshape(-1, 3)
        fill = (box == tag["colour"]).all(axis=1).mean()
        ink = (np.abs(box.astype(int) - tag["ink"]).sum(axis=1) < 60).mean()
        assert fill > 0.4 and ink > 0.02, (tag, fill, ink)

    # Candidates that score 0.000 are not listed; the others are, in order.
    first = next(t for t in tags if t["label"] == expected.labels[0])
    hover_pixel(browser, (first["box"][0] + first["box"][2]) // 2, (first["box"][1] + first["box"][3]) // 2, 240, 180)
    listed = browser.find_element(By.ID, "seg-candidates").text.splitlines()
    wanted = [c for c in expected.segments[0].candidates if f"{c.score:.3f}" not in ("0.000", "-0.000")]
    assert len(wanted) < len(expected.segments[0].candidates), "the toy world gives some 0.000 candidates"
    assert [line.split(" (")[0] for line in listed] == [c.name for c in wanted]

    # A new error hides the previous result.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    browser.find_element(By.ID, "file").send_keys(str(broken))
    wait.until(lambda b: "error" in b.find_element(By.ID, "status").get_attribute("class"))
    assert not browser.find_element(By.ID, "stage").is_displayed()
    assert not browser.find_element(By.ID, "panel").is_displayed()

    # No request of the page failed (the favicon included).
    failed = [entry["message"] for entry in browser.get_log("browser") if "Failed to load resource" in entry["message"]]
    assert all("/v1/segment" in message for message in failed), failed
