"""Text data: corpora, tokenizers, and a corpus as one in-memory token stream.

Corpora (`data.name`):

    pydoc              the English help texts that ship with CPython (pydoc_data.topics); embedded
    tinyshakespeare    the char-rnn corpus (Karpathy 2015), 1.1 MB, checksummed download
    file:PATH          your text file
    folder:DIR         every file under DIR, in sorted path order
    labeled:FILE       your TSV/CSV with a header line: a text column and a label column
                       (data.text_column, default "text"; data.label_column, default "label")
    styles:A+B+...     several corpora, each a style (see below), e.g. styles:tinyshakespeare+pydoc

Encodings. Your files (file:, folder:) are read as UTF-8 when they are UTF-8; otherwise by
detection: a byte-order mark says UTF-16, UTF-32 or UTF-8, else cp1252 (Windows' Western
European), else Latin-1, with a notice naming the encoding used. `data.encoding=NAME`
(any Python codec, e.g. cp1251, shift_jis) forces one. Windows line ends (CRLF) become LF.

A corpus is split contiguously, in this order: train | val | test (the last
`val_fraction + test_fraction` of the characters). Contiguous, not shuffled, because
neighbouring sentences share words and names: a shuffled split would leak them into the
held-out text and flatter the model.

Styles ("write like a given author"). With `data.styles=true`, a `folder:DIR` is one style
per sub-folder of DIR (the sub-folder's name is the style's; its files at any depth are the
style's text); `styles:A+B` names are styled by themselves, one style per corpus (its name,
or a file's or folder's own name for file:PATH and folder:DIR). Each style's text is split
train | val | test on its own. The tokenizer gets one control token per style, `<style:NAME>`,
numbered after its base tokens; a training window is that token followed by block_size
tokens of the style's text, so the model learns p(text | style). One window in ten goes
without its style token (plain text, as an unstyled model sees it), so generating without
a style still starts in-distribution: it writes in any of the styles. A folder:DIR with
sub-folders is one corpus unless data.styles=true (as before styles existed), with a notice.
A `labeled:FILE` is one style per label (in the order labels first appear in the file), its
rows' texts joined by newlines in file order; with data.styles=false it is one corpus, every
row's text in file order.

Tokenizers (`data.tokenizer`):

    char   one token per character of the corpus's alphabet (nanoGPT's shakespeare_char)
    byte   one token per UTF-8 byte, 256 symbols: any text, no unknown characters
    bpe    byte-level BPE (GPT-2 style) learnt with Hugging Face `tokenizers` on the train
           split, `data.vocab_size` tokens; any text, no unknown characters

A tokenizer is saved as `tokenizer.json` in the model directory: Hugging Face's own format
for BPE (so `tokenizers.Tokenizer.from_file` reads it too), a small genlab JSON for char
and byte. A styled tokenizer is a genlab JSON holding the style names and its base tokenizer
(for BPE, Hugging Face's JSON under "base").

Batches. Each split is one int32 token tensor. A training batch is `batch_size` random
windows of block_size + 1 tokens (inputs and their next-token targets), drawn from the
generator the Trainer seeds per step, so a resumed run draws the same windows; gathering
them is one vectorised index. Validation and test batches are the split's consecutive
non-overlapping windows, so a pass over them scores every token of the split once.
"""

from __future__ import annotations

import codecs
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
    "load_tokenizer", "save_tokenizer", "text_dataset_status", "TOKENIZER_NAME", "read_text_file",
    "StyledTokenizer", "StyledTextData", "load_style_corpora", "style_token", "UNSTYLED_SHARE",
]  # fmt: skip

TOKENIZER_NAME = "tokenizer.json"
TOKENIZERS = ("char", "byte", "bpe")
DEFAULT_BPE_VOCAB = 1024

