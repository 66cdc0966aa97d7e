"""The studio's Images tab with diffusion models, in headless Chromium (as tests/test_studio.py):
sampler, steps and guidance controls appear for the models that take them, with the model's own
defaults and bounds; the picture sharpens step by step from the server-sent previews, and the
grid it ends with is the API's for the same request."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from test_diffusion_serve import train_served_models
from test_studio import WAIT_S, browser, inline_message, page_errors, requests_to, save_full_page, serving, set_value, wait_for  # noqa: F401

GENERATE = "/v1/images/generations"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    root = train_served_models(tmp_path_factory.mktemp("studio-diffusion"))
    for path in root.glob("*/checkpoint.safetensors"):
        path.unlink()
    yield from serving(root)


def open_images(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get("about:blank")  # a fresh page, not a jump within the last one (whose fields keep their values)
    driver.get(url + "/#images")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#generate-model option[value='cddpm']")) == 1,
             "the diffusion models did not appear in the model list")


def pick(driver, name: str) -> None:
    """Selects model `name` and waits until the sampler controls describe it (or are hidden)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "generate-model")).select_by_value(name)
    box = driver.find_element(By.ID, "generate-diffusion")
    wait_for(driver, lambda d: box.get_attribute("data-model") == name or (name == "vae" and not box.is_displayed()),
             f"the sampler controls did not follow the choice of {name}")


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def stream_events(url: str, body: dict) -> list:
    reply = httpx.post(url + GENERATE, json={**body, "stream": True}, timeout=WAIT_S)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream"), reply.text
    blocks = [b.removeprefix("data: ") for b in reply.text.split("\n\n") if b.startswith("data: ")]
    assert blocks[-1] == "[DONE]"
    return [json.loads(b) for b in blocks[:-1]]


def shown_grid(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [i.get_attribute("src").removeprefix("data:image/png;base64,")
            for i in driver.find_elements(By.CSS_SELECTOR, "#generate-grid img")]


def generate_and_wait(driver, count: int) -> None:
    from selenium.webdriver.common.by import By

    driver.execute_script("document.getElementById('generate-grid').dataset.count = 'waiting'")
    driver.find_element(By.ID, "generate-button").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "generate-grid").get_attribute("data-count") == str(count)
             or page_errors(d), "no image grid appeared")
    assert not page_errors(driver)


def test_sampler_controls_follow_the_selected_model(server, browser):
    from selenium.webdriver.common.by import By

    open_images(browser, server)
    box = browser.find_element(By.ID, "generate-diffusion")
    pick(browser, "vae")
    assert not box.is_displayed()
    assert browser.find_element(By.ID, "generate-steps").get_attribute("disabled")  # hidden: neither checked nor sent

    pick(browser, "ddpm")
    assert box.is_displayed() and browser.find_element(By.ID, "generate-steps").is_displayed()
    steps = browser.find_element(By.ID, "generate-steps")
    assert steps.get_attribute("max") == "1000" and steps.get_attribute("placeholder") == "4"  # T and the model's steps
    sampler = browser.find_element(By.ID, "generate-sampler")
    assert [o.text for o in sampler.find_elements(By.TAG_NAME, "option")] == ["model's (ddim)", "ddpm", "ddim", "dpm++"]
    assert not browser.find_element(By.ID, "generate-guidance").is_displayed()  # unconditional: no guidance
    assert browser.find_element(By.ID, "generate-stream").is_selected()

    pick(browser, "cddpm")
    guidance = browser.find_element(By.ID, "generate-guidance")
    assert guidance.is_displayed() and guidance.get_attribute("placeholder") == "2"
    assert guidance.get_attribute("max") == "100"

    # Out of the model's bounds: marked next to the control, nothing sent.
    sent = requests_to(browser, "/v1/images/generations")
    set_value(browser, "generate-steps", 1001)
    browser.find_element(By.ID, "generate-button").click()
    wait_for(browser, lambda d: inline_message(d, "generate-steps"), "no message next to steps")
    assert "1000" in inline_message(browser, "generate-steps")
    assert requests_to(browser, "/v1/images/generations") == sent
    set_value(browser, "generate-steps", "")


