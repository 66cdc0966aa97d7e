"""Music data: notes on a time grid, MIDI in and out, piano rolls, an event vocabulary, and
the Bach chorales as one in-memory event stream.

Notes. A piece is a set of notes on a grid of `steps_per_quarter` steps per quarter note
(4: sixteenth notes, 2: eighth notes): each note has a MIDI pitch (0..127), a start and
an end step (end > start), a velocity (1..127) and a voice (0..3 soprano..bass for the
chorales; 0 for MIDI files). Times are musical (steps), not seconds: the tempo only comes
in when a piece is written as MIDI or rendered as audio.

    4-voice grid    voice_grid(piece) -> [steps, 4] MIDI pitch per voice and step (-1: rest)
    piano roll      notes_to_piano_roll / piano_roll_to_notes: bool [steps, 128]; a pitch held
                    over consecutive steps is one note (a roll cannot tell a re-attack)
    MIDI            midi_bytes(piece, tempo) and read_midi(path or bytes): pretty_midi, 480
                    ticks per quarter, so every grid step is a whole number of ticks and a
                    quantised MIDI file comes back exactly

Events (Oore et al. 2018, "This time with feeling", on a musical grid instead of 10 ms):

    START           begins a piece (training streams are pieces joined by START)
    NOTE_ON p       pitch p starts, at the current velocity          128 tokens
    NOTE_OFF p      pitch p ends                                     128 tokens
    TIME_SHIFT k    the time moves k steps on, k = 1..max_shift       max_shift tokens
    VELOCITY b      the velocity of the following note-ons, b = 1..velocity_bins bins

At each step the note-offs come first, then the note-ons, each group by rising pitch, so
one piece has exactly one event sequence. MIDI -> events -> MIDI gives back every note's
pitch, start and end exactly; velocities come back as their bin's value. A pitch sounds at
most once at a time (MIDI's own rule on one channel): where two notes of one pitch overlap,
the earlier one ends when the later one starts, and unisons (two voices on one pitch) are
one note.

Data sets (`data.name`):

    chorales     the Bach chorales bundled with music21 (Riemenschneider numbering): the 351
                 of its 371 that have exactly four parts (soprano, alto, tenor, bass); about
                 534 events per chorale. Embedded, no network. Parsing takes about a minute,
                 once: the parsed notes are cached as an .npz file under the genlab data folder.
    midi:DIR     every .mid/.midi file under DIR (pretty_midi); drum tracks are left out,
                 the other tracks are merged. Unreadable files are skipped with a summary;
                 a folder with no readable file is an error.

The pieces are split into train | val | test by a seeded permutation (whole pieces, so no
piece leaks into the held-out sets). Each split is one int32 token stream; training reads
random windows of block_size + 1 tokens and transposes each window by a random number of
semitones in `data.transpose` (augmentation: the model hears every piece in many keys);
validation and test read consecutive windows, untransposed.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import GenlabError, warn
from .text import TokenWindows

__all__ = [
    "MUSIC_DATASETS", "Piece", "EventVocabulary", "MusicDataSpec", "MusicData", "load_music_data",
    "load_pieces", "read_midi", "midi_bytes", "notes_to_piano_roll", "piano_roll_to_notes", "voice_grid",
    "music_dataset_status", "DEFAULT_VELOCITY", "TICKS_PER_QUARTER",
]  # fmt: skip

MIDI_PITCHES = 128
DEFAULT_VELOCITY = 80  # the chorales carry no dynamics
TICKS_PER_QUARTER = 480  # divisible by 2, 3, 4, 8, 12, 16: every usual grid is whole ticks
N_VOICES = 4

MUSIC_DATASETS: dict[str, str] = {
    "chorales": "the 351 four-part Bach chorales bundled with music21 (of its 371; 20 have extra instrumental "
    "parts); embedded, no download (parsed once, about a minute, then cached)",
    "midi:DIR": "every .mid/.midi file under DIR (drum tracks left out)",
}


# ----------------------------------------------------------------------------- notes


@dataclass
class Piece:
    """Notes on a grid: parallel arrays, one entry per note."""

    pitch: np.ndarray  # int [N], MIDI pitch 0..127
    start: np.ndarray  # int [N], steps
    end: np.ndarray  # int [N], steps, > start
    velocity: np.ndarray  # int [N], 1..127
    voice: np.ndarray  # int [N], 0 for single-stream music
    steps_per_quarter: int = 4
    length: int = 0  # steps; at least the last note's end (trailing silence counts)
    quarters_per_bar: float = 4.0
    name: str = ""

    def __post_init__(self):
        self.pitch, self.start, self.end, self.velocity, self.voice = (
            np.asarray(a, dtype=np.int64).reshape(-1) for a in (self.pitch, self.start, self.end, self.velocity, self.voice)
        )
        if not len(self.pitch) == len(self.start) == len(self.end) == len(self.velocity) == len(self.voice):
            raise GenlabError("a piece's note arrays must have the same length")
        last = int(self.end.max()) if len(self.end) else 0
        self.length = max(int(self.length), last)

    @classmethod
    def from_notes(cls, notes, steps_per_quarter: int = 4, **kwargs) -> "Piece":
        """From (pitch, start, end[, velocity[, voice]]) tuples."""
        rows = [tuple(n) + (DEFAULT_VELOCITY, 0)[len(n) - 3 :] for n in notes]
        arrays = np.array(rows, dtype=np.int64).reshape(-1, 5).T
        return cls(*arrays, steps_per_quarter=steps_per_quarter, **kwargs)

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def steps_per_bar(self) -> int:
        return int(round(self.quarters_per_bar * self.steps_per_quarter))

    def seconds(self, tempo: float) -> float:
        return self.length * 60.0 / (tempo * self.steps_per_quarter)

    def notes(self) -> list[tuple[int, int, int, int]]:
        """(pitch, start, end, velocity) sorted by start, then pitch: for comparisons."""
        return sorted(zip(self.pitch.tolist(), self.start.tolist(), self.end.tolist(), self.velocity.tolist()),
                      key=lambda n: (n[1], n[0], n[2]))

    def select(self, keep: np.ndarray, **changes) -> "Piece":
        values = dict(pitch=self.pitch[keep], start=self.start[keep], end=self.end[keep], velocity=self.velocity[keep],
                      voice=self.voice[keep], steps_per_quarter=self.steps_per_quarter, length=self.length,
                      quarters_per_bar=self.quarters_per_bar, name=self.name)
        values.update(changes)
        return Piece(**values)

    def transposed(self, semitones: int) -> "Piece":
        piece = self.select(np.arange(len(self)))
        piece.pitch = piece.pitch + int(semitones)
        if len(piece) and (piece.pitch.min() < 0 or piece.pitch.max() >= MIDI_PITCHES):
            raise GenlabError(f"transposing by {semitones} semitones leaves the MIDI pitch range 0..127")
        return piece

    def truncated(self, length: int) -> "Piece":
        """The first `length` steps: later notes dropped, notes sounding at the cut end there."""
        keep = self.start < length
        piece = self.select(keep, length=length)
        piece.end = np.minimum(piece.end, length)
        piece.length = length
        return piece

    def monophonic_per_pitch(self) -> "Piece":
        """MIDI's rule: one pitch sounds at most once at a time. Overlapping notes of one pitch:
        the earlier ends where the later starts; notes starting together are one (the longer)."""
        if not len(self):
            return self.select(np.arange(0))
        order = np.lexsort((-self.end, self.start, self.pitch))  # by pitch, start, longest first
        p, s, e = self.pitch[order], self.start[order], self.end[order].copy()
        # A unison (same pitch, same start) is one note, the longest; dropping the others first
        # keeps a twin from cutting its own note short.
        keep = ~np.r_[False, (p[1:] == p[:-1]) & (s[1:] == s[:-1])]
        order, p, s, e = order[keep], p[keep], s[keep], e[keep]
        same_pitch_next = np.r_[p[1:] == p[:-1], False]
        next_start = np.r_[s[1:], 0]
        cut = same_pitch_next & (next_start < e)
        e[cut] = next_start[cut]
        piece = self.select(order)
        piece.end = e
        return piece


def voice_grid(piece: Piece, n_voices: int = N_VOICES) -> np.ndarray:
    """[length, n_voices] MIDI pitch sounding in each voice at each step; -1 where it rests."""
    grid = np.full((piece.length, n_voices), -1, dtype=np.int64)
    for pitch, start, end, voice in zip(piece.pitch, piece.start, piece.end, piece.voice):
        if 0 <= voice < n_voices:
            grid[start:end, voice] = pitch
    return grid


def notes_to_piano_roll(piece: Piece) -> np.ndarray:
    """bool [length, 128]: roll[t, p] when pitch p sounds during step t."""
    roll = np.zeros((piece.length, MIDI_PITCHES), dtype=bool)
    for pitch, start, end in zip(piece.pitch, piece.start, piece.end):
        roll[start:end, pitch] = True
    return roll


def piano_roll_to_notes(roll, steps_per_quarter: int, velocity: int = DEFAULT_VELOCITY, **kwargs) -> Piece:
    """A bool roll [steps, 128] -> notes: each run of consecutive sounding steps of a pitch is one note."""
    roll = np.asarray(roll.cpu() if isinstance(roll, torch.Tensor) else roll).astype(bool)
    if roll.ndim != 2 or roll.shape[1] != MIDI_PITCHES:
        raise GenlabError(f"a piano roll must be [steps, 128] indexed by MIDI pitch, got shape {roll.shape}")
    padded = np.pad(roll, ((1, 1), (0, 0))).astype(np.int8)
    change = np.diff(padded, axis=0)  # +1 where a run starts, -1 one past where it ends
    on_t, on_p = np.nonzero(change.T == 1)[::-1]
    off_t, off_p = np.nonzero(change.T == -1)[::-1]
    # np.nonzero on the transposed array walks pitch by pitch, so starts and ends pair up in order.
    return Piece(pitch=on_p, start=on_t, end=off_t, velocity=np.full(len(on_p), velocity), voice=np.zeros(len(on_p)),
                 steps_per_quarter=steps_per_quarter, length=roll.shape[0], **kwargs)


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventVocabulary:
    """Token ids: START | NOTE_ON 0..127 | NOTE_OFF 0..127 | TIME_SHIFT 1..max_shift | VELOCITY bins."""

    max_shift: int = 16  # longest single time shift in steps; longer gaps take several tokens
    velocity_bins: int = 32

    def __post_init__(self):
        if self.max_shift < 1:
            raise GenlabError(f"data.max_shift must be at least 1 step, got {self.max_shift}")
        if not 1 <= self.velocity_bins <= 127:
            raise GenlabError(f"data.velocity_bins must be in 1..127, got {self.velocity_bins}")

    START = 0
    NOTE_ON = 1
    NOTE_OFF = 1 + MIDI_PITCHES

    @property
    def TIME_SHIFT(self) -> int:  # the token of a shift by 1 step
        return 1 + 2 * MIDI_PITCHES

    @property
    def VELOCITY(self) -> int:
        return self.TIME_SHIFT + self.max_shift

    @property
    def size(self) -> int:
        return self.VELOCITY + self.velocity_bins

    # Velocities 1..127 in velocity_bins equal bins; a bin's value is its middle velocity.
    def velocity_bin(self, velocity) -> np.ndarray:
        v = np.clip(np.asarray(velocity, dtype=np.int64), 1, 127)
        return np.minimum((v - 1) * self.velocity_bins // 127, self.velocity_bins - 1)

    def bin_velocity(self, b) -> np.ndarray:
        b = np.asarray(b, dtype=np.int64)
        low = 1 + -(-b * 127 // self.velocity_bins)  # the smallest velocity in the bin
        high = 1 + -(-(b + 1) * 127 // self.velocity_bins) - 1
        return (low + high) // 2

    def shift_steps(self) -> torch.Tensor:
        """Steps each token moves the time on: [size] (0 for every token but the time shifts)."""
        steps = torch.zeros(self.size, dtype=torch.long)
        steps[self.TIME_SHIFT : self.TIME_SHIFT + self.max_shift] = torch.arange(1, self.max_shift + 1)
        return steps

    def describe(self, token: int) -> str:
        token = int(token)
        if token == self.START:
            return "START"
        if self.NOTE_ON <= token < self.NOTE_OFF:
            return f"NOTE_ON {token - self.NOTE_ON}"
        if self.NOTE_OFF <= token < self.TIME_SHIFT:
            return f"NOTE_OFF {token - self.NOTE_OFF}"
        if self.TIME_SHIFT <= token < self.VELOCITY:
            return f"TIME_SHIFT {token - self.TIME_SHIFT + 1}"
        if self.VELOCITY <= token < self.size:
            return f"VELOCITY {token - self.VELOCITY}"
        raise GenlabError(f"token {token} is outside the event vocabulary of {self.size}")

    def _shifts(self, steps: int) -> list[int]:
        full, rest = divmod(steps, self.max_shift)
        return [self.TIME_SHIFT + self.max_shift - 1] * full + ([self.TIME_SHIFT + rest - 1] if rest else [])

    def encode(self, piece: Piece, start_token: bool = True, to_end: bool = True) -> np.ndarray:
        """The piece's events (int32), from START (if asked) to its length (to_end) or its last event."""
        piece = piece.monophonic_per_pitch()
        bins = self.velocity_bin(piece.velocity)
        # (time, kind, pitch, velocity bin): offs (kind 0) before ons (kind 1) at one time, each by pitch.
        offs = np.stack([piece.end, np.zeros_like(piece.end), piece.pitch, np.zeros_like(bins)], 1)
        ons = np.stack([piece.start, np.ones_like(piece.start), piece.pitch, bins], 1)
        events = np.concatenate([offs, ons])
        events = events[np.lexsort((events[:, 2], events[:, 1], events[:, 0]))]
        tokens = [self.START] if start_token else []
        time, velocity = 0, None
        for t, kind, pitch, b in events.tolist():
            if t > time:
                tokens += self._shifts(t - time)
                time = t
            if kind == 0:
                tokens.append(self.NOTE_OFF + pitch)
            else:
                if b != velocity:
                    tokens.append(self.VELOCITY + b)
                    velocity = b
                tokens.append(self.NOTE_ON + pitch)
        if to_end and piece.length > time:
            tokens += self._shifts(piece.length - time)
        return np.asarray(tokens, dtype=np.int32)

    def end_time(self, tokens) -> int:
        """Steps the events span (the sum of their time shifts)."""
        ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        return int(self.shift_steps()[ids].sum()) if len(ids) else 0

    def decode(self, tokens, steps_per_quarter: int, length: int | None = None, max_note_steps: int | None = None,
               max_note_from: int = 0, **kwargs) -> Piece:
        """Events -> notes; any token sequence gives a valid piece (what a model draws need not be tidy).

        A note-on of a sounding pitch restarts it; a note-off of a silent pitch, and a note that
        would end where it starts, are dropped; notes still sounding at the end end there.
        With `length`, events past that step are ignored and the piece is exactly that long.
        With `max_note_steps`, a note starting at or after step `max_note_from` that is still
        sounding that many steps after its start ends there (Magenta's max_note_duration).
        """
        ids = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.size):
            bad = ids[(ids < 0) | (ids >= self.size)][0]
            raise GenlabError(f"token {bad} is outside the event vocabulary of {self.size}")
        time, velocity = 0, int(self.bin_velocity(self.velocity_bin(DEFAULT_VELOCITY)))
        sounding: dict[int, tuple[int, int]] = {}  # pitch -> (start, velocity)
        notes = []

        def close(pitch: int, at: int) -> None:
            start, vel = sounding.pop(pitch)
            if at > start:
                notes.append((pitch, start, at, vel))

        for token in ids.tolist():
            if length is not None and time >= length:
                break
            if self.NOTE_ON <= token < self.NOTE_OFF:
                pitch = token - self.NOTE_ON
                if pitch in sounding:
                    close(pitch, time)
                sounding[pitch] = (time, velocity)
            elif self.NOTE_OFF <= token < self.TIME_SHIFT:
                if token - self.NOTE_OFF in sounding:
                    close(token - self.NOTE_OFF, time)
            elif self.TIME_SHIFT <= token < self.VELOCITY:
                time += token - self.TIME_SHIFT + 1
                if max_note_steps is not None:
                    for pitch, (start, _) in list(sounding.items()):
                        if start >= max_note_from and time - start > max_note_steps:
                            close(pitch, start + max_note_steps)
            elif token >= self.VELOCITY:
                velocity = int(self.bin_velocity(token - self.VELOCITY))
        end = time if length is None else length
        for pitch, (start, _) in list(sounding.items()):
            held_too_long = max_note_steps is not None and start >= max_note_from and end - start > max_note_steps
            close(pitch, start + max_note_steps if held_too_long else end)
        piece = Piece.from_notes(notes, steps_per_quarter, length=end, **kwargs)
        return piece.truncated(end) if length is not None else piece


