"""examples/space/app.py in a real browser: Debian's chromium uploads a WAV, types the transcript, presses
Analyse; the top label on the page must be the pipeline's answer for the same input.

Skips where chromium, chromedriver, selenium or gradio are missing (`apt-get install -y chromium
chromium-driver`; `pip install mer[space]`). Set MER_SPACE_SCREENSHOT=docs/space_demo.png to keep the screenshot.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tiny_folders import save_tiny_model, write_wav

from modeling_mer.configuration_mer import TASK
from modeling_mer.data import load_demo

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver") or "/usr/bin/chromedriver"
APP = Path(__file__).resolve().parents[1] / "examples" / "space" / "app.py"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not os.path.exists(CHROMEDRIVER),
    reason="no browser: `apt-get install -y chromium chromium-driver` (a self-downloading browser cannot work here)")
selenium = pytest.importorskip("selenium", reason="selenium not installed (pip install selenium)")
pytest.importorskip("gradio", reason="gradio not installed (pip install gradio)")
from selenium.webdriver import Chrome, ChromeOptions  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    save_tiny_model(root / "model")
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(root / "hf"), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    log = open(root / "app.log", "w")
    server = subprocess.Popen([sys.executable, str(APP), str(root / "model")], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the Space did not start: {(root / 'app.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url, root
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_space_answers_like_the_pipeline(space, browser, tmp_path):
    import io

    import soundfile
    from transformers import pipeline

    url, root = space
    row = load_demo()[5]
    samples, _ = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
    wav = write_wav(tmp_path / "utterance.wav", samples)
    expected = pipeline(TASK, model=str(root / "model"), trust_remote_code=True, device=-1)(str(wav),
                                                                                           text=row["text"])

    browser.get(url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#audio input[type=file]")))
    upload.send_keys(str(wav))
    # The clip is uploaded once the player replaces the drop zone.
    player = "#audio audio, #audio .waveform-container, #audio button[aria-label*='Clear']"
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, player)))
    box = browser.find_element(By.CSS_SELECTOR, "#transcript textarea")
    box.send_keys(row["text"])
    browser.find_element(By.CSS_SELECTOR, "#analyse").click()
    wait.until(lambda driver: driver.find_element(By.CSS_SELECTOR, "#top-label textarea").get_attribute("value"))
    shown = browser.find_element(By.CSS_SELECTOR, "#top-label textarea").get_attribute("value")
    time.sleep(1)  # let the bar chart and the focus plot draw before the screenshot
    browser.save_screenshot(str(tmp_path / "space_demo.png"))
    if os.environ.get("MER_SPACE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "space_demo.png", os.environ["MER_SPACE_SCREENSHOT"])
    assert shown == expected[0]["label"]
    assert (tmp_path / "space_demo.png").read_bytes()[:4] == b"\x89PNG"
