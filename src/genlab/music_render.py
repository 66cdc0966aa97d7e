"""Hearing and seeing a piece: a WAV file and a piano-roll picture.

Audio. With the `fluidsynth` program and a General-MIDI soundfont installed (Debian:
`apt install fluidsynth fluid-soundfont-gm`; or $GENLAB_SOUNDFONT naming an .sf2 file), the
MIDI file is played through FluidSynth. Otherwise, and whenever FluidSynth fails, a built-in
additive synthesiser renders it: each note is a sum of its first harmonics (amplitude
1/k^1.5, an organ-like tone that suits chorales) under a short attack/release envelope,
scaled by velocity; the mix is normalised to a peak of 0.8. Either way the WAV is 16-bit PCM
and exactly as long as the piece (its length in steps at the tempo), so it lines up with
the MIDI file; the last 20 ms fade out rather than click.

Picture. Time runs left to right (bar lines in grey), pitch bottom to top (C rows shaded and
named on the axis at the left: C4 is middle C, MIDI 60), one rectangle per note, coloured by
voice; a dark vertical line marks where a prompt ends.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from .data.music import Piece, midi_bytes
from .errors import GenlabError, warn

SAMPLE_RATE = 22050
HARMONICS = 5
ATTACK_S, RELEASE_S, FADE_S = 0.01, 0.04, 0.02
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/FluidR3_GM.sf2", "/usr/share/soundfonts/default.sf2")
RENDERERS = ("auto", "fluidsynth", "additive")


def find_soundfont() -> Path | None:
    candidates = [os.environ.get("GENLAB_SOUNDFONT"), *SOUNDFONTS]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def fluidsynth_available() -> bool:
    return shutil.which("fluidsynth") is not None and find_soundfont() is not None


def additive_synthesis(piece: Piece, tempo: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The piece as mono float samples in [-0.8, 0.8], exactly piece.seconds(tempo) long."""
    total = int(round(piece.seconds(tempo) * sample_rate))
    out = np.zeros(total, dtype=np.float64)
    seconds_per_step = 60.0 / (tempo * piece.steps_per_quarter)
    for pitch, start, end, velocity in zip(piece.pitch, piece.start, piece.end, piece.velocity):
        first = int(round(start * seconds_per_step * sample_rate))
        last = min(total, int(round(end * seconds_per_step * sample_rate)))
        n = last - first
        if n <= 0:
            continue
        t = np.arange(n) / sample_rate
        frequency = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
        tone = np.zeros(n)
        for k in range(1, HARMONICS + 1):
            if k * frequency < sample_rate / 2:  # no partial above Nyquist: it would alias
                tone += np.sin(2 * np.pi * k * frequency * t) / k**1.5
        attack = np.minimum(1.0, t / ATTACK_S)
        release = np.minimum(1.0, (n - 1 - np.arange(n)) / (RELEASE_S * sample_rate) + 1e-9)
        out[first:last] += (velocity / 127.0) * attack * release * tone
    return _finish(out, sample_rate)


