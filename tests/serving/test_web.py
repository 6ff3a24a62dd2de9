"""The web chat page: the reply generator and the think folding in-process, then the real
page in a headless Chromium (Debian's chromium + chromium-driver, started by the test):
type a message, see the reply, save a screenshot as a test artefact."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.serving.conftest import free_port

ARTEFACTS = Path(os.environ.get("TIFA_LITE_TEST_ARTEFACTS", Path(__file__).resolve().parents[2] / "test-artefacts"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def test_respond_streams_growing_replies_and_keeps_the_full_history(tiny_session):
    from tifa_lite.serving.web import respond

    past = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>easy</think>\n4"}]
    steps = list(respond(tiny_session, "Hello", past, "You are Tifa.", {"max_new_tokens": 4, "do_sample": False}))
    final = steps[-1]
    assert final[:2] == past  # the page keeps the full earlier reply, think block included
    assert final[2] == {"role": "user", "content": "Hello"}
    expected = tiny_session.reply(
        [{"role": "system", "content": "You are Tifa."}, *past, {"role": "user", "content": "Hello"}],
        max_new_tokens=4, do_sample=False,
    )
    assert final[3] == {"role": "assistant", "content": expected.text}
    lengths = [len(step[-1]["content"]) for step in steps[:-1]]
    assert lengths == sorted(lengths)


def test_think_blocks_are_folded_into_a_reasoning_message():
    gr = pytest.importorskip("gradio", reason="the web extra is not installed: pip install -e '.[web]'")
    from tifa_lite.serving.web import THINK_TAGS

    chatbot = gr.Chatbot(reasoning_tags=THINK_TAGS)
    shown = chatbot.postprocess([{"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "<think>be warm</think>Hello there!"}]).root
    bot = [m for m in shown if m.role == "assistant"]
    assert bot[0].metadata["title"] == "Reasoning" and bot[0].content[0].text.strip() == "be warm"
    assert bot[1].content[0].text.strip() == "Hello there!"


def _browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver; scripts/test.sh does it)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the web extra is not installed: pip install -e '.[web]'")
    from selenium.webdriver.chrome.service import Service

    import tempfile

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tifa-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    # An explicit driver path: selenium would otherwise try to download one.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options), profile


def test_page_in_headless_chromium_answers_a_message(embedded_model_dir):
    pytest.importorskip("gradio", reason="the web extra is not installed: pip install -e '.[web]'")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tifa_lite.conversation.session import chat
    from tifa_lite.serving.web import launch

    driver, profile = _browser()
    session = chat(str(embedded_model_dir), preset="greedy", max_new_tokens=24,
                   system="You are Tifa Lockhart, a friendly bartender in Midgar.")
    expected = session.reply(session.messages_for_model("Hi! What is your name?")).text
    port = free_port()
    demo = launch(session, port=port, block=False, title="Tifa (test)")
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#tifa-input textarea"))
        box.send_keys("Hi! What is your name?")
        driver.find_element(By.CSS_SELECTOR, "#tifa-send").click()

        def reply_shown(d):
            bots = d.find_elements(By.CSS_SELECTOR, "#tifa-chat [data-testid='bot']")
            text = " ".join(b.text for b in bots).split()
            return text if " ".join(text).endswith(" ".join(expected.split()[-3:])) else False

        shown = wait.until(reply_shown)
        time.sleep(0.5)  # let the last streamed frame paint before the screenshot
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTEFACTS / "web_chat.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        assert " ".join(expected.split()) in " ".join(shown)
        user = driver.find_elements(By.CSS_SELECTOR, "#tifa-chat [data-testid='user']")
        assert "What is your name?" in " ".join(u.text for u in user)
    finally:
        driver.quit()
        demo.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_chat_web_command_launches_the_page(tiny_model_dir, monkeypatch):
    from tifa_lite.cli import main
    from tifa_lite.serving import web

    seen = {}
    monkeypatch.setattr(web, "launch", lambda session, host, port: seen.update(session=session, host=host, port=port))
    assert main(["chat", "--web", "--model", str(tiny_model_dir), "--system", "You are Tifa.", "--port", "7999"]) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 7999)
    assert seen["session"].system == "You are Tifa."