TEXT_DATASETS: dict[str, str] = {
    "pydoc": "the English help texts that ship with CPython (pydoc_data.topics), ~465k characters; "
    "embedded, no download (PSF license)",
    "tinyshakespeare": "Shakespeare's plays, 1.1M characters, the char-rnn corpus; 1.1 MB download "
    "(Karpathy 2015; public-domain text)",
    "file:PATH": "your text file (UTF-8, or a legacy encoding with a notice; data.encoding=NAME forces one)",
    "folder:DIR": "every file under DIR, joined in sorted path order; with data.styles=true, one style per sub-folder",
    "labeled:FILE": "your TSV/CSV with a header line: one style per value of its label column "
    "(data.text_column, data.label_column; default text, label)",
    "styles:A+B": "several corpora, one style each (e.g. styles:tinyshakespeare+pydoc): "
    "genlab generate MODEL --style NAME",
}
STYLES_PREFIX = "styles:"
LABELED_PREFIX = "labeled:"
UNSTYLED_SHARE = 0.1  # training windows without their style token: generating without a style stays in-distribution

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
    if name.startswith(STYLES_PREFIX) and name != "styles:A+B":
        statuses = {text_dataset_status(part, root) for part in _style_parts(name)}
        return next(s for s in ("download", "present", "local", "embedded") if s in statuses)
    if name in TEXT_DATASETS:
        return "local"
    raise _unknown(name)


def _unknown(name: str) -> GenlabError:
    return GenlabError(
        f"unknown text corpus {name!r}",
        "use pydoc (embedded), tinyshakespeare, your own text as file:PATH or folder:DIR, "
        "labeled:FILE (a TSV/CSV with text and label columns) or styles:A+B for one style per corpus",
    )


def load_corpus(name: str, root: Path, encoding: str | None = None, text_column: str = "text") -> str:
    """The whole text of corpus `name` as one string (line endings normalised to \\n).

    encoding: how to read your files (file:, folder:); None detects it (module docstring).
    text_column: labeled:FILE's column of texts."""
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
    if prefix in ("file", "folder", "styles", "labeled") and not arg:
        raise GenlabError(f"data set {name!r} needs a path after the colon", f"for example {prefix}:/path/to/text"
                          if prefix != "styles" else "for example styles:tinyshakespeare+pydoc")
    if prefix == "file":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise GenlabError(f"file: {path} does not exist or is not a file", "give the path of a text file")
        return read_text_file(path, encoding, notice=True)
    if prefix == "folder":
        return _read_folder(Path(arg).expanduser(), encoding)
    if prefix == "labeled":
        return "\n".join(text for text, _ in _labeled_rows(Path(arg).expanduser(), text_column, None, encoding))
    if prefix == "styles":
        raise GenlabError(f"{name} is several corpora, one per style, not one text",
                          "read it with load_style_corpora (or load_text_data, which splits each style)")
    raise _unknown(name)


# ----------------------------------------------------------------------------- reading files

TEXT_ENCODING_HINT = "e.g. data.encoding=cp1252, latin-1, utf-16, cp1251 or shift_jis (any Python codec)"
BYTE_ORDER_MARKS = (  # longest first: UTF-32-LE's mark begins with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32",
                  "cp1252": "cp1252 (Windows Western European)", "latin-1": "Latin-1 (ISO-8859-1)"}


def check_encoding(name: str) -> str:
    """`name` if Python can decode text with it, else a GenlabError (data.encoding)."""
    try:
        # Python's own test for str.decode: bytes-to-bytes codecs (base64, hex, ...) are not text encodings.
        known = isinstance(name, str) and getattr(codecs.lookup(name), "_is_text_encoding", True)
    except LookupError:
        known = False
    if not known:
        raise GenlabError(f"unknown text encoding data.encoding={name!r}", TEXT_ENCODING_HINT, param="encoding")
    return name


