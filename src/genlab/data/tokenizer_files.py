"""A model directory's tokenizer.json, whichever kind of tokenizer wrote it: a text model's (char,
byte, BPE: genlab.data.text) or a text-pair model's joint vocabulary (genlab.data.pairs).

One reader for genlab.artifact, so that loading any model restores its tokenizer; it sits beside
the two modules rather than in one of them because each already imports the other's neighbours
(pairs reads its files with text's reader), and the data layer has no import cycles.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import GenlabError
from .pairs import PairTokenizer
from .text import TOKENIZER_NAME, tokenizer_from_json


def load_tokenizer(directory: Path):
    """The tokenizer saved in `directory` (artifact.save writes it with the model)."""
    path = Path(directory) / TOKENIZER_NAME
    if not path.is_file():
        raise GenlabError(f"{directory} has no {TOKENIZER_NAME}",
                          "a text model needs its tokenizer; copy the model directory as a whole")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GenlabError(f"cannot read {path} ({e})", "restore the file or train the model again") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # tokenizer_from_json says what is wrong with it
    if isinstance(data, dict) and data.get("genlab_tokenizer") == "pairs":
        return PairTokenizer.from_dict(data, str(path))
    return tokenizer_from_json(text, str(path))
