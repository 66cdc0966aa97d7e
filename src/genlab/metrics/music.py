"""Musical statistics of a set of pieces, to put samples beside the data they imitate.

    pitch-class histogram   share of sounding time on each of the 12 pitch classes (C, C#, ..
                            B), weighted by duration; also key-normalised, each piece rotated so
                            that its estimated tonic is C, which compares pieces in different keys
    polyphony               mean number of pitches sounding at once, over the steps where at
                            least one sounds (a four-part chorale: just under 4)
    in-key ratio            share of notes whose pitch class belongs to the scale of their
                            piece's estimated key: the 7 diatonic classes of a major key; for a
                            minor key the natural minor plus the raised seventh (the leading
                            tone, which minor-key chorales use all the time), 8 classes
    note lengths            share of notes of each written length (sixteenth .. whole note;
                            "other" for the rest), in quarter notes

Two distributions are compared by their total variation distance, half the L1 distance:
0 when they are equal, 1 when they share nothing.

The key of a piece is estimated with the Krumhansl-Schmuckler algorithm and the
Krumhansl-Kessler (1982) probe-tone profiles: the key whose profile, rotated to its tonic,
has the highest Pearson correlation with the piece's duration-weighted pitch-class
histogram (what music21's analysis.discrete.KrumhanslKessler computes).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import GenlabError

PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}  # minor: natural + leading tone
# Written note lengths in quarter notes.
NOTE_LENGTHS = {"sixteenth": 0.25, "eighth": 0.5, "dotted eighth": 0.75, "quarter": 1.0, "dotted quarter": 1.5,
                "half": 2.0, "dotted half": 3.0, "whole": 4.0}


# ----------------------------------------------------------------------------- keys


def pitch_class_weights(piece) -> np.ndarray:
    """Sounding steps of each pitch class in one piece, [12] (not normalised)."""
    return np.bincount(piece.pitch % 12, weights=(piece.end - piece.start).astype(float), minlength=12)


def estimate_key(piece) -> tuple[int, str] | None:
    """(tonic pitch class, "major" | "minor") of the best Krumhansl-Kessler fit; None for a piece with no notes."""
    weights = pitch_class_weights(piece)
    if weights.sum() == 0 or np.all(weights == weights[0]):
        return None  # no notes, or all twelve equally: no key fits better than another
    best = max(((_correlation(weights, np.roll(profile, tonic)), tonic, mode)
                for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)) for tonic in range(12)))
    return best[1], best[2]


def best_tonic(piece, mode: str) -> int | None:
    """The tonic of the best-fitting key of the given mode (None for a piece with no notes)."""
    weights = pitch_class_weights(piece)
    if weights.sum() == 0:
        return None
    profile = MAJOR_PROFILE if mode == "major" else MINOR_PROFILE
    return int(np.argmax([_correlation(weights, np.roll(profile, tonic)) for tonic in range(12)]))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def parse_key(text: str) -> tuple[int, str]:
    """"D", "D major", "F# minor", "Bb", "c minor", "Am" -> (tonic pitch class, mode)."""
    match = re.fullmatch(r"\s*([A-Ga-g])\s*(#|b|♯|♭|sharp|flat)?\s*(major|minor|maj|min|m)?\s*", str(text),
                         flags=re.IGNORECASE) if isinstance(text, str) else None
    # A lone "b" after the letter is a flat ("Bb"), never "B" followed by nothing; "m" alone means minor.
    if match is None:
        raise GenlabError(f"cannot read the key {text!r}",
                          "write a tonic and an optional mode, e.g. C, D major, F# minor, Bb, Am")
    letter, accidental, mode = match.groups()
    tonic = _LETTERS[letter.upper()]
    if accidental:
        tonic += 1 if accidental.lower() in ("#", "♯", "sharp") else -1
    mode_name = "minor" if mode and mode.lower() in ("minor", "min", "m") else "major"
    return tonic % 12, mode_name


def key_name(tonic: int, mode: str) -> str:
    return f"{PITCH_CLASS_NAMES[tonic % 12]} {mode}"


def transpose_into_key(piece, tonic: int, mode: str) -> tuple[object, int]:
    """The piece moved so that its best-fitting key of `mode` has the given tonic; (piece, semitones).

    The shift is the smallest one (-6..+5 semitones), moved by an octave if that would leave
    the MIDI range. A piece with no notes is returned as it is.
    """
    current = best_tonic(piece, mode)
    if current is None:
        return piece, 0
    shift = (tonic - current + 6) % 12 - 6
    for candidate in (shift, shift + 12, shift - 12):
        if 0 <= piece.pitch.min() + candidate and piece.pitch.max() + candidate <= 127:
            return piece.transposed(candidate), candidate
    raise GenlabError(f"the piece spans MIDI pitches {piece.pitch.min()}..{piece.pitch.max()}, too wide to move into "
                      f"{key_name(tonic, mode)}")


# ----------------------------------------------------------------------------- statistics


def pitch_class_histogram(pieces, key_normalized: bool = False) -> np.ndarray:
    """Duration-weighted share of each pitch class over all pieces, [12] summing to 1 (zeros if no notes).

    key_normalized: each piece is first rotated so that its estimated tonic is C."""
    total = np.zeros(12)
    for piece in pieces:
        weights = pitch_class_weights(piece)
        if key_normalized:
            key = estimate_key(piece)
            if key is not None:
                weights = np.roll(weights, -key[0])
        total += weights
    return total / total.sum() if total.sum() > 0 else total


def in_key_ratio(pieces) -> float:
    """Share of all notes in the scale of their piece's estimated key (nan if there are no notes)."""
    inside = notes = 0
    for piece in pieces:
        key = estimate_key(piece)
        if key is None:
            notes += len(piece)  # no key fits: none of its notes is in one
            continue
        scale = [(key[0] + step) % 12 for step in SCALES[key[1]]]
        inside += int(np.isin(piece.pitch % 12, scale).sum())
        notes += len(piece)
    return inside / notes if notes else float("nan")


