"""The HTTP API (genlab.serve): every endpoint on tiny models, checked against the Python API
it is a layer over; bad input is a 4xx JSON error, never a 500; the queue (429), the time
limit (504), metrics, offline docs; and a real uvicorn server under concurrent mixed load."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import genlab
from genlab.imageio import to_uint8
from genlab.serve import create_app
from genlab.serve.cli import default_torch_threads, is_loopback

from conftest import assert_clean_error, assert_http_error, run_cli, train_served_models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory with one tiny model of each kind the API serves."""
    return train_served_models(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def client(models_dir):
    with local(create_app(models_dir, workers=2, queue_size=32, request_timeout_s=120)) as test_client:
        yield test_client


def local(app, **kwargs) -> TestClient:
    """A test client that reaches the app as http://127.0.0.1 (the server answers loopback names only)."""
    return TestClient(app, base_url="http://127.0.0.1", **kwargs)


def png_upload(array: np.ndarray, name: str = "digit.png") -> tuple[str, bytes, str]:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return name, buffer.getvalue(), "image/png"


def digit(index: int = 0) -> np.ndarray:
    """A real 8x8 digit as uint8 (scikit-learn's embedded copy)."""
    from sklearn.datasets import load_digits

    return (load_digits().images[index] * 255.0 / 16.0 + 0.5).astype(np.uint8)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None, None]


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# ----------------------------------------------------------------------------- models


def test_health_and_model_listing(client, models_dir):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models"] == 5 and health["queue"]["capacity"] == 34
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    models = {m["id"]: m for m in listing["data"]}
    assert set(models) == {"vae", "cvae", "gpt", "sr", "denoiser"}
    assert models["vae"]["family"] == "vae" and models["vae"]["data_kind"] == "image"
    assert "conditional" not in models["vae"]["capabilities"] and "conditional" in models["cvae"]["capabilities"]
    # sampling routes first, then the applications' routes in registration order (more applications
    # with HTTP routes may follow the ones checked here)
    assert models["vae"]["endpoints"][:3] == ["/v1/images/generations", "/v1/images/inpaint", "/v1/anomaly/scores"]
    assert models["gpt"]["endpoints"] == ["/v1/completions"] and models["gpt"]["data_kind"] == "text"
    assert models["sr"]["endpoints"] == ["/v1/images/upscale"]
    assert models["denoiser"]["endpoints"] == ["/v1/images/denoise"]
    # A conditional VAE scores anomalies only with a class, which the endpoint does not take.
    assert models["cvae"]["endpoints"][:2] == ["/v1/images/generations", "/v1/images/inpaint"]
    assert "/v1/anomaly/scores" not in models["cvae"]["endpoints"]
    # descriptions from each model's own config (the gpt's recipe is about Tiny Shakespeare; it was trained on pydoc)
    assert models["cvae"]["description"] == "conditional vae on digits"
    assert models["gpt"]["description"] == "gpt on pydoc (char tokens)" and models["gpt"]["recipe"] == "gpt-shakespeare-char"
    assert health["models_dir"] == models_dir.name  # never the absolute path


def test_model_detail_has_config_metrics_and_sample_grid(client, models_dir):
    detail = client.get("/v1/models/vae").json()
    assert detail["config"] == json.loads((models_dir / "vae" / "config.json").read_text())
    assert detail["metrics"] == json.loads((models_dir / "vae" / "metrics.json").read_text())
    pictures = {"samples.png", "reconstructions.png", "class_histogram.png"}
    assert set(detail["previews"]) == {f for f in pictures if (models_dir / "vae" / f).is_file()} >= {"samples.png"}
    grid = client.get(detail["previews"]["samples.png"])
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert grid.content == (models_dir / "vae" / "samples.png").read_bytes()
    text = client.get("/v1/models/gpt").json()
    assert text["samples_text"] == (models_dir / "gpt" / "samples.txt").read_text()
    assert_http_error(client.get("/v1/models/vae/previews/config.json"), 404, "samples.png")
    assert_http_error(client.get("/v1/models/nope"), 404, "no model named 'nope'", "vae")


# ----------------------------------------------------------------------------- images