# ----------------------------------------------------------------------------- MIDI


class UnreadableMidi(GenlabError):
    def __init__(self, message: str, reason: str):
        super().__init__(message, "give a standard MIDI file (.mid); re-export it from your editor if it is damaged")
        self.reason = reason


def _pretty_midi():
    with warnings.catch_warnings():  # pretty_midi imports pkg_resources, which warns on import
        warnings.simplefilter("ignore")
        import pretty_midi
    return pretty_midi


def midi_bytes(piece: Piece, tempo: float = 120.0, program: int = 0) -> bytes:
    """A standard MIDI file (type 1, one instrument) of the piece at `tempo` quarter notes per minute."""
    pm_module = _pretty_midi()
    pm = pm_module.PrettyMIDI(resolution=TICKS_PER_QUARTER, initial_tempo=float(tempo))
    numerator = int(round(piece.quarters_per_bar)) if float(piece.quarters_per_bar).is_integer() else 4
    pm.time_signature_changes.append(pm_module.TimeSignature(numerator, 4, 0.0))
    instrument = pm_module.Instrument(program=program, name=piece.name or "genlab")
    seconds_per_step = 60.0 / (tempo * piece.steps_per_quarter)
    for pitch, start, end, velocity in piece.notes():
        instrument.notes.append(pm_module.Note(velocity=int(velocity), pitch=int(pitch),
                                               start=start * seconds_per_step, end=end * seconds_per_step))
    pm.instruments.append(instrument)
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()


