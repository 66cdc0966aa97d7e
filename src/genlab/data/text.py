"""Text data: corpora, tokenizers, and a corpus as one in-memory token stream.

Corpora (`data.name`):

    pydoc              the English help texts that ship with CPython (pydoc_data.topics); embedded
    tinyshakespeare    the char-rnn corpus (Karpathy 2015), 1.1 MB, checksummed download
    file:PATH          your UTF-8 text file
    folder:DIR         every file under DIR (UTF-8 text), in sorted path order

A corpus is split contiguously, in this order: train | val | test (the last
`val_fraction + test_fraction` of the characters). Contiguous, not shuffled, because
neighbouring sentences share words and names: a shuffled split would leak them into the
held-out text and flatter the model.

Tokenizers (`data.tokenizer`):

    char   one token per character of the corpus's alphabet (nanoGPT's shakespeare_char)
    byte   one token per UTF-8 byte, 256 symbols: any text, no unknown characters
    bpe    byte-level BPE (GPT-2 style) learnt with Hugging Face `tokenizers` on the train
           split, `data.vocab_size` tokens; any text, no unknown characters

A tokenizer is saved as `tokenizer.json` in the model directory: Hugging Face's own format
for BPE (so `tokenizers.Tokenizer.from_file` reads it too), a small genlab JSON for char
and byte.

Batches. Each split is one int32 token tensor. A training batch is `batch_size` random
windows of block_size + 1 tokens (inputs and their next-token targets), drawn from the
generator the Trainer seeds per step, so a resumed run draws the same windows; gathering
them is one vectorised index. Validation and test batches are the split's consecutive
non-overlapping windows, so a pass over them scores every token of the split once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import GenlabError, warn
from .download import RemoteFile, ensure_files

# Nothing in genlab asks the Hugging Face hub for anything; make sure no library does either.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = [
    "TEXT_DATASETS", "TOKENIZERS", "TextDataSpec", "TextSplit", "TextData", "load_text_data", "load_corpus",
    "CharTokenizer", "ByteTokenizer", "BPETokenizer", "train_tokenizer", "tokenizer_from_json",
    "load_tokenizer", "save_tokenizer", "text_dataset_status", "TOKENIZER_NAME",
]  # fmt: skip

TOKENIZER_NAME = "tokenizer.json"
TOKENIZERS = ("char", "byte", "bpe")
DEFAULT_BPE_VOCAB = 1024

TEXT_DATASETS: dict[str, str] = {
    "pydoc": "the English help texts that ship with CPython (pydoc_data.topics), ~465k characters; "
    "embedded, no download (PSF license)",
    "tinyshakespeare": "Shakespeare's plays, 1.1M characters, the char-rnn corpus; 1.1 MB download "
    "(Karpathy 2015; public-domain text)",
    "file:PATH": "your UTF-8 text file",
    "folder:DIR": "every file under DIR (UTF-8 text), joined in sorted path order",
}

# sha256 of input.txt in karpathy/char-rnn at commit 6f9487a (1,115,394 bytes), as verified
# in shared/data/tinyshakespeare/SHA256SUMS.
TINYSHAKESPEARE = RemoteFile(
    "input.txt",
    ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


# ----------------------------------------------------------------------------- corpora


def text_dataset_status(name: str, root: Path) -> str:
    if name == "pydoc":
        return "embedded"
    if name == "tinyshakespeare":
        return "present" if (Path(root) / name / TINYSHAKESPEARE.filename).is_file() else "download"
    if name in TEXT_DATASETS:
        return "local"
    raise _unknown(name)


def _unknown(name: str) -> GenlabError:
    return GenlabError(
        f"unknown text corpus {name!r}",
        "use pydoc (embedded), tinyshakespeare, or your own text as file:PATH or folder:DIR",
    )


def load_corpus(name: str, root: Path) -> str:
    """The whole text of corpus `name` as one string (line endings normalised to \\n)."""
    if name == "pydoc":
        try:
            from pydoc_data.topics import topics
        except ImportError:
            raise GenlabError(
                "this Python installation lacks pydoc_data (some Linux distributions ship it separately)",
                "use data.name=tinyshakespeare or your own text (file:PATH), or install the full Python",
            ) from None
        # Sorted by topic name so the corpus (and its split) is the same in every run.
        return "\n\n".join(topics[key].strip("\n") + "\n" for key in sorted(topics))
    if name == "tinyshakespeare":
        (path,) = ensure_files(name, [TINYSHAKESPEARE], root)
        return read_text_file(path)
    prefix, _, arg = name.partition(":")
    if prefix in ("file", "folder") and not arg:
        raise GenlabError(f"data set {name!r} needs a path after the colon", f"for example {prefix}:/path/to/text")
    if prefix == "file":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise GenlabError(f"file: {path} does not exist or is not a file", "give the path of a UTF-8 text file")
        return read_text_file(path)
    if prefix == "folder":
        return _read_folder(Path(arg).expanduser())
    raise _unknown(name)


def read_text_file(path: Path) -> str:
    """A file's text, decoded strictly as UTF-8: a model of mis-decoded text learns mojibake."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise GenlabError(f"cannot read {path}: {e.strerror or e}") from None
    if not raw:
        raise GenlabError(f"{path} is empty", "give a file with some text in it")
    convert = f"convert it to UTF-8 first, e.g. `iconv -f LATIN1 -t UTF-8 {path} > converted.txt`"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise GenlabError(f"{path} is UTF-16 or UTF-32 text (it starts with that byte-order mark), not UTF-8",
                          f"convert it, e.g. `iconv -f UTF-16 -t UTF-8 {path} > converted.txt`")
    if b"\x00" in raw:
        raise GenlabError(f"{path} contains NUL bytes: it is a binary file (or UTF-16 text without a byte-order mark), "
                          "not UTF-8 text",
                          "give a plain-text file (e.g. .txt, .md): export documents to plain text, "
                          "convert UTF-16 with iconv")
    try:
        text = raw.decode("utf-8-sig")  # -sig: a leading UTF-8 byte-order mark is not part of the text
    except UnicodeDecodeError as e:
        raise GenlabError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start} is invalid)",
                          convert) from None
    if not text:  # a UTF-8 byte-order mark and nothing else
        raise GenlabError(f"{path} is empty", "give a file with some text in it")
    # Windows line endings would double every line break in the model's alphabet and statistics.
    return text.replace("\r\n", "\n")


