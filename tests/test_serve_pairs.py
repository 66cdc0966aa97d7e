"""Translation and chat over HTTP (POST /v1/translations, POST /v1/chat/completions) and the studio's
Translate and Chat tabs, on tiny models trained as tests/test_translate.py trains its own: each
endpoint's output equals genlab.translate / genlab.chat with the same settings (the streamed deltas
joined equal genlab.chat's reply and are genlab.chat_stream's pieces); bad input is a 4xx JSON error
with a message, never a 500; the tabs work in headless Chromium (tests/test_studio.py's harness)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import genlab
from genlab.limits import MAX_CHAT_MESSAGE_CHARS, MAX_CHAT_MESSAGES, MAX_TRANSLATION_CHARS, MAX_TRANSLATION_TEXTS
from genlab.serve import create_app

from conftest import SERVED_GPT, assert_http_error
from test_studio import WAIT_S, browser, page_errors, serving, set_value, wait_for  # noqa: F401
from test_translate import TINY

TRANSLATIONS, CHAT = "/v1/translations", "/v1/chat/completions"
SOURCES = ["我们走吧。", "你好吗？", "他很忙。"]
CONVERSATION = [{"role": "system", "content": "You are a helpful travel agent."},
                {"role": "user", "content": "I need a bus to Fresno on March 3rd."},
                {"role": "assistant", "content": "Where are you leaving from?"},
                {"role": "user", "content": "From Sacramento, two people."}]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """zh-en (translation) and chat (dialogue, Schema-Guided Dialogue) trained through `genlab train`
    for 40 steps with test_translate's TINY overrides, and a tiny GPT (another kind of model)."""
    from genlab.cli import main

    root = tmp_path_factory.mktemp("served-pairs")
    assert main(["train", "translate-zh-en", "steps=40", *TINY, "--out", str(root / "zh-en")]) == 0
    assert main(["train", "chat-sgd", "steps=40", *TINY, "data.max_source_len=64", "--out", str(root / "chat")]) == 0
    genlab.train("gpt-shakespeare-char", SERVED_GPT, out=root / "gpt")
    for path in root.glob("*/checkpoint.safetensors"):  # a served model directory holds the model, not the training state
        path.unlink()
    return root


@pytest.fixture(scope="module")
def client(models_dir):
    app = create_app(models_dir, workers=2, queue_size=16, request_timeout_s=120)
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def translator(models_dir):
    return genlab.load(models_dir / "zh-en")


@pytest.fixture(scope="module")
def talker(models_dir):
    return genlab.load(models_dir / "chat")


def events(response) -> list:
    """The payloads of a text/event-stream reply, [DONE] included as the string."""
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block.strip()]
    assert all(block.startswith("data: ") for block in blocks), blocks
    payloads = [block.removeprefix("data: ") for block in blocks]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


# ----------------------------------------------------------------------------- the models listing


def test_models_list_the_route_each_pair_model_answers(client):
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["zh-en"]["data_kind"] == listed["chat"]["data_kind"] == "pairs"
    assert listed["zh-en"]["endpoints"] == [TRANSLATIONS]
    assert listed["chat"]["endpoints"] == [CHAT]
    assert TRANSLATIONS not in listed["gpt"]["endpoints"] and CHAT not in listed["gpt"]["endpoints"]
    assert listed["zh-en"]["description"] == "seq2seq on tatoeba-cmn zh-en (bpe tokens)"
    spec = client.get("/openapi.json").json()
    assert TRANSLATIONS in spec["paths"] and CHAT in spec["paths"]
    assert f"POST {TRANSLATIONS}" in spec["info"]["description"] and f"POST {CHAT}" in spec["info"]["description"]


# ----------------------------------------------------------------------------- translations


