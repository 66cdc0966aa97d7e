"""Diffusion models everywhere a model is used: POST /v1/images/generations with steps, sampler
and guidance_scale (each refused, with the fix, where it does not apply), its server-sent preview
stream (the same final images as the plain reply, a preview per step, bounded by the pool's time
limit and stopped when the client leaves), and `genlab sample`'s progress bar over the steps."""

from __future__ import annotations

import contextlib

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import genlab
from genlab.imageio import make_grid, to_uint8
from genlab.serve import create_app

from conftest import SERVED_VAE, assert_clean_error, assert_http_error, run_cli

# Recipe overrides for a diffusion model that trains in about a second (as tests/test_diffusion.py's).
TINY_DIFFUSION = ["steps=6", "model.channels=[8,16]", "model.norm_groups=4", "model.sample_steps=4",
                  "model.preview_steps=2", "batch_size=32", "train.progress=false", "train.tensorboard=false",
                  "train.eval_batches=1", "train.samples_every=1000"]
GENERATE = "/v1/images/generations"


def train_served_models(root: Path) -> Path:
    """ddpm (unconditional), cddpm (class-conditional) and vae: tiny models on the 8x8 digits, in root."""
    genlab.train("ddpm-digits", TINY_DIFFUSION, out=root / "ddpm")
    genlab.train("ddpm-digits", [*TINY_DIFFUSION, "model.conditional=true"], out=root / "cddpm")
    genlab.train("vae-digits", SERVED_VAE, out=root / "vae")
    return root


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return train_served_models(tmp_path_factory.mktemp("diffusion-served"))


@contextlib.contextmanager
def occupied(pool):
    """The pool's one worker busy with a job that waits until the block ends."""
    release = threading.Event()
    blocker = pool.submit(lambda deadline: release.wait(30), time.monotonic() + 30)
    try:
        yield
    finally:
        release.set()
        blocker.result(timeout=10)


def local(app) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def client(models_dir):
    with local(create_app(models_dir, workers=2, queue_size=8, request_timeout_s=60)) as test_client:
        yield test_client


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def images_of(reply_data: list) -> np.ndarray:
    return np.stack([decode_png(item["b64_json"]) for item in reply_data])


def expected_images(model, n: int, **options) -> np.ndarray:
    return to_uint8(genlab.sample(model, n, **options), model.data_range)[:, 0].numpy()


def parse_sse(text: str) -> list:
    events = [block[len("data: "):] for block in text.split("\n\n") if block.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]
    return [json.loads(event) for event in events[:-1]]


def stream(client, body: dict) -> list:
    with client.stream("POST", GENERATE, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.read().decode())


# ----------------------------------------------------------------------------- plain replies


def test_sampler_options_reach_the_model(client, models_dir):
    model = genlab.load(models_dir / "ddpm")
    got = {}
    for sampler, steps in (("ddim", 5), ("ddpm", 3), ("dpm++", 3)):
        reply = client.post(GENERATE, json={"model": "ddpm", "n": 4, "seed": 3, "sampler": sampler, "steps": steps})
        assert reply.status_code == 200, reply.text
        got[sampler] = images_of(reply.json()["data"])
        assert np.array_equal(got[sampler], expected_images(model, 4, seed=3, sampler=sampler, steps=steps)), sampler
    assert not np.array_equal(got["ddim"], got["ddpm"])  # the options are not ignored
    default = images_of(client.post(GENERATE, json={"model": "ddpm", "n": 4, "seed": 3}).json()["data"])
    assert np.array_equal(default, expected_images(model, 4, seed=3))  # the model's own sampler and steps (ddim, 4)

    conditional = genlab.load(models_dir / "cddpm")
    body = {"model": "cddpm", "n": 3, "seed": 1, "class": 2, "steps": 3}
    guided = images_of(client.post(GENERATE, json={**body, "guidance_scale": 4.5}).json()["data"])
    assert np.array_equal(guided, expected_images(conditional, 3, seed=1, condition=2, steps=3, guidance_scale=4.5))
    unguided = images_of(client.post(GENERATE, json={**body, "guidance_scale": 0}).json()["data"])
    assert not np.array_equal(guided, unguided)

    grid = client.post(GENERATE, json={"model": "ddpm", "n": 4, "steps": 2, "response_format": "png"})
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"


def test_models_listing_says_what_the_studio_needs(client):
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["ddpm"]["family"] == "diffusion" and "conditional" not in listed["ddpm"]["capabilities"]
    assert "conditional" in listed["cddpm"]["capabilities"] and listed["vae"]["family"] == "vae"
    config = client.get("/v1/models/ddpm").json()["config"]["model"]
    assert (config["timesteps"], config["sample_steps"], config["sampler"]) == (1000, 4, "ddim")
    schema = client.get("/openapi.json").json()
    fields = schema["components"]["schemas"]["ImageGenerationRequest"]["properties"]
    assert {"steps", "sampler", "guidance_scale", "stream"} <= fields.keys()
    assert "text/event-stream" in schema["paths"][GENERATE]["post"]["description"]