def test_image_generations_match_genlab_sample(client, models_dir):
    response = client.post("/v1/images/generations", json={"model": "vae", "n": 4, "seed": 7})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 4
    expected = to_uint8(genlab.sample(genlab.load(models_dir / "vae"), 4, seed=7))[:, 0].numpy()
    got = np.stack([decode_png(base64.b64decode(item["b64_json"])) for item in data])
    assert got.shape == (4, 8, 8) and np.array_equal(got, expected)
    again = client.post("/v1/images/generations", json={"model": "vae", "n": 4, "seed": 7}).json()["data"]
    other = client.post("/v1/images/generations", json={"model": "vae", "n": 4, "seed": 8}).json()["data"]
    assert again == data and other != data

    threes = client.post("/v1/images/generations", json={"model": "cvae", "n": 3, "seed": 1, "class": 3}).json()["data"]
    expected = to_uint8(genlab.sample(genlab.load(models_dir / "cvae"), 3, seed=1, condition=3))[:, 0].numpy()
    assert np.array_equal(np.stack([decode_png(base64.b64decode(i["b64_json"])) for i in threes]), expected)

    grid = client.post("/v1/images/generations", json={"model": "vae", "n": 9, "response_format": "png"})
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    # 3 x 3 tiles of 8 px with 2 px padding, enlarged 8x (display_scale) as in `genlab sample`
    assert decode_png(grid.content).shape == ((3 * 10 + 2) * 8, (3 * 10 + 2) * 8)


