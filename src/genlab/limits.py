"""The bounds on what one request may ask for, shared by the HTTP API, the applications and the CLI.

Every number a request can set is bounded here, so an oversized request is refused with a
message that names the field and its limit before any work starts. Request bodies are
pydantic models built on `Strict` (JSON: unknown fields are rejected, since a typo such as
`max_token` would otherwise be silently ignored) or `FormFields` (multipart forms, which
also carry the files).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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


class FormFields(BaseModel):
    """The fields of a multipart form besides its files (which FastAPI would count as unknown fields)."""

    model_config = ConfigDict(populate_by_name=True)
    model: str = ModelName