def _finish(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    peak = np.abs(samples).max() if len(samples) else 0.0
    if peak > 0:
        samples = samples * (0.8 / peak)
    fade = min(len(samples), int(FADE_S * sample_rate))
    if fade:
        ramp = np.linspace(1.0, 0.0, fade)
        samples[-fade:] *= ramp[:, None] if samples.ndim == 2 else ramp  # [frames] or [frames, channels]
    return samples


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV of float samples in [-1, 1], [frames] (mono) or [frames, channels]."""
    samples = np.asarray(samples, dtype=np.float64)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _fluidsynth(piece: Piece, tempo: float, sample_rate: int) -> np.ndarray:
    """FluidSynth's rendering as float [frames, 2], trimmed or padded to the piece's length."""
    with tempfile.TemporaryDirectory(prefix="genlab-render-") as tmp:
        midi_path, wav_path = Path(tmp) / "piece.mid", Path(tmp) / "piece.wav"
        midi_path.write_bytes(midi_bytes(piece, tempo))
        command = ["fluidsynth", "-ni", "-g", "0.8", "-r", str(sample_rate), "-F", str(wav_path),
                   str(find_soundfont()), str(midi_path)]
        result = subprocess.run(command, capture_output=True, timeout=300)
        if result.returncode != 0 or not wav_path.is_file():
            raise RuntimeError(result.stderr.decode(errors="replace").strip()[-300:] or f"exit code {result.returncode}")
        with wave.open(str(wav_path), "rb") as f:
            if f.getsampwidth() != 2:
                raise RuntimeError(f"unexpected sample width {f.getsampwidth()}")
            channels, rate = f.getnchannels(), f.getframerate()
            data = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, channels) / 32768.0
    if rate != sample_rate:
        raise RuntimeError(f"FluidSynth wrote {rate} Hz instead of {sample_rate}")
    total = int(round(piece.seconds(tempo) * sample_rate))
    data = np.pad(data[:total], ((0, max(0, total - len(data))), (0, 0)))
    return _finish(data, sample_rate)


def render_wav(piece: Piece, tempo: float = 120.0, renderer: str = "auto",
               sample_rate: int = SAMPLE_RATE) -> tuple[bytes, str]:
    """(WAV bytes, the renderer that made them: "fluidsynth" or "additive")."""
    if renderer not in RENDERERS:
        raise GenlabError(f"unknown renderer {renderer!r}", f"use one of {', '.join(RENDERERS)}")
    if renderer == "fluidsynth" and not fluidsynth_available():
        raise GenlabError("FluidSynth or a General-MIDI soundfont is not installed",
                          "apt install fluidsynth fluid-soundfont-gm (or set GENLAB_SOUNDFONT to an .sf2 file), "
                          "or use the built-in additive synthesiser")
    if renderer != "additive" and fluidsynth_available():
        try:
            return wav_bytes(_fluidsynth(piece, tempo, sample_rate), sample_rate), "fluidsynth"
        except (OSError, RuntimeError, subprocess.TimeoutExpired, wave.Error, ValueError) as e:
            if renderer == "fluidsynth":
                raise GenlabError(f"FluidSynth failed: {e}") from None
            warn(f"FluidSynth failed ({e}); using the built-in additive synthesiser")
    return wav_bytes(additive_synthesis(piece, tempo, sample_rate), sample_rate), "additive"


VOICE_COLOURS = ((214, 69, 65), (66, 133, 214), (70, 170, 90), (230, 160, 40), (150, 90, 200))


NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
AXIS_WIDTH = 30  # pixels left of the roll for the pitch axis
PROMPT_COLOUR = (20, 20, 20)


def note_name(pitch: int) -> str:
    """MIDI pitch -> scientific pitch notation: 60 -> C4 (middle C), 69 -> A4."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def piano_roll_png(piece: Piece, pixels_per_step: int | None = None, pixels_per_pitch: int = 5,
                   prompt_end: int | None = None) -> bytes:
    """A PNG of the piece's notes, with a pitch axis on the left (every C named: C3, C4 = middle C,
    C5, ...) and, when `prompt_end` (a step) is given, a vertical line where the prompt ends and the
    model's own music begins."""
    from PIL import Image, ImageDraw

    if len(piece):
        low, high = int(piece.pitch.min()) - 2, int(piece.pitch.max()) + 2
    else:
        low, high = 48, 84
    steps = max(piece.length, 1)
    if pixels_per_step is None:
        pixels_per_step = int(np.clip(1600 // steps, 1, 12))
    roll_width, height = steps * pixels_per_step, (high - low + 1) * pixels_per_pitch
    left = AXIS_WIDTH
    width = left + roll_width
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)

    def row_top(pitch: int) -> int:
        return (high - pitch) * pixels_per_pitch

    named = [pitch for pitch in range(low, high + 1) if pitch % 12 == 0] or [(low + high) // 2]
    for pitch in range(low, high + 1):
        if pitch % 12 == 0:  # the Cs, to read octaves by
            draw.rectangle([left, row_top(pitch), width - 1, row_top(pitch) + pixels_per_pitch - 1], fill=(232, 232, 240))
    draw.rectangle([0, 0, left - 1, height - 1], fill=(255, 255, 255))
    draw.line([left - 1, 0, left - 1, height - 1], fill=(150, 150, 150))
    for pitch in named:
        middle = row_top(pitch) + pixels_per_pitch // 2
        draw.line([left - 4, middle, left - 1, middle], fill=(90, 90, 90))  # a tick at the row
        text_top = int(np.clip(middle - 5, 0, max(0, height - 11)))
        draw.text((2, text_top), note_name(pitch), fill=(60, 60, 60))
    bar = max(piece.steps_per_bar, 1)
    for step in range(0, steps + 1, bar):
        x = min(left + step * pixels_per_step, width - 1)
        draw.line([x, 0, x, height - 1], fill=(190, 190, 190))
    for pitch, start, end, voice in zip(piece.pitch, piece.start, piece.end, piece.voice):
        colour = VOICE_COLOURS[int(voice) % len(VOICE_COLOURS)]
        x0 = left + start * pixels_per_step
        draw.rectangle([x0, row_top(pitch), max(x0, left + end * pixels_per_step - 2),
                        row_top(pitch) + pixels_per_pitch - 2], fill=colour)
    if prompt_end is not None and 0 < prompt_end <= steps:
        x = min(left + int(prompt_end) * pixels_per_step, width - 1)
        draw.line([x - 1, 0, x - 1, height - 1], fill=PROMPT_COLOUR, width=2)
        if x - left >= 40:  # room for the word left of the line
            draw.text((x - 40, 1), "prompt", fill=PROMPT_COLOUR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
