"""Fuzzing: schemathesis drives the HTTP API from its own OpenAPI document (every operation,
bounded and seeded), and hypothesis feeds random input to the parsers and loaders a user's
files and command lines reach (override parser, image, MIDI and text readers, tokenizers).

The contract they check: a request is answered with a 2xx or a 4xx in the documented JSON
error shape, never a 5xx or a reply that breaks the document; a parser or loader returns a
value or raises GenlabError, never another exception. Every run is derandomized (the same
examples each time), so a failure reproduces in CI and locally.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

import genlab
from conftest import train_served_models
from genlab.config import SHORTHAND_TRAIN_KEYS, TrainConfig
from genlab.errors import GenlabError
from genlab.models.transformer import GPTConfig
from genlab.models.vae import VAEConfig

# The same tiny models tests/test_serve.py serves (seconds to train), plus a tiny music model.
TINY_MUSIC = ["data.max_pieces=8", "data.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
              "batch_size=8", "steps=10", "train.eval_every=10", "train.eval_batches=2", "train.warmup_steps=2",
              "train.progress=false", "train.tensorboard=false"]
PREVIEWS = ("samples.png", "reconstructions.png", "class_histogram.png", "samples.txt")
MODELS = ("vae", "cvae", "gpt", "sr", "denoiser", "music")

# Bounded and reproducible: the same examples on every run (derandomize), no per-example deadline (CI
# machines vary). GENLAB_FUZZ_EXAMPLES / GENLAB_FUZZ_API_EXAMPLES raise the counts and GENLAB_FUZZ_RANDOM=1
# draws new examples, for a longer hunt by hand.
EXAMPLES = int(os.environ.get("GENLAB_FUZZ_EXAMPLES", "300"))  # per parser or loader
API_EXAMPLES = int(os.environ.get("GENLAB_FUZZ_API_EXAMPLES", "40"))  # per operation
DERANDOMIZE = os.environ.get("GENLAB_FUZZ_RANDOM", "") != "1"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ERROR_FIELDS = {"message", "hint", "type", "param", "code"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory with one tiny model of each kind the API serves."""
    root = train_served_models(tmp_path_factory.mktemp("fuzzed"))
    with pytest.MonkeyPatch.context() as patch:  # the parsed chorales are cached under the data root: not ../shared
        patch.setenv("GENLAB_DATA_DIR", str(tmp_path_factory.mktemp("music-data")))
        genlab.train("gpt-chorales", TINY_MUSIC, out=root / "music")
    return root


@pytest.fixture
def api_app(models_dir):
    """A fresh app per test: schemathesis ends an ASGI app's lifespan (which shuts its worker pool
    down) when the test that started it ends."""
    from genlab.serve import create_app

    return create_app(models_dir, workers=2, queue_size=64, request_timeout_s=120)


def _openapi_document() -> dict:
    """The app's OpenAPI document, which does not depend on the models it serves: read at
    collection (one test per operation), while the models are trained by the fixture."""
    from genlab.serve import create_app

    with tempfile.TemporaryDirectory() as empty:
        return create_app(empty).openapi()


schema = schemathesis.openapi.from_dict(_openapi_document())


def test_served_document_is_the_fuzzed_one(api_app):
    """The document fuzzed is the one served; it documents the errors as they are sent."""
    document = TestClient(api_app, base_url="http://127.0.0.1").get("/openapi.json").json()
    assert document == json.loads(json.dumps(schema.raw_schema))
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert set(operation["responses"]) == {"200", "default"}, (method, path)
            # (FastAPI files it under the route's own media type: text/plain for /metrics)
            [content] = operation["responses"]["default"]["content"].values()
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's {"detail": [...]}, never sent