def _read_folder(folder: Path) -> str:
    if not folder.is_dir():
        raise GenlabError(f"folder: {folder} does not exist or is not a folder", "give a folder of UTF-8 text files")
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip
    documents, empty = [], []
    for path in files:
        if path.stat().st_size == 0:
            empty.append(str(path.relative_to(folder)))
            continue
        text = read_text_file(path)
        documents.append(text if text.endswith("\n") else text + "\n")
    if empty:
        warn(f"skipped {len(empty)} empty file(s) in {folder}: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}")
    if not documents:
        raise GenlabError(f"{folder} holds no text files", "put UTF-8 text files (any name, any depth) in the folder")
    # A blank line between documents, so one file's last line does not run into the next file.
    return "\n".join(documents)


# ----------------------------------------------------------------------------- tokenizers


class CharTokenizer:
    """One token per character; the alphabet is every character of the corpus, in code-point order."""

    kind = "char"

    def __init__(self, symbols: list[str]):
        if not symbols or any(len(s) != 1 for s in symbols) or len(set(symbols)) != len(symbols):
            raise GenlabError("a char tokenizer needs a list of distinct single characters")
        self.symbols = sorted(symbols)
        self._codes = np.array([ord(s) for s in self.symbols], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(list(set(text)))  # __init__ sorts them

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def default_prompt(self) -> str:
        return "\n" if "\n" in self.symbols else self.symbols[0]

    def encode(self, text: str) -> np.ndarray:
        codes = _code_points(text)
        ids = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
        unknown = self._codes[ids] != codes
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown]})
            shown = ", ".join(repr(c) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise GenlabError(
                f"the text has {len(missing)} character(s) this char-level model has never seen: {shown}",
                f"use only characters of its {self.vocab_size}-character alphabet, "
                "or train with data.tokenizer=byte or bpe, which encode any text",
            )
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        return "".join(self.symbols[i] for i in _id_list(ids, self.vocab_size))

    def to_json(self) -> str:
        return json.dumps({"genlab_tokenizer": "char", "symbols": self.symbols}, ensure_ascii=False)


class ByteTokenizer:
    """One token per UTF-8 byte: 256 symbols encode any text; a character may take up to 4 tokens."""

    kind = "byte"
    vocab_size = 256
    default_prompt = "\n"

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(_utf8(text), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        # A cut-off multi-byte character (mid-generation) decodes to U+FFFD rather than failing.
        return bytes(_id_list(ids, 256)).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"genlab_tokenizer": "byte"})


