"""The web page of ``enroll serve`` in a real browser: headless Chromium (Debian's chromium +
chromedriver, as tests/test_mlflow_ui.py) against a real server. Through the page only: paste a
token, enrol a person from two photos, identify a photo (the face box drawn on it, the top-k
listed), see the model version, remove the person. The screenshot (after identify) is saved in
the test's tmp directory and its path printed.
"""
from pathlib import Path

import pytest

from tests.test_enroll_cli import lfw, photo  # noqa: F401  (module fixture reused)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason=f"{CHROMIUM} / {CHROMEDRIVER} absent: run .ci/install-browser.sh")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.test_mlflow_ui import headless_chromium  # noqa: E402


# What the identify panel shows: the verdict, the listed candidates, the box the page drew, and
# whether the canvas is green (the box's colour) half-way down the box's left edge.
PAGE_STATE = """
    const canvas = document.getElementById('identify-canvas');
    const box = (canvas.dataset.box || '').split(',').filter(Boolean).map(Number);
    let green = false;
    if (box.length === 4) {
        const scale = canvas.width / arguments[0];
        const [r, g, b] = canvas.getContext('2d').getImageData(
            Math.round(box[0] * scale), Math.round((box[1] + box[3] / 2) * scale), 1, 1).data;
        green = g > 150 && r < 100 && b < 150;
    }
    return {verdict: (document.querySelector('#identify-result .verdict') || {}).textContent || '',
            candidates: [...document.querySelectorAll('#identify-result .candidates li')].map(li => li.textContent),
            box: box, edge_is_green: green};
"""


def page_state(browser, photo_width: int = 250) -> dict:
    return browser.execute_script(PAGE_STATE, photo_width)


def test_enrol_identify_and_remove_through_the_page(api, api_tokens, lfw, tmp_path):  # noqa: F811
    server, secret = api, api_tokens["identify,enrol"]
    with headless_chromium(tmp_path / "profile") as browser:
        wait = WebDriverWait(browser, 120)
        browser.get(server.base + "/")
        token = browser.find_element(By.ID, "token")
        token.send_keys(secret)
        browser.find_element(By.ID, "refresh").click()
        wait.until(lambda _: "Production model: version 1" in browser.find_element(By.ID, "model-status").text)

        browser.find_element(By.ID, "enrol-name").send_keys("Jacques Chirac")
        browser.find_element(By.ID, "enrol-photos").send_keys("\n".join(photo(lfw, "Jacques_Chirac", n) for n in (1, 2)))
        browser.find_element(By.ID, "enrol-button").click()
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, '#people-list li[data-name="Jacques Chirac"]'))
        assert "Enrolled Jacques Chirac: 2 new face(s), 2 in all." in browser.find_element(By.ID, "message").text
        assert browser.find_element(By.ID, "enrol-result").text.count("accepted") == 2

        browser.find_element(By.ID, "identify-photo").send_keys(photo(lfw, "Jacques_Chirac", 1))
        browser.find_element(By.ID, "identify-button").click()
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#identify-result .verdict")
                   and page_state(browser)["box"])
        state = page_state(browser)
        assert state["verdict"] == "Jacques Chirac" and state["candidates"][0].startswith("Jacques Chirac — distance 0.000")
        assert state["edge_is_green"], state  # the face box is drawn on the photo
        assert "class change(s) since the model" in browser.find_element(By.ID, "model-status").text
        screenshot = tmp_path / "enroll-web-identify.png"
        browser.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")

        row = browser.find_element(By.CSS_SELECTOR, '#people-list li[data-name="Jacques Chirac"]')
        row.find_element(By.CSS_SELECTOR, "button.remove").click()
        wait.until(expected_conditions.alert_is_present()).accept()
        wait.until(lambda _: not browser.find_elements(By.CSS_SELECTOR, '#people-list li[data-name="Jacques Chirac"]'))
        assert browser.find_element(By.ID, "message").text == "Removed Jacques Chirac (2 face(s))."
        assert Path(screenshot).stat().st_size > 10_000