def test_inpaint_keeps_known_pixels_and_fills_the_mask(client, models_dir):
    image = digit(5)
    files = {"image": png_upload(image)}
    response = client.post("/v1/images/inpaint", data={"model": "vae", "mask_spec": "box:2,2,4,4", "steps": "20",
                                                        "restarts": "2", "seed": "3"}, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["width"] == 8 and body["height"] == 8 and body["masked_pixels"] == 16
    result = decode_png(base64.b64decode(body["data"][0]["b64_json"]))
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    assert np.array_equal(result[~mask], image[~mask])  # known pixels unchanged, bit for bit

    from genlab.tasks import inpaint

    expected = inpaint(genlab.load(models_dir / "vae"), as_tensor(image), torch.from_numpy(mask)[None, None],
                       steps=20, restarts=2, seed=3)
    assert np.array_equal(result, to_uint8(expected)[0, 0].numpy())

    # a drawn mask of another size is named by its upload's file name (no temporary file anywhere)
    small_mask = png_upload(np.full((5, 5), 255, dtype=np.uint8), "m.png")
    assert_http_error(client.post("/v1/images/inpaint", data={"model": "vae"}, files={**files, "mask": small_mask}), 400,
                      "the mask 'm.png' is 5x5 but the image is 8x8")
    # the same mask drawn as a picture (white = missing) gives the same result
    drawn = png_upload((mask * 255).astype(np.uint8), "mask.png")
    same = client.post("/v1/images/inpaint", data={"model": "vae", "steps": "20", "restarts": "2", "seed": "3",
                                                   "response_format": "png"}, files={**files, "mask": drawn})
    assert same.status_code == 200 and same.headers["content-type"] == "image/png"
    assert np.array_equal(decode_png(same.content), result)


def test_upscale_denoise_and_anomaly_match_the_tasks(client, models_dir):
    from genlab.metrics.image import psnr
    from genlab.models.denoiser import add_noise
    from genlab.tasks import anomaly_scores, denoise, superres

    small = digit(1)[::2, ::2].copy()  # 4x4: the x2 model's low-resolution input size
    response = client.post("/v1/images/upscale", data={"model": "sr"}, files={"image": png_upload(small)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["scale"]) == (8, 8, 2)
    expected = superres(genlab.load(models_dir / "sr"), as_tensor(small))
    assert np.array_equal(decode_png(base64.b64decode(body["data"][0]["b64_json"])), to_uint8(expected)[0, 0].numpy())

    clean = digit(2)
    response = client.post("/v1/images/denoise", data={"model": "denoiser", "noise": "gaussian:0.3", "seed": "4"},
                           files={"image": png_upload(clean)})
    assert response.status_code == 200, response.text
    body = response.json()
    denoiser = genlab.load(models_dir / "denoiser")
    noisy = add_noise(as_tensor(clean), "gaussian", 0.3, (0.0, 1.0), torch.Generator().manual_seed(4))
    expected = denoise(denoiser, noisy)
    assert np.array_equal(decode_png(base64.b64decode(body["data"][0]["b64_json"])), to_uint8(expected)[0, 0].numpy())
    assert np.array_equal(decode_png(base64.b64decode(body["noisy_b64_json"])), to_uint8(noisy)[0, 0].numpy())
    assert body["psnr_db"] == pytest.approx(psnr(expected, as_tensor(clean), 1.0))
    assert body["psnr_noisy_db"] == pytest.approx(psnr(noisy, as_tensor(clean), 1.0))

    # Pepper on a black image changes no pixel: PSNR would be inf, which JSON cannot carry; it is floored.
    response = client.post("/v1/images/denoise", data={"model": "denoiser", "noise": "salt-pepper:0.001", "seed": "0"},
                           files={"image": png_upload(np.zeros((8, 8), dtype=np.uint8))})
    assert response.status_code == 200, response.text
    assert response.json()["psnr_noisy_db"] == pytest.approx(120.0)

    images = [digit(i) for i in range(3)]
    files = [("image", png_upload(a, f"d{i}.png")) for i, a in enumerate(images)]
    response = client.post("/v1/anomaly/scores", data={"model": "vae", "method": "elbo", "samples": "4", "seed": "2"},
                           files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["filename"] for s in body["scores"]] == ["d0.png", "d1.png", "d2.png"] and body["unit"] == "nats"
    expected = anomaly_scores(genlab.load(models_dir / "vae"), torch.cat([as_tensor(a) for a in images]),
                              method="elbo", samples=4, seed=2)
    assert [s["score"] for s in body["scores"]] == pytest.approx(expected.tolist())


# ----------------------------------------------------------------------------- text


def test_completions_match_genlab_generate(client, models_dir):
    request = {"model": "gpt", "prompt": "The ", "max_tokens": 20, "temperature": 0.9, "top_p": 0.95, "n": 2, "seed": 5}
    response = client.post("/v1/completions", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "gpt"
    model = genlab.load(models_dir / "gpt")
    expected = genlab.generate(model, "The ", max_new_tokens=20, temperature=0.9, top_p=0.95, num_return_sequences=2,
                               seed=5)
    assert [c["text"] for c in body["choices"]] == expected
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in body["choices"])  # a char model: 20 tokens, 20 characters
    assert all(len(c["text"]) == 20 for c in body["choices"])
    assert body["usage"] == {"prompt_tokens": len(model.tokenizer.encode("The ")), "completion_tokens": 40,
                             "total_tokens": len(model.tokenizer.encode("The ")) + 40}

    greedy = {"model": "gpt", "prompt": "The ", "max_tokens": 40, "temperature": 0}
    text = client.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
    stop = text[5:7]  # a stop string that occurs in the greedy text
    stopped = client.post("/v1/completions", json={**greedy, "stop": [stop]}).json()["choices"][0]
    assert stopped["finish_reason"] == "stop" and stopped["text"] == text[: text.index(stop)]
    banned = client.post("/v1/completions", json={**greedy, "no_repeat_ngram_size": 3}).json()["choices"][0]["text"]
    assert banned == genlab.generate(model, "The ", max_new_tokens=40, temperature=0, no_repeat_ngram_size=3)[0]
    whole = model.tokenizer.encode("The " + banned).tolist()  # a char model: one token per character
    trigrams = [tuple(whole[i : i + 3]) for i in range(len(whole) - 2)]
    assert len(trigrams) == len(set(trigrams))


def parse_sse(text: str) -> list:
    events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(event) for event in events[:-1]]


def test_completions_stream_server_sent_events(client):
    request = {"model": "gpt", "prompt": "The ", "max_tokens": 30, "temperature": 0.8, "seed": 2}
    whole = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={**request, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    assert len(events) >= 2 and all(e["object"] == "text_completion" for e in events)
    assert "".join(e["choices"][0]["text"] for e in events) == whole
    assert [e["choices"][0]["finish_reason"] for e in events][-1] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    # a bad prompt is an ordinary JSON error, not a stream that breaks off
    bad = client.post("/v1/completions", json={**request, "stream": True, "prompt": "\u2603 snowman"})
    assert_http_error(bad, 400, "\u2603")


# ----------------------------------------------------------------------------- bad input


def test_invalid_model_names_are_refused_by_the_store(models_dir):
    # httpx normalises "../" in URLs before sending, so the name check is tested on the store itself.
    from genlab.serve.runtime import APIError, ModelStore

    store = ModelStore(models_dir)
    assert store.path("vae").name == "vae"
    for name in ("..", "../vae", "vae/../gpt", "/etc", ".hidden", "vae\n", "a" * 129, ""):
        with pytest.raises(APIError) as refused:
            store.path(name)
        assert refused.value.status == 400, name


def test_bad_input_is_a_4xx_json_error(client, models_dir, tmp_path):
    generate = "/v1/images/generations"
    assert_http_error(client.post(generate, json={"model": "unknown", "n": 2}), 404, "no model named 'unknown'", "vae")
    assert_http_error(client.post(generate, json={"model": "../vae"}), 400, "not a valid model name", "..")
    assert_http_error(client.post(generate, json={"model": "/etc"}), 400, "not a valid model name")
    for path in ("/v1/models/..%2F..%2Fetc", "/v1/models/%2E%2E", "/v1/models/../../etc/passwd"):
        assert client.get(path).status_code in (400, 404)  # refused by the name check, or by routing
        assert_http_error(client.get(path), client.get(path).status_code)
    assert_http_error(client.get("/v1/models/.hidden"), 400, "not a valid model name")
    assert_http_error(client.post(generate, json={"model": "vae", "n": 65}), 422, "n:", "64", "65")
    assert_http_error(client.post(generate, json={"model": "vae", "n": 0}), 422, "n:", "greater than or equal to 1")
    assert_http_error(client.post(generate, json={"model": "vae", "nn": 2}), 422, "unknown field 'nn'", "response_format")
    assert_http_error(client.post(generate, json={"n": 2}), 422, "model is required")
    assert_http_error(client.post(generate, content=b'{"model": "vae", ', headers={"content-type": "application/json"}),
                      400, "not valid JSON")
    assert_http_error(client.post(generate, content=b"[1, 2]", headers={"content-type": "application/json"}), 422,
                      "must be a JSON object")
    assert_http_error(client.post(generate, content=b"model=vae", headers={"content-type": "text/plain"}), 415,
                      "takes a JSON body", "application/json")
    assert_http_error(client.post(generate, json={"model": "vae", "class": 3}), 400, "unconditional")
    assert_http_error(client.post(generate, json={"model": "cvae", "class": 10}), 400, "class 10 is out of range", "0..9")
    assert_http_error(client.post(generate, json={"model": "gpt"}), 400, "of kind 'text'", "/v1/completions")

    complete = "/v1/completions"
    assert_http_error(client.post(complete, json={"model": "gpt", "max_tokens": -1}), 422, "max_tokens", "-1")
    assert_http_error(client.post(complete, json={"model": "gpt", "max_tokens": 5000}), 422, "max_tokens", "1024")
    assert_http_error(client.post(complete, json={"model": "gpt", "prompt": "x" * 9000}), 422, "prompt", "8000")
    assert_http_error(client.post(complete, json={"model": "gpt", "temperature": 0, "n": 2}), 400, "greedy")
    assert_http_error(client.post(complete, json={"model": "gpt", "stop": ["a", "b", "c", "d", "e"]}), 422, "stop")
    assert_http_error(client.post(complete, json={"model": "gpt", "top_p": 0}), 422, "top_p")
    assert_http_error(client.post(complete, json={"model": "vae"}), 400, "of kind 'image'", "/v1/images/generations")

    inpaint = "/v1/images/inpaint"
    image = {"image": png_upload(digit())}
    assert_http_error(client.post(inpaint, json={"model": "vae"}), 415, "multipart/form-data")
    assert_http_error(client.post(inpaint, data={"model": "vae"}, files=image), 422, "exactly one of mask")
    assert_http_error(client.post(inpaint, data={"model": "vae", "mask_spec": "/etc/passwd"}, files=image), 400,
                      "cannot read mask_spec")
    assert_http_error(client.post(inpaint, data={"model": "vae", "mask_spec": "box:6,6,8,8"}, files=image), 400,
                      "does not lie inside")
    assert_http_error(client.post(inpaint, data={"model": "vae", "mask_spec": "half:top", "steps": "5000"}, files=image),
                      422, "steps", "1000")
    assert_http_error(client.post(inpaint, data={"model": "vae", "mask_spec": "half:top"},
                                  files={"image": ("notes.txt", b"not an image at all", "text/plain")}), 415,
                      "not a readable image", "PNG")
    big = png_upload(np.zeros((2100, 2100), dtype=np.uint8), "huge.png")  # small file, too many pixels
    assert_http_error(client.post(inpaint, data={"model": "vae", "mask_spec": "half:top"}, files={"image": big}), 413,
                      "2100x2100", "limit")
    heavy = ("heavy.png", os.urandom((4 << 20) + 10), "image/png")
    assert_http_error(client.post(inpaint, data={"model": "vae", "mask_spec": "half:top"}, files={"image": heavy}), 413,
                      "4 MiB")
    assert_http_error(client.post("/v1/images/upscale", data={"model": "vae"}, files=image), 400, "upscale", "superres")
    assert_http_error(client.post("/v1/images/denoise", data={"model": "denoiser", "noise": "loud:3"}, files=image), 400,
                      "cannot read noise", "gaussian:")
    too_many = [("image", png_upload(digit(), f"{i}.png")) for i in range(17)]
    assert_http_error(client.post("/v1/anomaly/scores", data={"model": "vae"}, files=too_many), 413, "16")

    assert_http_error(client.post(generate, content=b"x" * ((16 << 20) + 1), headers={"content-type": "application/json"}),
                      413, "16 MiB")
    assert_http_error(client.get("/v1/nothing"), 404, "no such endpoint")
    assert_http_error(client.delete("/v1/models"), 405, "does not take DELETE")


def test_model_names_resolve_only_inside_the_models_directory(models_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text((models_dir / "vae" / "config.json").read_text())
    root = tmp_path / "served"
    root.mkdir()
    (root / "escape").symlink_to(outside)  # a symlink out of the models directory
    (root / "alias").symlink_to(models_dir / "vae")  # also outside (another folder), so refused too
    with local(create_app(root)) as client:
        assert client.get("/v1/models").json()["data"] == []
        assert_http_error(client.post("/v1/images/generations", json={"model": "escape"}), 400, "outside the models directory")
        assert_http_error(client.get("/v1/models/alias"), 400, "outside the models directory")


# ----------------------------------------------------------------------------- runtime


def test_full_queue_is_429_with_retry_after_and_time_limit_is_504(models_dir):
    app = create_app(models_dir, workers=1, queue_size=0, request_timeout_s=0.5)
    pool = app.state.pool
    release = threading.Event()
    with local(app) as client:
        blocker = pool.submit(lambda deadline: release.wait(30), time.monotonic() + 30)
        try:
            busy = client.post("/v1/images/generations", json={"model": "vae", "n": 2})
            assert_http_error(busy, 429, "busy", "retry")
            assert int(busy.headers["retry-after"]) >= 1
        finally:
            release.set()
            blocker.result(timeout=10)

    app = create_app(models_dir, workers=1, queue_size=1, request_timeout_s=0.3)
    pool, store = app.state.pool, app.state.store
    release = threading.Event()
    with local(app) as client:
        blocker = pool.submit(lambda deadline: release.wait(30), time.monotonic() + 30)
        try:
            late = client.post("/v1/images/generations", json={"model": "vae", "n": 2})
            assert_http_error(late, 504, "0.3 s time limit")
            stream = client.post("/v1/completions", json={"model": "gpt", "stream": True})
            assert_http_error(stream, 504, "time limit")
        finally:
            release.set()
            blocker.result(timeout=10)
        for _ in range(100):  # the timed-out jobs leave the queue without running
            if pool.status()["jobs"] == 0:
                break
            time.sleep(0.01)
        assert pool.status()["jobs"] == 0 and store.loaded() == []


def test_lru_cache_keeps_the_most_recent_models(models_dir):
    with local(create_app(models_dir, max_loaded_models=2)) as client:
        for name in ("vae", "cvae", "vae", "gpt"):
            kind = "/v1/completions" if name == "gpt" else "/v1/images/generations"
            assert client.post(kind, json={"model": name}).status_code == 200
        assert [name for name, _ in client.app.state.store.loaded()] == ["vae", "gpt"]
        assert client.get("/healthz").json()["loaded"] == ["vae", "gpt"]


def test_metrics_in_prometheus_text_format(models_dir):
    with local(create_app(models_dir)) as client:
        for _ in range(3):
            client.post("/v1/images/generations", json={"model": "vae", "n": 2})
        client.post("/v1/images/generations", json={"model": "vae", "n": 100})
        client.get("/v1/models/nope")
        text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = text.text.splitlines()
    samples = {}
    for line in lines:
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) genlab_\w+ ", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['genlab_requests_total{endpoint="/v1/images/generations",method="POST",code="200"}'] == 3
    assert samples['genlab_requests_total{endpoint="/v1/images/generations",method="POST",code="422"}'] == 1
    assert samples['genlab_requests_total{endpoint="/v1/models/{name}",method="GET",code="404"}'] == 1
    assert samples['genlab_errors_total{code="422"}'] == 1 and samples['genlab_errors_total{code="404"}'] == 1
    assert samples["genlab_models_loaded"] == 1 and samples['genlab_model_loaded{model="vae",family="vae"}'] == 1
    endpoint = 'endpoint="/v1/images/generations"'
    buckets = [(k, v) for k, v in samples.items() if k.startswith(f"genlab_request_duration_seconds_bucket{{{endpoint}")]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0].endswith('le="+Inf"}') and counts[-1] == 4
    assert samples[f"genlab_request_duration_seconds_count{{{endpoint}}}"] == 4
    assert samples[f"genlab_request_duration_seconds_sum{{{endpoint}}}"] > 0


def test_docs_work_offline_and_studio_is_mounted(models_dir, tmp_path):
    with local(create_app(models_dir, studio_dir=tmp_path / "no-studio")) as client:
        docs = client.get("/docs")
        assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", docs.text)  # nothing loaded from a network
        spec = client.get("/openapi.json").json()
        for path in ("/v1/models", "/v1/images/generations", "/v1/completions", "/v1/music/compositions",
                     "/v1/images/inpaint", "/v1/images/upscale", "/v1/images/denoise", "/v1/anomaly/scores",
                     "/healthz", "/metrics"):
            assert path in spec["paths"] and f"<code>{path}</code>" in docs.text
        assert "less than or equal" in docs.text or "&lt;= 64" in docs.text  # bounds are shown
        assert "/docs" in client.get("/").text  # no studio: a page that points to the reference
    studio = tmp_path / "studio"
    studio.mkdir()
    (studio / "index.html").write_text("<!doctype html><title>studio</title><script src='app.js'></script>")
    (studio / "app.js").write_text("console.log('studio')")
    with local(create_app(models_dir, studio_dir=studio)) as client:
        assert client.get("/").text.startswith("<!doctype html><title>studio</title>")
        assert client.get("/app.js").text == "console.log('studio')"
        assert client.get("/v1/models").status_code == 200  # the API wins over the mount
        assert_http_error(client.get("/missing.js"), 404, "no such endpoint")


TINY_MUSIC_GPT = ["data.max_pieces=8", "data.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
                  "batch_size=8", "steps=20", "train.eval_every=20", "train.eval_batches=2", "train.warmup_steps=5",
                  "train.progress=false", "train.tensorboard=false"]
TINY_PIANOROLL = ["model.hidden_size=16", "model.nade_hidden=8", "steps=20", "lr=0.01", "train.progress=false",
                  "train.tensorboard=false"]


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory) -> Path:
    """A tiny event model (Bach chorales) and a tiny piano-roll model (JSB), the two kinds that compose."""
    root = tmp_path_factory.mktemp("music-served")
    with pytest.MonkeyPatch.context() as patch:  # the parsed-chorale cache stays out of ../shared/data
        patch.setenv("GENLAB_DATA_DIR", str(tmp_path_factory.mktemp("music-data")))
        genlab.train("gpt-chorales", TINY_MUSIC_GPT, out=root / "chorales")
    genlab.train("rnn-nade-jsb", TINY_PIANOROLL, out=root / "jsb")
    return root


