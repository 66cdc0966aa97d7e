"""The web studio in a real browser: uvicorn serving the real app on 127.0.0.1, driven by
Debian's headless Chromium through Selenium, with no network (no Selenium Manager, no CDN).

The page is checked against the API it talks to: the grid it shows holds the same PNGs the
API returns for the same seed, and the text it assembles from the server-sent events equals
the API's non-streamed completion. Screenshots go to the test's output directory; with
GENLAB_DOCS_SCREENSHOT=1 the images view also refreshes docs/studio.png for the README (off by
default, so a test run never changes a tracked file).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
import wave
from pathlib import Path

import httpx
import pytest

import genlab

from conftest import REPO, TINY_VAE

CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "run `sh scripts/install-browser.sh` (as root or with sudo) to install Debian's chromium and chromium-driver"
TINY_GPT = ["data.name=pydoc", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=32",
            "batch_size=8", "train.eval_batches=2", "train.progress=false", "train.tensorboard=false"]
TINY_MUSIC = ["data.max_pieces=8", "data.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
              "batch_size=8", "steps=30", "train.eval_every=30", "train.eval_batches=2", "train.warmup_steps=5",
              "train.progress=false", "train.tensorboard=false"]
WAIT_S = 60  # generous: the 2-core test machine is shared


def find_browser(which=shutil.which, driver: str = CHROMEDRIVER) -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver; fails (not skips) with the fix when missing,
    because CI installs them first and a skipped browser test would hide a broken studio."""
    browser = which("chromium") or which("chromium-browser")
    if browser is None or not Path(driver).is_file():
        missing = " and ".join(name for name, ok in (("chromium", browser), (driver, Path(driver).is_file())) if not ok)
        pytest.fail(f"the studio's browser test needs {missing}: {INSTALL_HINT}", pytrace=False)
    return browser, driver


def test_a_missing_browser_fails_with_the_install_command(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="scripts/install-browser.sh"):
        find_browser(which=lambda name: None, driver=str(tmp_path / "chromedriver"))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory with tiny models: images (VAE on 8x8 digits), text (GPT on pydoc) and
    music (GPT over the events of a few Bach chorales)."""
    root = tmp_path_factory.mktemp("studio-models")
    genlab.train("vae-digits", ["steps=300", *TINY_VAE], out=root / "digits-vae")  # ~1 s; digits, not noise
    genlab.train("gpt-shakespeare-char", ["steps=30", *TINY_GPT], out=root / "pydoc-gpt")
    with pytest.MonkeyPatch.context() as patch:  # the parsed chorales are cached under the data root: not ../shared/data
        patch.setenv("GENLAB_DATA_DIR", str(tmp_path_factory.mktemp("music-data")))
        genlab.train("gpt-chorales", TINY_MUSIC, out=root / "chorales-gpt")
    for run in root.iterdir():  # a served model directory holds the model, not the training state
        (run / "checkpoint.safetensors").unlink(missing_ok=True)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(models_dir) -> str:
    yield from serving(models_dir)


def serving(models_dir):
    """The real app on uvicorn, on 127.0.0.1 and a free port, in a thread of this process."""
    import uvicorn

    from genlab.serve.api import create_app

    port = free_port()
    config = uvicorn.Config(create_app(models_dir), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=WAIT_S)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as patch:
        # Selenium must never download a driver or a browser: Selenium Manager would go online.
        patch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait_for(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d), message=message)


def page_errors(driver, boxes: str = ".error") -> list[str]:
    """The error boxes (CSS selector) the page is showing: the API's messages; and script errors on the console."""
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).filter(e => !e.hidden).map(e => e.textContent)", boxes)
    # Script errors only: a 4xx answer the page shows on purpose is also logged, as a network entry.
    logged = [entry["message"] for entry in driver.get_log("browser")
              if entry["level"] == "SEVERE" and entry.get("source") in ("javascript", "console-api")]
    return shown + logged


