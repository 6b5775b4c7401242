"""examples/space/app.py in a real browser: Debian's chromium uploads a WAV (and types the transcript), presses
Analyse, and reads the answer from the page; it must be the pipeline's answer for the same input and model folder.

- a short clip with its transcript, to a bimodal model: the top label;
- a 29 s conversation (no transcript), to an audio-only model (a bimodal one would need an ASR model, and none
  is available offline): the timeline table, row by row, and the timeline plot;
- without a browser, the messages the app gives instead of an answer (no audio, no transcript, one transcript
  for a long recording).

One browser serves both browser tests, one Space process per model folder. They skip where chromium,
chromedriver or selenium are missing (`apt-get install -y chromium chromium-driver`; `pip install mer[space]`).
MER_SPACE_SCREENSHOT=docs/space_demo.png and MER_SPACE_TIMELINE_SCREENSHOT=docs/space_timeline.png keep the
screenshots; MER_SPACE_MODEL=<a trained model folder> serves that model in the short-clip test instead of a tiny
random one (for the README picture).
"""

import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile
from tiny_folders import save_tiny_model, write_wav
from tiny_models import tiny_config
from transformers import pipeline

from modeling_mer.configuration_mer import TASK
from modeling_mer.data import load_demo
from modeling_mer.data.conversation import make_conversation

gr = pytest.importorskip("gradio", reason="gradio not installed (pip install gradio)")
try:
    from selenium.webdriver import Chrome, ChromeOptions
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # only the browser tests need it; the plain function tests below still run
    Chrome = None

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver") or "/usr/bin/chromedriver"
APP = Path(__file__).resolve().parents[1] / "examples" / "space" / "app.py"
if CHROMIUM is None or not os.path.exists(CHROMEDRIVER):
    NO_BROWSER = "no browser: `apt-get install -y chromium chromium-driver` (a self-downloading browser cannot work here)"
elif Chrome is None:
    NO_BROWSER = "selenium not installed (pip install selenium)"
else:
    NO_BROWSER = None
needs_browser = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600")