def test_music_compositions_match_compose(music_dir):
    from genlab.tasks.compose import compose

    with local(create_app(music_dir)) as client:
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models["chorales"]["data_kind"] == "music" and models["jsb"]["data_kind"] == "pianoroll"
        assert all(m["endpoints"] == ["/v1/music/compositions"] for m in models.values())
        for name, extra in (("chorales", {"top_p": 0.95}), ("jsb", {})):
            request = {"model": name, "bars": 2, "seed": 3, "temperature": 0.9, "tempo": 100, **extra}
            response = client.post("/v1/music/compositions", json=request)
            assert response.status_code == 200, response.text
            body = response.json()
            expected = compose(genlab.load(music_dir / name), bars=2, seed=3, temperature=0.9, tempo=100, **extra)
            assert body["object"] == "music.composition" and body["bars"] == 2
            assert base64.b64decode(body["midi_b64"]) == expected.midi
            assert body["notes"] == expected.notes and body["seconds"] == pytest.approx(expected.seconds)
            wav = base64.b64decode(body["wav_b64"])
            assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
            assert decode_png(base64.b64decode(body["piano_roll_png_b64"])).ndim >= 2
            midi = client.post("/v1/music/compositions", json={**request, "response_format": "midi"})
            assert midi.headers["content-type"] == "audio/midi" and midi.content == expected.midi
            assert midi.content[:4] == b"MThd"
            # the piece continues a prompt sent as base64 MIDI
            prompted = client.post("/v1/music/compositions",
                                   json={**request, "prompt_midi": base64.b64encode(expected.midi).decode()})
            assert prompted.status_code == 200, prompted.text
            assert prompted.json()["seconds"] > body["seconds"]
        music = "/v1/music/compositions"
        assert_http_error(client.post(music, json={"model": "chorales", "bars": 65}), 422, "bars", "64")
        assert_http_error(client.post(music, json={"model": "chorales", "bars": 0}), 422, "bars")
        assert_http_error(client.post(music, json={"model": "chorales", "tempo": 1000}), 422, "tempo", "300")
        assert_http_error(client.post(music, json={"model": "chorales", "prompt_midi": "%%%"}), 400, "not valid base64")
        assert_http_error(client.post(music, json={"model": "jsb", "top_p": 0.9}), 400, "top_p")


