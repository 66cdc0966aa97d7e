"""The HTTP API's request bodies and their bounds: one pydantic model per JSON endpoint.

Every number a request can set is bounded here, so an oversized request is a 422 that names
the field and its limit before any work starts (the multipart endpoints use the same
constants through FastAPI's Form(ge=..., le=...)). Unknown fields are rejected: a typo such
as `max_token` would otherwise be silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MODEL_NAME = 128  # characters in a model's name (its directory's name)
MAX_SEED = 2**32 - 1
MAX_IMAGES = 64  # n of /v1/images/generations
MAX_PROMPT_CHARS = 8000
MAX_NEW_TOKENS = 1024  # max_tokens of /v1/completions
MAX_COMPLETIONS = 8  # n of /v1/completions
MAX_STOP = 4  # stop strings (as in the OpenAI API)
MAX_STOP_CHARS = 64
MAX_BARS = 64
MAX_PROMPT_MIDI_BYTES = 1 << 20
MAX_UPLOAD_BYTES = 4 << 20  # one uploaded image file
MAX_IMAGE_PIXELS = 2048 * 2048  # width x height of one uploaded image (decompression bombs)
MAX_ANOMALY_IMAGES = 16
MAX_INPAINT_STEPS = 1000
MAX_RESTARTS = 8
MAX_ANOMALY_SAMPLES = 64
MAX_BODY_BYTES = 16 << 20  # any request body

ModelName = Field(min_length=1, max_length=MAX_MODEL_NAME, description="a model's name, as listed by GET /v1/models")
Seed = Field(0, ge=0, le=MAX_SEED, description="fixes every random choice")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ImageGenerationRequest(Strict):
    model: str = ModelName
    n: int = Field(16, ge=1, le=MAX_IMAGES, description="number of images")
    seed: int = Seed
    class_: int | None = Field(None, alias="class", ge=0, description="class label (class-conditional models)")
    response_format: Literal["b64_json", "png"] = Field(
        "b64_json", description="b64_json: one base64 PNG per image; png: one PNG grid of all of them")


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


class CompositionRequest(Strict):
    model: str = ModelName
    bars: int = Field(16, ge=1, le=MAX_BARS, description="length in 4/4 bars")
    seed: int = Seed
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    tempo: float | None = Field(None, ge=20.0, le=300.0, description="beats per minute (default: the model's)")
    key: str | None = Field(None, min_length=1, max_length=16, description="e.g. 'C major' or 'a minor'")
    prompt_midi: str | None = Field(None, max_length=(MAX_PROMPT_MIDI_BYTES * 4) // 3 + 4,
                                    description="a MIDI file to continue, base64-encoded")
    response_format: Literal["json", "midi", "wav", "png"] = Field(
        "json", description="json: all three base64-encoded; midi | wav | png: that file alone")
