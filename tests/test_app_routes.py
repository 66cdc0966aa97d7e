"""The HTTP routes of interpolate, traverse and compress (the studio's panels call them): each
reply is checked against the Python function it wraps (genlab.tasks.interpolate.interpolate /
traverse, genlab.tasks.compress.compress) on a tiny trained VAE; bad input is a 4xx JSON error."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import genlab
from genlab.imageio import to_uint8
from genlab.serve import create_app

from conftest import TINY_VAE

QUICK = ["steps=60", "train.tensorboard=false", "train.eval_batches=2", *TINY_VAE]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app-routes")
    genlab.train("vae-digits", QUICK, out=root / "vae")
    genlab.train("vae-digits", [*QUICK, "model.conditional=true"], out=root / "cvae")
    return root


@pytest.fixture(scope="module")
def client(models_dir):
    # base_url on loopback: the server accepts loopback Host names only
    with TestClient(create_app(models_dir), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def model(models_dir):
    return genlab.load(models_dir / "vae")


def digit(index: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[index] * 255.0 / 16.0 + 0.5).astype(np.uint8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None, None]


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def expected_pixels(images: torch.Tensor) -> np.ndarray:
    return to_uint8(images)[:, 0].numpy()


def fields(**values) -> dict:
    """Form fields without any file, still sent as multipart/form-data (the routes take nothing else)."""
    return {name.rstrip("_"): (None, str(value)) for name, value in values.items()}


def gif_frames(b64: str) -> int:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as gif:
        assert gif.format == "GIF"
        return gif.n_frames


def test_the_routes_are_listed_for_the_models_that_can_serve_them(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    for path in ("/v1/images/interpolate", "/v1/images/traverse", "/v1/images/compress"):
        assert path in models["vae"]["endpoints"]
    assert "/v1/images/compress" not in models["cvae"]["endpoints"]  # a conditional code would need its label
    apps = {a["name"]: a for a in client.get("/v1/applications").json()["data"]}
    for name in ("interpolate", "traverse", "compress"):
        assert apps[name]["studio"] and apps[name]["endpoint"].startswith("/v1/images/")


def test_interpolate_route_returns_the_python_functions_frames_and_a_gif(client, model):
    from genlab.tasks.interpolate import interpolate

    a, b = digit(0), digit(1)
    response = client.post("/v1/images/interpolate", data={"model": "vae", "steps": "5", "method": "linear"},
                           files=[("image", ("a.png", png(a), "image/png")), ("image", ("b.png", png(b), "image/png"))])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["steps"] == 5 and body["method"] == "linear" and body["nrow"] == 5
    expected = expected_pixels(interpolate(model, as_tensor(a), as_tensor(b), steps=5, method="linear"))
    got = np.stack([pixels(item["b64_json"]) for item in body["data"]])
    assert got.shape == (5, 8, 8) and np.array_equal(got, expected)
    assert gif_frames(body["gif_b64_json"]) == 5 + 3  # forwards, then back without repeating the ends


def test_interpolate_route_refuses_anything_but_two_images(client):
    one = client.post("/v1/images/interpolate", data={"model": "vae"}, files=[("image", ("a.png", png(digit(0)), "image/png"))])
    assert one.status_code == 422 and "exactly two" in one.json()["error"]["message"]
    three = client.post("/v1/images/interpolate", data={"model": "vae"},
                        files=[("image", (f"{i}.png", png(digit(i)), "image/png")) for i in range(3)])
    assert three.status_code == 413 and "more than 2" in three.json()["error"]["message"]
    files = [("image", (f"{i}.png", png(digit(i)), "image/png")) for i in range(2)]
    too_many = client.post("/v1/images/interpolate", data={"model": "vae", "steps": "257"}, files=files)
    assert too_many.status_code == 422 and "steps" in too_many.text
    bad = client.post("/v1/images/interpolate", data={"model": "vae", "class": "3"}, files=files)
    assert bad.status_code == 400 and "unconditional" in bad.json()["error"]["message"]


def test_traverse_route_matches_the_python_function_with_and_without_an_image(client, model, models_dir):
    from genlab.tasks.interpolate import traverse

    image = digit(3)
    response = client.post("/v1/images/traverse", data={"model": "vae", "dims": "2", "span": "2", "steps": "3"},
                           files={"image": ("d.png", png(image), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    grid, dims = traverse(model, as_tensor(image), dims=2, span=2.0, steps=3)
    assert body["dims"] == dims and body["nrow"] == 3 and body["start"] == "image"
    got = np.stack([pixels(item["b64_json"]) for item in body["data"]])
    assert np.array_equal(got, expected_pixels(grid.flatten(0, 1)))
    assert [(item["dim"], item["value"]) for item in body["data"][:3]] == [(dims[0], -2.0), (dims[0], 0.0), (dims[0], 2.0)]
    assert gif_frames(body["gif_b64_json"]) == 3 + 1
    # No image: from the prior's centre, dimensions 0, 1, ...
    plain = client.post("/v1/images/traverse", files=fields(model="vae", dims=2, steps=2)).json()
    grid, dims = traverse(model, None, dims=2, steps=2)
    assert plain["dims"] == dims == [0, 1] and plain["start"] == "z = 0"
    assert np.array_equal(np.stack([pixels(i["b64_json"]) for i in plain["data"]]), expected_pixels(grid.flatten(0, 1)))
    # A conditional model needs its class, and gets it.
    cvae = genlab.load(models_dir / "cvae")
    conditional = client.post("/v1/images/traverse", files=fields(model="cvae", dims=1, steps=2, class_=4)).json()
    grid, _ = traverse(cvae, None, dims=1, steps=2, label=4)
    assert np.array_equal(np.stack([pixels(i["b64_json"]) for i in conditional["data"]]), expected_pixels(grid.flatten(0, 1)))
    for field, value in (("dims", "65"), ("span", "0"), ("steps", "1"), ("span", "11")):
        refused = client.post("/v1/images/traverse", files={"model": (None, "vae"), field: (None, value)})
        assert refused.status_code == 422 and field in refused.text, (field, refused.text)


def test_compress_route_reports_the_python_functions_numbers_and_decoded_images(client, model):
    from genlab.metrics.image import mean_psnr
    from genlab.tasks.compress import compress, fit_entropy_model, png_bits
    from genlab.tasks.images import dataset_images

    images = [digit(5), digit(6)]
    response = client.post("/v1/images/compress", data={"model": "vae", "step": "0.5", "fit_n": "300", "seed": "2"},
                           files=[("image", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(images)])
    assert response.status_code == 200, response.text
    body = response.json()
    batch = torch.cat([as_tensor(a) for a in images])
    train, _ = dataset_images(model, "train", 300, 2)
    entropy_model = fit_entropy_model(model, train, 0.5)
    result = compress(model, batch, entropy_model)
    m = result["metrics"]
    for key in ("step", "n", "latent_dims", "bits_per_image", "png_bits_per_image", "raw_bits_per_image",
                "compression_vs_png", "bits_per_value"):
        assert body[key] == pytest.approx(m[key]), key
    assert body["psnr_db"] == pytest.approx(mean_psnr(result["decoded"], batch, 1.0))
    assert body["raw_bits_per_image"] == 8 * 64 and body["fit_n"] == 300
    assert [item["bits"] for item in body["data"]] == pytest.approx(entropy_model.bits(result["codes"]).tolist())
    assert [item["png_bits"] for item in body["data"]] == pytest.approx(png_bits(batch).tolist())
    assert [item["filename"] for item in body["data"]] == ["0.png", "1.png"]
    got = np.stack([pixels(item["b64_json"]) for item in body["data"]])
    assert np.array_equal(got, expected_pixels(result["decoded"]))
    for field, value in (("step", "0"), ("step", "17"), ("fit_n", "0")):
        refused = client.post("/v1/images/compress", data={"model": "vae", field: value},
                              files={"image": ("a.png", png(images[0]), "image/png")})
        assert refused.status_code == 422 and field in refused.text, (field, refused.text)
    conditional = client.post("/v1/images/compress", data={"model": "cvae"},
                              files={"image": ("a.png", png(images[0]), "image/png")})
    assert conditional.status_code == 400 and "unconditional" in conditional.json()["error"]["message"]


def test_piano_roll_has_a_pitch_axis_and_marks_where_the_prompt_ends():
    from genlab.data.music import Piece
    from genlab.music_render import AXIS_WIDTH, PROMPT_COLOUR, note_name, piano_roll_png

    assert [note_name(p) for p in (48, 60, 61, 69, 72)] == ["C3", "C4", "C#4", "A4", "C5"]
    piece = Piece(pitch=np.array([60, 64, 67, 72]), start=np.array([0, 4, 8, 16]), end=np.array([4, 8, 12, 20]),
                  velocity=np.full(4, 80), voice=np.zeros(4, dtype=int), length=32)
    plain = np.asarray(Image.open(io.BytesIO(piano_roll_png(piece, pixels_per_step=4))))
    marked = np.asarray(Image.open(io.BytesIO(piano_roll_png(piece, pixels_per_step=4, prompt_end=16))))
    assert plain.shape == marked.shape == ((74 - 58 + 1) * 5, AXIS_WIDTH + 32 * 4, 3)
    # The axis: dark text (the note names) left of the roll, nowhere else in that margin's colour.
    assert (plain[:, : AXIS_WIDTH - 5] < 120).any()
    # The prompt's end: a dark full-height line at step 16, only in the marked picture.
    x = AXIS_WIDTH + 16 * 4 - 1
    assert (marked[:, x] == PROMPT_COLOUR).all(axis=1).mean() > 0.8
    assert not (plain[:, x] == PROMPT_COLOUR).all(axis=1).any()
