"""Composing: a music model (event or piano-roll) writes a piece as MIDI, a WAV beside it and a
piano-roll PNG (`genlab apply compose`, alias `genlab compose`)."""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from typing import Literal

from pydantic import Field

from ..errors import GenlabError, InputTooLarge
from ..limits import (MAX_AUDIO_SECONDS, MAX_BARS, MAX_HTTP_AUDIO_SECONDS, MAX_PROMPT_MIDI_BYTES, MAX_TEMPO, MIN_TEMPO,
                      SEED_OPTION, ModelName, Seed, Strict, bounded_float, bounded_int)
from ..registry import Application, FileReply, HttpRoute, register_application
from ..tasks.compose import DEFAULT_TEMPO, compose
from .common import b64

EXAMPLES = """examples:
  genlab train gpt-chorales --out runs/chorales          # an event GPT on the bundled Bach chorales, ~5 min
  genlab compose runs/chorales --bars 16 --seed 0 -o piece.mid        # writes piece.mid, piece.wav, piece.png
  genlab compose runs/chorales --key "D minor" --tempo 80 --temperature 0.9 --top-p 0.95 -o d.mid
  genlab compose runs/chorales --prompt opening.mid --bars 8 -o continued.mid   # continue your MIDI file
  genlab compose runs/lstm-jsb-... --bars 16 -o jsb.mid                # a piano-roll model works the same way

`genlab compose` is `genlab apply compose`. --bars counts the new 4/4 bars (after the prompt).
--key transposes the finished piece (prompt included) by the smallest shift that makes its
best-fitting key of that mode the one asked for; out-of-key notes are kept. The WAV uses
FluidSynth with a General-MIDI soundfont when both are installed (apt install fluidsynth
fluid-soundfont-gm), else the built-in additive synthesiser."""


def add_arguments(p) -> None:
    p.add_argument("--bars", type=bounded_int("--bars", 1, MAX_BARS), default=16, help="new 4/4 bars to compose (default 16)")
    p.add_argument("--seed", type=SEED_OPTION, default=0)
    p.add_argument("--temperature", "-t", type=float, default=1.0,
                   help="0 = greedy; below 1 safer, above 1 wilder (default 1)")
    p.add_argument("--top-p", type=float, help="event models: sample from the smallest set of events holding this probability")
    p.add_argument("--tempo", type=bounded_float("--tempo", MIN_TEMPO, MAX_TEMPO), help="quarter notes per minute (default 120)")
    p.add_argument("--key", help='transpose the piece into this key, e.g. "D minor", "Bb", "F# major"')
    p.add_argument("--prompt", metavar="MIDI", help="a MIDI file to continue")
    p.add_argument("--renderer", choices=("auto", "fluidsynth", "additive"), default="auto",
                   help="how the WAV is made (default auto: FluidSynth if installed, else the built-in synthesiser)")
    p.add_argument("-o", "--output", default="composition.mid", help="MIDI file to write; .wav and .png go beside it")


def check_arguments(args) -> None:
    """Before the model loads: the output must be a MIDI file name, the piece of a bounded length."""
    if not args.output.lower().endswith((".mid", ".midi")):
        raise GenlabError(f"-o {args.output} is not a MIDI file name", "name it NAME.mid; NAME.wav and NAME.png go beside it")
    check_length(args.bars, args.tempo, MAX_AUDIO_SECONDS)


def check_length(bars: int, tempo: float | None, limit_s: float, seconds: float | None = None) -> None:
    """Refuse a piece longer than limit_s seconds (its WAV grows with the seconds, not the notes):
    from bars and tempo before composing, or from the finished piece's `seconds` (a prompt adds bars)."""
    seconds = seconds if seconds is not None else bars * 4 * 60.0 / (tempo or DEFAULT_TEMPO)
    if seconds > limit_s:
        raise InputTooLarge(f"{bars} bars at {tempo or DEFAULT_TEMPO:g} bpm last {seconds:.0f} s, more than the "
                            f"{limit_s:.0f} s a composition may last here", "use fewer bars or a faster tempo",
                            param="bars")


def run(model, args) -> None:  # check_arguments ran before the model loaded
    composition = compose(model, bars=args.bars, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                          tempo=args.tempo, key=args.key, prompt_midi=args.prompt, renderer=args.renderer)
    check_length(args.bars, args.tempo, MAX_AUDIO_SECONDS, composition.seconds)  # a prompt adds its bars
    midi, wav, png = composition.save(args.output)
    prompt = f" after {composition.prompt_bars:.1f} bars of prompt" if args.prompt else ""
    key = f", moved {composition.transposed_by:+d} semitones into {composition.key}" if composition.key else ""
    print(f"composed {composition.bars} bars{prompt}: {composition.notes} notes, {composition.seconds:.1f} s at "
          f"{composition.tempo:g} bpm (seed {args.seed}{key})")
    print(f"wrote {midi}")
    print(f"wrote {wav}  ({'FluidSynth' if composition.renderer == 'fluidsynth' else 'built-in additive synthesiser'})")
    print(f"wrote {png}")


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


def _prompt_bytes(prompt_midi: str | None) -> bytes | None:
    if prompt_midi is None:
        return None
    try:
        midi = base64.b64decode(prompt_midi, validate=True)
    except (binascii.Error, ValueError):
        raise GenlabError("prompt_midi is not valid base64", "send the MIDI file's bytes base64-encoded, "
                          "e.g. base64 -w0 tune.mid", param="prompt_midi") from None
    if len(midi) > MAX_PROMPT_MIDI_BYTES:
        raise InputTooLarge(f"prompt_midi is {len(midi):,} bytes, more than {MAX_PROMPT_MIDI_BYTES:,}",
                            "send a shorter MIDI file", param="prompt_midi")
    return midi


def serve(model, body: CompositionRequest, files: dict):
    """{id, object: "music.composition", bars, seconds, notes, midi_b64, wav_b64, piano_roll_png_b64},
    or the one file response_format names."""
    midi = _prompt_bytes(body.prompt_midi)
    check_length(body.bars, body.tempo, MAX_HTTP_AUDIO_SECONDS)
    model.require("compose", "music composition")
    composition = compose(model, bars=body.bars, seed=body.seed, temperature=body.temperature, top_p=body.top_p,
                          tempo=body.tempo, key=body.key, prompt_midi=midi)
    check_length(body.bars, body.tempo, MAX_HTTP_AUDIO_SECONDS, composition.seconds)  # with the prompt's bars
    files = {"midi": (composition.midi, "audio/midi", "mid"), "wav": (composition.wav, "audio/wav", "wav"),
             "png": (composition.piano_roll_png, "image/png", "png")}
    if body.response_format in files:
        content, media_type, suffix = files[body.response_format]
        return FileReply(content, media_type, f"{body.model}-seed{body.seed}.{suffix}")
    return {"id": f"music-{uuid.uuid4().hex[:24]}", "object": "music.composition", "created": int(time.time()),
            "model": body.model, "bars": body.bars, "seconds": composition.seconds, "notes": composition.notes,
            "midi_b64": b64(composition.midi), "wav_b64": b64(composition.wav),
            "piano_roll_png_b64": b64(composition.piano_roll_png)}


COMPOSE = register_application(Application(
    name="compose",
    summary="compose a piece with a music model: a MIDI file, a WAV beside it and a piano-roll PNG",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    kinds=("music", "pianoroll"),
    capability="compose",
    function=compose,
    check_arguments=check_arguments,
    http=HttpRoute("/v1/music/compositions", "compose music: MIDI, WAV and a piano-roll picture", CompositionRequest,
                   serve, body="json"),
    studio=True,
))
