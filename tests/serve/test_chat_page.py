"""The chat page in a real headless Chromium (Debian's chromium and chromedriver), through
selenium, against the tiny model's server: API key entry, a streamed answer, tokens/s."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import API_KEY

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1000,760", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_chat_page_streams_an_answer_and_shows_tokens_per_second(browser, tiny_server, client, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(tiny_server.url + "/")
    # The server wants a key: the page says so instead of failing silently.
    wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "API key"))
    browser.find_element(By.ID, "settings-toggle").click()
    key = browser.find_element(By.ID, "api-key")
    key.send_keys(API_KEY, Keys.TAB)
    wait.until(ec.text_to_be_present_in_element((By.ID, "model"), "tiny"))
    assert not browser.find_element(By.ID, "error").is_displayed()
    for field, value in (("temperature", "0"), ("max-tokens", "20")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value, Keys.TAB)

    browser.find_element(By.ID, "prompt").send_keys("Hello there", Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant[data-done='true']"))
    answer = browser.find_element(By.CSS_SELECTOR, ".message.assistant .content").text
    stats = browser.find_element(By.CSS_SELECTOR, ".message.assistant .stats").text
    browser.save_screenshot(str(tmp_path / "chat.png"))
    if os.environ.get("TENACIA_SCREENSHOTS"):
        shutil.copy(tmp_path / "chat.png", Path(os.environ["TENACIA_SCREENSHOTS"]) / "chat-tiny.png")

    # The page showed what the API answers for the same conversation (greedy, so identical).
    want = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello there"}],
                                          temperature=0, max_tokens=20).choices[0].message.content
    assert answer == want.strip() or answer == want
    assert re.fullmatch(r"20 tokens · [\d.]+ tok/s · first token \d+ ms · stopped: max tokens", stats), stats

    # The conversation goes on: a second turn is sent with the first one as context.
    browser.find_element(By.ID, "prompt").send_keys("And again", Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.assistant[data-done='true']")) == 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".message.user")) == 2
    assert not browser.find_element(By.ID, "error").is_displayed()
