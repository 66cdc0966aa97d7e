"""A model directory's tokenizer.json, whichever kind of tokenizer wrote it: a text model's (char,
byte, BPE: genlab.data.text) or a text-pair model's joint vocabulary (genlab.data.pairs).

One reader for genlab.artifact, so that loading any model restores its tokenizer; it sits beside
the two modules rather than in one of them because pairs already imports text.
"""

from __future__ import annotations

import json
from pathlib import Path

from .pairs import pair_tokenizer_from_json
from .text import read_tokenizer_file, tokenizer_from_json


def load_tokenizer(directory: Path):
    """The tokenizer saved in `directory` (artifact.save writes it with the model)."""
    text, path = read_tokenizer_file(directory, "a text model")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # tokenizer_from_json says what is wrong with it
    if isinstance(data, dict) and data.get("genlab_tokenizer") == "pairs":
        return pair_tokenizer_from_json(text, path)
    return tokenizer_from_json(text, path)