def read_midi(source: str | Path | bytes, steps_per_quarter: int = 4, name: str | None = None) -> Piece:
    """A MIDI file (path or bytes) quantised to the grid, drum tracks left out, all other tracks merged.

    Quantised in ticks, not seconds, so tempo changes do not move notes off the grid. A note
    shorter than a step keeps one step.
    """
    label = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "the MIDI data")
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise GenlabError(f"{label} is empty", "give a standard MIDI file (.mid)")
        stream = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise GenlabError(f"MIDI file {path} does not exist", "give the path of a .mid file")
        stream = str(path)
    pm_module = _pretty_midi()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about odd but readable files
            pm = pm_module.PrettyMIDI(stream)
    except Exception as e:  # mido and pretty_midi raise many types (OSError, EOFError, KeyError, ValueError ...)
        reason = str(e) or ("it ends in the middle of its data" if isinstance(e, EOFError) else type(e).__name__)
        raise UnreadableMidi(f"{label} is not a readable MIDI file ({reason})", reason) from None
    per_step = pm.resolution / steps_per_quarter
    rows = []
    for instrument in pm.instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            start = int(round(pm.time_to_tick(note.start) / per_step))
            end = max(start + 1, int(round(pm.time_to_tick(note.end) / per_step)))
            rows.append((note.pitch, start, end, max(1, min(127, note.velocity)), 0))
    quarters_per_bar = 4.0
    if pm.time_signature_changes:
        ts = pm.time_signature_changes[0]
        quarters_per_bar = ts.numerator * 4.0 / ts.denominator
    piece = Piece.from_notes(rows, steps_per_quarter, quarters_per_bar=quarters_per_bar, name=name or "")
    return piece.monophonic_per_pitch()