class BPETokenizer:
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant) from Hugging Face `tokenizers`.

    Text is split GPT-2 style (words with their leading space, digits, punctuation), mapped to
    bytes, and merged by the learnt merges. Byte-level means the 256 bytes are in the base
    vocabulary: any text encodes, and decoding reproduces it exactly.
    """

    kind = "bpe"
    default_prompt = "\n"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
            special_tokens=[],
            show_progress=False,
        )
        tokenizer.train_from_iterator(_chunks(text), trainer=trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        _utf8(text)  # the same clear error as the byte tokenizer for unencodable strings
        return np.asarray(self.tokenizer.encode(text).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(_id_list(ids, self.vocab_size), skip_special_tokens=False)

    def to_json(self) -> str:
        return self.tokenizer.to_str()


def _chunks(text: str, size: int = 1 << 16):
    """The text in pieces of about `size` characters, cut after a line break so no word is split:
    what BPE training reads."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end == -1 else end + 1
        yield text[start:end]
        start = end


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise GenlabError(f"the text is not valid Unicode: {e.reason} at position {e.start}",
                          "lone surrogate code points cannot be encoded; check how the text was read") from None


def _code_points(text: str) -> np.ndarray:
    try:
        return np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.uint32)
    except UnicodeEncodeError as e:
        raise GenlabError(f"the text is not valid Unicode: {e.reason} at position {e.start}") from None


def _id_list(ids, vocab_size: int) -> list[int]:
    ids = ids.tolist() if isinstance(ids, (torch.Tensor, np.ndarray)) else list(ids)
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise GenlabError(f"token id {bad[0]} is out of range for a vocabulary of {vocab_size}")
    return ids


def train_tokenizer(kind: str, train_text: str, full_text: str, vocab_size: int | None = None):
    if kind == "char":
        # The whole corpus's alphabet, so validation never meets an unknown character. It
        # reveals only which characters occur, nothing of the held-out text's content.
        return CharTokenizer.from_text(full_text)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.train(train_text, vocab_size or DEFAULT_BPE_VOCAB)
    raise GenlabError(f"unknown tokenizer {kind!r}", f"use one of {', '.join(TOKENIZERS)}")


def tokenizer_from_json(text: str, source: str = "tokenizer.json"):
    damaged = "the file is damaged; restore it or train the model again"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenlabError(f"{source} is not valid JSON ({e})", damaged) from None
    if not isinstance(data, dict):
        raise GenlabError(f"{source} is not a tokenizer", damaged)
    kind = data.get("genlab_tokenizer")
    if kind == "char":
        symbols = data.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise GenlabError(f"{source} is not a char tokenizer: its symbols are not a list of characters", damaged)
        return CharTokenizer(symbols)
    if kind == "byte":
        return ByteTokenizer()
    if isinstance(data.get("model"), dict) and data["model"].get("type") == "BPE":
        from tokenizers import Tokenizer

        try:
            return BPETokenizer(Tokenizer.from_str(text))
        except Exception as e:  # the Rust side raises plain Exceptions for malformed files
            raise GenlabError(f"{source} is not a readable BPE tokenizer ({e})", damaged) from None
    raise GenlabError(f"{source} is not a char, byte or BPE tokenizer", damaged)


def save_tokenizer(tokenizer, directory: Path) -> Path:
    from ..fileio import atomic_write_text

    path = Path(directory) / TOKENIZER_NAME
    atomic_write_text(path, tokenizer.to_json() + "\n")
    return path


def read_tokenizer_file(directory: Path, model: str = "a text model") -> tuple[str, str]:
    """(the text of DIRECTORY/tokenizer.json, its path), or a GenlabError saying what is wrong with it."""
    path = Path(directory) / TOKENIZER_NAME
    if not path.is_file():
        raise GenlabError(f"{directory} has no {TOKENIZER_NAME}",
                          f"{model} needs its tokenizer; copy the model directory as a whole")
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as e:
        raise GenlabError(f"cannot read {path} ({e})", "restore the file or train the model again") from None


def load_tokenizer(directory: Path):
    return tokenizer_from_json(*read_tokenizer_file(directory))


# ----------------------------------------------------------------------------- the data


@dataclass
class TextDataSpec:
    name: str = "pydoc"  # pydoc | tinyshakespeare | file:PATH | folder:DIR
    tokenizer: str = "char"  # char | byte | bpe
    vocab_size: int | None = None  # bpe only: vocabulary to learn (default 1024); char and byte are fixed
    block_size: int = 128  # tokens per training window; a GPT's context length
    val_fraction: float = 0.05  # the text after the train part, held out for validation
    test_fraction: float = 0.05  # the end of the text, held out for the final test

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise GenlabError(f"unknown data.tokenizer {self.tokenizer!r}", f"use one of {', '.join(TOKENIZERS)}")
        if self.tokenizer == "bpe":
            self.vocab_size = DEFAULT_BPE_VOCAB if self.vocab_size is None else self.vocab_size
            if self.vocab_size < 257:
                raise GenlabError(f"data.vocab_size must be more than the 256 byte symbols for BPE, got {self.vocab_size}",
                                  "a typical value is 1024 to 8192; use data.tokenizer=byte for bytes alone")
        elif self.vocab_size is not None:
            raise GenlabError(f"data.vocab_size applies only to data.tokenizer=bpe, not {self.tokenizer}",
                              "remove it: the char and byte vocabularies are fixed by the text")
        if self.block_size < 1:
            raise GenlabError(f"data.block_size must be at least 1, got {self.block_size}", "a typical value is 128 or 256")
        if not 0.0 < self.val_fraction < 1.0 or not 0.0 <= self.test_fraction < 1.0:
            raise GenlabError("data.val_fraction must be in (0, 1) and data.test_fraction in [0, 1)",
                              f"got {self.val_fraction} and {self.test_fraction}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise GenlabError("data.val_fraction + data.test_fraction leave too little text to train on",
                              "typical values are 0.05 each")


