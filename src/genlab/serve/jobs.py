"""The work behind each inference endpoint, run on a worker thread: load the model, call the
task (genlab.api, genlab.sampling, genlab.tasks), encode the result.

Each function takes validated request values and returns plain data; api.py turns it into an
HTTP response. Problems a person can fix are GenlabError (answered 400 with its message and
hint) or APIError with the fitting status.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError

from ..imageio import display_scale, grid_picture, image_picture
from ..imageio import png_bytes as encode_png
from .runtime import APIError, JobTimeout, ModelStore
from .schemas import MAX_IMAGE_PIXELS, MAX_PROMPT_MIDI_BYTES

# Which endpoint serves which kind of model, for "wrong model" hints.
ENDPOINT_FOR_KIND = {"image": "POST /v1/images/generations", "text": "POST /v1/completions",
                     "music": "POST /v1/music/compositions", "pianoroll": "POST /v1/music/compositions"}


def endpoints_for(data_kind: str, capabilities) -> list[str]:
    """The inference endpoints a model with these capabilities can serve."""
    caps = set(capabilities)
    endpoints = []
    if data_kind == "image":
        if "sample" in caps:
            endpoints.append("/v1/images/generations")
        if "decode" in caps:
            endpoints.append("/v1/images/inpaint")
        if "upscale" in caps:
            endpoints.append("/v1/images/upscale")
        if "denoise" in caps:
            endpoints.append("/v1/images/denoise")
        if caps & {"log_likelihood", "encode"} and "conditional" not in caps:
            # A conditional model scores an image only with its class, which the endpoint does not take.
            endpoints.append("/v1/anomaly/scores")
    if data_kind == "text" and "generate" in caps:
        endpoints.append("/v1/completions")
    if "compose" in caps:
        endpoints.append("/v1/music/compositions")
    return endpoints


def _model_for(store: ModelStore, name: str, data_kind: str, capability: str, purpose: str):
    model = store.get(name)
    if model.data_kind != data_kind:
        raise APIError(400, f"{purpose} needs a model of kind {data_kind!r}; model {name!r} is a {model.family} "
                       f"model of kind {model.data_kind!r}", f"use {ENDPOINT_FOR_KIND.get(model.data_kind, 'GET /v1/models')} "
                       f"with this model, or pick another model from GET /v1/models", param="model")
    model.require(capability, purpose)
    return model


# ----------------------------------------------------------------------------- images out


def png_bytes(image: torch.Tensor, value_range) -> bytes:
    """One [C, H, W] image as PNG bytes at its own resolution (the exact result pixels)."""
    return encode_png(image_picture(image, value_range))


def grid_png_bytes(images: torch.Tensor, value_range) -> bytes:
    """[N, C, H, W] images as one PNG grid, small tiles enlarged as in `genlab sample`."""
    return encode_png(grid_picture(images, value_range, scale=display_scale(images.shape[-2])))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------- images in


@dataclass
class Upload:
    """An uploaded file, read (with a size limit) by the event loop before the job starts."""

    param: str  # the form field it came in
    filename: str
    data: bytes


def _check_image(upload: Upload) -> None:
    """A readable image of bounded size, or a 415 / 413 naming the field."""
    try:
        with Image.open(io.BytesIO(upload.data)) as picture:
            width, height = picture.size  # from the header: nothing decoded yet
            if width * height > MAX_IMAGE_PIXELS:
                raise APIError(413, f"{upload.param} {upload.filename!r} is {width}x{height} pixels, more than the "
                               f"limit of {MAX_IMAGE_PIXELS:,}", "send a smaller image (the models work at their "
                               "training size, e.g. 28x28, and resize anything larger)", param=upload.param)
            picture.load()
    except APIError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise APIError(415, f"{upload.param} {upload.filename!r} is not a readable image ({e})",
                       "send a PNG or JPEG file", param=upload.param) from None


def _load_images(uploads: list[Upload], shape, value_range) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Uploaded images as one [N, C, H, W] batch in the model's shape and range (converted and
    resized by genlab.tasks.images.load_image), with each image's own size."""
    from ..tasks.images import load_image

    for upload in uploads:
        _check_image(upload)
    loaded = [load_image(upload.data, tuple(shape), value_range, name=f"{upload.param} {upload.filename!r}")
              for upload in uploads]
    return torch.cat([image for image, _ in loaded]), [size for _, size in loaded]


def _mask(mask: Upload | None, mask_spec: str | None, size: tuple[int, int], target, seed: int) -> torch.Tensor:
    from ..tasks.images import make_mask

    generator = torch.Generator().manual_seed(seed)
    if mask is None:  # a spec (checked by api.py to be box:/half:/random:, never a server path)
        return make_mask(mask_spec, size, target, generator)
    _check_image(mask)
    return make_mask(mask.data, size, target, generator, name=repr(mask.filename))


# ----------------------------------------------------------------------------- image jobs


def generate_images(store: ModelStore, name: str, n: int, seed: int, label: int | None):
    """n samples [n, C, H, W] and the model's value range."""
    from ..api import sample

    model = _model_for(store, name, "image", "sample", "image generation")
    return sample(model, n, seed=seed, condition=label), model.data_range


