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
    # metrics.json gets an "eval" section: sample metrics beside their floors (the Models tab shows both)
    genlab.evaluate(root / "digits-vae", n=100, iwae_k=4, progress=False)
    genlab.train("denoise-mnist", ["data.name=digits", "steps=15", "model.channels=8", "model.depth=2", "batch_size=32",
                                   "train.progress=false", "train.tensorboard=false", "train.eval_batches=2"],
                 out=root / "digits-denoiser")
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


def serving(models_dir, **options):
    """The real app on uvicorn, on 127.0.0.1 and a free port, in a thread of this process."""
    import uvicorn

    from genlab.serve.api import create_app

    port = free_port()
    config = uvicorn.Config(create_app(models_dir, **options), host="127.0.0.1", port=port, log_level="warning")
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
    options.set_capability("unhandledPromptBehavior", "ignore")  # the API-key prompt is answered by its test
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
    assert sorted(row.get_attribute("data-model") for row in rows) == ["chorales-gpt", "digits-denoiser", "digits-vae",
                                                                       "pydoc-gpt"]
    next(row for row in rows if row.get_attribute("data-model") == "digits-vae").click()
    metrics = browser.find_element(By.ID, "model-metrics")
    wait_for(browser, lambda d: "iwae_nll" in metrics.text or page_errors(d), "the model's metrics did not appear")
    assert not page_errors(browser)
    written = json.loads((models_dir / "digits-vae" / "metrics.json").read_text())
    shown = {row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
             for row in metrics.find_elements(By.TAG_NAME, "tr")}
    assert float(shown["test.iwae_nll"]) == pytest.approx(written["test"]["iwae_nll"], rel=1e-4)
    # Each sample metric of `genlab eval` sits beside its floor: metric | model | floor.
    floors = browser.find_element(By.ID, "model-floors")
    assert floors.is_displayed()
    assert [th.text for th in floors.find_elements(By.CSS_SELECTOR, "thead th")] == ["metric", "model", "floor"]
    evaluated = written["eval"]["samples"]
    rows = {tr.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in tr.find_elements(By.TAG_NAME, "td")[1:]]
            for tr in floors.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert set(rows) == {f"eval.samples.{key}" for key in evaluated["metrics"]}
    for key, value in evaluated["metrics"].items():
        model_value, floor_value = rows[f"eval.samples.{key}"]
        assert float(model_value) == pytest.approx(value, rel=1e-4, abs=1e-9)
        assert float(floor_value) == pytest.approx(evaluated["floor"][key], rel=1e-4, abs=1e-9)
    assert evaluated["floor_definition"] in browser.find_element(By.ID, "model-floors-note").text
    assert not any(key.startswith("eval.samples.floor.") for key in shown)  # not repeated in the flat table
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


# ----------------------------------------------------------------------------- hardening: inputs, uploads, panels


def digit_png(path: Path, index: int) -> Path:
    """A real 8x8 digit (scikit-learn's embedded copy) as a PNG file."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    Image.fromarray((load_digits().images[index] * 255.0 / 16.0 + 0.5).astype(np.uint8)).save(path)
    return path


def inline_message(driver, input_id: str) -> str:
    """The message the page shows next to an input it refused ('' when none)."""
    return driver.execute_script(
        "const n = document.getElementById(arguments[0] + '-invalid'); return n && !n.hidden ? n.textContent : ''", input_id)


def requests_to(driver, path: str) -> int:
    """How many requests the page has sent to one API path (the page's own background requests, such as the model
    list and the health check, may still be arriving, so a count of every resource would be racy)."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => new URL(e.name).pathname === arguments[0]).length",
        path)