# ----------------------------------------------------------------------------- the stream


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++"])
def test_stream_ends_with_the_plain_replys_images_after_a_preview_per_step(client, models_dir, sampler):
    body = {"model": "ddpm", "n": 4, "seed": 11, "sampler": sampler, "steps": 5}
    events = stream(client, body)
    previews, final = events[:-1], events[-1]
    assert final["type"] == "image_generation.completed" and final["model"] == "ddpm"
    assert final["data"] == client.post(GENERATE, json=body).json()["data"]
    assert [e["type"] for e in previews] == ["image_generation.partial_image"] * 5
    assert [(e["step"], e["steps"], e["partial_image_index"]) for e in previews] == [(i + 1, 5, i) for i in range(5)]

    # Each preview is the batch's x_t after that step, as a grid ([-1, 1] shown black..white).
    seen = []
    model = genlab.load(models_dir / "ddpm")
    genlab.sample(model, 4, seed=11, sampler=sampler, steps=5, callback=lambda i, x_t: seen.append(x_t.clone()))
    for event, x_t in zip(previews, seen, strict=True):
        assert np.array_equal(decode_png(event["b64_json"]), make_grid(x_t.clamp(-1, 1), (-1.0, 1.0))[:, :, 0])
    assert len({e["b64_json"] for e in previews}) == 5  # the picture changes at every step


def test_long_samplings_send_at_most_50_evenly_spaced_previews(client):
    events = stream(client, {"model": "ddpm", "n": 1, "seed": 0, "sampler": "ddim", "steps": 120})
    steps = [e["step"] for e in events[:-1]]
    assert len(steps) == 50 and steps[-1] == 120 and steps == sorted(set(steps))
    assert max(b - a for a, b in zip([0, *steps], steps)) <= 3  # evenly spread, not bunched at one end
    assert events[-1]["type"] == "image_generation.completed"


def test_a_one_pass_model_streams_only_its_images(client):
    body = {"model": "vae", "n": 3, "seed": 5}
    events = stream(client, body)
    assert [e["type"] for e in events] == ["image_generation.completed"]
    assert events[0]["data"] == client.post(GENERATE, json=body).json()["data"]


def seconds_per_step(model_dir: Path) -> float:
    """What one ddpm step of 64 images takes here: the time limits below are set from it, so the
    tests hold on a slow shared machine and a fast one alike."""
    model = genlab.load(model_dir)
    genlab.sample(model, 64, sampler="ddpm", steps=3)  # warm up
    start = time.perf_counter()
    genlab.sample(model, 64, sampler="ddpm", steps=20)
    return (time.perf_counter() - start) / 20


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


LONG = {"model": "ddpm", "n": 64, "sampler": "ddpm", "steps": 1000}  # a preview every 20 steps


def test_the_stream_is_bounded_by_the_time_limit_and_the_queue(models_dir):
    app = create_app(models_dir, workers=1, queue_size=0, request_timeout_s=60)
    pool = app.state.pool
    with local(app) as client, occupied(pool):
        assert_http_error(client.post(GENERATE, json={"model": "ddpm", "stream": True}), 429, "busy")

    # Past the time limit mid-stream: an error event (504), [DONE], and the worker stops at its next
    # step. The limit is a tenth of the 1000 steps' time; the first preview comes at a fiftieth.
    step = seconds_per_step(models_dir / "ddpm")
    limit = max(0.5, 100 * step)
    app = create_app(models_dir, workers=1, queue_size=1, request_timeout_s=limit)
    pool = app.state.pool
    with local(app) as client:
        assert client.post(GENERATE, json={"model": "ddpm", "n": 1, "steps": 1}).status_code == 200  # loaded
        started = time.monotonic()
        events = stream(client, LONG)
        ended = time.monotonic() - started
        assert events[0]["type"] == "image_generation.partial_image"
        assert events[-1]["error"]["code"] == 504 and "time limit" in events[-1]["error"]["message"], events[-1]
        assert all(e.get("type") != "image_generation.completed" for e in events)
        assert 20 <= events[-2]["step"] < 1000
        assert wait_until(lambda: pool.status()["jobs"] == 0, limit), "the timed-out job kept running"
        assert ended < limit + 250 * step, (ended, limit, step)  # not the 1000 steps' time
        started = time.monotonic()  # the plain reply is bounded the same way: a 504 at the limit
        assert_http_error(client.post(GENERATE, json=LONG), 504, "time limit")
        assert wait_until(lambda: pool.status()["jobs"] == 0, limit), "the timed-out job kept running"
        assert time.monotonic() - started < limit + 250 * step

        # Waiting in the queue past the limit: an ordinary JSON 504 before any event.
        with occupied(pool):
            assert_http_error(client.post(GENERATE, json={"model": "ddpm", "stream": True}), 504, "time limit")