def _read_midi_folder(folder: Path, steps_per_quarter: int) -> list[Piece]:
    if not folder.is_dir():
        raise GenlabError(f"midi: {folder} does not exist or is not a folder", "give a folder of .mid files")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".mid", ".midi")
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise GenlabError(f"{folder} holds no MIDI files (.mid or .midi)", "put standard MIDI files (any depth) in the folder")
    pieces, skipped = [], []
    for path in files:
        relative = str(path.relative_to(folder))
        try:
            piece = read_midi(path, steps_per_quarter, name=relative)
        except UnreadableMidi as e:
            skipped.append(f"{relative} ({e.reason})")
            continue
        if not len(piece):
            skipped.append(f"{relative} (no notes outside the drum tracks)")
            continue
        pieces.append(piece)
    if skipped:
        listing = "; ".join(skipped[:8]) + (f"; and {len(skipped) - 8} more" if len(skipped) > 8 else "")
        if not pieces:
            raise GenlabError(f"none of the {len(files)} MIDI file(s) in {folder} could be used: {listing}",
                              "give standard MIDI files with notes (re-export damaged ones)")
        warn(f"read {len(pieces)} of {len(files)} MIDI files in {folder}; skipped {len(skipped)}: {listing}")
    return pieces


# ----------------------------------------------------------------------------- the chorales