def test_out_of_range_inputs_are_marked_before_sending_and_seeds_reach_2_63(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_studio(browser, server)
    Select(browser.find_element(By.ID, "generate-model")).select_by_value("digits-vae")
    requests_before = requests_to(browser, "/v1/images/generations")
    set_value(browser, "generate-n", 65)
    set_value(browser, "generate-seed", 2**63)  # one past the server's bound: the page says so itself
    browser.find_element(By.ID, "generate-button").click()
    wait_for(browser, lambda d: inline_message(d, "generate-seed"), "no message next to the seed")
    assert "9223372036854775807" in inline_message(browser, "generate-seed")
    assert "64" in inline_message(browser, "generate-n")
    assert "not sent" in browser.find_element(By.ID, "generate-status").text
    assert browser.find_element(By.ID, "generate-error").get_attribute("hidden")  # not the API's error box
    assert requests_to(browser, "/v1/images/generations") == requests_before
    # Fixed: the marks go as the value is edited, and the largest seed is sent digit for digit.
    set_value(browser, "generate-n", 4)
    assert inline_message(browser, "generate-n") == ""
    set_value(browser, "generate-seed", 2**63 - 1)
    browser.find_element(By.ID, "generate-button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "generate-grid").get_attribute("data-count") == "4" or page_errors(d),
             "no grid for the largest seed")
    assert not page_errors(browser)
    shown = [i.get_attribute("src").removeprefix("data:image/png;base64,")
             for i in browser.find_elements(By.CSS_SELECTOR, "#generate-grid img")]
    direct = httpx.post(f"{server}/v1/images/generations", timeout=WAIT_S,
                        json={"model": "digits-vae", "n": 4, "seed": 2**63 - 1, "response_format": "b64_json"}).json()
    assert shown == [item["b64_json"] for item in direct["data"]]
    nearby = httpx.post(f"{server}/v1/images/generations", timeout=WAIT_S,  # 2^63-1 as a double would be 2^63
                        json={"model": "digits-vae", "n": 4, "seed": 2**63 - 2, "response_format": "b64_json"}).json()
    assert shown != [item["b64_json"] for item in nearby["data"]]
    # The music panel's new controls are checked the same way.
    browser.find_element(By.ID, "tab-button-music").click()
    set_value(browser, "music-top-p", 1.5)
    browser.find_element(By.ID, "music-button").click()
    wait_for(browser, lambda d: inline_message(d, "music-top-p"), "no message next to top_p")
    assert "1" in inline_message(browser, "music-top-p") and not browser.find_element(By.ID, "music-result").is_displayed()
    set_value(browser, "music-top-p", "")


def test_large_uploads_are_shrunk_in_the_page_and_denoise_shows_noisy_beside_clean(server, browser, tmp_path):
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_studio(browser, server)
    big = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 1000, 3), dtype=np.uint8)).save(big)
    browser.find_element(By.ID, "edit-upload").send_keys(str(big))
    wait_for(browser, lambda d: "512x307" in d.find_element(By.ID, "edit-source").text, "the large upload was not shrunk")
    assert "shrunk in the page from 1000x600" in browser.find_element(By.ID, "edit-source").text
    assert browser.execute_script("return [edit.width, edit.height, edit.file.type, edit.file.size < 4 << 20]") == \
        [512, 307, "image/png", True]

    # Denoise with added noise: noisy | denoised | clean, the API's own pictures, in labelled columns.
    digit = digit_png(tmp_path / "digit.png", 3)
    browser.find_element(By.ID, "edit-upload").send_keys(str(digit))
    wait_for(browser, lambda d: "8x8" in d.find_element(By.ID, "edit-source").text, "the digit did not load")
    Select(browser.find_element(By.ID, "denoise-model")).select_by_value("digits-denoiser")
    set_value(browser, "denoise-noise", "gaussian:0.3")
    browser.find_element(By.ID, "denoise-button").click()
    compare = browser.find_element(By.ID, "denoise-compare")
    wait_for(browser, lambda d: compare.is_displayed() or page_errors(d, "#edit-error"), "no denoise comparison appeared")
    assert not page_errors(browser, "#edit-error")
    columns = compare.find_elements(By.TAG_NAME, "figure")
    assert [c.get_attribute("data-column") for c in columns] == ["noisy", "denoised", "clean"]
    assert [c.find_element(By.TAG_NAME, "figcaption").text for c in columns] == ["noisy", "denoised", "clean"]
    direct = httpx.post(f"{server}/v1/images/denoise", timeout=WAIT_S, data={"model": "digits-denoiser", "noise": "gaussian:0.3"},
                        files={"image": ("digit.png", digit.read_bytes(), "image/png")}).json()
    noisy_src = columns[0].find_element(By.TAG_NAME, "img").get_attribute("src")
    assert noisy_src == f"data:image/png;base64,{direct['noisy_b64_json']}"
    denoised = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b))));""",
        columns[1].find_element(By.TAG_NAME, "img").get_attribute("src"))
    assert bytes(denoised) == base64.b64decode(direct["data"][0]["b64_json"])
    assert "PSNR" in browser.find_element(By.ID, "edit-result-caption").text
    save_full_page(browser, tmp_path / "studio-denoise.png")


def test_music_tab_continues_a_prompt_midi_in_a_key_with_top_p(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    opening = httpx.post(f"{server}/v1/music/compositions", timeout=WAIT_S,
                         json={"model": "chorales-gpt", "bars": 1, "seed": 1, "response_format": "midi"}).content
    prompt = tmp_path / "opening.mid"
    prompt.write_bytes(opening)
    open_studio(browser, server)
    browser.find_element(By.ID, "tab-button-music").click()
    Select(browser.find_element(By.ID, "music-model")).select_by_value("chorales-gpt")
    set_value(browser, "music-bars", 1)
    set_value(browser, "music-seed", 2)
    set_value(browser, "music-top-p", 0.9)
    set_value(browser, "music-key", "D minor")
    browser.find_element(By.ID, "music-prompt").send_keys(str(prompt))
    browser.find_element(By.ID, "music-button").click()
    summary = browser.find_element(By.ID, "music-summary")
    wait_for(browser, lambda d: "opening.mid" in summary.text or page_errors(d), "the continuation did not appear")
    assert not page_errors(browser)
    direct = httpx.post(f"{server}/v1/music/compositions", timeout=WAIT_S, json={
        "model": "chorales-gpt", "bars": 1, "seed": 2, "temperature": 1.0, "top_p": 0.9, "key": "D minor",
        "prompt_midi": base64.b64encode(opening).decode()}).json()
    midi = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b))));""",
        browser.find_element(By.ID, "music-midi").get_attribute("href"))
    assert bytes(midi) == base64.b64decode(direct["midi_b64"])
    assert "D minor" in summary.text and "top_p 0.9" in summary.text
    roll = browser.find_element(By.ID, "music-roll")
    assert roll.get_attribute("src") == f"data:image/png;base64,{direct['piano_roll_png_b64']}"
    # A prompt over the 1 MiB limit is refused next to the control.
    (tmp_path / "huge.mid").write_bytes(b"MThd" + bytes(1 << 20))
    browser.find_element(By.ID, "music-prompt").send_keys(str(tmp_path / "huge.mid"))
    browser.find_element(By.ID, "music-button").click()
    wait_for(browser, lambda d: inline_message(d, "music-prompt"), "no message next to the prompt file")
    assert "1,048,576" in inline_message(browser, "music-prompt")
    save_full_page(browser, tmp_path / "studio-music-prompt.png")


