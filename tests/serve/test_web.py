"""The chat page (``onevision web``) driven in Debian's headless Chromium against a real ``onevision serve``:
upload an image, ask, read the streamed answer, pick a model, keep a multi-turn conversation.

Needs ``chromium`` and ``chromium-driver`` (apt; ``.ci/run`` installs them) and the ``[web]`` extra.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest

from .conftest import LiveServer, serve_config

pytestmark = pytest.mark.timeout(300)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MAX_TOKENS = 12


def _words(text: str) -> list[str]:
    """What survives the page's markdown rendering: runs of letters and digits."""
    return re.findall(r"[A-Za-z0-9]+", text)


@pytest.fixture(scope="module")
def web_server(model_dir):
    import onevision

    models = {"tiny": onevision.load(str(model_dir)), "tiny-b": onevision.load(str(model_dir))}
    with LiveServer(models, serve_config(max_batch_size=4, batch_window=0.01)) as live:
        yield live


@pytest.fixture(scope="module")
def page(web_server):
    from onevision.serve.app import bind
    from onevision.web import serve_page

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()  # Gradio binds the port itself
    app = serve_page(f"{web_server.url}/v1", port=port, block=False, max_tokens=MAX_TOKENS)
    yield f"http://127.0.0.1:{port}"
    app.close()


@pytest.fixture(scope="module")
def browser():
    assert shutil.which("chromium") and shutil.which("chromedriver"), (
        "the browser test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _ask(driver, text: str, files=()):
    from selenium.webdriver.common.by import By

    for f in files:
        driver.find_element(By.CSS_SELECTOR, "#ask input[type=file]").send_keys(str(f))
    if files:  # the upload finishes before the message can be sent
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#ask .thumbnail-item, #ask img"))
    driver.find_element(By.CSS_SELECTOR, "#ask textarea").send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#ask button.submit-button").click()


def _bot_texts(driver) -> list[str]:
    """The assistant messages as shown (read in one script: the stream re-renders them as it grows)."""
    texts = driver.execute_script(
        "return Array.from(document.querySelectorAll('#chat .bot.message')).map(e => e.innerText)"
    )
    return [t for t in texts if t.strip()]


def _wait(driver, condition, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _settled(driver, count: int) -> str:
    """The ``count``-th answer once the page stopped changing it (the stream ended)."""
    _wait(driver, lambda d: len(_bot_texts(d)) >= count)
    last, since = None, time.monotonic()
    while time.monotonic() - since < 1.5:
        now = _bot_texts(driver)[count - 1]
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.1)
    return last


def test_upload_ask_stream_and_continue_in_the_browser(page, browser, pipe, media, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(page)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#ask textarea"))
    chosen = browser.find_element(By.CSS_SELECTOR, "#model input").get_attribute("value")
    assert chosen == "tiny"  # the first model of GET /v1/models

    _ask(browser, "What is in the image?", [media / "a.png"])
    first = _settled(browser, 1)
    expected = pipe.chat(
        [{"role": "user", "content": [{"type": "image", "image": str(media / "a.png")},
                                      {"type": "text", "text": "What is in the image?"}]}],
        max_new_tokens=MAX_TOKENS,
    )  # fmt: skip
    assert _words(first) == _words(expected)  # the page shows exactly what the library answers
    assert browser.find_elements(By.CSS_SELECTOR, "#chat .user img")  # the upload is shown in the chat

    _ask(browser, "And the colours?")
    second = _settled(browser, 2)
    expected_second = pipe.chat(
        [
            {"role": "user", "content": [{"type": "image", "image": str(media / "a.png")},
                                         {"type": "text", "text": "What is in the image?"}]},
            {"role": "assistant", "content": expected},
            {"role": "user", "content": "And the colours?"},
        ],
        max_new_tokens=MAX_TOKENS,
    )  # fmt: skip
    assert _words(second) == _words(expected_second)  # multi-turn: the page sends the whole conversation
    shot = tmp_path / "chat-page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_page_logic_sends_media_as_data_urls_and_keeps_the_conversation(web_server, pipe, media):
    from onevision.web import ChatSession

    session = ChatSession(web_server.client(), "tiny-b", max_tokens=MAX_TOKENS)
    pieces = list(session.ask("Describe the video.", [media / "clip.mp4"]))
    assert len(pieces) >= 2 and pieces[-1] == pieces[-2]  # streamed growth, then the final text
    expected = pipe.chat(
        [{"role": "user", "content": [{"type": "video", "video": str(media / "clip.mp4")},
                                      {"type": "text", "text": "Describe the video."}]}],
        max_new_tokens=MAX_TOKENS,
    )  # fmt: skip
    assert pieces[-1] == expected
    part = session.messages[0]["content"][0]
    assert part["type"] == "video_url" and part["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert session.messages[-1] == {"role": "assistant", "content": expected}