def read_text_file(path: Path, encoding: str | None = "utf-8", *, notice: bool = False) -> str:
    """A file's text with line ends normalised to \\n.

    encoding "utf-8" (the default) reads strictly UTF-8 (a byte-order mark dropped): a model of
    mis-decoded text learns mojibake. None detects the encoding (byte-order mark, else UTF-8,
    else cp1252, else Latin-1); with notice=True a file that is not UTF-8 gets a notice naming
    the encoding read. Any other name forces that codec."""
    text, used = decode_text_file(path, encoding)
    if notice and encoding is None and used not in ("utf-8", "utf-8-sig"):
        warn(_encoding_notice(used, [str(path)]))
    return text


def _encoding_notice(used: str, paths: list[str]) -> str:
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return (f"read {shown} as {ENCODING_NAMES.get(used, used)}: not UTF-8 "
            "(set data.encoding=NAME if the text looks wrong)")


def decode_text_file(path: Path, encoding: str | None = "utf-8") -> tuple[str, str]:
    """(the file's text, the codec that read it); see read_text_file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise GenlabError(f"cannot read {path}: {e.strerror or e}") from None
    if not raw:
        raise GenlabError(f"{path} is empty", "give a file with some text in it")
    if encoding is None:
        text, used = _detect(raw, path)
    elif encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        text, used = _strict_utf8(raw, path, detecting=False), "utf-8"
    else:
        try:
            text, used = raw.decode(check_encoding(encoding)), encoding
        except UnicodeDecodeError as e:
            raise GenlabError(f"{path} is not {encoding} text (bytes at offset {e.start} cannot be decoded: {e.reason})",
                              "leave data.encoding unset to detect the encoding, or give the right one") from None
        text = text.removeprefix("\ufeff")
    if not text:  # a byte-order mark and nothing else
        raise GenlabError(f"{path} is empty", "give a file with some text in it")
    # Windows line endings would double every line break in the model's alphabet and statistics.
    return text.replace("\r\n", "\n"), used


def _strict_utf8(raw: bytes, path: Path, detecting: bool) -> str | None:
    """raw as UTF-8 (a leading byte-order mark dropped); None when detecting and it is not UTF-8."""
    if not detecting:
        convert = f"convert it to UTF-8 first, e.g. `iconv -f LATIN1 -t UTF-8 {path} > converted.txt`"
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise GenlabError(f"{path} is UTF-16 or UTF-32 text (it starts with that byte-order mark), not UTF-8",
                              f"convert it, e.g. `iconv -f UTF-16 -t UTF-8 {path} > converted.txt`")
        _refuse_binary(raw, path)
    try:
        return raw.decode("utf-8-sig")  # -sig: a leading UTF-8 byte-order mark is not part of the text
    except UnicodeDecodeError as e:
        if detecting:
            return None
        raise GenlabError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start} is invalid)",
                          convert) from None


def _refuse_binary(raw: bytes, path: Path) -> None:
    if b"\x00" in raw:
        raise GenlabError(f"{path} contains NUL bytes: it is a binary file (or UTF-16 text without a byte-order mark), "
                          "not text",
                          "give a plain-text file (e.g. .txt, .md): export documents to plain text; "
                          "for UTF-16 without a byte-order mark set data.encoding=utf-16-le (or -be)")


def _detect(raw: bytes, path: Path) -> tuple[str, str]:
    """Decode by the byte-order mark, else UTF-8, else cp1252, else Latin-1 (which decodes any bytes)."""
    for mark, codec in BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            try:
                return raw.decode(codec).removeprefix("\ufeff"), codec
            except UnicodeDecodeError as e:
                raise GenlabError(f"{path} starts with a {ENCODING_NAMES[codec]} byte-order mark but is not "
                                  f"{ENCODING_NAMES[codec]} text (offset {e.start}: {e.reason})",
                                  "set data.encoding=NAME to the file's encoding") from None
    _refuse_binary(raw, path)
    text = _strict_utf8(raw, path, detecting=True)
    if text is not None:
        return text, "utf-8"
    for codec in ("cp1252", "latin-1"):  # cp1252 leaves five bytes undefined; Latin-1 none
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        # Latin-1 reads any bytes: a file that is mostly control characters is binary, not text.
        controls = sum(1 for c in text if c < " " and c not in "\t\n\r\f\v" or "\x7f" <= c < "\xa0")
        if controls > 0.01 * len(text):
            raise GenlabError(f"{path} is neither UTF-8 nor legacy 8-bit text: {controls:,} of its {len(text):,} "
                              "characters would be control characters (a binary file?)",
                              f"give a plain-text file, or set data.encoding=NAME ({TEXT_ENCODING_HINT})")
        return text, codec
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _text_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, at any depth, in sorted path order."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def _read_folder(folder: Path, encoding: str | None = None) -> str:
    if not folder.is_dir():
        raise GenlabError(f"folder: {folder} does not exist or is not a folder", "give a folder of text files")
    documents, empty, legacy = [], [], {}
    for path in _text_files(folder):
        if path.stat().st_size == 0:
            empty.append(str(path.relative_to(folder)))
            continue
        text, used = decode_text_file(path, encoding)
        if encoding is None and used not in ("utf-8", "utf-8-sig"):
            legacy.setdefault(used, []).append(str(path.relative_to(folder)))
        documents.append(text if text.endswith("\n") else text + "\n")
    for used, paths in legacy.items():  # one notice per encoding, not one per file
        warn(_encoding_notice(used, paths) + f" (in {folder})")
    if empty:
        warn(f"skipped {len(empty)} empty file(s) in {folder}: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}")
    if not documents:
        raise GenlabError(f"{folder} holds no text files", "put text files (any name, any depth) in the folder")
    # A blank line between documents, so one file's last line does not run into the next file.
    return "\n".join(documents)


# ----------------------------------------------------------------------------- styles


def _style_parts(name: str) -> list[str]:
    parts = name[len(STYLES_PREFIX):].split("+")
    if len(parts) < 2 or not all(parts):
        raise GenlabError(f"{name!r} needs two or more corpora joined by +",
                          "for example styles:tinyshakespeare+pydoc or styles:file:austen.txt+file:dickens.txt")
    if any(part.startswith(STYLES_PREFIX) for part in parts):
        raise GenlabError(f"{name!r}: a styles: corpus cannot hold another styles: corpus")
    return parts


def _style_name(part: str) -> str:
    """A styles:A+B part's style: a built-in corpus's name, your file's or folder's own name."""
    prefix, _, arg = part.partition(":")
    return Path(arg).expanduser().resolve().name if prefix in ("file", "folder") and arg else part


def _style_subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_style_corpora(name: str, root: Path, encoding: str | None = None, text_column: str = "text",
                       label_column: str = "label") -> dict[str, str]:
    """{style: its whole text}, in the corpus's order: the sub-folders of folder:DIR (sorted by
    name), the corpora of styles:A+B (as written) or the labels of labeled:FILE (as they first appear)."""
    if name.startswith(LABELED_PREFIX) and name[len(LABELED_PREFIX):]:
        path = Path(name[len(LABELED_PREFIX):]).expanduser()
        texts: dict[str, list[str]] = {}
        for text, label in _labeled_rows(path, text_column, label_column, encoding):
            texts.setdefault(label, []).append(text)
        if len(texts) < 2:
            raise GenlabError(f"{path} has {len(texts)} label(s) in its column {label_column!r}; styles need at least two",
                              "give rows of two or more labels, or data.styles=false to train on the texts as one corpus")
        return {label: "\n".join(rows) for label, rows in texts.items()}
    if name.startswith(STYLES_PREFIX):
        corpora = {}
        for part in _style_parts(name):
            style = _style_name(part)
            if style in corpora:
                raise GenlabError(f"{name!r} has two styles named {style!r}",
                                  "give each file or folder its own name: the name is the style's")
            corpora[style] = load_corpus(part, root, encoding)
        return corpora
    prefix, _, arg = name.partition(":")
    if prefix != "folder" or not arg:
        raise GenlabError(f"data.styles=true needs folder:DIR (one sub-folder per style), labeled:FILE or styles:A+B, "
                          f"not {name!r}",
                          "remove data.styles, or give data.name=folder:DIR with a sub-folder per author or style")
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        raise GenlabError(f"folder: {folder} does not exist or is not a folder",
                          "give a folder with one sub-folder of text files per style")
    subfolders = _style_subfolders(folder)
    if len(subfolders) < 2:
        raise GenlabError(f"{folder} has {len(subfolders)} sub-folder(s); data.styles=true needs one per style, "
                          "at least two", "put each author's or style's text files in a sub-folder named after it")
    loose = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        warn(f"data.styles=true: skipped {len(loose)} file(s) directly in {folder} ({', '.join(sorted(loose)[:5])}): "
             "only the sub-folders are styles")
    return {sub.name: _read_folder(sub, encoding) for sub in subfolders}


def _labeled_rows(path: Path, text_column: str, label_column: str | None,
                  encoding: str | None = None) -> list[tuple[str, str]]:
    """(text, label) of each row of a labeled:FILE with both cells non-empty (label "" when
    label_column is None); rows with an empty cell are skipped with a notice. The file is read
    as your other files are (UTF-8, else detected with a notice, or `encoding`)."""
    from .tables import read_columns, require_table

    require_table(path, "labeled")
    columns = {"text_column": text_column, **({"label_column": label_column} if label_column else {})}
    rows = [(text, label[0] if label else "") for _, (text, *label) in read_columns(
        path, read_text_file(path, encoding, notice=True), columns, filled=len(columns),
        filled_names="text or label" if label_column else "text")]
    if not rows:
        raise GenlabError(f"{path} has no texts after its header line", "add one text (and its label) per line")
    return rows


def _hint_styles(name: str) -> None:
    """A notice when a folder:DIR read as one corpus looks like a folder of styles."""
    prefix, _, arg = name.partition(":")
    folder = Path(arg).expanduser()
    if prefix != "folder" or not folder.is_dir():
        return
    subfolders = _style_subfolders(folder)
    if len(subfolders) >= 2 and not any(p.is_file() for p in folder.iterdir()):
        shown = ", ".join(p.name for p in subfolders[:5]) + (", ..." if len(subfolders) > 5 else "")
        warn(f"{folder} holds only sub-folders ({shown}); read as one corpus. "
             "For one style per sub-folder (genlab generate --style NAME), set data.styles=true")


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


class StyledTokenizer:
    """A base tokenizer (char, byte or BPE) plus one control token per style, `<style:NAME>`,
    numbered after the base tokens: ids base.vocab_size .. base.vocab_size + len(styles) - 1.

    Text never encodes to a control token (a prompt holding "<style:x>" is just those
    characters); control tokens decode to nothing, so they never show in generated text."""

    def __init__(self, base, styles: list[str]):
        if isinstance(base, StyledTokenizer):
            raise GenlabError("a styled tokenizer's base cannot itself be styled")
        styles = list(styles)
        if not styles or not all(isinstance(s, str) and s for s in styles) or len(set(styles)) != len(styles):
            raise GenlabError("a styled tokenizer needs a list of distinct, non-empty style names")
        self.base, self.styles = base, styles
        self.kind = base.kind

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.styles)

    @property
    def default_prompt(self) -> str:
        return self.base.default_prompt

    @property
    def style_tokens(self) -> tuple[int, ...]:
        return tuple(range(self.base.vocab_size, self.vocab_size))

    def style_token(self, style: str) -> int:
        """The control token of `style`, or a GenlabError listing the styles this model knows."""
        if style not in self.styles:
            raise GenlabError(f"unknown style {style!r}", f"this model writes in the styles {', '.join(self.styles)}",
                              param="style")
        return self.base.vocab_size + self.styles.index(style)

    def encode(self, text: str) -> np.ndarray:
        return self.base.encode(text)

    def decode(self, ids) -> str:
        ids = _id_list(ids, self.vocab_size)
        return self.base.decode([i for i in ids if i < self.base.vocab_size])

    def to_json(self) -> str:
        return json.dumps({"genlab_tokenizer": "styled", "styles": self.styles, "base": json.loads(self.base.to_json())},
                          ensure_ascii=False)


def style_token(tokenizer, style: str) -> int:
    """The control token of `style` in a model's tokenizer; a GenlabError when it has no styles."""
    if not isinstance(tokenizer, StyledTokenizer):
        raise GenlabError(f"this model was trained without styles, so it cannot write in style {style!r}",
                          "leave the style out, or train a style model: data.name=folder:DIR with one sub-folder "
                          "per style and data.styles=true, or data.name=styles:A+B (e.g. genlab train gpt-styles)",
                          param="style")
    return tokenizer.style_token(style)


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
    if kind == "styled":
        styles, base = data.get("styles"), data.get("base")
        if not isinstance(styles, list) or not isinstance(base, dict) or base.get("genlab_tokenizer") == "styled":
            raise GenlabError(f"{source} is not a styled tokenizer: it needs a list of styles and a base tokenizer",
                              damaged)
        base_tokenizer = tokenizer_from_json(json.dumps(base), source)
        try:
            return StyledTokenizer(base_tokenizer, styles)
        except GenlabError as e:
            raise GenlabError(f"{source} is not a valid styled tokenizer ({e.message})", damaged) from None
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
    name: str = "pydoc"  # pydoc | tinyshakespeare | file:PATH | folder:DIR | labeled:FILE | styles:A+B
    tokenizer: str = "char"  # char | byte | bpe
    vocab_size: int | None = None  # bpe only: vocabulary to learn (default 1024); char and byte are fixed
    block_size: int = 128  # tokens per training window; a GPT's context length
    val_fraction: float = 0.05  # the text after the train part, held out for validation
    test_fraction: float = 0.05  # the end of the text, held out for the final test
    styles: bool | None = None  # one style per sub-folder of folder:DIR; None: true for styles:A+B and labeled:FILE
    encoding: str | None = None  # your files' encoding (file:, folder:); None: UTF-8, else detected with a notice
    text_column: str | None = None  # labeled:FILE: the header name of the text column (default "text")
    label_column: str | None = None  # labeled:FILE: the column of labels, one style per value (default "label")

    def __post_init__(self):
        named_styles = isinstance(self.name, str) and self.name.startswith(STYLES_PREFIX)
        labeled = isinstance(self.name, str) and self.name.startswith(LABELED_PREFIX)
        for key in ("text_column", "label_column"):
            if not labeled and getattr(self, key) is not None:
                raise GenlabError(f"data.{key} applies only to labeled:FILE, not {self.name}", f"remove data.{key}")
        if labeled:
            self.text_column = self.text_column or "text"
            self.label_column = self.label_column or "label"
            if self.text_column == self.label_column:
                raise GenlabError(f"data.text_column and data.label_column are both {self.text_column!r}",
                                  "name two different columns")
        if self.styles is None:
            self.styles = named_styles or labeled
        elif not isinstance(self.styles, bool):
            raise GenlabError(f"data.styles must be true or false, got {self.styles!r}")
        elif named_styles and not self.styles:
            raise GenlabError(f"{self.name} is one style per corpus; data.styles=false does not apply to it",
                              "remove data.styles, or train on one corpus")
        elif self.styles and not (named_styles or labeled or self.name.startswith("folder:")):
            raise GenlabError(f"data.styles=true needs folder:DIR (one sub-folder per style), labeled:FILE or "
                              f"styles:A+B, not {self.name!r}", "remove data.styles, or choose such a data set")
        if self.encoding is not None:
            check_encoding(self.encoding)
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