@pytest.mark.parametrize("settings", [
    {},  # beam search with 4 beams
    {"num_beams": 4, "n_best": 3, "length_penalty": 1.0},
    {"num_beams": 4, "no_repeat_ngram_size": 2},
    {"num_beams": 1},  # greedy
    {"temperature": 1.0, "top_p": 0.9, "seed": 5, "max_tokens": 12},
    {"temperature": 1.2, "n_best": 2, "seed": 2},  # two sampled hypotheses, best first
], ids=["beam", "n-best", "no-repeat", "greedy", "sampled", "sampled-n-best"])
def test_translations_equal_genlab_translate(client, translator, settings):
    response = client.post(TRANSLATIONS, json={"model": "zh-en", "text": SOURCES, **settings})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "zh-en" and body["object"] == "translation"
    options = {("max_new_tokens" if key == "max_tokens" else key): value for key, value in settings.items()}
    expected = genlab.translate(translator, SOURCES, **options)
    assert body["translations"] == expected
    n_best = settings.get("n_best", 1)
    for entry in body["translations"]:
        if n_best == 1:
            assert isinstance(entry, str)
        else:
            assert len(entry) == n_best and set(entry[0]) == {"text", "score", "log_prob", "finished"}
            assert [h["score"] for h in entry] == sorted((h["score"] for h in entry), reverse=True)


def test_one_text_is_a_string(client, translator):
    body = client.post(TRANSLATIONS, json={"model": "zh-en", "text": "我们走吧。", "temperature": 1, "seed": 9}).json()
    assert body["translations"] == genlab.translate(translator, ["我们走吧。"], temperature=1.0, seed=9)
    assert body["translations"][0].strip()  # sampled: a tiny model's text, but text


# ----------------------------------------------------------------------------- chat completions


CHAT_SETTINGS = [
    {},  # greedy, the model's own max_tokens
    {"temperature": 1.0, "seed": 3},
    {"temperature": 0.9, "top_p": 0.9, "seed": 11, "max_tokens": 5},
]


def chat_options(settings: dict) -> dict:
    return {("max_new_tokens" if key == "max_tokens" else key): value for key, value in settings.items()}


@pytest.mark.parametrize("settings", CHAT_SETTINGS, ids=["greedy", "sampled", "short"])
def test_chat_completion_equals_genlab_chat(client, talker, settings):
    response = client.post(CHAT, json={"model": "chat", "messages": CONVERSATION, **settings})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "chat" and body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == genlab.chat(talker, CONVERSATION, **chat_options(settings))
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["prompt_tokens"] > 0
    limit = settings.get("max_tokens", talker.config.max_target_len)
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == limit else "stop")
    assert usage["completion_tokens"] <= limit


def test_a_reply_cut_at_max_tokens_finishes_with_length(client, talker):
    messages = [{"role": "user", "content": "I need a bus to Fresno"}]
    body = client.post(CHAT, json={"model": "chat", "messages": messages, "temperature": 1.0, "seed": 3,
                                   "max_tokens": 2}).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2
    assert body["choices"][0]["message"]["content"] == genlab.chat(talker, messages, temperature=1.0, seed=3,
                                                                   max_new_tokens=2)


@pytest.mark.parametrize("settings", CHAT_SETTINGS, ids=["greedy", "sampled", "short"])
def test_chat_stream_deltas_join_to_genlab_chat(client, talker, settings):
    request = {"model": "chat", "messages": CONVERSATION, **settings}
    with client.stream("POST", CHAT, json={**request, "stream": True}) as response:
        assert response.status_code == 200
        response.read()
        payloads = events(response)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "chat" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    last = chunks[-1]["choices"][0]
    assert last["delta"] == {} and last["finish_reason"] in ("stop", "length")
    middle = [c["choices"][0] for c in chunks[1:-1]]
    assert all(choice["finish_reason"] is None and set(choice["delta"]) == {"content"} for choice in middle)
    pieces = [choice["delta"]["content"] for choice in middle]
    options = chat_options(settings)
    assert "".join(pieces) == genlab.chat(talker, CONVERSATION, **options)
    assert pieces == list(genlab.chat_stream(talker, CONVERSATION, **options))
    plain = client.post(CHAT, json=request).json()["choices"][0]
    assert last["finish_reason"] == plain["finish_reason"] and "".join(pieces) == plain["message"]["content"]


# ----------------------------------------------------------------------------- bad input

