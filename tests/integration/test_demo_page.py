"""The demo page at ``GET /``, used in a real headless Chromium as a first-time user would: it loads, asks for
a key (auth is on), answers a question with ranked matches, classifies a dropped-in image, shows an error as a
message, and says plainly that a thumbs-up is not recorded where model data collection is off (the ``main``
app); where it is on (an app of this module's own), a thumbs-down is recorded about the answer shown. Screenshots
of each step go to the test's temporary directory (printed)."""

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray import serve

from serve_app.app import build_graph
from serve_app.report import read_records
from serve_app.settings import AppArgs
from tests.images import photo_paths
from tests.integration.conftest import API_KEYS, BROKEN_WEIGHTS, ServeApps

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WAIT_S = 60  # the first question and image may wait for a replica on a busy two-core box
COLLECTING_APP = "demo-collecting"


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


def use_key(browser: webdriver.Chrome, wait: WebDriverWait) -> None:
    """Gives the page the key when it asks for one; a key this tab keeps from an earlier page of the same origin
    (sessionStorage) is used as it is."""
    key_section = browser.find_element(By.ID, "key-section")
    wait.until(lambda b: key_section.is_displayed() or "Models:" in visible_text(b, "status"))
    if key_section.is_displayed():
        browser.find_element(By.ID, "key").send_keys(API_KEYS[0])
        browser.find_element(By.ID, "save-key").click()
    wait.until(lambda b: "Models:" in visible_text(b, "status"))


def ask(browser: webdriver.Chrome, wait: WebDriverWait, question: str) -> list:
    browser.find_element(By.ID, "question").send_keys(question)
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#matches .match"))
    return browser.find_elements(By.CSS_SELECTOR, "#matches .match")


def test_demo_page_used_as_a_new_user_would(serve_apps: ServeApps, browser: webdriver.Chrome, tmp_path: Path) -> None:
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(serve_apps.base_url + "/")
    assert browser.title == "serve-app demo"
    # Readiness is public; the model versions need a credential, so the page asks for a key.
    wait.until(lambda b: "Ready" in visible_text(b, "status"))
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "key-section")))
    browser.save_screenshot(str(tmp_path / "1-key-asked.png"))

    use_key(browser, wait)
    assert "faq" in visible_text(browser, "status")

    matches = ask(browser, wait, "how do I deep copy an object with nested arrays?")
    assert len(matches) == 5
    assert "%" in matches[0].text
    browser.save_screenshot(str(tmp_path / "2-matches.png"))

    # A thumbs-up where collection is off: the 409 collection_disabled reads as a sentence, and no vote again.
    browser.find_element(By.CSS_SELECTOR, "#matches .vote-up").click()
    wait.until(lambda b: "not recorded" in b.find_element(By.CSS_SELECTOR, "#matches .feedback").text)
    feedback = browser.find_element(By.CSS_SELECTOR, "#matches .feedback")
    assert "does not collect model data" in feedback.text
    assert "collection_disabled" not in feedback.text
    assert not feedback.find_element(By.CSS_SELECTOR, ".vote-down").is_enabled()
    browser.save_screenshot(str(tmp_path / "2b-feedback-off.png"))

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


@pytest.fixture()
def collecting_app(serve_apps: ServeApps, tmp_path: Path) -> Iterator[Path]:
    """An app of its own with model data collection on (FAQ only: its images deployment fails to load at once)."""
    destination = tmp_path / "collected"
    collection = {"enabled": True, "destination": str(destination), "flush_interval_s": 0.5}
    args = AppArgs(images={"weights": BROKEN_WEIGHTS}, collection=collection)
    options = {"ImageClassifier": {"ray_actor_options": {"num_cpus": 0}}}
    serve.run(build_graph(args, options), name=COLLECTING_APP, route_prefix=f"/{COLLECTING_APP}")
    try:
        yield destination
    finally:
        serve.delete(COLLECTING_APP)


def test_a_thumbs_down_is_recorded_about_the_answer_shown(
    serve_apps: ServeApps, browser: webdriver.Chrome, collecting_app: Path, tmp_path: Path
) -> None:
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(f"{serve_apps.base_url}/{COLLECTING_APP}/")
    use_key(browser, wait)
    ask(browser, wait, "how do I merge two dictionaries?")
    browser.save_screenshot(str(tmp_path / "feedback-asked.png"))
    browser.find_element(By.CSS_SELECTOR, "#matches .vote-down").click()
    wait.until(lambda b: "Thanks" in b.find_element(By.CSS_SELECTOR, "#matches .feedback").text)
    feedback = browser.find_element(By.CSS_SELECTOR, "#matches .feedback")
    assert "recorded as not helpful" in feedback.text
    assert not feedback.find_element(By.CSS_SELECTOR, ".vote-up").is_enabled()  # one vote per answer
    browser.save_screenshot(str(tmp_path / "feedback-recorded.png"))

    # The vote names the answer's request: the feedback record joins the prediction record the page caused.
    deadline = time.monotonic() + 30
    while len(records := read_records(str(collecting_app))) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    by_kind = {record["kind"]: record for record in records}
    assert len(records) == 2 and by_kind.keys() == {"prediction", "feedback"}, records
    assert by_kind["feedback"]["request_id"] == by_kind["prediction"]["request_id"]
    assert by_kind["feedback"]["helpful"] is False and by_kind["feedback"]["item"] == 0
    print(f"screenshot: {tmp_path / 'feedback-recorded.png'}")