def test_music_compositions_refuse_a_model_that_is_not_a_music_model(client):
    assert_http_error(client.post("/v1/music/compositions", json={"model": "vae", "bars": 2}), 400, "compose",
                      "music or pianoroll")


# ----------------------------------------------------------------------------- command line


def test_serve_command_errors_and_defaults(capsys, tmp_path):
    threads = torch.get_num_threads()
    code, _, err = run_cli(capsys, "serve", "--models", str(tmp_path / "missing"))
    assert_clean_error(code, err, "no models directory")
    code, _, err = run_cli(capsys, "serve", "--models", str(tmp_path), "--workers", "0")
    assert_clean_error(code, err, "--workers must be at least 1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run_cli(capsys, "serve", "--models", str(tmp_path), "--port", str(taken.getsockname()[1]))
        assert_clean_error(code, err, "cannot listen", "--port")
    with pytest.raises(SystemExit):
        run_cli(capsys, "serve", "--help")
    assert "genlab serve --models runs/" in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # a server that did not start leaves torch's threads alone
    assert default_torch_threads(2, cpus=2) == 1 and default_torch_threads(2, cpus=16) == 8
    assert default_torch_threads(4, cpus=2) == 1
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


# ----------------------------------------------------------------------------- a real server


class RunningServer:
    """uvicorn on 127.0.0.1 on a free port, in a thread, configured as `genlab serve` does."""

    def __init__(self, app):
        import uvicorn

        from genlab.serve.cli import bind, server_config

        self.socket = bind("127.0.0.1", 0)  # as `genlab serve` binds, with its uvicorn configuration
        port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            time.sleep(0.01)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def mixed_requests(total: int) -> list[tuple[str, str, dict, int]]:
    """(method, path, httpx arguments, expected status), cycling through every endpoint and one bad request."""
    image = png_upload(digit(3))
    kinds = [
        ("GET", "/healthz", {}, 200),
        ("GET", "/v1/models", {}, 200),
        ("GET", "/v1/models/vae", {}, 200),
        ("POST", "/v1/images/generations", {"json": {"model": "vae", "n": 8}}, 200),
        ("POST", "/v1/images/generations", {"json": {"model": "cvae", "n": 4, "class": 2, "response_format": "png"}}, 200),
        ("POST", "/v1/completions", {"json": {"model": "gpt", "prompt": "A", "max_tokens": 16}}, 200),
        ("POST", "/v1/completions", {"json": {"model": "gpt", "prompt": "B", "max_tokens": 16, "stream": True}}, 200),
        ("POST", "/v1/images/inpaint", {"data": {"model": "vae", "mask_spec": "half:bottom", "steps": "10",
                                                 "restarts": "1"}, "files": {"image": image}}, 200),
        ("POST", "/v1/images/upscale", {"data": {"model": "sr"}, "files": {"image": image}}, 200),
        ("POST", "/v1/images/denoise", {"data": {"model": "denoiser"}, "files": {"image": image}}, 200),
        ("POST", "/v1/anomaly/scores", {"data": {"model": "vae", "samples": "2"}, "files": {"image": image}}, 200),
        ("POST", "/v1/images/generations", {"json": {"model": "../vae", "n": 8}}, 400),
        ("GET", "/metrics", {}, 200),
    ]
    return [kinds[i % len(kinds)] for i in range(total)]


async def drive(url: str, requests: list, concurrency: int) -> list[tuple[str, int, float]]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        async def one(method, path, kwargs, expected):
            async with gate:
                start = time.perf_counter()
                response = await http.request(method, path, **kwargs)
                await response.aread()
                return path, response.status_code, expected, time.perf_counter() - start

        return await asyncio.gather(*(one(*r) for r in requests))


def test_real_server_200_mixed_requests_at_16_concurrent(models_dir):
    app = create_app(models_dir, workers=2, queue_size=16, request_timeout_s=120)
    with RunningServer(app) as running:
        results = asyncio.run(drive(running.url, mixed_requests(200), concurrency=16))
        metrics = __import__("httpx").get(f"{running.url}/metrics").text
    assert len(results) == 200
    assert [r for r in results if r[1] >= 500] == []  # zero 5xx
    assert [r for r in results if r[1] != r[2]] == []  # every request got what it should (no 429 either: 16 <= 2 + 16)
    served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("genlab_requests_total"))
    assert served >= 200


