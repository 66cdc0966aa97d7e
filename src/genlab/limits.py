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
MAX_SEED = 2**63 - 1  # every command and route: seeds are 0..2^63-1
MAX_CLASS = 1_000_000  # a class id (the model then says which of its classes exist)
MAX_SAMPLES = 10_000  # genlab sample -n and genlab.sample (one grid or text file)
MAX_TEXT_SAMPLES = 1_000  # genlab sample -n for text models and generate -n
MAX_BEAMS = 16  # --num-beams
MAX_NO_REPEAT_NGRAM = 64  # no_repeat_ngram_size (--no-repeat-ngram): longer n-grams repeat only in loops that long
MAX_CLI_NEW_TOKENS = 100_000  # genlab generate --max-new-tokens
MAX_TEMPO = 300.0
MIN_TEMPO = 20.0
MAX_AUDIO_SECONDS = 600.0  # one composition's length (bars x 4 beats at the tempo), command line
MAX_HTTP_AUDIO_SECONDS = 180.0  # the same over HTTP, where the WAV travels base64-encoded in the reply (~10 MB)
MAX_PATH_STEPS = 256  # interpolate / traverse --steps
MAX_TRAVERSE_DIMS = 64
MAX_AUGMENT_PER_CLASS = 100_000
MAX_OPTIMIZER_STEPS = 100_000  # inpaint --steps on the command line (HTTP: MAX_INPAINT_STEPS)
MAX_CLI_RESTARTS = 256  # inpaint --restarts on the command line (HTTP: MAX_RESTARTS)
MAX_CLASSIFIER_STEPS = 100_000
MAX_FILE_PIXELS = 64 * 1024 * 1024  # one image file read by the CLI, before it is decoded (8192 x 8192)
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


def check_range(name: str, value, low, high, hint: str | None = None) -> None:
    """A GenlabError naming the option and its bounds unless low <= value <= high (numbers only)."""
    from .errors import GenlabError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise GenlabError(f"{name} must be in {low:,}..{high:,}, got {value!r}", hint, param=name.lstrip("-"))


# Appended for the studio's interpolate / traverse / compress routes.
MAX_TRAVERSE_SPAN = 10.0  # traverse span, in prior standard deviations
MIN_COMPRESS_STEP = 1e-3  # compress step (a finer one clips every code at +-127 anyway)
MAX_COMPRESS_STEP = 16.0
MAX_COMPRESS_FIT_IMAGES = 10_000  # training images the code histograms are fitted on, per request
MAX_COMPRESS_IMAGES = 16  # images in one compress request


def bounded_int(name: str, low: int, high: int, hint: str | None = None):
    """An argparse `type` for an integer option in low..high: out of range (or not an integer) is a
    GenlabError naming the option, raised while parsing, before any model loads."""

    def parse(text: str) -> int:
        from .errors import GenlabError

        try:
            value = int(text)
        except ValueError:
            raise GenlabError(f"{name} must be an integer, got {text!r}", hint, param=name.lstrip("-")) from None
        check_range(name, value, low, high, hint)
        return value

    return parse


def bounded_float(name: str, low: float, high: float, hint: str | None = None):
    """An argparse `type` for a finite number option in low..high (see bounded_int)."""

    def parse(text: str) -> float:
        import math

        from .errors import GenlabError

        try:
            value = float(text)
        except ValueError:
            raise GenlabError(f"{name} must be a number, got {text!r}", hint, param=name.lstrip("-")) from None
        if not math.isfinite(value):
            raise GenlabError(f"{name} must be a finite number, got {text!r}", hint, param=name.lstrip("-"))
        check_range(name, value, low, high, hint)
        return value

    return parse


SEED_OPTION = bounded_int("--seed", 0, MAX_SEED)
CLASS_OPTION = bounded_int("--class", 0, MAX_CLASS)


# Appended for recommendations (genlab apply recommend, POST /v1/recommendations).
MAX_HISTORY_ITEMS = 10_000  # items in one history
MAX_RECOMMENDATIONS = 1000  # k: recommendations returned at once
MAX_ITEM_TEXT = 200  # characters of one item id or title substring


# Appended for diffusion sampling (genlab sample --steps/--sampler/--guidance, genlab.sample).
MAX_DIFFUSION_TIMESTEPS = 10_000  # model.timesteps (T); a sampler takes 1..T steps
MAX_GUIDANCE = 100.0  # classifier-free guidance scale w (0 = unconditional, 1 = conditional)


# Appended for translation and chat over HTTP (POST /v1/translations, POST /v1/chat/completions).
MAX_TRANSLATION_TEXTS = 32  # texts in one translation request (decoded together, in batches)
MAX_TRANSLATION_CHARS = 2000  # characters of one text (the model reads at most its source window of it)
MAX_PAIR_NEW_TOKENS = 256  # max_tokens of one translation or chat reply (a sentence model's targets are far shorter)
MAX_CHAT_MESSAGES = 64  # messages in one conversation (the model reads only its last data.context_turns turns)
MAX_CHAT_MESSAGE_CHARS = 4000  # characters of one message
MAX_LENGTH_PENALTY = 10.0  # beam search's GNMT alpha (0 ranks by total log-probability)
