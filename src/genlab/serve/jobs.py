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

from ..errors import GenlabError
from ..imageio import display_scale, grid_picture
from ..imageio import png_bytes as encode_png
from .runtime import APIError, JobTimeout, ModelStore

TRANSLATIONS, CHAT_COMPLETIONS = "/v1/translations", "/v1/chat/completions"


def pair_endpoint(data) -> str:
    """The route a text-pair model answers, by what it was trained on: conversations or translations."""
    from ..tasks.textpairs import is_dialogue_data

    return CHAT_COMPLETIONS if is_dialogue_data(data) else TRANSLATIONS


def _endpoint_of(model) -> str:
    """The route that draws from `model` (for hints): its data kind's, or a text-pair model's own."""
    from ..registry import get_data_kind

    if model.data_kind == "pairs":
        return pair_endpoint((getattr(model, "artifact_config", None) or {}).get("data"))
    return get_data_kind(model.data_kind).endpoint or "GET /v1/models"


def _model_for(store: ModelStore, name: str, data_kind: str, capability: str, purpose: str):
    model = store.get(name)
    if model.data_kind != data_kind:
        endpoint = _endpoint_of(model)
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


# ----------------------------------------------------------------------------- translation and chat

# The request's names for the options genlab.translate and genlab.chat name otherwise (in their errors).
PAIR_PARAMS = {"num_return_sequences": "n_best", "max_new_tokens": "max_tokens"}


def pair_model(store: ModelStore, name: str, *, dialogue: bool):
    """Model `name`, checked to be a dialogue model (dialogue=True) or a translation model; another
    model is a 400 naming the route it does answer."""
    from ..tasks.textpairs import is_dialogue_data, pair_model as checked

    model = store.get(name)
    purpose, route = ("chat", CHAT_COMPLETIONS) if dialogue else ("translation", TRANSLATIONS)
    wanted = "a dialogue model (trained on conversations: sgd, dialogue:FILE)" if dialogue else \
        "a translation model (trained on pairs: tatoeba-cmn, pairs:FILE)"
    if model.data_kind != "pairs" or "translate" not in model.capabilities:
        raise APIError(400, f"{purpose} needs {wanted}; model {name!r} is a {model.family} model of kind "
                       f"{model.data_kind!r}", f"use {_endpoint_of(model)} with this model, or pick a model that "
                       f"lists {route} in GET /v1/models", param="model")
    if is_dialogue_data((model.artifact_config or {}).get("data")) != dialogue:
        what = "a dialogue model: it answers a conversation" if not dialogue else \
            "a translation model: it translates a text"
        raise APIError(400, f"model {name!r} is {what}, so {route} does not serve it",
                       f"use POST {_endpoint_of(model)} with this model", param="model")
    return checked(model, dialogue=dialogue)


def _request_names(error: GenlabError, field: str | None = None) -> GenlabError:
    """A GenlabError of genlab.translate / genlab.chat with the HTTP request's field names; one about
    no option in particular is about `field` when given (chat's: the messages)."""
    for option, name in PAIR_PARAMS.items():
        error.message = error.message.replace(option, name)
        if error.param == option:
            error.param = name
            if name not in error.message:  # "beam search returns at most num_beams (4) sequences, not 5"
                error.message = f"{name}: {error.message}"
    error.param = error.param or field
    return error


def translation(model, body) -> list:
    """genlab.translate of the request's texts with its settings: one entry per text, a string, or
    (n_best > 1) its hypotheses best first as {text, score, log_prob, finished}."""
    from ..tasks.textpairs import translate

    try:
        return translate(model, body.text, num_beams=body.num_beams, n_best=body.n_best, max_new_tokens=body.max_tokens,
                         temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                         length_penalty=body.length_penalty, no_repeat_ngram_size=body.no_repeat_ngram_size)
    except GenlabError as e:
        raise _request_names(e) from None


@dataclass
class ChatReply:
    text: str
    finish_reason: str  # "stop" (the model ended its turn) or "length" (max_tokens reached first)
    prompt_tokens: int
    completion_tokens: int


def chat_reply(model, body, deadline: float, emit=None, cancelled=None) -> ChatReply:
    """The reply genlab.chat gives to body.messages with the body's settings, and (emit) the pieces
    genlab.chat_stream yields for it, as they are decoded; it stops at `deadline` (JobTimeout) or
    when `cancelled` (a threading.Event) is set. tests/test_serve_pairs.py checks the text and the
    pieces against genlab.chat."""
    from ..tasks.textpairs import ChatDecoding

    try:
        decoding = ChatDecoding.start(model, [message.model_dump() for message in body.messages], body.temperature,
                                      body.top_p, body.max_tokens, body.seed)
    except GenlabError as e:
        raise _request_names(e, "messages") from None
    if emit is not None:
        emit(None)  # the reply begins (OpenAI's first chunk carries the role)
    for piece in decoding.pieces():
        if time.monotonic() > deadline:
            raise JobTimeout()
        if cancelled is not None and cancelled.is_set():
            break
        if emit is not None:
            emit(piece)
    for piece in decoding.rest():  # after a cancel: what was decoded but not yet sent
        if emit is not None:
            emit(piece)
    return ChatReply(decoding.text, decoding.finish_reason, len(decoding.source), len(decoding.tokens))