USER = [{"role": "user", "content": "hello"}]
BAD = [
    # the wrong kind of model: named with the route that serves it
    (TRANSLATIONS, {"model": "chat", "text": "hi"}, 400, [CHAT, "dialogue"]),
    (TRANSLATIONS, {"model": "gpt", "text": "hi"}, 400, ["translation model", "/v1/completions"]),
    (CHAT, {"model": "zh-en", "messages": USER}, 400, [TRANSLATIONS, "translation model"]),
    (CHAT, {"model": "gpt", "messages": USER}, 400, ["dialogue model", "/v1/completions"]),
    ("/v1/completions", {"model": "chat", "prompt": "hi"}, 400, [CHAT]),
    ("/v1/completions", {"model": "zh-en", "prompt": "hi"}, 400, [TRANSLATIONS]),
    (TRANSLATIONS, {"model": "nope", "text": "hi"}, 404, ["no model named 'nope'"]),
    (CHAT, {"model": "nope", "messages": USER}, 404, ["no model named 'nope'"]),
    (CHAT, {"model": "../chat", "messages": USER}, 400, ["not a valid model name"]),
    # the conversation
    (CHAT, {"model": "chat", "messages": [{"role": "bot", "content": "hi"}]}, 422, ["role", "'user'"]),
    (CHAT, {"model": "chat", "messages": []}, 400, ["conversation is empty"]),
    (CHAT, {"model": "chat", "messages": [{"role": "system", "content": "be nice"}]}, 400, ["conversation is empty"]),
    (CHAT, {"model": "chat", "messages": [*USER, {"role": "assistant", "content": "hi"}]}, 400, ["nothing to answer"]),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "  "}]}, 400, ["last user message is empty"]),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": ["parts"]}]}, 422, ["content"]),
    (CHAT, {"model": "chat", "messages": [{"role": "user"}]}, 422, ["content is required"]),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "hi", "name": "me"}]}, 422, ["unknown field"]),
    (CHAT, {"model": "chat", "messages": USER * (MAX_CHAT_MESSAGES + 1)}, 422, [str(MAX_CHAT_MESSAGES)]),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "x" * (MAX_CHAT_MESSAGE_CHARS + 1)}]}, 422,
     [str(MAX_CHAT_MESSAGE_CHARS)]),
    (CHAT, {"model": "chat", "messages": "hello"}, 422, ["messages"]),
    (CHAT, {"model": "chat"}, 422, ["messages is required"]),
    (CHAT, {"model": "chat", "messages": USER, "max_tokens": 0}, 422, ["max_tokens"]),
    (CHAT, {"model": "chat", "messages": USER, "max_tokens": 100_000}, 422, ["max_tokens", "256"]),
    (CHAT, {"model": "chat", "messages": USER, "temperature": 3}, 422, ["temperature"]),
    (CHAT, {"model": "chat", "messages": USER, "top_p": 0}, 422, ["top_p"]),
    (CHAT, {"model": "chat", "messages": USER, "seed": -1}, 422, ["seed"]),
    (CHAT, {"model": "chat", "messages": USER, "n": 2}, 422, ["unknown field 'n'"]),
    # the texts and the decoding
    (TRANSLATIONS, {"model": "zh-en", "text": []}, 422, ["at least one text"]),
    (TRANSLATIONS, {"model": "zh-en", "text": ["你好"] * (MAX_TRANSLATION_TEXTS + 1)}, 422, [str(MAX_TRANSLATION_TEXTS)]),
    (TRANSLATIONS, {"model": "zh-en", "text": "好" * (MAX_TRANSLATION_CHARS + 1)}, 422, [str(MAX_TRANSLATION_CHARS)]),
    (TRANSLATIONS, {"model": "zh-en", "text": ["你好", 3]}, 422, ["list of strings"]),
    (TRANSLATIONS, {"model": "zh-en", "text": ["你好", "   "]}, 400, ["text 2 of 2", "empty"]),
    (TRANSLATIONS, {"model": "zh-en"}, 422, ["text is required"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "n_best": 5, "num_beams": 4}, 400, ["n_best", "num_beams"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "num_beams": 17}, 422, ["num_beams"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "num_beams": 4, "temperature": 0.5}, 400, ["beam search"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "n_best": 2, "num_beams": 1}, 400, ["greedy"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "length_penalty": 11}, 422, ["length_penalty"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "no_repeat_ngram_size": -1}, 422, ["no_repeat_ngram_size"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "max_tokens": 257}, 422, ["max_tokens"]),
    (TRANSLATIONS, {"model": "zh-en", "text": "你好", "beams": 2}, 422, ["unknown field 'beams'"]),
]