def _chorale_cache(root: Path, n: int | None) -> Path:
    import music21

    suffix = "" if n is None else f"-first{n}"
    return Path(root) / "chorales" / f"music21-{music21.__version__}{suffix}.npz"


def _parse_chorales(n: int | None) -> dict[str, np.ndarray]:
    """Notes of the four-part chorales, in quarter notes (exact binary fractions), as flat arrays."""
    from music21 import corpus
    from music21.corpus import chorales
    from tqdm import tqdm

    names = list(chorales.Iterator(returnType="filename"))
    columns: dict[str, list] = {k: [] for k in ("pitch", "start", "end", "voice")}
    bounds, lengths, bar_quarters, kept = [0], [], [], []
    for name in tqdm(names, desc="parsing the Bach chorales (once)", unit="chorale", disable=n is not None and n < 20,
                     mininterval=5.0):
        if n is not None and len(kept) == n:  # the first n four-part chorales
            break
        # forceSource: music21 would otherwise keep its own pickled copies in its scratch folder.
        score = corpus.parse(name, forceSource=True)
        if len(score.parts) != N_VOICES:
            continue  # a handful carry extra instrumental parts
        for voice, part in enumerate(score.parts):
            for element in part.stripTies().flatten().notes:
                duration = float(element.duration.quarterLength)
                if duration <= 0:  # grace notes take no time on the grid
                    continue
                for pitch in element.pitches:
                    columns["pitch"].append(pitch.midi)
                    columns["start"].append(float(element.offset))
                    columns["end"].append(float(element.offset) + duration)
                    columns["voice"].append(voice)
        signatures = score.recurse().getElementsByClass("TimeSignature")
        bar_quarters.append(float(signatures[0].barDuration.quarterLength) if signatures else 4.0)
        lengths.append(float(score.highestTime))
        bounds.append(len(columns["pitch"]))
        kept.append(name)
    return {
        "names": np.array(kept), "bounds": np.array(bounds, dtype=np.int64),
        "pitch": np.array(columns["pitch"], dtype=np.int16), "start": np.array(columns["start"], dtype=np.float64),
        "end": np.array(columns["end"], dtype=np.float64), "voice": np.array(columns["voice"], dtype=np.int8),
        "length": np.array(lengths, dtype=np.float64), "quarters_per_bar": np.array(bar_quarters, dtype=np.float64),
    }