def open_studio(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    wait_for(driver, lambda d: d.find_element(By.ID, "server-status").text == "server ok", "the studio did not reach the server")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#generate-model option[value='digits-vae']")) == 1,
             "the image model did not appear in the model list")


def save_full_page(driver, *paths: Path) -> None:
    """Screenshots of the whole page from the top (the window grows to the page's height for them)."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    driver.execute_script("window.scrollTo(0, 0)")
    driver.set_window_size(width, max(height, driver.execute_script("return document.documentElement.scrollHeight") + 120))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(path)), path
    driver.set_window_size(width, height)


def set_value(driver, element_id: str, value) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(str(value))


# ----------------------------------------------------------------------------- the studio


def test_images_tab_generates_the_apis_grid_and_inpaints_a_drawn_mask(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_studio(browser, server)
    Select(browser.find_element(By.ID, "generate-model")).select_by_value("digits-vae")
    set_value(browser, "generate-n", 16)
    set_value(browser, "generate-seed", 7)
    browser.find_element(By.ID, "generate-button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "generate-grid").get_attribute("data-count") == "16" or page_errors(d),
             "no image grid appeared")
    assert not page_errors(browser)
    images = browser.find_elements(By.CSS_SELECTOR, "#generate-grid img")
    assert len(images) == 16
    # Every cell is a decoded 8x8 picture, and they are the API's own samples for seed 7.
    assert browser.execute_script(
        "return Array.from(arguments[0]).every(i => i.complete && i.naturalWidth === 8 && i.naturalHeight === 8)", images)
    direct = httpx.post(f"{server}/v1/images/generations", timeout=WAIT_S,
                        json={"model": "digits-vae", "n": 16, "seed": 7, "response_format": "b64_json"}).json()
    shown = [image.get_attribute("src").removeprefix("data:image/png;base64,") for image in images]
    assert shown == [item["b64_json"] for item in direct["data"]]
    assert len(set(shown)) > 1  # 16 draws, not one picture repeated
    browser.save_screenshot(str(tmp_path / "studio-images.png"))

    # Inpainting: pick a generated digit, paint a mask over its lower half on the canvas, fill it in.
    images[0].click()
    wait_for(browser, lambda d: "8x8" in d.find_element(By.ID, "edit-source").text, "the picked image did not load for editing")
    canvas = browser.find_element(By.ID, "edit-mask")
    browser.execute_script("document.getElementById('edit-brush').value = '3'")  # a range input: set it exactly
    size = canvas.size
    stroke = ActionChains(browser).move_to_element_with_offset(canvas, -size["width"] // 2 + 8, size["height"] // 4)
    stroke.click_and_hold().move_by_offset(size["width"] - 16, 0).release().perform()
    mask = browser.execute_script("return Array.from(edit.mask)")
    assert 0 < sum(mask) < 64
    assert not any(mask[:32]), "a stroke across the lower half painted the upper half"
    assert all(mask[6 * 8:7 * 8]), "a quick stroke left gaps: the brush must be stamped along the path"
    browser.find_element(By.ID, "inpaint-button").click()
    result = browser.find_element(By.ID, "edit-result")
    wait_for(browser, lambda d: result.is_displayed() or page_errors(d, "#edit-error"), "no inpainting result appeared")
    assert not page_errors(browser, "#edit-error")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", result) == 8
    # Only the masked pixels may change: the upper half comes back exactly as it was sent.
    before, after = browser.execute_script("""
        const pixels = (img) => {
          const canvas = document.createElement("canvas");
          canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
          const context = canvas.getContext("2d");
          context.drawImage(img, 0, 0);
          return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
        };
        return [pixels(edit.image), pixels(arguments[0])];""", result)
    assert before[:32 * 4] == after[:32 * 4]
    readme_copy = [REPO / "docs" / "studio.png"] if os.environ.get("GENLAB_DOCS_SCREENSHOT") == "1" else []
    save_full_page(browser, tmp_path / "studio-inpaint.png", *readme_copy)

    # An API error reaches the person: this VAE is unconditional, so a class is refused with the reason.
    set_value(browser, "generate-class", 3)
    browser.find_element(By.ID, "generate-button").click()
    error = browser.find_element(By.ID, "generate-error")
    wait_for(browser, lambda d: error.is_displayed(), "the API's error was not shown")
    assert "unconditional" in error.text and error.text.startswith("HTTP 4")
    assert browser.find_element(By.ID, "generate-grid").get_attribute("data-count") == "16"  # the last grid stays
    browser.save_screenshot(str(tmp_path / "studio-error.png"))


def test_text_tab_streams_the_same_completion_the_api_returns(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_studio(browser, server)
    browser.find_element(By.ID, "tab-button-text").click()
    Select(browser.find_element(By.ID, "text-model")).select_by_value("pydoc-gpt")
    set_value(browser, "text-prompt", "The ")
    set_value(browser, "text-temperature", 1)  # sampled, seeded: the same seed gives the same text
    set_value(browser, "text-max-tokens", 40)
    set_value(browser, "text-n", 1)
    set_value(browser, "text-seed", 5)
    assert browser.find_element(By.ID, "text-stream").is_selected()
    browser.find_element(By.ID, "text-button").click()
    output = browser.find_element(By.ID, "text-output")
    wait_for(browser, lambda d: output.get_attribute("data-state") in ("done", "error"), "the completion did not finish")
    assert output.get_attribute("data-state") == "done", page_errors(browser)
    streamed = browser.execute_script("return document.querySelector('#text-output .completion .text').textContent")
    direct = httpx.post(f"{server}/v1/completions", timeout=WAIT_S, json={
        "model": "pydoc-gpt", "prompt": "The ", "max_tokens": 40, "temperature": 1, "top_p": 0.95, "n": 1, "seed": 5}).json()
    assert streamed == direct["choices"][0]["text"] and streamed.strip()
    finish = browser.find_element(By.CSS_SELECTOR, "#text-output .completion").get_attribute("data-finish-reason")
    assert finish == direct["choices"][0]["finish_reason"]
    browser.save_screenshot(str(tmp_path / "studio-text.png"))

    # A bad request is shown with the API's reason, not swallowed (the input's own bound is bypassed).
    browser.execute_script("document.getElementById('text-top-p').removeAttribute('max')")
    set_value(browser, "text-top-p", 7)
    browser.find_element(By.ID, "text-button").click()
    error = browser.find_element(By.ID, "text-error")
    wait_for(browser, lambda d: error.is_displayed(), "the API's error was not shown")
    assert "top_p" in error.text and error.text.startswith("HTTP 4")
    assert output.get_attribute("data-state") == "error"


def test_models_tab_lists_models_with_metrics_and_sample_grid(server, browser, models_dir, tmp_path):
    from selenium.webdriver.common.by import By

    open_studio(browser, server)
    browser.find_element(By.ID, "tab-button-models").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#models-table tbody tr")
    assert sorted(row.get_attribute("data-model") for row in rows) == ["chorales-gpt", "digits-vae", "pydoc-gpt"]
    next(row for row in rows if row.get_attribute("data-model") == "digits-vae").click()
    metrics = browser.find_element(By.ID, "model-metrics")
    wait_for(browser, lambda d: "iwae_nll" in metrics.text or page_errors(d), "the model's metrics did not appear")
    assert not page_errors(browser)
    written = json.loads((models_dir / "digits-vae" / "metrics.json").read_text())
    shown = {row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
             for row in metrics.find_elements(By.TAG_NAME, "tr")}
    assert float(shown["test.iwae_nll"]) == pytest.approx(written["test"]["iwae_nll"], rel=1e-4)
    samples = browser.find_element(By.ID, "model-samples")
    wait_for(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", samples),
             "the sample grid did not load")
    assert samples.is_displayed()
    browser.save_screenshot(str(tmp_path / "studio-models.png"))


def test_music_tab_plays_the_composition_and_offers_its_midi(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_studio(browser, server)
    browser.find_element(By.ID, "tab-button-music").click()
    Select(browser.find_element(By.ID, "music-model")).select_by_value("chorales-gpt")
    set_value(browser, "music-bars", 2)
    set_value(browser, "music-seed", 4)
    browser.find_element(By.ID, "music-button").click()
    audio = browser.find_element(By.ID, "music-audio")
    wait_for(browser, lambda d: d.execute_script("return arguments[0].readyState >= 1", audio) or page_errors(d),
             "the composition did not load into the audio player")
    assert not page_errors(browser)
    direct = httpx.post(f"{server}/v1/music/compositions", timeout=WAIT_S,
                        json={"model": "chorales-gpt", "bars": 2, "seed": 4, "temperature": 1.0}).json()
    with wave.open(io.BytesIO(base64.b64decode(direct["wav_b64"]))) as wav:
        wav_seconds = wav.getnframes() / wav.getframerate()
    # The browser decoded the WAV it was given: its length is the API's WAV's length.
    assert browser.execute_script("return arguments[0].duration", audio) == pytest.approx(wav_seconds, abs=0.05)
    link = browser.find_element(By.ID, "music-midi")
    assert link.get_attribute("download") == "chorales-gpt-seed4.mid"
    midi = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b))));""",
        link.get_attribute("href"))
    assert bytes(midi) == base64.b64decode(direct["midi_b64"]) and bytes(midi[:4]) == b"MThd"
    roll = browser.find_element(By.ID, "music-roll")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", roll) > 0
    assert f"{direct['notes']} notes" in browser.find_element(By.ID, "music-summary").text
    browser.save_screenshot(str(tmp_path / "studio-music.png"))