class StyledTextData(TextData):
    """Text in several styles: each split is the styles' token streams one after another
    (`train.tokens` etc., text tokens only), read in windows that never cross from one style
    into the next, each led by its style's control token (module docstring, "Styles")."""

    def __init__(self, spec: TextDataSpec, tokenizer: StyledTokenizer, parts: dict[str, list[TextSplit]]):
        splits = {name: TextSplit(torch.cat([p.tokens for p in pieces]), sum(p.num_chars for p in pieces))
                  for name, pieces in parts.items()}
        super().__init__(spec=spec, tokenizer=tokenizer, **splits)
        self.styles = list(tokenizer.styles)
        # Each split's style s occupies tokens offsets[s] .. offsets[s + 1] - 1 of its stream.
        self.offsets = {name: torch.tensor([0, *np.cumsum([len(p) for p in pieces])]) for name, pieces in parts.items()}
        block = spec.block_size
        # Held-out windows, (start offsets in the split's stream, style indices): per style, consecutive
        # runs of block_size text tokens after the control token, so every text token is scored once
        # (the first from the style alone).
        self.held_out = {}
        for name in ("val", "test"):
            starts, styles = [], []
            for s, (a, b) in enumerate(zip(self.offsets[name][:-1].tolist(), self.offsets[name][1:].tolist())):
                starts += range(a, b - block + 1, block)
                styles += [s] * ((b - a) // block)
            self.held_out[name] = (torch.tensor(starts, dtype=torch.long), torch.tensor(styles, dtype=torch.long))

    def style_split(self, split: str, style: str) -> TextSplit:
        """One style's part of a split (its text tokens)."""
        s = self.styles.index(style)
        a, b = self.offsets[split][s].item(), self.offsets[split][s + 1].item()
        return TextSplit(self.split(split).tokens[a:b], 0)

    def num_examples(self, split: str) -> int:
        if split == "train":
            return max(0, (len(self.train) - len(self.styles)) // self.spec.block_size)
        return len(self.held_out[split][0]) if split in self.held_out else super().num_examples(split)

    def windows(self, split: str, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, block_size + 1]: a control token and block_size text tokens of its style (train: one window in
        UNSTYLED_SHARE is block_size + 1 text tokens without one), never crossing into another style."""
        block, first_style = self.spec.block_size, self.tokenizer.base.vocab_size
        tokens = self.split(split).tokens
        if split != "train":
            starts, styles = (t[torch.as_tensor(indices, dtype=torch.long)] for t in self.held_out[split])
            text = tokens[starts[:, None] + torch.arange(block)].long()
            return torch.cat([(first_style + styles)[:, None], text], dim=1)
        # A start drawn uniformly over every style's valid starts: each text token is equally likely, as in unstyled data.
        offsets = self.offsets["train"]
        counts = offsets[1:] - offsets[:-1] - block  # starts with block + 1 tokens inside the style
        ends = counts.cumsum(0)
        draw = torch.randint(int(ends[-1]), (len(indices),), generator=generator)
        styles = torch.searchsorted(ends, draw, right=True)
        starts = offsets[:-1][styles] + draw - (ends - counts)[styles]
        text = tokens[starts[:, None] + torch.arange(block + 1)].long()
        styled = torch.cat([(first_style + styles)[:, None], text[:, :-1]], dim=1)
        plain = torch.rand(len(indices), generator=generator) < UNSTYLED_SHARE
        return torch.where(plain[:, None], text, styled)


def _split(text: str, spec: TextDataSpec) -> dict[str, str]:
    n_val = int(round(len(text) * spec.val_fraction))
    n_test = int(round(len(text) * spec.test_fraction))
    n_train = len(text) - n_val - n_test
    return {"train": text[:n_train], "val": text[n_train : n_train + n_val], "test": text[n_train + n_val :]}


def _check_lengths(splits: dict[str, TextSplit], spec: TextDataSpec, what: str, characters: int) -> None:
    needed = spec.block_size + 1
    for name in ("train", "val") + (("test",) if spec.test_fraction > 0 else ()):
        if len(splits[name]) < needed:
            raise GenlabError(
                f"the {name} split of {what} has {len(splits[name])} tokens, fewer than one window of "
                f"block_size + 1 = {needed} (the corpus has {characters:,} characters)",
                "use more text, a smaller data.block_size, or a larger data.val_fraction / data.test_fraction",
            )


def load_text_data(spec: TextDataSpec | dict | str, tokenizer=None, root: Path | None = None) -> TextData:
    """Load a corpus, split it contiguously and tokenize it (StyledTextData when spec.styles).

    A tokenizer is learnt from the text unless one is given (a resumed run or an evaluation
    uses the model's own, from its tokenizer.json).
    """
    from ..config import from_dict
    from .download import data_root

    if isinstance(spec, str):
        spec = TextDataSpec(name=spec)
    elif isinstance(spec, dict):
        spec = from_dict(TextDataSpec, spec, "data")
    root = root if root is not None else data_root()
    if spec.styles:
        return _load_styled(spec, tokenizer, root)
    _hint_styles(spec.name)
    text = load_corpus(spec.name, root, spec.encoding, text_column=spec.text_column or "text")
    parts = _split(text, spec)
    if tokenizer is None:
        tokenizer = train_tokenizer(spec.tokenizer, parts["train"], text, spec.vocab_size)
    elif tokenizer.kind != spec.tokenizer:
        raise GenlabError(f"the model's tokenizer is {tokenizer.kind}, but the data asks for {spec.tokenizer}")
    elif isinstance(tokenizer, StyledTokenizer):
        raise GenlabError(f"the model writes in styles ({', '.join(tokenizer.styles)}), but {spec.name} has none",
                          "evaluate it on its own styled data")
    splits = {}
    for name, part in parts.items():
        splits[name] = TextSplit(torch.from_numpy(tokenizer.encode(part)), len(part))
    _check_lengths(splits, spec, spec.name, len(text))
    return TextData(spec=spec, tokenizer=tokenizer, **splits)


def _load_styled(spec: TextDataSpec, tokenizer, root: Path) -> StyledTextData:
    corpora = load_style_corpora(spec.name, root, spec.encoding, spec.text_column or "text", spec.label_column or "label")
    parts = {style: _split(text, spec) for style, text in corpora.items()}
    if tokenizer is None:
        base = train_tokenizer(spec.tokenizer, "\n".join(p["train"] for p in parts.values()),
                               "\n".join(corpora.values()), spec.vocab_size)
        tokenizer = StyledTokenizer(base, list(corpora))
    elif tokenizer.kind != spec.tokenizer:
        raise GenlabError(f"the model's tokenizer is {tokenizer.kind}, but the data asks for {spec.tokenizer}")
    elif not isinstance(tokenizer, StyledTokenizer) or tokenizer.styles != list(corpora):
        known = ", ".join(tokenizer.styles) if isinstance(tokenizer, StyledTokenizer) else "none"
        raise GenlabError(f"{spec.name} has the styles {', '.join(corpora)}, but the model knows {known}",
                          "give the data the model was trained on (the same styles, in the same order)")
    splits: dict[str, list[TextSplit]] = {"train": [], "val": [], "test": []}
    for style, style_parts in parts.items():
        encoded = {name: TextSplit(torch.from_numpy(tokenizer.encode(part)), len(part))
                   for name, part in style_parts.items()}
        _check_lengths(encoded, spec, f"style {style!r} of {spec.name}", len(corpora[style]))
        for name in splits:
            splits[name].append(encoded[name])
    return StyledTextData(spec, tokenizer, splits)

