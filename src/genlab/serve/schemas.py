"""The HTTP API's request bodies and their bounds: one pydantic model per JSON endpoint.

Every number a request can set is bounded here, so an oversized request is a 422 that names
the field and its limit before any work starts (the multipart endpoints use the same
constants through FastAPI's Form(ge=..., le=...)). Unknown fields are rejected: a typo such
as `max_token` would otherwise be silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..limits import (MAX_BEAMS, MAX_CHAT_MESSAGE_CHARS, MAX_CHAT_MESSAGES, MAX_CLASS, MAX_COMPLETIONS,
                      MAX_DIFFUSION_TIMESTEPS, MAX_GUIDANCE, MAX_IMAGES, MAX_LENGTH_PENALTY, MAX_NEW_TOKENS, MAX_NO_REPEAT_NGRAM,
                      MAX_PAIR_NEW_TOKENS, MAX_PROMPT_CHARS, MAX_STOP, MAX_STOP_CHARS, MAX_TRANSLATION_CHARS,
                      MAX_TRANSLATION_TEXTS, ModelName, Seed, Strict)


class ImageGenerationRequest(Strict):
    model: str = ModelName
    n: int = Field(16, ge=1, le=MAX_IMAGES, description="number of images")
    seed: int = Seed
    class_: int | None = Field(None, alias="class", ge=0, le=MAX_CLASS,
                                description="class label (class-conditional models)")
    response_format: Literal["b64_json", "png"] = Field(
        "b64_json", description="b64_json: one base64 PNG per image; png: one PNG grid of all of them")
    # Sampler options: diffusion models only (another model given one is a 400 naming the fix).
    steps: int | None = Field(None, ge=1, le=MAX_DIFFUSION_TIMESTEPS,
                              description="diffusion models: sampler steps, 1..the model's training timesteps "
                                          "(default: the model's)")
    sampler: Literal["ddpm", "ddim", "dpm++"] | None = Field(None, description="diffusion models (default: the model's)")
    guidance_scale: float | None = Field(None, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False,
                                         description="class-conditional diffusion models: classifier-free guidance "
                                                     "(0 unconditional, 1 conditional, > 1 stronger)")
    stream: bool = Field(False, description="send server-sent events: a preview grid after each sampler step "
                                            "(diffusion models), then the images")

    @model_validator(mode="after")
    def _stream_sends_json(self):
        if self.stream and self.response_format == "png":
            raise ValueError("a stream sends base64 PNGs inside its events; response_format png is for a reply "
                             "without stream")
        return self


class CompletionRequest(Strict):
    model: str = ModelName
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="text to continue (empty: start of a new line)")
    max_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS, description="new tokens per completion")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 is greedy; below 1 safer, above 1 wilder")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int | None = Field(None, ge=1, le=100_000, description="sample from the k most likely tokens (genlab extension)")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="> 1 discourages repeats (genlab extension)")
    no_repeat_ngram_size: int = Field(0, ge=0, le=MAX_NO_REPEAT_NGRAM,
                                      description="n > 0: no n-gram of tokens twice, prompt included (genlab extension)")
    n: int = Field(1, ge=1, le=MAX_COMPLETIONS, description="number of completions")
    stop: str | list[str] | None = Field(None, validate_default=True,  # always a list after validation
                                         description=f"up to {MAX_STOP} strings the text ends before")
    seed: int = Seed
    stream: bool = Field(False, description="send server-sent events as the text is generated")
    style: str | None = Field(None, min_length=1, max_length=200,
                              description="write in this style (models trained with data styles; genlab extension)")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters")
        return stops


TranslationText = Annotated[str, Field(max_length=MAX_TRANSLATION_CHARS)]


class TranslationRequest(Strict):
    model: str = ModelName
    text: TranslationText | Annotated[list[TranslationText], Field(min_length=1, max_length=MAX_TRANSLATION_TEXTS)] = \
        Field(description=f"a text, or up to {MAX_TRANSLATION_TEXTS} texts (decoded together, each translated on its "
                          f"own), of at most {MAX_TRANSLATION_CHARS} characters each")
    num_beams: int | None = Field(None, ge=1, le=MAX_BEAMS, description="beam search width (default 4; 1 with a "
                                                                         "temperature > 0: sampling)")
    n_best: int = Field(1, ge=1, le=MAX_BEAMS, description="hypotheses per text, best first (at most num_beams in "
                                                           "beam search); > 1 answers lists of {text, score, ...}")
    max_tokens: int | None = Field(None, ge=1, le=MAX_PAIR_NEW_TOKENS,
                                   description="new tokens per translation (default: the model's longest target)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: beam search (or greedy with num_beams 1); "
                                                                "> 0: sampling")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass (with a temperature > 0)")
    seed: int = Seed
    length_penalty: float = Field(0.6, ge=0.0, le=MAX_LENGTH_PENALTY, allow_inf_nan=False,
                                  description="beam search: GNMT's alpha (0 ranks by total log-probability)")
    no_repeat_ngram_size: int = Field(0, ge=0, le=MAX_NO_REPEAT_NGRAM,
                                      description="n > 0: never repeat an n-gram of tokens within a translation")

    @field_validator("text", mode="before")
    @classmethod
    def _check_texts(cls, text):
        """The count and length bounds as one message about `text` (a union's errors would name its branches)."""
        if isinstance(text, list):
            if not text:
                raise ValueError("give at least one text to translate")
            if len(text) > MAX_TRANSLATION_TEXTS:
                raise ValueError(f"at most {MAX_TRANSLATION_TEXTS} texts per request, got {len(text)}")
        for i, item in enumerate(text if isinstance(text, list) else [text]):
            if not isinstance(item, str):
                raise ValueError("give a string, or a list of strings")
            if len(item) > MAX_TRANSLATION_CHARS:
                which = "the text" if not isinstance(text, list) else f"text {i + 1}"
                raise ValueError(f"{which} has {len(item)} characters, more than {MAX_TRANSLATION_CHARS}; split it "
                                 "into sentences")
        return text


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"] = Field(
        description="user or assistant; a system message is set aside (these models take no instructions)")
    content: str = Field(max_length=MAX_CHAT_MESSAGE_CHARS, description="the message's text")


class ChatCompletionRequest(Strict):
    model: str = ModelName
    messages: list[ChatMessage] = Field(max_length=MAX_CHAT_MESSAGES,
                                        description="the conversation so far, oldest first; the last is the user's")
    max_tokens: int | None = Field(None, ge=1, le=MAX_PAIR_NEW_TOKENS,
                                   description="new tokens of the reply (default: the model's longest target)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 is greedy (genlab chat's default); > 0 samples")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass (with a temperature > 0)")
    seed: int = Seed
    stream: bool = Field(False, description="send server-sent events as the reply is decoded")


class ErrorDetail(Strict):
    message: str = Field(description="what went wrong, in one sentence")
    hint: str | None = Field(description="what to do about it")
    type: str = Field(description="the error's kind, e.g. invalid_request_error, not_found_error")
    param: str | None = Field(description="the field or parameter at fault")
    code: int = Field(description="the HTTP status")


class ErrorResponse(Strict):
    """Every error reply (errors.py): documented as each operation's `default` response, so the
    OpenAPI document describes the errors the server sends rather than FastAPI's {"detail": [...]}."""

    error: ErrorDetail
