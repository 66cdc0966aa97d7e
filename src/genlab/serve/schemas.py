"""The HTTP API's request bodies and their bounds: one pydantic model per JSON endpoint.

Every number a request can set is bounded here, so an oversized request is a 422 that names
the field and its limit before any work starts (the multipart endpoints use the same
constants through FastAPI's Form(ge=..., le=...)). Unknown fields are rejected: a typo such
as `max_token` would otherwise be silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..limits import (MAX_CLASS, MAX_COMPLETIONS, MAX_DIFFUSION_TIMESTEPS, MAX_GUIDANCE, MAX_IMAGES, MAX_NEW_TOKENS,
                      MAX_PROMPT_CHARS, MAX_STOP, MAX_STOP_CHARS, ModelName, Seed, Strict)


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
    n: int = Field(1, ge=1, le=MAX_COMPLETIONS, description="number of completions")
    stop: str | list[str] | None = Field(None, validate_default=True,  # always a list after validation
                                         description=f"up to {MAX_STOP} strings the text ends before")
    seed: int = Seed
    stream: bool = Field(False, description="send server-sent events as the text is generated")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters")
        return stops


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
