"""The demo page at ``GET /``, used in a real headless Chromium as a first-time user would: it loads, asks for
a key (auth is on), answers a question with ranked matches, classifies a dropped-in image, and shows an error
as a message. Screenshots of each step go to the test's temporary directory (printed)."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images import photo_paths
from tests.integration.conftest import API_KEYS, ServeApps

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WAIT_S = 60  # the first question and image may wait for a replica on a busy two-core box


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_window_size(1200, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def visible_text(browser: webdriver.Chrome, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def test_demo_page_used_as_a_new_user_would(serve_apps: ServeApps, browser: webdriver.Chrome, tmp_path: Path) -> None:
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(serve_apps.base_url + "/")
    assert browser.title == "serve-app demo"
    # Readiness is public; the model versions need a credential, so the page asks for a key.
    wait.until(lambda b: "Ready" in visible_text(b, "status"))
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "key-section")))
    browser.save_screenshot(str(tmp_path / "1-key-asked.png"))

    browser.find_element(By.ID, "key").send_keys(API_KEYS[0])
    browser.find_element(By.ID, "save-key").click()
    wait.until(lambda b: "Models:" in visible_text(b, "status"))
    assert "faq" in visible_text(browser, "status")

    browser.find_element(By.ID, "question").send_keys("how do I deep copy an object with nested arrays?")
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#matches .match"))
    matches = browser.find_elements(By.CSS_SELECTOR, "#matches .match")
    assert len(matches) == 5
    assert "%" in matches[0].text
    browser.save_screenshot(str(tmp_path / "2-matches.png"))

    photos = photo_paths()
    if not photos:
        pytest.skip("shared photos not found beside the project")
    browser.find_element(By.ID, "files").send_keys(str(photos[0]))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#images .image-result"))
    result = browser.find_element(By.CSS_SELECTOR, "#images .image-result")
    assert result.text.count("%") == 5
    browser.save_screenshot(str(tmp_path / "3-image-classes.png"))

    # A file that is no image: the service's 4xx is shown as a message naming the error type.
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image")
    browser.find_element(By.ID, "files").send_keys(str(not_an_image))
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "image-error")))
    assert "notes.txt" in visible_text(browser, "image-error")
    browser.save_screenshot(str(tmp_path / "4-error-shown.png"))
    print(f"screenshots: {tmp_path}")