def _chorale_arrays(root: Path, max_pieces: int | None) -> dict[str, np.ndarray]:
    """The parsed chorales from the cache (the full set, or a cached first-n subset), parsing if needed."""
    for candidate in ([None] if max_pieces is None else [None, max_pieces]):
        path = _chorale_cache(root, candidate)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as f:  # arrays of numbers and fixed-width strings only
                    arrays = {k: f[k] for k in f.files}
                if candidate is None or len(arrays["names"]) >= max_pieces:
                    return arrays
            except (OSError, ValueError, KeyError) as e:
                warn(f"the chorale cache {path} is unreadable ({e}); parsing again")
    if max_pieces is None:
        warn("parsing the Bach chorales from music21's corpus; this happens once (about a minute) and is "
             f"cached in {_chorale_cache(root, None).parent}")
    arrays = _parse_chorales(max_pieces)
    path = _chorale_cache(root, max_pieces)
    from ..fileio import atomic_write_bytes

    try:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())  # a concurrent reader never sees half a file
    except OSError as e:
        warn(f"cannot cache the parsed chorales in {path.parent} ({e.strerror or e}); they will be parsed again next time")
    return arrays


def _chorale_pieces(root: Path, steps_per_quarter: int, max_pieces: int | None) -> list[Piece]:
    a = _chorale_arrays(root, max_pieces)
    pieces = []
    count = len(a["names"]) if max_pieces is None else min(max_pieces, len(a["names"]))
    for i in range(count):
        lo, hi = a["bounds"][i], a["bounds"][i + 1]
        start = np.round(a["start"][lo:hi] * steps_per_quarter).astype(np.int64)
        end = np.maximum(start + 1, np.round(a["end"][lo:hi] * steps_per_quarter).astype(np.int64))
        piece = Piece(pitch=a["pitch"][lo:hi], start=start, end=end, velocity=np.full(hi - lo, DEFAULT_VELOCITY),
                      voice=a["voice"][lo:hi], steps_per_quarter=steps_per_quarter,
                      length=int(round(a["length"][i] * steps_per_quarter)),
                      quarters_per_bar=float(a["quarters_per_bar"][i]), name=str(a["names"][i]))
        pieces.append(piece)
    return pieces