def test_images_sharpen_step_by_step_and_end_as_the_apis_grid(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_images(browser, server)
    pick(browser, "ddpm")
    set_value(browser, "generate-n", 4)
    set_value(browser, "generate-seed", 9)
    Select(browser.find_element(By.ID, "generate-sampler")).select_by_value("ddpm")
    set_value(browser, "generate-steps", 6)
    generate_and_wait(browser, 4)
    body = {"model": "ddpm", "n": 4, "seed": 9, "sampler": "ddpm", "steps": 6}
    plain = httpx.post(server + GENERATE, json=body, timeout=WAIT_S).json()["data"]
    assert shown_grid(browser) == [item["b64_json"] for item in plain]

    # The page showed every step's preview, the very pictures the API streams for this request.
    seen = browser.execute_script("return imagePreviews.map(e => [e.step, e.steps, e.b64_json])")
    events = stream_events(server, body)
    assert [[e["step"], e["steps"], e["b64_json"]] for e in events[:-1]] == seen
    assert [step for step, _, _ in seen] == [1, 2, 3, 4, 5, 6]
    figure = browser.find_element(By.ID, "generate-preview-figure")
    assert figure.get_attribute("data-step") == "6" and not figure.is_displayed()  # shown while sampling, then the grid
    # Sharpening: the last preview's tiles are the final images; the first is far from them.
    previews = [decode(b64).astype(float) for _, _, b64 in seen]
    tiles = lambda grid: [grid[2 + 10 * r:10 + 10 * r, 2 + 10 * c:10 + 10 * c] for r in (0, 1) for c in (0, 1)]  # noqa: E731
    finals = [decode(item["b64_json"]).astype(float) for item in plain]
    assert all(np.array_equal(tile, final) for tile, final in zip(tiles(previews[-1]), finals))
    far, near = np.abs(previews[0] - previews[-1]).mean(), np.abs(previews[-2] - previews[-1]).mean()
    assert far > 20 and far > near  # grey levels 0..255
    save_full_page(browser, tmp_path / "studio-diffusion.png")

    # Without the stream: one plain request, the same grid.
    browser.find_element(By.ID, "generate-stream").click()
    browser.execute_script("imagePreviews = []")
    generate_and_wait(browser, 4)
    assert shown_grid(browser) == [item["b64_json"] for item in plain]
    assert browser.execute_script("return imagePreviews.length") == 0
    browser.find_element(By.ID, "generate-stream").click()

    # A class-conditional model with guidance: the API's images for the class and scale.
    pick(browser, "cddpm")
    set_value(browser, "generate-class", 3)
    set_value(browser, "generate-guidance", 3.5)
    set_value(browser, "generate-steps", 3)
    Select(browser.find_element(By.ID, "generate-sampler")).select_by_value("dpm++")
    generate_and_wait(browser, 4)
    guided = {"model": "cddpm", "n": 4, "seed": 9, "class": 3, "guidance_scale": 3.5, "steps": 3, "sampler": "dpm++"}
    direct = httpx.post(server + GENERATE, json=guided, timeout=WAIT_S).json()["data"]
    assert shown_grid(browser) == [item["b64_json"] for item in direct]
    assert browser.execute_script("return imagePreviews.length") == 3


def test_the_apis_refusal_is_shown_and_the_last_grid_stays(server, browser):
    from selenium.webdriver.common.by import By

    open_images(browser, server)
    pick(browser, "ddpm")
    set_value(browser, "generate-n", 2)
    set_value(browser, "generate-steps", 2)
    generate_and_wait(browser, 2)
    # Past the page's own bound (removed here), the server's reason reaches the person.
    browser.execute_script("document.getElementById('generate-steps').removeAttribute('max')")
    set_value(browser, "generate-steps", 5000)
    browser.find_element(By.ID, "generate-button").click()
    error = browser.find_element(By.ID, "generate-error")
    wait_for(browser, lambda d: error.is_displayed(), "the API's error was not shown")
    assert error.text.startswith("HTTP 400") and "1..1000" in error.text
    assert browser.find_element(By.ID, "generate-grid").get_attribute("data-count") == "2"
    assert not browser.find_element(By.ID, "generate-preview-figure").is_displayed()