def error_shape(ctx, response, case) -> None:
    """Every error reply is the documented JSON error, {"error": {message, hint, type, param, code}},
    with the response's status as its code and no traceback."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == ERROR_FIELDS, error
    assert error["code"] == response.status_code, (error, response.status_code)
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["hint"] is None or isinstance(error["hint"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert "Traceback" not in response.text
    return None


@st.composite
def image_files(draw) -> bytes:
    """A small valid image file of a random size, mode and format (what a real client uploads)."""
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "I", "F", "CMYK"]))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, (height, width, 4), np.uint8)
    if mode == "I;16":
        picture = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    elif mode in ("I", "F"):
        picture = Image.fromarray(pixels[..., 0]).convert(mode)
    else:
        picture = Image.fromarray(pixels, "RGBA").convert(mode)
    fmt = {"I": "TIFF", "F": "TIFF", "CMYK": "JPEG"}.get(mode, "PNG")
    if mode in ("L", "RGB") and draw(st.booleans()):
        fmt = "JPEG"
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


# Knobs that make one request expensive on a CPU: a request that reaches a real model keeps them small,
# so the bounded run exercises many requests rather than one long inference.
CHEAP = {"max_tokens": 16, "n": 2, "steps": 5, "restarts": 1, "samples": 2, "bars": 2, "fit_n": 64, "dims": 4}
# The models each route serves (GET /v1/models lists them); the others get a 400 naming the kind they need.
FITTING = {"/v1/images/generations": ("vae", "cvae"), "/v1/completions": ("gpt",), "/v1/music/compositions": ("music",),
           "/v1/images/upscale": ("sr",), "/v1/images/denoise": ("denoiser",), "/v1/anomaly/scores": ("vae",),
           "/v1/images/inpaint": ("vae", "cvae"), "/v1/images/interpolate": ("vae", "cvae"),
           "/v1/images/traverse": ("vae", "cvae"), "/v1/images/compress": ("vae", "cvae")}
SPECS = {"mask_spec": ("half:top", "half:left", "box:1,1,3,3", "random:0.5"), "noise": ("gaussian:0.2", "salt-pepper:0.1")}


def aim_at_models(case, data) -> None:
    """For most positive cases, name a real model (random names are 400s and 404s) and upload real
    images, so the handlers behind the validation run too."""
    mode = getattr(getattr(case.meta, "generation", None), "mode", None)
    if mode is None or mode.is_negative or not data.draw(st.integers(0, 3), label="aim"):  # a quarter as generated
        return
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = data.draw(st.sampled_from(MODELS), label="name")
        if "file" in case.path_parameters and data.draw(st.booleans(), label="real file"):
            case.path_parameters["file"] = data.draw(st.sampled_from(PREVIEWS), label="file")
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return
    multipart = (case.media_type or "").startswith("multipart/")
    if multipart:  # a form has no null: an optional field is left out instead (schemathesis sends "null")
        for key in [k for k, v in body.items() if v is None]:
            del body[key]
    fitting = FITTING.get(case.path, MODELS)
    body["model"] = data.draw(st.sampled_from(fitting + MODELS if data.draw(st.booleans()) else fitting), label="model")
    for key, cap in CHEAP.items():
        if isinstance(body.get(key), int) and not isinstance(body[key], bool) and body[key] > cap:
            body[key] = cap
    for key, specs in SPECS.items():
        if isinstance(body.get(key), str) and data.draw(st.booleans(), label=f"valid {key}"):
            body[key] = data.draw(st.sampled_from(specs), label=key)
    if isinstance(body.get("prompt_midi"), str) and data.draw(st.booleans(), label="midi"):
        body["prompt_midi"] = base64.b64encode(data.draw(midi_inputs, label="midi bytes")).decode()
    for field in ("image", "mask"):
        value = body.get(field)
        if isinstance(value, (bytes, str)) and multipart and data.draw(st.integers(0, 3), label=f"real {field}"):
            body[field] = data.draw(image_files(), label=field)
        elif isinstance(value, list) and data.draw(st.integers(0, 3), label=f"real {field}"):
            body[field] = [data.draw(image_files(), label=field) for _ in range(data.draw(st.integers(1, 3)))]
    if "mask" in body and "mask_spec" in body:
        del body[data.draw(st.sampled_from(["mask", "mask_spec"]), label="one mask")]


@schema.parametrize()
@schema.given(data=st.data())
@settings(max_examples=API_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_fuzz(case, data, api_app, tmp_path_factory):
    """Every operation of /openapi.json: no 5xx, replies conform to the document, errors in the
    documented shape, and no reply names the server's files (as conftest checks for TestClient)."""
    basetemp = str(tmp_path_factory.getbasetemp()).encode()

    def no_paths(ctx, response, case) -> None:
        headers = b"".join(value.encode("latin-1") for values in response.headers.values() for value in values)
        assert basetemp not in response.content and basetemp not in headers, response.content[:300]

    aim_at_models(case, data)
    # The server answers loopback names only (421 otherwise): every request goes to http://127.0.0.1.
    case.call_and_validate(base_url="http://127.0.0.1", app=api_app,
                           checks=[not_a_server_error, response_schema_conformance, negative_data_rejection,
                                   error_shape, no_paths])


