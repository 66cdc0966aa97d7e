"""The work behind each inference endpoint, run on a worker thread: load the model, call the
task (genlab.api, genlab.sampling, genlab.tasks), encode the result.

Each function takes validated request values and returns plain data; api.py turns it into an
HTTP response. Problems a person can fix are GenlabError (answered 400 with its message and
hint) or APIError with the fitting status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..imageio import display_scale, grid_picture
from ..imageio import png_bytes as encode_png
from .runtime import APIError, JobTimeout, ModelStore

def _model_for(store: ModelStore, name: str, data_kind: str, capability: str, purpose: str):
    from ..registry import get_data_kind

    model = store.get(name)
    if model.data_kind != data_kind:
        endpoint = get_data_kind(model.data_kind).endpoint or "GET /v1/models"
        raise APIError(400, f"{purpose} needs a model of kind {data_kind!r}; model {name!r} is a {model.family} "
                       f"model of kind {model.data_kind!r}", f"use {endpoint} with this model, or pick another "
                       "model from GET /v1/models", param="model")
    model.require(capability, purpose)
    return model


# ----------------------------------------------------------------------------- images out


def grid_png_bytes(images: torch.Tensor, value_range) -> bytes:
    """[N, C, H, W] images as one PNG grid, small tiles enlarged as in `genlab sample`."""
    return encode_png(grid_picture(images, value_range, scale=display_scale(images.shape[-2])))


# ----------------------------------------------------------------------------- image jobs


def generate_images(store: ModelStore, name: str, n: int, seed: int, label: int | None, sampling: dict | None = None,
                    callback=None):
    """n samples [n, C, H, W] and the model's value range. sampling: the sampler options given
    (steps, sampler, guidance_scale; a model that takes none is refused naming the fix);
    callback(i, x_t) is called after each step of a model that samples in steps (previews,
    deadlines) and ignored for the others."""
    from ..api import sample, samples_in_steps

    model = _model_for(store, name, "image", "sample", "image generation")
    sampling = {key: value for key, value in (sampling or {}).items() if value is not None}
    if sampling and not samples_in_steps(model):
        fields = ", ".join(sampling)
        raise APIError(400, f"{fields} {'is' if len(sampling) == 1 else 'are'} for diffusion models; model {name!r} "
                       f"is a {model.family} model", f"drop {fields}, or pick a model whose family is diffusion "
                       "(GET /v1/models)", param=next(iter(sampling)))
    if callback is not None and samples_in_steps(model):
        sampling["callback"] = callback
    return sample(model, n, seed=seed, condition=label, **sampling), model.data_range


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