def music_dataset_status(name: str, root: Path) -> str:
    if name == "chorales":
        return "cached" if _chorale_cache(root, None).is_file() else "embedded"
    return "local"


def load_pieces(name: str, steps_per_quarter: int = 4, max_pieces: int | None = None, root: Path | None = None) -> list[Piece]:
    """The pieces of a music data set, on a grid of steps_per_quarter steps per quarter note."""
    from .download import data_root

    root = Path(root) if root is not None else data_root()
    if name == "chorales":
        return _chorale_pieces(root, steps_per_quarter, max_pieces)
    prefix, _, arg = name.partition(":")
    if prefix == "midi":
        if not arg:
            raise GenlabError("data set 'midi:' needs a folder after the colon", "for example midi:/path/to/midi_files")
        return _read_midi_folder(Path(arg).expanduser(), steps_per_quarter)[:max_pieces]
    raise GenlabError(f"unknown music data set {name!r}", "use chorales (embedded) or your own files as midi:DIR")


# ----------------------------------------------------------------------------- the data


@dataclass
class MusicDataSpec:
    name: str = "chorales"  # chorales | midi:DIR
    steps_per_quarter: int = 4  # the grid: 4 = sixteenth notes, 2 = eighth notes
    block_size: int = 256  # events per training window; a GPT's context length
    transpose: tuple[int, int] = (-5, 6)  # training windows move by a random shift in this range (semitones)
    max_shift: int = 16  # longest TIME_SHIFT token, in steps
    velocity_bins: int = 32
    max_pieces: int | None = None  # use only the first n pieces (quick tests)
    val_fraction: float = 0.1  # of the pieces
    test_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self):
        if not 1 <= self.steps_per_quarter <= 48 or TICKS_PER_QUARTER % self.steps_per_quarter:
            raise GenlabError(f"data.steps_per_quarter must divide {TICKS_PER_QUARTER} (e.g. 4 for sixteenth notes, "
                              f"2 for eighths), got {self.steps_per_quarter}")
        if self.block_size < 2:
            raise GenlabError(f"data.block_size must be at least 2, got {self.block_size}", "a typical value is 256")
        if len(self.transpose) != 2 or self.transpose[0] > self.transpose[1] or max(map(abs, self.transpose)) > 24:
            raise GenlabError(f"data.transpose must be [LOW, HIGH] semitones with LOW <= HIGH within two octaves, "
                              f"got {list(self.transpose)}", "e.g. [-5, 6] (every key once), or [0, 0] for none")
        EventVocabulary(self.max_shift, self.velocity_bins)  # validates them
        if self.max_pieces is not None and self.max_pieces < 3:
            raise GenlabError(f"data.max_pieces must be at least 3 (train, val and test each need one), got {self.max_pieces}")
        if not 0.0 < self.val_fraction < 1.0 or not 0.0 <= self.test_fraction < 1.0 or self.val_fraction + self.test_fraction >= 0.9:
            raise GenlabError("data.val_fraction must be in (0, 1), data.test_fraction in [0, 1), and together below 0.9",
                              f"got {self.val_fraction} and {self.test_fraction}")
        if self.split_seed < 0:
            raise GenlabError(f"data.split_seed must be >= 0, got {self.split_seed}")

    @property
    def vocabulary(self) -> EventVocabulary:
        return EventVocabulary(self.max_shift, self.velocity_bins)