def run_apply(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    entry = f"#applications-list li[data-application='{name}'] button"
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, entry), f"{name} is not listed")
    driver.find_element(By.CSS_SELECTOR, entry).click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#apply-form select[name='model'] option[value='digits-vae']"),
             f"the {name} form has no model to pick")


def apply_field(driver, name: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#apply-form [name='{name}']")


def test_interpolate_traverse_and_compress_run_from_the_apply_tab(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    a, b = digit_png(tmp_path / "a.png", 0), digit_png(tmp_path / "b.png", 1)
    open_studio(browser, server)
    browser.find_element(By.ID, "tab-button-apply").click()
    run_apply(browser, "interpolate")
    files = apply_field(browser, "image")
    assert files.get_attribute("multiple") == "true"
    files.send_keys(str(a))  # one image: the page asks for two before sending
    steps = apply_field(browser, "steps")
    assert steps.get_attribute("max") == "256"
    steps.clear()
    steps.send_keys("300")
    browser.find_element(By.ID, "apply-button").click()
    wait_for(browser, lambda d: inline_message(d, "image") and inline_message(d, "steps"), "the bad fields were not marked")
    assert "exactly 2" in inline_message(browser, "image") and "256" in inline_message(browser, "steps")
    browser.execute_script("arguments[0].value = ''", files)
    files.send_keys(f"{a}\n{b}")
    steps.clear()
    steps.send_keys("4")
    Select(apply_field(browser, "method")).select_by_value("linear")
    browser.find_element(By.ID, "apply-button").click()
    frames = "#apply-images .frames img"
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, frames)) == 4 or page_errors(d), "no frames shown")
    assert not page_errors(browser)
    direct = httpx.post(f"{server}/v1/images/interpolate", timeout=WAIT_S,
                        data={"model": "digits-vae", "steps": "4", "method": "linear"},
                        files=[("image", ("a.png", a.read_bytes(), "image/png")),
                               ("image", ("b.png", b.read_bytes(), "image/png"))]).json()
    shown = [i.get_attribute("src") for i in browser.find_elements(By.CSS_SELECTOR, frames)]
    assert shown == [f"data:image/png;base64,{item['b64_json']}" for item in direct["data"]]
    gif = browser.find_element(By.CSS_SELECTOR, "#apply-images figure[data-field='gif_b64_json'] img")
    assert gif.get_attribute("src") == f"data:image/gif;base64,{direct['gif_b64_json']}"
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", gif) == 64
    assert "(picture below)" in browser.find_element(By.ID, "apply-result").text

    # Traverse from z = 0 (no image): one row of `steps` frames per dimension, each captioned.
    run_apply(browser, "traverse")
    for name, value in (("dims", "2"), ("steps", "3"), ("span", "0")):
        apply_field(browser, name).clear()
        apply_field(browser, name).send_keys(value)
    browser.find_element(By.ID, "apply-button").click()
    wait_for(browser, lambda d: inline_message(d, "span"), "span 0 was not marked (the bound is exclusive)")
    apply_field(browser, "span").clear()
    apply_field(browser, "span").send_keys("2")
    browser.find_element(By.ID, "apply-button").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, frames)) == 6 or page_errors(d), "no traversal shown")
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#apply-images .frames figcaption")]
    assert captions[:3] == ["dim 0 · value -2", "dim 0 · value 0", "dim 0 · value 2"]

    # Compress: the decoded image with its size in bits beside PNG's.
    run_apply(browser, "compress")
    apply_field(browser, "image").send_keys(str(a))
    apply_field(browser, "step").clear()
    apply_field(browser, "step").send_keys("0.5")
    browser.find_element(By.ID, "apply-button").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, frames)) == 1 or page_errors(d), "no decoded image")
    assert not page_errors(browser)
    result = json.loads(browser.find_element(By.ID, "apply-result").text)
    assert result["step"] == 0.5 and result["n"] == 1 and result["raw_bits_per_image"] == 512
    caption = browser.find_element(By.CSS_SELECTOR, "#apply-images .frames figcaption").text
    assert "bits" in caption and "png_bits" in caption and "a.png" in caption
    save_full_page(browser, tmp_path / "studio-apply-compress.png")
    run_apply(browser, "interpolate")  # the interpolation again, for the screenshot of the whole page
    apply_field(browser, "image").send_keys(f"{a}\n{b}")
    browser.find_element(By.ID, "apply-button").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, frames)) == 10 or page_errors(d), "no frames shown")
    save_full_page(browser, tmp_path / "studio-apply-interpolate.png")