def test_an_unexpected_failure_is_a_500_json_error_without_a_traceback(models_dir, monkeypatch):
    from genlab.serve import jobs

    def broken(*args, **kwargs):
        raise RuntimeError("a bug deep inside")

    monkeypatch.setattr(jobs, "generate_images", broken)
    with local(create_app(models_dir), raise_server_exceptions=False) as client:
        response = client.post("/v1/images/generations", json={"model": "vae"})
        error = assert_http_error(response, 500, "internal error", "RuntimeError")
        assert "deep inside" not in response.text  # details stay in the server log
        assert error["type"] == "server_error"


def test_the_sweeps_500s_are_4xx_or_answers(client):
    """From the hardening sweep: a class id of 1e20 (generations, inpaint) and extreme decoding
    settings on /v1/completions were 500s."""
    image = {"image": png_upload(np.zeros((8, 8), np.uint8))}
    for response in (client.post("/v1/images/generations", json={"model": "cvae", "n": 2, "class": 1e20}),
                     client.post("/v1/images/inpaint", data={"model": "cvae", "mask_spec": "half:top", "class": "1e20"},
                             files=image)):
        assert response.status_code == 422 and response.json()["error"]["param"] == "class", response.text
    for setting in ({"temperature": 1e-300}, {"top_p": 1e-300}, {"repetition_penalty": 1e-300},
                    {"temperature": 1e-300, "top_p": 1e-300, "repetition_penalty": 9.99}):
        response = client.post("/v1/completions", json={"model": "gpt", "prompt": "The ", "max_tokens": 4, **setting})
        assert response.status_code == 200, (setting, response.text)
        assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")