@dataclass
class MusicSplit:
    pieces: list[Piece]
    tokens: torch.Tensor  # int32 [N]: the pieces' events, each from its START

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class MusicData(TokenWindows):
    spec: MusicDataSpec
    train: MusicSplit
    val: MusicSplit
    test: MusicSplit
    classes: list[str] = field(default_factory=list)  # music has no classes; kept for the artifact config

    @property
    def vocabulary(self) -> EventVocabulary:
        return self.spec.vocabulary

    def model_fields(self) -> dict:
        """What an event model's config takes from the data (filled in by genlab.train)."""
        return {"vocab_size": self.vocabulary.size, "block_size": self.spec.block_size,
                "steps_per_quarter": self.spec.steps_per_quarter, "max_shift": self.spec.max_shift,
                "velocity_bins": self.spec.velocity_bins}

    def batch(self, split: str, indices: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        windows = self.windows(split, indices, generator)
        # Training windows also move to a random key, from the same per-step generator (resumable).
        if split == "train" and self.spec.transpose != (0, 0):
            windows = transpose_events(windows, self.vocabulary, self.spec.transpose, generator)
        return {"x": windows}


def transpose_events(windows: torch.Tensor, vocabulary: EventVocabulary, semitones: tuple[int, int],
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Move each row's notes by a random shift in [low, high] semitones, clamped so that no
    pitch leaves 0..127 (a row near the edge of the range moves less)."""
    on, off = vocabulary.NOTE_ON, vocabulary.NOTE_OFF
    is_on = (windows >= on) & (windows < off)
    is_off = (windows >= off) & (windows < off + MIDI_PITCHES)
    is_pitch = is_on | is_off
    pitch = torch.where(is_on, windows - on, windows - off)
    lowest = torch.where(is_pitch, pitch, MIDI_PITCHES - 1).min(1).values
    highest = torch.where(is_pitch, pitch, 0).max(1).values
    shift = torch.randint(semitones[0], semitones[1] + 1, (len(windows),), generator=generator)
    shift = torch.maximum(torch.minimum(shift, MIDI_PITCHES - 1 - highest), -lowest)
    return torch.where(is_pitch, windows + shift[:, None], windows)


def _split_pieces(n: int, spec: MusicDataSpec) -> dict[str, np.ndarray]:
    order = np.random.default_rng(spec.split_seed).permutation(n)
    n_val = max(1, int(round(n * spec.val_fraction)))
    n_test = max(1, int(round(n * spec.test_fraction))) if spec.test_fraction > 0 else 0
    return {"val": np.sort(order[:n_val]), "test": np.sort(order[n_val : n_val + n_test]),
            "train": np.sort(order[n_val + n_test :])}


def load_music_data(spec: MusicDataSpec | dict | str, root: Path | None = None) -> MusicData:
    """Load a music data set, split it by piece and encode every piece as events."""
    from ..config import from_dict

    if isinstance(spec, str):
        spec = MusicDataSpec(name=spec)
    elif isinstance(spec, dict):
        spec = from_dict(MusicDataSpec, spec, "data")
    pieces = load_pieces(spec.name, spec.steps_per_quarter, spec.max_pieces, root)
    if len(pieces) < 3:
        raise GenlabError(f"{spec.name} has {len(pieces)} usable piece(s); train, val and test need at least one each",
                          "give at least 3 pieces (10 or more to learn anything)")
    vocabulary = spec.vocabulary
    splits = {}
    for name, members in _split_pieces(len(pieces), spec).items():
        chosen = [pieces[i] for i in members]
        streams = [vocabulary.encode(p) for p in chosen] or [np.zeros(0, dtype=np.int32)]
        splits[name] = MusicSplit(chosen, torch.from_numpy(np.concatenate(streams)))
    for name in ("train", "val") + (("test",) if spec.test_fraction > 0 else ()):
        if len(splits[name]) < spec.block_size + 1:
            raise GenlabError(
                f"the {name} split of {spec.name} has {len(splits[name])} events, fewer than one window of "
                f"block_size + 1 = {spec.block_size + 1}",
                "use more pieces, a smaller data.block_size, or larger data.val_fraction / data.test_fraction",
            )
    return MusicData(spec=spec, **splits)