@dataclass
class TextSplit:
    tokens: torch.Tensor  # int32 [N], the split's text as one token stream
    num_chars: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def tokens_per_char(self) -> float:
        return len(self.tokens) / max(self.num_chars, 1)


class TokenWindows:
    """What token-stream data sets (text, music events) share: splits held as one token stream
    each, read in windows of spec.block_size + 1 tokens. Subclasses have spec, train, val, test."""

    def split(self, name: str):
        if name not in ("train", "val", "test"):
            raise GenlabError(f"unknown split {name!r}", "use train, val or test")
        return getattr(self, name)

    def num_examples(self, split: str) -> int:
        """Non-overlapping windows of block_size + 1 tokens (consecutive windows share one token)."""
        return max(0, (len(self.split(split)) - 1) // self.spec.block_size)

    def windows(self, split: str, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, block_size + 1] int64 token windows: consecutive ones for val/test, random ones for train."""
        part = self.split(split)
        block = self.spec.block_size
        if split == "train":
            # Random offsets rather than the indices' fixed positions: over many steps the model
            # sees every alignment of the stream. The draw comes from the Trainer's per-step
            # generator, so a resumed run replays the same windows.
            starts = torch.randint(len(part) - block, (len(indices),), generator=generator)
        else:
            starts = torch.as_tensor(indices, dtype=torch.long) * block
        return part.tokens[starts[:, None] + torch.arange(block + 1)].long()


@dataclass
class TextData(TokenWindows):
    spec: TextDataSpec
    tokenizer: object
    train: TextSplit
    val: TextSplit
    test: TextSplit
    classes: list[str] = field(default_factory=list)  # text has no classes; kept for the artifact config

    def model_fields(self) -> dict:
        """What a model config takes from the data (filled in by genlab.train)."""
        return {"vocab_size": self.tokenizer.vocab_size, "block_size": self.spec.block_size}

    def batch(self, split: str, indices: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        return {"x": self.windows(split, indices, generator), "tokens_per_char": self.split(split).tokens_per_char}


def load_text_data(spec: TextDataSpec | dict | str, tokenizer=None, root: Path | None = None) -> TextData:
    """Load a corpus, split it contiguously and tokenize it.

    A tokenizer is learnt from the text unless one is given (a resumed run or an evaluation
    uses the model's own, from its tokenizer.json).
    """
    from ..config import from_dict
    from .download import data_root

    if isinstance(spec, str):
        spec = TextDataSpec(name=spec)
    elif isinstance(spec, dict):
        spec = from_dict(TextDataSpec, spec, "data")
    text = load_corpus(spec.name, root if root is not None else data_root())
    n_val = int(round(len(text) * spec.val_fraction))
    n_test = int(round(len(text) * spec.test_fraction))
    n_train = len(text) - n_val - n_test
    parts = {"train": text[:n_train], "val": text[n_train : n_train + n_val], "test": text[n_train + n_val :]}
    if tokenizer is None:
        tokenizer = train_tokenizer(spec.tokenizer, parts["train"], text, spec.vocab_size)
    elif tokenizer.kind != spec.tokenizer:
        raise GenlabError(f"the model's tokenizer is {tokenizer.kind}, but the data asks for {spec.tokenizer}")
    splits = {}
    for name, part in parts.items():
        splits[name] = TextSplit(torch.from_numpy(tokenizer.encode(part)), len(part))
    needed = spec.block_size + 1
    for name in ("train", "val") + (("test",) if spec.test_fraction > 0 else ()):
        if len(splits[name]) < needed:
            raise GenlabError(
                f"the {name} split of {spec.name} has {len(splits[name])} tokens, fewer than one window of "
                f"block_size + 1 = {needed} (the corpus has {len(text):,} characters)",
                "use more text, a smaller data.block_size, or a larger data.val_fraction / data.test_fraction",
            )
    return TextData(spec=spec, tokenizer=tokenizer, **splits)