def load_app():
    """examples/space/app.py as a module (it is a script beside the Space's files, not part of the package)."""
    spec = importlib.util.spec_from_file_location("space_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def folder_pipeline(folder):
    """The pipeline as the Space loads it: from the folder, with the folder's own code."""
    return pipeline(TASK, model=str(folder), trust_remote_code=True, device=-1)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(model, root):
    """Start the Space for `model` on a free loopback port; returns (url, process, log) once it answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(root / "hf"), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    log = open(root / "app.log", "w")
    server = subprocess.Popen([sys.executable, str(APP), str(model)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return url, server, log
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                log.close()
                pytest.fail(f"the Space did not start: {(root / 'app.log').read_text()[-3000:]}")
            time.sleep(1)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """space(model_folder) -> the URL of a Space serving it: one process per folder, all stopped after the module."""
    servers = {}

    def start(model):
        if model not in servers:
            servers[model] = launch(model, tmp_path_factory.mktemp("space"))
        return servers[model][0]

    yield start
    for _, server, log in servers.values():
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def bimodal_model(tmp_path_factory):
    if os.environ.get("MER_SPACE_MODEL"):
        return Path(os.environ["MER_SPACE_MODEL"])  # as given: the page shows this name
    folder = tmp_path_factory.mktemp("bimodal") / "model"
    save_tiny_model(folder)
    return folder


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio-only") / "model"
    save_tiny_model(folder, modalities=("audio",))
    return folder


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


def submit(browser, url, wav, transcript=None):
    """Open the Space, upload `wav`, type `transcript` if given, press Analyse; returns the waiter once the top
    label is on the page (every output arrives in the same update)."""
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#audio input[type=file]")))
    upload.send_keys(str(wav))
    # The clip is uploaded once the player replaces the drop zone.
    player = "#audio audio, #audio .waveform-container, #audio button[aria-label*='Clear']"
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, player)))
    if transcript is not None:
        browser.find_element(By.CSS_SELECTOR, "#transcript textarea").send_keys(transcript)
    browser.find_element(By.CSS_SELECTOR, "#analyse").click()
    wait.until(lambda driver: driver.find_element(By.CSS_SELECTOR, "#top-label textarea").get_attribute("value"))
    return wait


def displayed(browser, selector):
    """Whether an element matching `selector` is on the page and visible (gradio may leave hidden ones out)."""
    return any(element.is_displayed() for element in browser.find_elements(By.CSS_SELECTOR, selector))


def screenshot(browser, path, keep_as_variable):
    browser.save_screenshot(str(path))
    if os.environ.get(keep_as_variable):
        shutil.copyfile(path, os.environ[keep_as_variable])
    assert path.read_bytes()[:4] == b"\x89PNG"


@needs_browser
def test_space_answers_like_the_pipeline(space, bimodal_model, browser, tmp_path):
    row = load_demo()[5]
    samples, _ = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
    wav = write_wav(tmp_path / "utterance.wav", samples)
    expected = folder_pipeline(bimodal_model)(str(wav), text=row["text"])

    submit(browser, space(bimodal_model), wav, row["text"])
    shown = browser.find_element(By.CSS_SELECTOR, "#top-label textarea").get_attribute("value")
    time.sleep(1)  # let the bar chart and the focus plot draw before the screenshot
    screenshot(browser, tmp_path / "space_demo.png", "MER_SPACE_SCREENSHOT")
    assert shown == expected[0]["label"]
    # One answer, no timeline: the focus plot shows, the (empty) timeline table and plot do not.
    assert displayed(browser, "#focus") and not displayed(browser, "#timeline")
    assert not displayed(browser, "#timeline-plot")


@needs_browser
def test_space_draws_the_timeline_of_a_long_recording(space, audio_model, browser, tmp_path):
    conversation = make_conversation(load_demo(), range(9, 1000, 92), seed=4)  # 11 utterances, 29 s
    wav = write_wav(tmp_path / "conversation.wav", conversation.waveform)
    assert soundfile.info(str(wav)).duration > load_app().LONG_SECONDS
    expected = folder_pipeline(audio_model)(str(wav), timeline=True)

    wait = submit(browser, space(audio_model), wav)
    table = "#timeline [role=grid]"
    wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, f"{table} [role=gridcell]"))
    columns = [cell.get_attribute("title") for cell in browser.find_elements(By.CSS_SELECTOR, f"{table} th")]
    # The table is virtual (rows outside its 500 px viewport are not in the page): aria-rowcount counts them
    # all, the header row included; 11 rows fit, so each can be read.
    rows = int(browser.find_element(By.CSS_SELECTOR, table).get_attribute("aria-rowcount")) - 1
    shown = [[browser.find_element(By.CSS_SELECTOR, f"{table} [data-testid=cell-{row}-{column}]").text
              for column in range(len(columns))] for row in range(rows)]
    plot = browser.find_element(By.CSS_SELECTOR, "#timeline-plot img")
    drawn = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot)
    top = browser.find_element(By.CSS_SELECTOR, "#top-label textarea").get_attribute("value")
    browser.execute_script("document.querySelector('#timeline').scrollIntoView()")
    time.sleep(1)  # let the plot image lay out before the screenshot
    screenshot(browser, tmp_path / "space_timeline.png", "MER_SPACE_TIMELINE_SCREENSHOT")

    assert columns == ["start", "end", "text", "label", "score"]
    assert rows == len(expected) > 1
    for cells, entry in zip(shown, expected, strict=True):
        start, end, _, label, score = cells
        assert label == entry["label"]
        assert (float(start), float(end), float(score)) == (round(entry["start"], 2), round(entry["end"], 2),
                                                            round(entry["score"], 3))
    assert drawn > 0
    assert not displayed(browser, "#focus")  # a timeline has no single focus map
    # The top label of a long recording is the class with the highest mean score over the segments.
    means = {s["label"]: sum(t["score"] for e in expected for t in e["scores"] if t["label"] == s["label"]) / rows
             for s in expected[0]["scores"]}
    assert top == max(means, key=means.get)


@pytest.mark.parametrize("seconds, transcript, message", [
    (None, "hello", "Record or upload some speech first"),
    (2, None, "Type the transcript"),
    (21, "everything said in the recording", "one transcript cannot be aligned to its speech segments"),
], ids=["no audio", "short clip without transcript", "long recording with one transcript"])
def test_analyse_says_what_is_missing_before_any_work(tmp_path, seconds, transcript, message):
    # A stand-in with only the config of a bimodal model: calling it to score anything would fail differently.
    pipe = SimpleNamespace(model=SimpleNamespace(config=tiny_config()))
    audio = str(write_wav(tmp_path / "speech.wav", seconds * 16_000)) if seconds else None
    with pytest.raises(gr.Error, match=message):
        load_app().make_analyse(pipe)(audio, transcript)