# ----------------------------------------------------------------------------- parsers and loaders
# Each takes what a person's command line or file holds: any input gives a value or a GenlabError.

TRAIN_KEYS = [f"train.{name}" for name in TrainConfig.__dataclass_fields__] + list(SHORTHAND_TRAIN_KEYS)
MODEL_KEYS = sorted({f"model.{name}" for cls in (VAEConfig, GPTConfig) for name in cls.__dataclass_fields__})
# Fragments of YAML (flow lists and maps, anchors, tags, timestamps, special floats) to build values from.
YAML_BITS = ["[", "]", "{", "}", ",", ":", " ", "-", "&a ", "*a", "!!int ", "!!float ", "!!bool ", "!!timestamp ",
             "!!set ", "!!binary ", "!!str ", "!!python/object:os.system ", "2020-13-45", "2020-01-01", ".nan", ".inf",
             "-.inf", "1e400", "0x1F", "0o17", "1_000", "null", "~", "true", "no", "'", '"', "#", "|", ">", "\n", "\t",
             "12", "-3", "0.5", "x", "é", "\x00", "\ud800"]
yaml_values = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(YAML_BITS), max_size=12).map("".join),
                        st.integers(1, 300).map(lambda depth: "[" * depth + "1" + "]" * depth),
                        st.integers(1, 300).map(lambda depth: "{a: " * depth + "1" + "}" * depth))
overrides = st.one_of(st.text(max_size=40),
                      st.tuples(st.sampled_from(TRAIN_KEYS + MODEL_KEYS + ["data.name", "model", "x.y", "train..x", ""]),
                                yaml_values).map("=".join))


# Found by this fuzzer: PyYAML raised ValueError / KeyError / IndexError / AttributeError / RecursionError
# for these, and a date or a self-referencing alias passed through to break config.json (JSON).
OVERRIDE_CRASHES = ["seed=2020-13-45", "model.latent_dim=!!int x", "model.beta=!!float ", "train.amp=!!bool ",
                    "train.device=!!timestamp x", "model.hidden=" + "[" * 2000, "model.hidden=&a [*a]",
                    "data.name=2020-01-01", "data.name=!!binary aGk=", "model.hidden=!!set {1}"]


@FUZZ
@given(texts=st.lists(overrides, min_size=1, max_size=3))
@example(texts=OVERRIDE_CRASHES[:1])
def test_override_parser(texts):
    """`genlab train RECIPE KEY=VALUE ...`: the overrides, the recipe they change and the configs
    built from it give values or GenlabError; what passes is plain data (config.json is JSON)."""
    from genlab.config import apply_overrides, from_dict, load_recipe, parse_override

    try:
        for text in texts:
            parts, _ = parse_override(text)
            assert parts and all(isinstance(part, str) for part in parts)
        recipe = apply_overrides(load_recipe("vae-digits"), texts)
        json.dumps(recipe)
        from_dict(TrainConfig, recipe["train"], "train")
        from_dict(VAEConfig, recipe["model"], "model")
        from_dict(GPTConfig, recipe["model"], "model")
    except GenlabError:
        pass


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.lists(st.sampled_from(YAML_BITS + ["family: vae\n", "data:", "model:",
                                                                                 "train:", "  a: 1\n"]),
                                                   max_size=30).map("".join)))
@example(text="family: vae\ndata: {}\nmodel: {latent_dim: !!int x}\ntrain: {}\n")
@example(text="family: vae\ndata: {name: 2020-01-01}\nmodel: &a [*a]\ntrain: {}\n")
def test_recipe_file(tmp_path_factory, text):
    """A recipe file (`genlab train my.yaml`) of any text: a recipe or a GenlabError."""
    from genlab.config import apply_overrides, load_recipe

    path = tmp_path_factory.mktemp("recipe") / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        recipe = load_recipe(str(path))
        json.dumps(apply_overrides(recipe, []))
    except GenlabError:
        pass