def inpaint_image(store: ModelStore, name: str, image: Upload, mask: Upload | None, mask_spec: str | None, *,
                  method: str, steps: int, restarts: int, label: int | None, seed: int):
    from ..tasks.inpaint import inpaint, require_latent_generator

    model = store.get(name)
    if model.data_kind != "image":
        raise APIError(400, f"model {name!r} is a {model.data_kind} model; inpainting needs an image model "
                       "(a VAE or a GAN)", param="model")
    require_latent_generator(model, "inpainting")
    shape, value_range = tuple(model.config.input_shape), model.data_range
    images, sizes = _load_images([image], shape, value_range)
    missing = _mask(mask, mask_spec, sizes[0], shape[1:], seed)
    result = inpaint(model, images, missing, method=method, steps=steps, restarts=restarts, labels=label, seed=seed)
    return result[0], value_range, {"masked_pixels": int(missing.sum())}


def upscale_image(store: ModelStore, name: str, image: Upload):
    from ..tasks.superres import superres

    model = _model_for(store, name, "image", "upscale", "super-resolution")
    value_range = model.data_range
    low_res, _ = _load_images([image], model.config.low_res_shape, value_range)
    return superres(model, low_res)[0], value_range, {"scale": model.config.scale}


def denoise_image(store: ModelStore, name: str, image: Upload, noise: str | None, seed: int):
    """The denoised image; with `noise`, the upload is taken as clean, noise is added first (seeded),
    and the noisy input and PSNRs against the upload come back too."""
    from ..metrics.image import psnr
    from ..models.denoiser import add_noise
    from ..tasks.denoise import denoise, parse_noise

    model = _model_for(store, name, "image", "denoise", "denoising")
    value_range = model.data_range
    kind_level = parse_noise(noise) if noise else None  # a bad spec fails before any work
    images, _ = _load_images([image], tuple(model.config.input_shape), value_range)
    extra = {}
    noisy = images
    if kind_level is not None:
        noisy = add_noise(images, *kind_level, value_range, torch.Generator().manual_seed(seed))
    result = denoise(model, noisy)
    if kind_level is not None:
        peak = value_range[1] - value_range[0]
        extra = {"noise": noise, "noisy_b64_json": b64(png_bytes(noisy[0], value_range)),
                 # floored: noise that changed no pixel would give inf, which JSON cannot carry
                 "psnr_db": psnr(result, images, peak, min_mse=1e-12),
                 "psnr_noisy_db": psnr(noisy, images, peak, min_mse=1e-12)}
    return result[0], value_range, extra


def score_anomalies(store: ModelStore, name: str, uploads: list[Upload], *, method: str, samples: int, seed: int):
    from ..tasks.anomaly import anomaly_scores

    model = store.get(name)
    if model.data_kind != "image":
        raise APIError(400, f"model {name!r} is a {model.data_kind} model; anomaly scores need an image model "
                       "(a VAE)", param="model")
    images, _ = _load_images(uploads, tuple(model.config.input_shape), model.data_range)
    scores = anomaly_scores(model, images, method=method, samples=samples, seed=seed)
    return scores.tolist()


# ----------------------------------------------------------------------------- text


@dataclass
class Completion:
    texts: list[str]
    finish_reasons: list[str]  # "stop" (a stop string ended it) or "length" (max_tokens reached)
    completion_tokens: list[int]
    prompt_tokens: int


def text_model(store: ModelStore, name: str):
    return _model_for(store, name, "text", "generate", "text completion")


def complete(model, prompt: str, config, deadline: float, emit=None, cancelled=None) -> Completion:
    """config.num_return_sequences continuations of `prompt`, exactly as genlab.sampling.generate
    draws them (genlab.sampling.continuations), with what the OpenAI shape reports: why each
    text ended and how many tokens it took.

    emit(index, piece) is called with text as it becomes final (for streaming); generation stops
    at `deadline` (JobTimeout) or when `cancelled` (a threading.Event) is set.
    """
    from ..sampling import continuations

    def keep_going() -> bool:
        if time.monotonic() > deadline:
            raise JobTimeout()
        return cancelled is None or not cancelled.is_set()

    rows, prompt_length = continuations(model, prompt, config, on_piece=emit, keep_going=keep_going)
    return Completion([row.text for row in rows], ["stop" if row.stopped else "length" for row in rows],
                      [row.tokens for row in rows], prompt_length)


# ----------------------------------------------------------------------------- music


def compose_music(store: ModelStore, name: str, *, bars: int, seed: int, temperature: float, top_p: float | None,
                  tempo: float | None, key: str | None, prompt_midi: str | None):
    """A Composition from genlab.tasks.compose (imported here: it is optional in a build)."""
    try:
        from ..tasks.compose import compose
    except ModuleNotFoundError as e:
        if e.name not in ("genlab.tasks.compose",):
            raise
        raise APIError(501, "music composition is not available in this genlab installation "
                       "(genlab.tasks.compose is missing)", "update genlab to a version with music models") from None
    midi = None
    if prompt_midi is not None:
        try:
            midi = base64.b64decode(prompt_midi, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "prompt_midi is not valid base64", "send the MIDI file's bytes base64-encoded, "
                           "e.g. base64 -w0 tune.mid", param="prompt_midi") from None
        if len(midi) > MAX_PROMPT_MIDI_BYTES:
            raise APIError(413, f"prompt_midi is {len(midi):,} bytes, more than {MAX_PROMPT_MIDI_BYTES:,}",
                           "send a shorter MIDI file", param="prompt_midi")
    model = store.get(name)
    model.require("compose", "music composition")
    return compose(model, bars=bars, seed=seed, temperature=temperature, top_p=top_p, tempo=tempo, key=key,
                   prompt_midi=midi)