def test_a_server_with_an_api_key_asks_for_it_once_and_the_page_works(models_dir, browser):
    """genlab serve --api-key: the page asks for the key on the first 401, keeps it for the tab and
    sends it as a Bearer token with every request."""
    from selenium.common.exceptions import UnexpectedAlertPresentException
    from selenium.webdriver.common.by import By

    served = serving(models_dir, api_key="s3cret-key")
    url = next(served)
    try:
        try:
            browser.get(url + "/#models")
        except UnexpectedAlertPresentException:  # the prompt opened while the page loaded
            pass
        prompt = wait_for(browser, lambda d: _alert(d), "the page did not ask for the key")
        prompt.send_keys("s3cret-key")
        prompt.accept()
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#models-table tr[data-model='digits-vae']"),
                 "the models did not load with the key")
        assert browser.execute_script("return sessionStorage.getItem('genlab-api-key')") == "s3cret-key"
    finally:
        browser.execute_script("sessionStorage.clear()")
        next(served, None)


def _alert(driver):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


# ----------------------------------------------------------------------------- recommend

TINY_EASE = ["data.users=200", "data.items=40", "data.groups=4", "data.clicks_per_user=8",
             "train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def recommender_server(tmp_path_factory) -> str:
    """A server of its own with two tiny recommenders (EASE: closed form, ~1 s each), so the other studio
    tests keep their models directory: one on the planted synthetic set (titled items), one on a CSV of
    clicks with item ids only (ids 100..111, no titles)."""
    root = tmp_path_factory.mktemp("studio-recommenders")
    genlab.train("ease-synthetic", TINY_EASE, out=root / "synthetic-ease")
    clicks = tmp_path_factory.mktemp("clicks") / "clicks.csv"
    clicks.write_text("user,item\n" + "".join(f"{u},{100 + i}\n" for u in range(30) for i in range(12) if (u + i) % 3))
    genlab.train("ease-synthetic", [f"data.name=csv:{clicks}", "data.heldout_users=3", "batch_size=8",
                                    "train.progress=false", "train.tensorboard=false"], out=root / "ids-only-ease")
    for path in root.glob("*/*.safetensors"):
        if path.name != "model.safetensors":
            path.unlink()
    yield from serving(root)


def recommendations_sent(driver) -> int:
    """How many requests the page has made to POST /v1/recommendations so far."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/v1/recommendations')).length")


def shown_recommendations(driver) -> list[tuple[int, int, str, str]]:
    from selenium.webdriver.common.by import By

    return [(int(cells[0].text), int(cells[1].text), cells[2].text, cells[3].text)
            for cells in ([td for td in row.find_elements(By.TAG_NAME, "td")]
                          for row in driver.find_elements(By.CSS_SELECTOR, "#recommend-table tbody tr"))]


def assert_table_is_the_apis(driver, url: str, items: list[int], k: int) -> None:
    from selenium.webdriver.common.by import By

    table = driver.find_element(By.ID, "recommend-table")
    wait_for(driver, lambda d: (table.get_attribute("data-state") == "done"
                                and table.get_attribute("data-history") == ",".join(map(str, items))
                                and table.get_attribute("data-k") == str(k)) or page_errors(d),
             f"the table did not show the answer for {items}, k={k}")
    assert not page_errors(driver)
    direct = httpx.post(f"{url}/v1/recommendations", timeout=WAIT_S,
                        json={"model": "synthetic-ease", "items": items, "k": k}).json()
    shown = shown_recommendations(driver)
    assert [row[:3] for row in shown] == [(r["rank"], r["item"], r["title"]) for r in direct["recommendations"]]
    for (*_, score), expected in zip(shown, direct["recommendations"]):
        assert len(score.split(".")[1]) == 4 and abs(float(score) - expected["score"]) <= 0.5e-4 + 1e-9, (score, expected)
    assert not {r["item"] for r in direct["recommendations"]} & set(items)  # the history itself is not recommended


def test_recommend_tab_builds_a_history_and_shows_the_apis_top_k(recommender_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url = recommender_server
    browser.get(url + "/#recommend")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#recommend-model option[value='synthetic-ease']"),
             "the recommender did not appear in the model list")
    assert browser.find_element(By.ID, "tab-recommend").is_displayed()
    Select(browser.find_element(By.ID, "recommend-model")).select_by_value("synthetic-ease")
    wait_for(browser, lambda d: "40 items" in d.find_element(By.ID, "recommend-catalogue").text, "the catalogue did not load")
    assert browser.find_element(By.ID, "recommend-k").get_attribute("max") == "40"
    # An empty history says so, and asks the server nothing.
    empty = browser.find_element(By.ID, "recommend-empty")
    assert empty.is_displayed() and "history is empty" in empty.text
    assert not browser.find_element(By.ID, "recommend-table").is_displayed()
    assert recommendations_sent(browser) == 0

    # The search filters the catalogue as one types, showing at most 20 matches.
    set_value(browser, "recommend-search", "item")
    matches = "#recommend-matches button[data-item]"
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, matches)) == 20, "the matches were not capped at 20")
    assert "20 more" in browser.find_element(By.ID, "recommend-matches").text
    set_value(browser, "recommend-search", "group 2")
    wait_for(browser, lambda d: 3 <= len(d.find_elements(By.CSS_SELECTOR, matches)) < 20, "no matches for 'group 2'")
    assert all("(group 2)" in b.text for b in browser.find_elements(By.CSS_SELECTOR, matches))
    chosen = []
    for _ in range(3):  # a clicked item leaves the matches and joins the history
        first = browser.find_element(By.CSS_SELECTOR, matches)
        chosen.append(int(first.get_attribute("data-item")))
        first.click()
        wait_for(browser, lambda d: [int(c.get_attribute("data-item")) for c in d.find_elements(By.CSS_SELECTOR, "#recommend-history .chip")]
                 == chosen, "the clicked item did not join the history")
    assert not empty.is_displayed()
    assert_table_is_the_apis(browser, url, chosen, 10)
    assert len(shown_recommendations(browser)) == 10
    save_full_page(browser, tmp_path / "studio-recommend.png")

    # k typed digit by digit ("1", then "12"): only the answer for the latest k is shown.
    set_value(browser, "recommend-k", 12)
    assert_table_is_the_apis(browser, url, chosen, 12)
    # An id typed in the search box finds that item.
    set_value(browser, "recommend-search", "7")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#recommend-matches button[data-item='7']"), "no match for id 7")
    assert browser.find_element(By.CSS_SELECTOR, matches).get_attribute("data-item") == "7"  # the exact id comes first

    # Removing an item from the history updates the table to the API's answer for the rest.
    browser.find_element(By.CSS_SELECTOR, f"#recommend-history .chip[data-item='{chosen[1]}'] button").click()
    assert_table_is_the_apis(browser, url, [chosen[0], chosen[2]], 12)
    browser.find_element(By.CSS_SELECTOR, f"#recommend-history .chip[data-item='{chosen[0]}'] button").click()
    assert_table_is_the_apis(browser, url, [chosen[2]], 12)
    sent = recommendations_sent(browser)
    browser.find_element(By.CSS_SELECTOR, f"#recommend-history .chip[data-item='{chosen[2]}'] button").click()
    wait_for(browser, lambda d: empty.is_displayed(), "the empty history was not announced")
    time.sleep(1.0)  # well past the debounce: still nothing is sent
    assert recommendations_sent(browser) == sent
    assert browser.find_element(By.ID, "recommend-table").get_attribute("data-state") == "empty"
    assert shown_recommendations(browser) == []

    # An error from the API is shown next to the controls: k above what is left to recommend.
    browser.find_element(By.CSS_SELECTOR, "#recommend-matches button[data-item='7']").click()
    set_value(browser, "recommend-k", 40)
    error = browser.find_element(By.ID, "recommend-error")
    wait_for(browser, lambda d: error.is_displayed(), "the API's error was not shown")
    assert error.text.startswith("HTTP 422") and "more than the 39 items" in error.text
    set_value(browser, "recommend-k", 5)
    assert_table_is_the_apis(browser, url, [7], 5)
    assert not error.is_displayed()
    assert page_errors(browser) == []

    # The Apply tab's `recommend` entry leads here instead of a generic form.
    browser.find_element(By.ID, "tab-button-apply").click()
    entry = "#applications-list li[data-application='recommend']"
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, entry), "recommend is not listed")
    assert "(on the recommend tab)" in browser.find_element(By.CSS_SELECTOR, entry).text
    browser.find_element(By.CSS_SELECTOR, f"{entry} button").click()
    assert browser.find_element(By.ID, "tab-recommend").is_displayed()
    assert not browser.find_element(By.ID, "apply-panel").is_displayed()


def test_recommend_tab_searches_and_shows_ids_when_the_catalogue_has_no_titles(recommender_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(recommender_server + "/#recommend")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#recommend-model option[value='ids-only-ease']"),
             "the ids-only recommender did not appear in the model list")
    Select(browser.find_element(By.ID, "recommend-model")).select_by_value("ids-only-ease")
    wait_for(browser, lambda d: "ids only" in d.find_element(By.ID, "recommend-catalogue").text, "the catalogue did not load")
    assert browser.find_element(By.ID, "recommend-k").get_attribute("max") == "12"
    set_value(browser, "recommend-k", 10)
    set_value(browser, "recommend-search", "10")
    matches = "#recommend-matches button[data-item]"
    catalogue = httpx.get(f"{recommender_server}/v1/models/ids-only-ease", timeout=WAIT_S).json()["config"]["model"]
    assert set(catalogue["item_titles"]) == {""}
    expected = [str(i) for i in catalogue["item_ids"] if "10" in str(i)]  # 100..110
    wait_for(browser, lambda d: [b.get_attribute("data-item") for b in d.find_elements(By.CSS_SELECTOR, matches)] == expected,
             f"the ids containing 10 ({expected}) were not the matches")
    assert browser.find_element(By.CSS_SELECTOR, matches).text == f"item {expected[0]}"
    browser.find_element(By.ID, "recommend-search").send_keys("3\n")  # "103", Enter: the first match joins
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#recommend-history .chip[data-item='103']"), "103 not added")
    table = browser.find_element(By.ID, "recommend-table")
    wait_for(browser, lambda d: table.get_attribute("data-state") == "done" or page_errors(d), "no recommendations")
    direct = httpx.post(f"{recommender_server}/v1/recommendations", timeout=WAIT_S,
                        json={"model": "ids-only-ease", "items": [103], "k": 10}).json()
    shown = shown_recommendations(browser)
    assert [row[1] for row in shown] == [r["item"] for r in direct["recommendations"]]
    assert not browser.find_element(By.CSS_SELECTOR, "#recommend-table thead th:nth-child(3)").is_displayed()  # no titles
    assert page_errors(browser) == []
    save_full_page(browser, tmp_path / "studio-recommend-ids.png")