def _image_bytes(fmt: str, mode: str = "L", size=(6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format=fmt)
    return buffer.getvalue()


# The first bytes of formats Pillow reads, each followed by random bytes; and whole files with random damage.
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff", b"GIF89a", b"GIF87a", b"BM",
          b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00", b"8BPS", b"P5\n", b"P6\n",
          b"\x0a\x05\x01\x08", b"\x59\xa6\x6a\x95", b"DDS ", b"icns", b"\x00\x00\x00\x0cjP  ", b"#define", b"/* XPM */",
          b"qoif", b"\x76\x2f\x31\x01", b"SIMPLE  =", b"FORM"]
VALID_IMAGES = [_image_bytes("PNG"), _image_bytes("PNG", "RGBA"), _image_bytes("PNG", "P"), _image_bytes("JPEG", "RGB"),
                _image_bytes("GIF"), _image_bytes("BMP", "RGB"), _image_bytes("TIFF", "I;16"), _image_bytes("WEBP", "RGB")]


@st.composite
def damaged(draw, files: list[bytes]) -> bytes:
    """One of `files` with random bytes overwritten, cut short or extended."""
    data = bytearray(draw(st.sampled_from(files)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=16))


image_inputs = st.one_of(st.binary(max_size=512), st.tuples(st.sampled_from(MAGICS), st.binary(max_size=512)).map(b"".join),
                         damaged(VALID_IMAGES))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's note on damaged TIFF headers
@FUZZ
@given(data=image_inputs, shape=st.sampled_from([(1, 8, 8), (3, 16, 16), (1, 28, 28)]))
def test_image_loader(data, shape):
    """genlab.tasks.images.load_image (the CLI's and the server's image reader) and the server's
    upload check: any bytes give a tensor of the model's shape or a GenlabError."""
    from genlab.apps.common import Upload, load_uploads
    from genlab.tasks.images import load_image

    try:
        image, size = load_image(data, shape, name="fuzzed.png")
        assert image.shape == (1, *shape) and image.isfinite().all() and min(size) >= 1
    except GenlabError:
        pass
    try:
        batch, _ = load_uploads([Upload("image", "fuzzed.png", data)], shape, (-1.0, 1.0))
        assert batch.shape == (1, *shape)
    except GenlabError:
        pass


def _midi_file() -> bytes:
    from genlab.data.music import Piece, midi_bytes

    return midi_bytes(Piece.from_notes([(60, 0, 4, 80), (64, 2, 6, 90), (67, 4, 8, 100)]))


MIDI = _midi_file()
midi_inputs = st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda tail: b"MThd\x00\x00\x00\x06" + tail),
                        st.binary(max_size=256).map(lambda tail: MIDI[:22] + tail), damaged([MIDI]))


@FUZZ
@given(data=midi_inputs, steps=st.sampled_from([1, 4, 12]))
def test_midi_reader(data, steps):
    """genlab.data.music.read_midi (prompt_midi, `genlab apply` and midi: data): any bytes give a Piece or a GenlabError."""
    from genlab.data.music import Piece, read_midi

    try:
        piece = read_midi(data, steps_per_quarter=steps)
    except GenlabError:
        return
    assert isinstance(piece, Piece)
    assert len(piece.pitch) == len(piece.start) == len(piece.end) == len(piece.velocity)
    assert (piece.end > piece.start).all() and ((piece.pitch >= 0) & (piece.pitch <= 127)).all()


@FUZZ
@example(data=b"\xef\xbb\xbf")  # found by this fuzzer: a byte-order mark alone was read as empty text
@given(data=st.one_of(st.binary(max_size=256), st.text(max_size=100).map(lambda t: t.encode("utf-8")),
                      st.tuples(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b""]),
                                st.binary(max_size=64)).map(b"".join)))
def test_text_file_reader(tmp_path_factory, data):
    """genlab.data.text.read_text_file (file: and folder: data): any bytes give text or a GenlabError."""
    from genlab.data.text import read_text_file

    path = tmp_path_factory.mktemp("text") / "notes.txt"
    path.write_bytes(data)
    try:
        text = read_text_file(path)
    except GenlabError:
        return
    assert isinstance(text, str) and text and "\r\n" not in text


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                           max_leaves=12)
tokenizer_documents = st.one_of(
    st.text(max_size=100),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"genlab_tokenizer": st.sampled_from(["char", "byte", "bpe", 3, None])},
                          optional={"symbols": json_values | st.lists(st.text(max_size=2) | json_values, max_size=8)}
                          ).map(json.dumps),
    st.fixed_dictionaries({"model": st.fixed_dictionaries({"type": st.just("BPE")},
                                                          optional={"vocab": json_values, "merges": json_values})},
                          optional={"version": json_values, "pre_tokenizer": json_values,
                                    "decoder": json_values}).map(json.dumps))