def polyphony(pieces) -> float:
    """Mean number of distinct pitches sounding at once over the steps where any sounds (nan if none)."""
    sounding_steps = sounding_notes = 0
    for piece in pieces:
        counts = np.zeros(piece.length + 1, dtype=np.int64)
        one_per_pitch = piece.monophonic_per_pitch()  # a unison is one sounding pitch
        np.add.at(counts, one_per_pitch.start, 1)
        np.add.at(counts, one_per_pitch.end, -1)
        active = np.cumsum(counts)[:-1]
        sounding_steps += int((active > 0).sum())
        sounding_notes += int(active.sum())
    return sounding_notes / sounding_steps if sounding_steps else float("nan")


def note_length_histogram(pieces) -> dict[str, float]:
    """Share of notes of each written length (NOTE_LENGTHS, then "other")."""
    counts = dict.fromkeys([*NOTE_LENGTHS, "other"], 0)
    lookup = {value: name for name, value in NOTE_LENGTHS.items()}
    total = 0
    for piece in pieces:
        quarters = (piece.end - piece.start) / piece.steps_per_quarter
        for value, count in zip(*np.unique(quarters, return_counts=True)):
            counts[lookup.get(float(value), "other")] += int(count)
            total += int(count)
    return {name: (count / total if total else 0.0) for name, count in counts.items()}


def total_variation(p, q) -> float:
    """Half the L1 distance between two distributions (arrays or dicts with the same keys)."""
    if isinstance(p, dict):
        p, q = np.array(list(p.values())), np.array([q[k] for k in p])
    return float(0.5 * np.abs(np.asarray(p, dtype=float) - np.asarray(q, dtype=float)).sum())


def music_statistics(pieces) -> dict:
    """The statistics of a set of pieces, JSON-ready."""
    pieces = list(pieces)
    notes = sum(len(p) for p in pieces)
    bars = sum(p.length / max(p.steps_per_bar, 1) for p in pieces)
    quarters = [((p.end - p.start) / p.steps_per_quarter) for p in pieces]
    return {
        "pieces": len(pieces),
        "notes": notes,
        "notes_per_bar": notes / bars if bars else float("nan"),
        "polyphony": polyphony(pieces),
        "in_key_ratio": in_key_ratio(pieces),
        "mean_note_quarters": float(np.concatenate(quarters).mean()) if notes else float("nan"),
        "pitch_class_histogram": dict(zip(PITCH_CLASS_NAMES, pitch_class_histogram(pieces).tolist())),
        "pitch_class_histogram_key_normalized": dict(zip(PITCH_CLASS_NAMES, pitch_class_histogram(pieces, True).tolist())),
        "note_length_histogram": note_length_histogram(pieces),
    }


def compare_statistics(samples: dict, data: dict) -> dict:
    """Distances between two music_statistics results (samples vs data)."""
    return {
        "pitch_class_distance": total_variation(samples["pitch_class_histogram"], data["pitch_class_histogram"]),
        "pitch_class_distance_key_normalized": total_variation(samples["pitch_class_histogram_key_normalized"],
                                                               data["pitch_class_histogram_key_normalized"]),
        "note_length_distance": total_variation(samples["note_length_histogram"], data["note_length_histogram"]),
        "polyphony_difference": samples["polyphony"] - data["polyphony"],
        "in_key_ratio_difference": samples["in_key_ratio"] - data["in_key_ratio"],
    }