def test_a_client_that_leaves_stops_the_sampling(models_dir):
    """Over a real socket: the worker stops at its next step once the client has gone, long
    before the 1000 steps it was asked for."""
    import httpx
    import uvicorn

    step = seconds_per_step(models_dir / "ddpm")
    app = create_app(models_dir, workers=1, queue_size=0, request_timeout_s=120)
    pool = app.state.pool
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 30)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            with http.stream("POST", GENERATE, json={**LONG, "stream": True}) as response:
                assert response.status_code == 200
                first = json.loads(next(response.iter_lines()).removeprefix("data: "))
                assert first["step"] == 20 and pool.status()["jobs"] == 1
                left = time.monotonic()
            # the connection is closed here, with about 980 steps to go
            assert wait_until(lambda: pool.status()["jobs"] == 0, 10), "the sampling went on without a client"
            assert time.monotonic() - left < 250 * step, (time.monotonic() - left, step)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# ----------------------------------------------------------------------------- bad input


def test_bad_sampler_options_are_4xx_one_line_errors_streamed_or_not(client):
    cases = [
        # (body, status, needles, param)
        ({"model": "vae", "steps": 5}, 400, ("steps is for diffusion models", "'vae' is a vae model", "drop steps"),
         "steps"),
        ({"model": "vae", "sampler": "ddim", "guidance_scale": 2}, 400, ("sampler, guidance_scale are for diffusion",
                                                                          "drop sampler, guidance_scale"), "sampler"),
        ({"model": "ddpm", "guidance_scale": 2}, 400, ("unconditional", "model.conditional=true"), "guidance_scale"),
        ({"model": "ddpm", "steps": 1001}, 400, ("1..1000", "training timesteps"), "steps"),
        ({"model": "ddpm", "steps": 0}, 422, ("steps", "greater than or equal to 1"), "steps"),
        ({"model": "ddpm", "steps": -3}, 422, ("steps", "-3"), "steps"),
        ({"model": "ddpm", "steps": 20000}, 422, ("steps", "10000"), "steps"),
        ({"model": "ddpm", "steps": 2.5}, 422, ("steps", "integer"), "steps"),
        ({"model": "ddpm", "sampler": "euler"}, 422, ("sampler", "ddpm", "dpm++", "euler"), "sampler"),
        ({"model": "cddpm", "guidance_scale": 101}, 422, ("guidance_scale", "100"), "guidance_scale"),
        ({"model": "cddpm", "guidance_scale": -1}, 422, ("guidance_scale", "0"), "guidance_scale"),
        ({"model": "cddpm", "class": 10}, 400, ("class 10", "0..9"), None),
        ({"model": "gpt-nope", "steps": 3}, 404, ("no model named 'gpt-nope'",), "model"),
    ]
    for body, status, needles, param in cases:
        plain = assert_http_error(client.post(GENERATE, json=body), status, *needles, param=param)
        streamed = assert_http_error(client.post(GENERATE, json={**body, "stream": True}), status, *needles, param=param)
        assert streamed == plain, body  # the same error, before any event
    nan = client.post(GENERATE, content=b'{"model": "cddpm", "guidance_scale": NaN}',
                      headers={"content-type": "application/json"})
    assert_http_error(nan, 422, "guidance_scale", "finite", param="guidance_scale")
    assert_http_error(client.post(GENERATE, json={"model": "ddpm", "stream": True, "response_format": "png"}), 422,
                      "response_format png", "without stream")
    assert_http_error(client.post(GENERATE, json={"model": "ddpm", "stream": "yes please"}), 422, "stream", param="stream")


# ----------------------------------------------------------------------------- genlab sample


def test_genlab_sample_shows_a_progress_bar_over_the_sampler_steps(models_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, stderr = run_cli(capsys, "sample", str(models_dir / "ddpm"), "-n", "4", "--steps", "7",
                                   "--sampler", "dpm++", "-o", str(out))
    assert code == 0, stderr
    assert "wrote 4 samples" in stdout and out.exists()
    assert "sampling: 100%" in stderr and "7/7" in stderr and "step" in stderr
    code, _, stderr = run_cli(capsys, "sample", str(models_dir / "ddpm"), "-n", "2", "-o", str(out))
    assert code == 0 and "4/4" in stderr  # the model's own steps
    code, _, stderr = run_cli(capsys, "sample", str(models_dir / "vae"), "-n", "2", "-o", str(out))
    assert code == 0 and "sampling" not in stderr  # one pass: no steps to count


def test_genlab_sample_bad_inputs_exit_2_without_a_bar(models_dir, tmp_path, capsys):
    ddpm, vae, out = str(models_dir / "ddpm"), str(models_dir / "vae"), str(tmp_path / "x.png")
    for args, needles in (
        ((ddpm, "--sampler", "euler"), ("unknown sampler", "ddpm, ddim, dpm++")),
        ((ddpm, "--steps", "0"), ("--steps",)),
        ((ddpm, "--steps", "1001"), ("1..1000",)),
        ((ddpm, "--guidance", "3"), ("unconditional",)),
        ((str(models_dir / "cddpm"), "--guidance", "101"), ("--guidance", "100")),
        ((vae, "--steps", "5"), ("vae models take no --steps",)),
        ((vae, "--sampler", "ddim"), ("--sampler",)),
    ):
        code, _, stderr = run_cli(capsys, "sample", *args, "-o", out)
        assert_clean_error(code, stderr, *needles)
        assert "sampling" not in stderr, args
    assert not Path(out).exists()