@FUZZ
@given(text=tokenizer_documents, sample=st.text(max_size=20))
@example(text='{"genlab_tokenizer": "char", "symbols": true}', sample="a")  # found by this fuzzer: a TypeError
@example(text='{"genlab_tokenizer": "char", "symbols": ["a", null]}', sample="a")
@example(text='{"genlab_tokenizer": "char", "symbols": {"a": 1}}', sample="a")
def test_tokenizer_from_json(text, sample):
    """A model's tokenizer.json of any content: a tokenizer (that encodes and decodes) or a GenlabError."""
    from genlab.data.text import tokenizer_from_json

    try:
        tokenizer = tokenizer_from_json(text)
        tokenizer.decode(tokenizer.encode(sample))
    except GenlabError:
        pass


surrogates = st.sampled_from(["\ud800", "\udfff", "\udc80"])
unicode_text = st.one_of(st.text(max_size=200), st.lists(st.one_of(st.characters(), surrogates), max_size=50).map("".join))


@FUZZ
@given(text=unicode_text, corpus=st.text(min_size=1, max_size=50), ids=st.lists(st.integers(-300, 300), max_size=20))
def test_char_and_byte_tokenizers(text, corpus, ids):
    """Round trips on any Unicode; lone surrogates and unknown characters or ids are GenlabErrors."""
    from genlab.data.text import ByteTokenizer, CharTokenizer

    valid = not any("\ud800" <= c <= "\udfff" for c in text)
    byte = ByteTokenizer()
    if valid:
        assert byte.decode(byte.encode(text)) == text
        char = CharTokenizer.from_text(text or "a")
        assert char.decode(char.encode(text)) == text
    else:
        with pytest.raises(GenlabError):
            byte.encode(text)
        with pytest.raises(GenlabError):
            CharTokenizer.from_text(corpus).encode(text)
    for tokenizer in (byte, CharTokenizer.from_text(corpus)):
        if any(not 0 <= i < tokenizer.vocab_size for i in ids):
            with pytest.raises(GenlabError):
                tokenizer.decode(ids)
        else:
            assert isinstance(tokenizer.decode(ids), str)


@pytest.mark.parametrize("text", OVERRIDE_CRASHES)
def test_override_values_yaml_cannot_read_are_text(text):
    """A value that is not plain YAML data (a malformed tag, an impossible or real date, runaway
    nesting, a self-reference, a set, binary data) is taken as its text; the setting's own type
    check then refuses it with a GenlabError where it must be a number or a list."""
    from genlab.config import apply_overrides, from_dict, load_recipe, parse_override

    key, _, raw = text.partition("=")
    assert parse_override(text)[1] == raw
    recipe = apply_overrides(load_recipe("vae-digits"), [text])
    json.dumps(recipe)
    if key in ("data.name", "train.device"):
        return  # text settings: the value stands as written
    section, config_class = ("model", VAEConfig) if key.startswith("model.") else ("train", TrainConfig)
    with pytest.raises(GenlabError):
        from_dict(config_class, recipe[section], section)


def test_recipe_with_unreadable_values_is_a_clean_error(tmp_path):
    from genlab.config import load_recipe

    for body, needle in [("model: {latent_dim: !!int x}", "not valid YAML"), ("model: {hidden: &a [*a]}", "plain data"),
                         ("data: {name: 2020-01-01}", "quote dates"), ("model: " + "[" * 3000, "not valid YAML")]:
        path = tmp_path / "bad.yaml"
        path.write_text(f"family: vae\ndata: {{}}\ntrain: {{}}\n{body}\n")
        with pytest.raises(GenlabError) as caught:
            load_recipe(str(path))
        assert needle in caught.value.message + " " + (caught.value.hint or ""), caught.value


def test_text_file_of_only_a_byte_order_mark_is_empty(tmp_path):
    from genlab.data.text import read_text_file

    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(GenlabError, match="is empty"):
        read_text_file(path)
