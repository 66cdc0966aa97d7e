"""Composing: a trained music model in, a piece you can hear and open in a DAW out.

    composition = compose(model, bars=16, seed=0, temperature=1.0, top_p=None, tempo=None,
                          key=None, prompt_midi=None)
    composition.save("piece.mid")      # piece.mid, piece.wav, piece.png

Works with both kinds of music model:

    event models (gpt-music, lstm-music)   events are drawn through genlab.sampling
        (temperature, top-p, the KV cache) until the piece is `bars` 4/4 bars long; START
        is suppressed so the model does not end the piece early. Events past the last bar
        are dropped and notes still sounding there end at the bar line. A new note still
        sounding a whole note after it began ends there (genlab.models.events.MAX_NOTE_QUARTERS):
        once a note-on has slid out of a GPT's context window the model easily forgets its note-off.
    piano-roll models (data_kind "pianoroll")   bars * frames_per_bar frames from
        model.sample_piano_roll; each run of frames in which a pitch sounds is one note.

Constraints:

    bars     length of the new music in 4/4 bars (after the prompt, if there is one)
    tempo    quarter notes per minute (default 120); it sets the seconds of the MIDI and WAV,
             not the notes
    key      the finished piece (prompt included) is *transposed* into the key: moved by the
             smallest shift (-6..+5 semitones) that makes its best-fitting key of the
             requested mode (Krumhansl-Kessler) the requested one. Notes are never rejected,
             so chromatic notes stay; metrics.music.in_key_ratio measures how many are in key.
    prompt   a MIDI file to continue: quantised to the model's grid and fed to the model
             first; the piece is the prompt followed by the new bars. A prompt with more events
             than a GPT's context window is an error (the continuation could not see it).

The WAV is rendered with FluidSynth where installed, else the built-in additive synthesiser
(genlab.music_render); the PNG is the piano roll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.music import Piece, midi_bytes, notes_to_piano_roll, piano_roll_to_notes, read_midi
from ..errors import GenlabError, warn
from ..fileio import atomic_write_bytes
from ..limits import MAX_SEED
from ..models.events import sample_pieces

DEFAULT_TEMPO = 120.0
MAX_COMPOSE_BARS = 512  # the Python function's own cap; the CLI and HTTP bound is limits.MAX_BARS
# The prompt stays in the piece (and its WAV), so a tiny MIDI file holding one note for hours
# must not turn into hours of audio.
MAX_PROMPT_BARS = 64


@dataclass
class Composition:
    midi: bytes  # a standard MIDI file
    wav: bytes  # 16-bit PCM WAV
    piano_roll_png: bytes
    seconds: float
    notes: int
    piece: Piece | None = None  # the notes themselves (steps on the model's grid)
    tempo: float = DEFAULT_TEMPO
    key: str | None = None  # the key the piece was transposed into (None: left as generated)
    transposed_by: int = 0  # semitones
    renderer: str = "additive"  # what made the WAV: fluidsynth | additive
    bars: int = 0  # new bars (after the prompt)
    prompt_bars: float = 0.0

    def save(self, path: str | Path) -> tuple[Path, Path, Path]:
        """Write path (.mid) and the .wav and .png beside it; return the three paths."""
        midi_path = Path(path)
        if midi_path.suffix.lower() not in (".mid", ".midi"):
            raise GenlabError(f"{path} is not a MIDI file name", "name the output NAME.mid; NAME.wav and NAME.png go beside it")
        written = (midi_path, midi_path.with_suffix(".wav"), midi_path.with_suffix(".png"))
        try:
            midi_path.parent.mkdir(parents=True, exist_ok=True)
            for target, data in zip(written, (self.midi, self.wav, self.piano_roll_png)):
                atomic_write_bytes(target, data)  # a player watching the folder never opens half a file
        except OSError as e:
            raise GenlabError(f"cannot write {midi_path}: {e.strerror or e}", "choose a writable output path") from None
        return written


# ----------------------------------------------------------------------------- checks


def _check_settings(bars, seed, temperature, top_p, tempo) -> None:
    def check(ok: bool, message: str, hint: str | None = None):
        if not ok:
            raise GenlabError(message, hint)

    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    def is_number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    check(is_int(bars) and 1 <= bars <= MAX_COMPOSE_BARS, f"bars must be an integer in 1..{MAX_COMPOSE_BARS}, got {bars!r}",
          "e.g. --bars 16")
    check(is_int(seed) and 0 <= seed <= MAX_SEED, f"seed must be an integer in 0..{MAX_SEED:,}, got {seed!r}")
    check(is_number(temperature) and temperature >= 0, f"temperature must be a number >= 0, got {temperature!r}",
          "1.0 is the model's own distribution, lower is safer, 0 is greedy")
    check(top_p is None or (is_number(top_p) and 0 < top_p <= 1), f"top_p must be in (0, 1], got {top_p!r}",
          "e.g. 0.9 or 0.95")
    check(tempo is None or (is_number(tempo) and 20 <= tempo <= 400),
          f"tempo must be between 20 and 400 quarter notes per minute, got {tempo!r}", "e.g. --tempo 90")


def _require_music_model(model) -> None:
    kind = model.data_kind
    if kind not in ("music", "pianoroll") or "compose" not in model.capabilities:
        raise GenlabError(f"composing needs a music model; this is a {model.family} model of {kind} data",
                          "train one first, e.g. `genlab train gpt-chorales` (or lstm-chorales, lstm-jsb)")


# ----------------------------------------------------------------------------- piano-roll models


def _piano_roll_steps_per_quarter(model) -> int:
    # frame_seconds is at 120 bpm, where a quarter note lasts 0.5 s.
    per_quarter = 0.5 / float(model.frame_seconds)
    if abs(per_quarter - round(per_quarter)) > 1e-6 or round(per_quarter) < 1:
        raise GenlabError(f"this piano-roll model's frames ({model.frame_seconds} s at 120 bpm) are not a whole "
                          "fraction of a quarter note", "compose works on grids of 1, 2, 4 ... frames per quarter")
    return int(round(per_quarter))


def _compose_piano_roll(model, bars: int, seed: int, temperature: float, prompt: Piece | None) -> Piece:
    steps_per_quarter = _piano_roll_steps_per_quarter(model)
    frames = bars * int(model.frames_per_bar)
    generator = torch.Generator(model.device).manual_seed(seed)
    prompt_roll = torch.from_numpy(notes_to_piano_roll(prompt)) if prompt is not None else None
    roll = model.sample_piano_roll(frames, generator=generator, temperature=float(temperature), prompt=prompt_roll)
    roll = torch.as_tensor(roll).cpu().bool()
    if prompt_roll is not None:
        roll = torch.cat([prompt_roll, roll])
    steps_per_bar = int(model.frames_per_bar)
    return piano_roll_to_notes(roll.numpy(), steps_per_quarter, quarters_per_bar=steps_per_bar / steps_per_quarter)


# ----------------------------------------------------------------------------- compose


def read_prompt(prompt_midi: str | Path | bytes, steps_per_quarter: int) -> Piece:
    if isinstance(prompt_midi, (bytes, bytearray)):
        piece = read_midi(bytes(prompt_midi), steps_per_quarter, name="the prompt MIDI")
    elif isinstance(prompt_midi, (str, Path)):
        piece = read_midi(prompt_midi, steps_per_quarter)
    else:
        raise GenlabError(f"prompt_midi must be a path or MIDI bytes, got {type(prompt_midi).__name__}")
    if not len(piece):
        raise GenlabError("the prompt MIDI has no notes (drum tracks are left out)", "give a MIDI file with notes to continue")
    if piece.length > MAX_PROMPT_BARS * piece.steps_per_bar:
        raise GenlabError(f"the prompt MIDI is {piece.length / piece.steps_per_bar:.0f} bars long; a prompt may be at "
                          f"most {MAX_PROMPT_BARS} bars (it is kept in the composition)",
                          "cut the prompt to its last few bars: the model reads only its context window of it anyway")
    return piece


def compose(model, *, bars: int = 16, seed: int = 0, temperature: float = 1.0, top_p: float | None = None,
            tempo: float | None = None, key: str | None = None, prompt_midi: str | Path | bytes | None = None,
            renderer: str = "auto") -> Composition:
    """A new piece from a music model: MIDI, WAV and piano-roll PNG (see the module docstring)."""
    from ..metrics.music import key_name, parse_key, transpose_into_key
    from ..music_render import piano_roll_png, render_wav

    _require_music_model(model)
    _check_settings(bars, seed, temperature, top_p, tempo)
    target_key = parse_key(key) if key is not None else None
    tempo = float(tempo) if tempo is not None else DEFAULT_TEMPO
    if model.data_kind == "music":
        prompt = read_prompt(prompt_midi, model.steps_per_quarter) if prompt_midi is not None else None
        generator = torch.Generator(model.device).manual_seed(seed)
        piece = sample_pieces(model, 1, bars=bars, generator=generator, temperature=temperature, top_p=top_p,
                              seed=seed, prompt=prompt)[0]
    else:
        if top_p is not None:
            raise GenlabError("top_p applies to event models; a piano-roll model draws each key of a frame on its own",
                              "leave top_p out, and use temperature to make the piece safer or wilder")
        steps_per_quarter = _piano_roll_steps_per_quarter(model)
        prompt = read_prompt(prompt_midi, steps_per_quarter) if prompt_midi is not None else None
        piece = _compose_piano_roll(model, bars, seed, temperature, prompt)
    piece.name = "genlab composition"
    shift = 0
    if target_key is not None:
        if len(piece):
            piece, shift = transpose_into_key(piece, *target_key)
        else:
            warn("the piece has no notes, so there is nothing to move into a key")
    if not len(piece):
        warn("the model drew no notes: the piece is silent (an undertrained model, or too low a temperature?)")
    wav, used = render_wav(piece, tempo, renderer)
    prompt_end = prompt.length if prompt is not None else None  # in the piece's steps: marked on the piano roll
    return Composition(
        midi=midi_bytes(piece, tempo), wav=wav, piano_roll_png=piano_roll_png(piece, prompt_end=prompt_end),
        seconds=piece.seconds(tempo),
        notes=len(piece), piece=piece, tempo=tempo, key=key_name(*target_key) if target_key else None,
        transposed_by=shift, renderer=used, bars=bars,
        prompt_bars=(prompt.length / piece.steps_per_bar) if prompt is not None else 0.0,
    )