@pytest.mark.parametrize("path,body,status,needles", BAD, ids=[f"{i}-{b[0].rsplit('/', 1)[-1]}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_4xx_with_a_message(client, path, body, status, needles):
    assert_http_error(client.post(path, json=body), status, *needles)
    if path == CHAT and isinstance(body, dict) and "messages" in body:  # a stream refused before its first chunk: JSON
        assert_http_error(client.post(path, json={**body, "stream": True}), status, *needles)


def test_a_body_that_is_not_json_is_refused_with_the_fields_to_send(client):
    error = assert_http_error(client.post(CHAT, content=b"{", headers={"Content-Type": "application/json"}), 400, "not valid JSON")
    assert error["param"] is None
    assert_http_error(client.post(TRANSLATIONS, content=b"text=hi", headers={"Content-Type": "text/plain"}), 415)


# ----------------------------------------------------------------------------- the studio


@pytest.fixture(scope="module")
def server(models_dir) -> str:
    yield from serving(models_dir)


def open_tab(driver, url: str, tab: str, model: str) -> None:
    """A fresh studio page on `tab`, once its model list holds `model`."""
    from selenium.webdriver.common.by import By

    driver.get("about:blank")  # not a jump within the last page, whose fields keep their values
    driver.get(f"{url}/#{tab}")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#{tab}-model option[value='{model}']"),
             f"the {tab} tab's model list did not get {model}")
    wait_for(driver, lambda d: d.find_element(By.ID, f"tab-button-{tab}").is_displayed(), f"no {tab} tab")


def test_translate_tab_shows_the_apis_translations_and_n_best_lists(server, browser, translator, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_tab(browser, server, "translate", "zh-en")
    Select(browser.find_element(By.ID, "translate-model")).select_by_value("zh-en")
    set_value(browser, "translate-source", "\n".join([SOURCES[0], "", SOURCES[1]]))  # a blank line is skipped
    set_value(browser, "translate-temperature", 1)  # sampling: the page sets one beam
    assert browser.find_element(By.ID, "translate-beams").get_attribute("value") == "1"
    set_value(browser, "translate-seed", 4)
    browser.find_element(By.ID, "translate-button").click()
    output = browser.find_element(By.ID, "translate-output")
    wait_for(browser, lambda d: output.get_attribute("data-state") in ("done", "error"), "no translation appeared")
    assert output.get_attribute("data-state") == "done", page_errors(browser)
    items = output.find_elements(By.CSS_SELECTOR, "li.translation")
    assert [item.find_element(By.CLASS_NAME, "source").text for item in items] == SOURCES[:2]
    shown = [browser.execute_script("return arguments[0].textContent", item.find_element(By.CLASS_NAME, "target"))
             for item in items]
    assert shown == genlab.translate(translator, SOURCES[:2], temperature=1.0, num_beams=1, seed=4)
    assert all(text.strip() for text in shown)
    browser.save_screenshot(str(tmp_path / "studio-translate.png"))

    # Beam search with an n-best list: each line's hypotheses, best first, with their scores.
    set_value(browser, "translate-temperature", 0)
    set_value(browser, "translate-beams", 4)
    set_value(browser, "translate-n-best", 3)
    browser.find_element(By.ID, "translate-button").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#translate-output li.hypothesis")) == 6
             or page_errors(d), "no n-best lists appeared")
    assert not page_errors(browser)
    expected = genlab.translate(translator, SOURCES[:2], num_beams=4, n_best=3)
    for item, hypotheses in zip(browser.find_elements(By.CSS_SELECTOR, "#translate-output li.translation"), expected):
        rows = item.find_elements(By.CSS_SELECTOR, "li.hypothesis")
        assert [browser.execute_script("return arguments[0].querySelector('.target').textContent", row) for row in rows] \
            == [h["text"] for h in hypotheses]
        assert [float(row.get_attribute("data-score")) for row in rows] == pytest.approx([h["score"] for h in hypotheses])

    # The API's refusal is shown: n-best above the beams.
    set_value(browser, "translate-n-best", 5)
    browser.find_element(By.ID, "translate-button").click()
    error = browser.find_element(By.ID, "translate-error")
    wait_for(browser, lambda d: error.is_displayed(), "the API's error was not shown")
    assert error.text.startswith("HTTP 400") and "n_best" in error.text


def chat_log(driver) -> list[tuple[str, str, str | None]]:
    """(role, text, state) of each bubble in the conversation."""
    return [tuple(row) for row in driver.execute_script(
        "return Array.from(document.querySelectorAll('#chat-log li.message')).map(m => "
        "[m.dataset.role, m.querySelector('.content').textContent, m.dataset.state ?? null])")]


def say(driver, text: str, *, enter: bool) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = len(chat_log(driver))
    field = driver.find_element(By.ID, "chat-input")
    field.clear()
    if enter:
        field.send_keys(text + Keys.ENTER)
    else:
        field.send_keys(text)
        driver.find_element(By.ID, "chat-button").click()
    wait_for(driver, lambda d: len(chat_log(d)) == before + 2 and chat_log(d)[-1][2] in ("done", "stopped")
             or page_errors(d), "no reply appeared")
    assert not page_errors(driver)


def test_chat_tab_streams_replies_keeps_the_history_and_resets(server, browser, talker, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_tab(browser, server, "chat", "chat")
    Select(browser.find_element(By.ID, "chat-model")).select_by_value("chat")
    set_value(browser, "chat-temperature", 1)
    set_value(browser, "chat-seed", 3)
    assert browser.find_element(By.ID, "chat-stream").is_selected()
    assert browser.find_element(By.ID, "chat-empty").is_displayed()
    settings = {"temperature": 1.0, "seed": 3}

    first = "I need a bus to Fresno"
    say(browser, first, enter=True)
    reply = genlab.chat(talker, [{"role": "user", "content": first}], **settings)
    assert chat_log(browser) == [("user", first, None), ("assistant", reply, "done")]
    assert reply.strip() and not browser.find_element(By.ID, "chat-empty").is_displayed()

    second = "For two people, on March 3rd"
    say(browser, second, enter=False)
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": reply},
               {"role": "user", "content": second}]
    assert [(role, text) for role, text, _ in chat_log(browser)] == \
        [(m["role"], m["content"]) for m in history] + [("assistant", genlab.chat(talker, history, **settings))]
    assert browser.find_element(By.ID, "chat-input").get_attribute("value") == ""
    browser.save_screenshot(str(tmp_path / "studio-chat.png"))

    browser.find_element(By.ID, "chat-reset").click()
    assert chat_log(browser) == [] and browser.find_element(By.ID, "chat-empty").is_displayed()
    say(browser, second, enter=True)  # a fresh conversation: the reply to this message alone
    assert chat_log(browser) == [("user", second, None),
                                 ("assistant", genlab.chat(talker, [{"role": "user", "content": second}], **settings),
                                  "done")]

    # A refused turn is shown with the API's reason and leaves the history as it was, its message back in the box.
    browser.execute_script("document.getElementById('chat-max-tokens').removeAttribute('max')")
    set_value(browser, "chat-max-tokens", 5000)
    browser.find_element(By.ID, "chat-input").send_keys("and back?")
    browser.find_element(By.ID, "chat-button").click()
    error = browser.find_element(By.ID, "chat-error")
    wait_for(browser, lambda d: error.is_displayed(), "the API's error was not shown")
    assert error.text.startswith("HTTP 422") and "max_tokens" in error.text
    assert len(chat_log(browser)) == 2 and browser.find_element(By.ID, "chat-input").get_attribute("value") == "and back?"


def test_translate_and_chat_tabs_show_only_with_their_models(models_dir, browser):
    """A models directory without text-pair models: the two tabs stay hidden; the others are there."""
    from selenium.webdriver.common.by import By

    served = serving(models_dir / "gpt")  # one model directory: that model alone is served
    url = next(served)
    try:
        browser.get("about:blank")
        browser.get(url + "/#text")
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#text-model option[value='gpt']"),
                 "the text model did not appear")
        assert not browser.find_element(By.ID, "tab-button-translate").is_displayed()
        assert not browser.find_element(By.ID, "tab-button-chat").is_displayed()
        assert browser.find_element(By.ID, "tab-button-text").is_displayed()
        listed = httpx.get(f"{url}/v1/models", timeout=WAIT_S).json()["data"]
        assert [m["id"] for m in listed] == ["gpt"]
    finally:
        next(served, None)
