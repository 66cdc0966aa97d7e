"""JSB Chorales as piano-roll frames: the polyphonic-music benchmark split.

The data set (`data.name=jsb`) is the 382 four-part Bach chorales in the split of
Boulanger-Lewandowski, Bengio & Vincent (ICML 2012): 229 train / 76 valid / 77 test pieces,
each a sequence of time steps, each step the set of MIDI pitches sounding. It is the split
every published frame-level NLL on "JSB Chorales" uses (RNN-RBM, RNN-NADE, Bai et al.'s
LSTM/GRU/TCN).

Resolutions (`data.resolution`):

    quarter    one step per quarter note: the original pickle of Boulanger-Lewandowski
               ("JSB Chorales.pickle"), the benchmark's data; 2.0 MB download
    eighth     Huang et al.'s (Coconet) re-quantisation at eighth notes, JSON; 0.9 MB
    sixteenth  the same at sixteenth notes, JSON; 1.7 MB

Every file is fetched from a pinned commit of czhuang/JSB-Chorales-dataset and checked
against its SHA-256 before use (genlab.data.download).

The pickle is read with a restricted unpickler. Unpickling runs whatever constructors the
file names, so a plain `pickle.load` of a downloaded file is arbitrary code execution. The
restricted reader admits only what this file needs: builtin containers and numbers (which
pickle builds without any global) and numpy's scalar and dtype constructors, and among
scalars only numeric ones (an object-dtype scalar would smuggle an arbitrary object). Any
other global (`os.system`, `builtins.eval`, ...) is refused with a GenlabError before it is
looked up.

Frames. A step becomes a multi-hot vector over the 88 piano keys, MIDI 21 (A0) to 108 (C8):
key k is MIDI pitch 21 + k. All JSB pitches lie inside that range (43..96 at quarter notes).

Batches. A split is one uint8 tensor of all its frames [total_frames, 88] plus each piece's
offset and length. An example is one whole piece; a batch pads its pieces to the longest
with zero frames and a boolean mask [B, T] of the real ones, so every loss and metric sums
over real frames only. Frame-level NLL is "per frame, averaged over all frames of the split",
not a mean of per-piece means (which would over-weight short pieces).
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import GenlabError
from .download import RemoteFile, ensure_files

__all__ = ["PianoRollDataSpec", "PianoRollSplit", "PianoRollData", "load_pianoroll_data", "load_jsb_pieces",
           "restricted_pickle_load", "pianoroll_dataset_status", "JSB_FILES", "PIANO_LOWEST", "PIANO_KEYS", "PIANOROLL_DATASETS",
           "pieces_to_frames"]

PIANO_LOWEST = 21  # MIDI pitch of A0, the lowest piano key
PIANO_KEYS = 88  # A0 (21) .. C8 (108)
SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}  # genlab's name -> the file's key
EXPECTED_PIECES = {"train": 229, "valid": 76, "test": 77}

# czhuang/JSB-Chorales-dataset (Cheng-Zhi Anna Huang), pinned commit; checksums as verified
# in shared/data/jsb_chorales/SHA256SUMS.
_JSB_COMMIT = "9a7f733ddb4ed91f48da64ac7f0f621c34aadd4d"


def _jsb_remote(filename: str, sha256: str) -> RemoteFile:
    return RemoteFile(filename, (f"https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/{_JSB_COMMIT}/{filename}",),
                      sha256=sha256)


JSB_FILES = {
    "quarter": _jsb_remote("jsb-chorales-quarter.pkl", "be67b1e1d0ea22a0c64eb72db53a83dae65650a7b470ca09a34a1e43a3fb4405"),
    "eighth": _jsb_remote("jsb-chorales-8th.json", "88fb80b22829a815e8105da538d94ae803773158507e2145938351f35142390a"),
    "sixteenth": _jsb_remote("jsb-chorales-16th.json", "8730aca7b64e7d29493733d1cf19fad4a5b351d8f1845e57dac27728104fd39f"),
}
JSB_FOLDER = "jsb_chorales"  # under the data root
STEPS_PER_QUARTER = {"quarter": 1, "eighth": 2, "sixteenth": 4}

PIANOROLL_DATASETS = {
    "jsb": "JSB Chorales, 382 Bach chorales in the Boulanger-Lewandowski 2012 split (229/76/77), "
           "piano-roll frames at quarter (benchmark), eighth or sixteenth notes; 0.9-2.0 MB download",
}


# ----------------------------------------------------------------------------- the restricted unpickler


def _numeric_numpy_scalar(dtype, data=None):
    """numpy's scalar reconstructor, for numeric dtypes only."""
    import numpy

    if not isinstance(dtype, numpy.dtype) or dtype.kind not in "biuf":
        raise GenlabError(f"the pickle holds a numpy scalar of dtype {dtype!r}, which is not a plain number",
                          "only numeric numpy scalars are admitted; the file is not the JSB Chorales pickle")
    if isinstance(data, str):  # a Python 2 pickle's byte string, read as latin-1 (one char per byte)
        data = data.encode("latin-1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise GenlabError("the pickle holds a malformed numpy scalar", "the file is not the JSB Chorales pickle")
    return numpy.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(spec, align=False, copy=True):
    """numpy.dtype, for plain numeric type codes only (pickle then restores its byte order)."""
    import numpy

    if not isinstance(spec, str) or spec.lstrip("<>=|") not in {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                                               "f2", "f4", "f8"}:
        raise GenlabError(f"the pickle asks for numpy dtype {spec!r}, which is not a plain number type",
                          "the file is not the JSB Chorales pickle")
    return numpy.dtype(spec, bool(align), bool(copy))


class _RestrictedUnpickler(pickle.Unpickler):
    # (module, name) -> the callable handed to the pickle. Builtin containers and numbers
    # (dict, list, tuple, str, int, float, bool, None) need no global at all.
    ALLOWED = {
        ("numpy.core.multiarray", "scalar"): _numeric_numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numeric_numpy_scalar,  # the same, pickled by numpy >= 2
        ("numpy", "dtype"): _numpy_dtype,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise GenlabError(
                f"refusing to unpickle the global {module}.{name}: this reader admits only builtin containers, "
                "numbers and numpy numeric scalars",
                "the file is not the JSB Chorales pickle (or was tampered with); delete it so the verified "
                "copy is downloaded again",
            ) from None


def restricted_pickle_load(data: bytes, source: str = "the pickle"):
    """Unpickle `data` admitting only builtin containers/numbers and numpy numeric scalars."""
    try:
        # latin-1: the file was written by Python 2, whose byte strings (numpy's scalar data)
        # must come back byte for byte; numpy's own loaders use the same encoding.
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except GenlabError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as e:
        raise GenlabError(f"{source} is not a readable pickle ({type(e).__name__}: {e})",
                          "the file is damaged; delete it so it is downloaded again") from None


# ----------------------------------------------------------------------------- reading the pieces


def _check_pieces(raw, source: str) -> dict[str, list[list[list[int]]]]:
    """{'train'|'valid'|'test': pieces}, each piece a list of steps, each step a sorted list of
    MIDI pitches; anything else is a clear error."""
    bad = GenlabError(f"{source} does not hold the JSB Chorales split (a dict of train/valid/test lists of pieces)",
                      "delete the file so the verified copy is downloaded again")
    if not isinstance(raw, dict) or not all(key in raw for key in EXPECTED_PIECES):
        raise bad
    out = {}
    for key in EXPECTED_PIECES:
        pieces = raw[key]
        if not isinstance(pieces, (list, tuple)) or not pieces:
            raise bad
        clean = []
        for piece in pieces:
            if not isinstance(piece, (list, tuple)) or not piece:
                raise bad
            steps = []
            for step in piece:
                if not isinstance(step, (list, tuple)):
                    raise bad
                pitches = []
                for pitch in step:
                    if isinstance(pitch, (bool, np.bool_)) or not isinstance(pitch, (int, np.integer)) or not 0 <= pitch < 128:
                        raise GenlabError(f"{source} holds {pitch!r} where a MIDI pitch (0..127) belongs",
                                          "delete the file so the verified copy is downloaded again")
                    pitches.append(int(pitch))
                steps.append(sorted(set(pitches)))
            clean.append(steps)
        out[key] = clean
    return out


def load_jsb_pieces(resolution: str = "quarter", root: Path | None = None) -> dict[str, list[list[list[int]]]]:
    """The JSB split as {'train', 'valid', 'test'} -> pieces -> steps -> sorted MIDI pitches."""
    if resolution not in JSB_FILES:
        raise GenlabError(f"unknown data.resolution {resolution!r} for jsb", f"use one of {', '.join(JSB_FILES)}")
    (path,) = ensure_files(JSB_FOLDER, [JSB_FILES[resolution]], root)
    raw_bytes = path.read_bytes()
    if path.suffix == ".pkl":
        raw = restricted_pickle_load(raw_bytes, str(path))
    else:
        try:
            raw = json.loads(raw_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GenlabError(f"{path} is not valid JSON ({e})", "delete the file so it is downloaded again") from None
    return _check_pieces(raw, str(path))


def pieces_to_frames(pieces: list, lowest: int = PIANO_LOWEST, n_keys: int = PIANO_KEYS) -> tuple[torch.Tensor, torch.Tensor]:
    """Pieces (lists of steps of MIDI pitches) -> (uint8 frames [total, n_keys], lengths [pieces])."""
    lengths = [len(piece) for piece in pieces]
    frames = np.zeros((sum(lengths), n_keys), dtype=np.uint8)
    row = 0
    for piece in pieces:
        for step in piece:
            for pitch in step:
                if not lowest <= pitch < lowest + n_keys:
                    raise GenlabError(f"MIDI pitch {pitch} is outside the piano roll's keys {lowest}..{lowest + n_keys - 1}")
                frames[row, pitch - lowest] = 1
            row += 1
    return torch.from_numpy(frames), torch.tensor(lengths, dtype=torch.long)


# ----------------------------------------------------------------------------- the data


@dataclass
class PianoRollDataSpec:
    name: str = "jsb"  # jsb (the only piano-roll data set; MIDI folders and music21's chorales: see genlab.data.music)
    resolution: str = "quarter"  # quarter | eighth | sixteenth (jsb: quarter is the benchmark)
    transpose: int = 0  # training only: shift each piece by a random -transpose..+transpose semitones

    def __post_init__(self):
        if self.name not in PIANOROLL_DATASETS:
            raise GenlabError(f"unknown piano-roll data set {self.name!r}",
                              f"use one of {', '.join(PIANOROLL_DATASETS)}")
        if self.resolution not in STEPS_PER_QUARTER:
            raise GenlabError(f"unknown data.resolution {self.resolution!r}",
                              f"use one of {', '.join(STEPS_PER_QUARTER)}")
        if not 0 <= self.transpose <= 12:
            raise GenlabError(f"data.transpose must be in 0..12 semitones, got {self.transpose}",
                              "0 turns transposition off; 2 to 6 are typical")


@dataclass
class PianoRollSplit:
    frames: torch.Tensor  # uint8 [total_frames, n_keys], the split's pieces one after another
    lengths: torch.Tensor  # int64 [pieces]
    offsets: torch.Tensor = field(init=False)  # int64 [pieces], where each piece starts in frames

    def __post_init__(self):
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())


@dataclass
class PianoRollData:
    spec: PianoRollDataSpec
    train: PianoRollSplit
    val: PianoRollSplit
    test: PianoRollSplit
    lowest_pitch: int = PIANO_LOWEST
    n_keys: int = PIANO_KEYS
    classes: list[str] = field(default_factory=list)  # no classes; kept for the artifact config
    value_range: tuple[float, float] = (0.0, 1.0)  # of the piano-roll preview images

    def split(self, name: str) -> PianoRollSplit:
        if name not in SPLIT_NAMES:
            raise GenlabError(f"unknown split {name!r}", "use train, val or test")
        return getattr(self, name)

    def num_examples(self, split: str) -> int:
        return len(self.split(split))  # one example = one whole piece

    @property
    def frame_seconds(self) -> float:
        return 0.5 / STEPS_PER_QUARTER[self.spec.resolution]  # a quarter note lasts 0.5 s at 120 bpm

    @property
    def frames_per_bar(self) -> int:
        return 4 * STEPS_PER_QUARTER[self.spec.resolution]  # chorales are in 4/4 (a few in 3/4)

    def model_fields(self) -> dict:
        """What a model config takes from the data (filled in by genlab.train)."""
        return {"n_keys": self.n_keys, "lowest_pitch": self.lowest_pitch,
                "frame_seconds": self.frame_seconds, "frames_per_bar": self.frames_per_bar}

    def batch(self, split: str, indices: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Pieces `indices` padded to the longest: frames x [B, T, n_keys] float, mask [B, T] bool."""
        part = self.split(split)
        indices = torch.as_tensor(indices, dtype=torch.long)
        lengths = part.lengths[indices]
        longest = int(lengths.max())
        steps = torch.arange(longest)
        mask = steps[None, :] < lengths[:, None]
        rows = (part.offsets[indices][:, None] + steps[None, :]).clamp(max=len(part.frames) - 1)
        x = part.frames[rows].float() * mask[..., None]
        if split == "train" and self.spec.transpose:
            x = self._transpose(x, generator)
        return {"x": x, "mask": mask}

    def _transpose(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Each piece shifted by its own random number of semitones (drawn from the Trainer's
        per-step generator, so a resumed run replays it); a shift that would push a note off
        the keyboard is clipped to the largest that keeps every note on it."""
        k = self.spec.transpose
        shifts = torch.randint(-k, k + 1, (len(x),), generator=generator)
        keys = torch.arange(self.n_keys)
        out = torch.zeros_like(x)
        for i, shift in enumerate(shifts.tolist()):
            sounding = keys[x[i].amax(0) > 0]
            if len(sounding):
                shift = max(-int(sounding.min()), min(shift, self.n_keys - 1 - int(sounding.max())))
            if shift >= 0:
                out[i, :, shift:] = x[i, :, : self.n_keys - shift]
            else:
                out[i, :, :shift] = x[i, :, -shift:]
        return out


def load_pianoroll_data(spec: PianoRollDataSpec | dict | str, root: Path | None = None) -> PianoRollData:
    """Load a piano-roll data set: every split as frames over the 88 piano keys."""
    from ..config import from_dict

    if isinstance(spec, str):
        spec = PianoRollDataSpec(name=spec)
    elif isinstance(spec, dict):
        spec = from_dict(PianoRollDataSpec, spec, "data")
    pieces = load_jsb_pieces(spec.resolution, root)
    splits = {name: PianoRollSplit(*pieces_to_frames(pieces[key])) for name, key in SPLIT_NAMES.items()}
    return PianoRollData(spec=spec, **splits)


def pianoroll_dataset_status(name: str, root: Path) -> str:
    """present (the benchmark's quarter-note file is on disk) or download."""
    if name not in PIANOROLL_DATASETS:
        raise GenlabError(f"unknown piano-roll data set {name!r}", f"use one of {', '.join(PIANOROLL_DATASETS)}")
    return "present" if (Path(root) / JSB_FOLDER / JSB_FILES["quarter"].filename).is_file() else "download"