def test_apply_tab_lists_a_plugins_application_and_runs_it_from_a_generated_form(browser, tmp_path):
    """An application registered from the tests alone (tests/toy_plugin.py) appears in the studio's
    task list and runs from the form the page builds out of its OpenAPI schema."""
    from selenium.webdriver.common.by import By

    import toy_plugin
    from genlab import registry

    registry.register_data_kind(toy_plugin.POINTS)
    registry.register_application(toy_plugin.STATS)
    registry.register_family("toy-gaussian")(toy_plugin.ToyGaussian)
    try:
        genlab.train(toy_plugin.RECIPE, out=tmp_path / "models" / "ring")
        served = serving(tmp_path / "models")
        url = next(served)
        browser.get(url + "/#apply")
        entry = "#applications-list li[data-application='points-stats'] button"
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, entry), "the plugin's application is not listed")
        listed = {e.get_attribute("data-application") for e in browser.find_elements(By.CSS_SELECTOR, "#applications-list li")}
        assert {"points-stats", "inpaint", "superres", "denoise", "compose"} <= listed
        browser.find_element(By.CSS_SELECTOR, entry).click()
        model_option = "#apply-form select[name='model'] option[value='ring']"
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, model_option), "the form has no model to pick")
        n_field = browser.find_element(By.CSS_SELECTOR, "#apply-form input[name='n']")
        assert n_field.get_attribute("max") == "100000"  # the bound from the request schema
        n_field.clear()
        n_field.send_keys("4000")
        browser.find_element(By.ID, "apply-button").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "apply-result").is_displayed(), "no result shown")
        result = json.loads(browser.find_element(By.ID, "apply-result").text)
        assert result["n"] == 4000 and abs(result["mean"][0] - 1.0) < 0.4
        assert page_errors(browser) == []
        save_full_page(browser, tmp_path / "apply.png")
        next(served, None)
    finally:
        registry.unregister(registry.DATA_KINDS, "points")
        registry.unregister(registry.APPLICATIONS, "points-stats")
        registry.unregister(registry.FAMILIES, "toy-gaussian")
