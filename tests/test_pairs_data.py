"""Text pairs (genlab/data/pairs.py): the tatoeba-cmn fixed split, SGD dialogues, pairs:FILE and
dialogue:FILE, the joint subword tokenizer, batches and truncation. Data from ../shared/data."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.config import from_dict, to_dict
from genlab.data.pairs import (ASSISTANT_ID, BOS_ID, EOS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, USER_ID, PairDataSpec,
                               PairTokenizer, dialogue_source_ids, load_pair_data, load_pair_examples,
                               load_pair_tokenizer, pair_dataset_status, pair_tokenizer_from_json,
                               read_pairs_file, translation_source_ids)
from genlab.errors import GenlabError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TATOEBA = SHARED / "tatoeba_cmn"
SGD = SHARED / "sgd_dialogues" / "sgd_dialogues.jsonl.gz"

# Characters per token of the chosen tokenizer (bpe, 8,000 tokens, trained on the train split) on
# the test split, as measured for the module docstring: English 3.69, Chinese 1.22.
EN_CHARS_PER_TOKEN_FLOOR = 3.5
ZH_CHARS_PER_TOKEN_FLOOR = 1.15


@pytest.fixture(scope="module")
def tatoeba():
    return load_pair_examples(PairDataSpec(name="tatoeba-cmn", direction="en-zh"), SHARED)


@pytest.fixture(scope="module")
def tokenizer(tatoeba) -> PairTokenizer:
    train = tatoeba["train"]
    return PairTokenizer.train(train.sources + train.targets, 8000, "bpe")


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# ----------------------------------------------------------------------------- tatoeba-cmn


def test_tatoeba_fixed_split_counts_and_original_sentences(tatoeba):
    assert {split: len(part) for split, part in tatoeba.items()} == {"train": 19_222, "val": 2_402, "test": 2_402}
    # The splits are the original lines of cmn.txt, each exactly once (a bijection, not the tokenised forms).
    originals = [tuple(line.split("\t")[:2]) for line in (TATOEBA / "cmn.txt").read_text(encoding="utf-8").splitlines()]
    ours = [pair for part in tatoeba.values() for pair in zip(part.sources, part.targets)]
    assert collections.Counter(ours) == collections.Counter(originals)
    # The first test line of the published split: "Call me when you get settled in ." (and its Chinese)
    assert tatoeba["test"].sources[0] == "Call me when you get settled in."
    assert tatoeba["test"].targets[0] == "你安頓好就打電話給我。"
    assert pair_dataset_status("tatoeba-cmn", SHARED) == "present"


def test_tatoeba_direction(tatoeba):
    zh_en = load_pair_examples(PairDataSpec(name="tatoeba-cmn"), SHARED)  # zh-en is the default
    assert zh_en["val"].sources == tatoeba["val"].targets and zh_en["val"].targets == tatoeba["val"].sources


# ----------------------------------------------------------------------------- the tokenizer


ROUND_TRIP = [
    "Tom doesn't know what happened to Mary's dog.",
    "你知道发生了什么事情吗？",
    "湯姆在這裡做甚麼。",  # traditional characters
    "我喜欢Python 3.12和C++！他说：“好的。”",  # mixed scripts, fullwidth punctuation
    "Two  spaces, a tab\tand a\nnewline.",
    "Émile a 20 % de réduction — 東京 🚀",
    "Привет, мир! नमस्ते",  # scripts the tokenizer never saw
]


def test_tokenizer_round_trips_both_scripts(tokenizer, tatoeba):
    for text in ROUND_TRIP:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    for text in tatoeba["test"].sources[:300] + tatoeba["test"].targets[:300]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    # What normalisation changes: NFC, U+2581 as a space, the outer whitespace.
    messy = "  Cafe\u0301 \u2581ok \n"
    assert tokenizer.normalize(messy) == "Caf\u00e9  ok"
    assert tokenizer.decode(tokenizer.encode(messy)) == tokenizer.normalize(messy)


def test_tokenizer_characters_per_token(tokenizer, tatoeba):
    def chars_per_token(texts):
        return sum(map(len, texts)) / sum(len(ids) for ids in tokenizer.encode_batch(texts))

    assert tokenizer.vocab_size == 8000
    assert chars_per_token(tatoeba["test"].sources) >= EN_CHARS_PER_TOKEN_FLOOR
    assert chars_per_token(tatoeba["test"].targets) >= ZH_CHARS_PER_TOKEN_FLOOR


def test_unknown_characters_are_counted(tokenizer, tatoeba):
    assert tokenizer.unknown_count("Tom is here. 汤姆在这里。") == 0
    assert tokenizer.unknown_count("Привет") == 6  # Cyrillic: six characters, twelve byte tokens
    assert tokenizer.unknown_count("नमस्ते") == 6  # Devanagari: six code points, three bytes each
    assert tokenizer.unknown_characters("Привет, Пётр") == ["П", "р", "и", "в", "е", "т", "ё"]
    ids = tokenizer.encode("ok Привет")
    assert tokenizer.unknown_count(ids) == 6
    # On the test split: no English and a few Chinese characters (0.4%) lie outside the training alphabet.
    zh = tatoeba["test"].targets
    unknown = sum(tokenizer.unknown_count(t) for t in zh)
    assert 0 < unknown < 0.01 * sum(map(len, zh))
    assert sum(tokenizer.unknown_count(t) for t in tatoeba["test"].sources) == 0


def test_special_tokens_are_ids_only(tokenizer):
    assert [tokenizer.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    ids = tokenizer.encode("<eos> <user> <pad>")
    assert not set(ids.tolist()) & set(range(len(SPECIAL_TOKENS)))  # typed tags are text, never control ids
    assert tokenizer.decode([BOS_ID, *tokenizer.encode("Hello."), EOS_ID, PAD_ID, PAD_ID]) == "Hello."
    with pytest.raises(GenlabError, match="out of range"):
        tokenizer.decode([tokenizer.vocab_size])


def test_tokenizer_json_round_trip(tokenizer, tmp_path):
    from genlab.data.text import save_tokenizer

    save_tokenizer(tokenizer, tmp_path)  # text.py's writer calls to_json()
    loaded = load_pair_tokenizer(tmp_path)
    assert loaded.kind == "bpe" and loaded.vocab_size == tokenizer.vocab_size
    for text in ROUND_TRIP:
        assert loaded.encode(text).tolist() == tokenizer.encode(text).tolist()
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["genlab_tokenizer"] == "pairs" and data["tokenizer"]["model"]["type"] == "BPE"
    with pytest.raises(GenlabError, match="not valid JSON"):
        pair_tokenizer_from_json("{", "x/tokenizer.json")
    with pytest.raises(GenlabError, match="not a text-pair tokenizer"):
        pair_tokenizer_from_json(json.dumps({"genlab_tokenizer": "byte"}))
    with pytest.raises(GenlabError, match="has no tokenizer.json"):
        load_pair_tokenizer(tmp_path / "missing")


def test_unigram_tokenizer_round_trips(tatoeba):
    train = tatoeba["train"]
    texts = train.sources[:3000] + train.targets[:3000]
    unigram = PairTokenizer.train(texts, 4000, "unigram")
    assert unigram.kind == "unigram" and unigram.vocab_size <= 4000
    for text in ROUND_TRIP:
        assert unigram.decode(unigram.encode(text)) == text
    assert unigram.unknown_count("Привет") == 6
    again = pair_tokenizer_from_json(unigram.to_json())
    assert again.encode(ROUND_TRIP[1]).tolist() == unigram.encode(ROUND_TRIP[1]).tolist()
    # Unigram holds every character of its training text: too small a vocabulary is a clear error;
    # BPE leaves the rarest characters to byte fallback and keeps to the size asked for.
    with pytest.raises(GenlabError, match="too small for a unigram vocabulary"):
        PairTokenizer.train(texts, 1000, "unigram")
    small = PairTokenizer.train(texts, 1000, "bpe")
    assert small.vocab_size == 1000 and small.decode(small.encode(ROUND_TRIP[1])) == ROUND_TRIP[1]


# ----------------------------------------------------------------------------- spec


def test_spec_json_round_trip_and_defaults():
    for spec in (PairDataSpec(), PairDataSpec(name="sgd", context_turns=2, speaker_tags=False, limit=100),
                 PairDataSpec(name="pairs:x.csv", source_column="en", target_column="de", delimiter=";"),
                 PairDataSpec(name="dialogue:chats.jsonl", tokenizer="unigram", vocab_size=12000)):
        again = from_dict(PairDataSpec, json.loads(json.dumps(to_dict(spec))), "data")
        assert again == spec
    assert PairDataSpec().direction == "zh-en"
    assert PairDataSpec(name="sgd").context_turns == 4 and PairDataSpec(name="sgd").speaker_tags is True
    assert PairDataSpec(name="pairs:a.tsv").source_column == "source"


@pytest.mark.parametrize("values, needle", [
    ({"name": "wmt"}, "unknown text-pair data set"),
    ({"name": "pairs:"}, "needs a path"),
    ({"name": "sgd", "direction": "en-zh"}, "direction applies only to tatoeba-cmn"),
    ({"name": "tatoeba-cmn", "context_turns": 3}, "context_turns applies only"),
    ({"name": "sgd", "source_column": "a"}, "source_column applies only to pairs:FILE"),
    ({"direction": "fr-en"}, "unknown data.direction"),
    ({"tokenizer": "char"}, "unknown data.tokenizer"),
    ({"vocab_size": 100}, "at least 327"),
    ({"max_target_len": 2}, "max_target_len"),
    ({"name": "sgd", "context_turns": 0}, "context_turns must be at least 1"),
    ({"limit": 0}, "data.limit"),
])
def test_spec_rejects_bad_settings(values, needle):
    with pytest.raises(GenlabError, match=needle):
        from_dict(PairDataSpec, values, "data")


# ----------------------------------------------------------------------------- batches and truncation


def test_batches_are_padded_and_trimmed(tmp_path):
    rows = ["source\ttarget"] + [f"{'word ' * (i % 7 + 1)}end\t{'mot ' * (i % 5 + 1)}fin" for i in range(60)]
    path = write(tmp_path / "pairs.tsv", "\n".join(rows) + "\n")
    data = load_pair_data({"name": f"pairs:{path}", "vocab_size": 400}, root=tmp_path)
    assert sum(data.num_examples(s) for s in ("train", "val", "test")) == 60
    fields = data.model_fields()
    assert fields == {"vocab_size": data.tokenizer.vocab_size, "pad_id": 0, "bos_id": 1, "eos_id": 2,
                      "max_source_len": 128, "max_target_len": 64}
    idx = torch.arange(min(8, data.num_examples("train")))
    batch = data.batch("train", idx)
    src, tgt = batch["src"], batch["tgt"]
    assert src.dtype == torch.long and tgt.dtype == torch.long and len(src) == len(tgt) == len(idx)
    src_len, tgt_len = (src != PAD_ID).sum(1), (tgt != PAD_ID).sum(1)
    assert src.shape[1] == src_len.max() and tgt.shape[1] == tgt_len.max()  # trimmed to the longest row
    for i in range(len(idx)):
        assert src[i, src_len[i] - 1] == EOS_ID and (src[i, src_len[i]:] == PAD_ID).all()  # right-padded
        assert tgt[i, 0] == BOS_ID and tgt[i, tgt_len[i] - 1] == EOS_ID and (tgt[i, tgt_len[i]:] == PAD_ID).all()
        assert data.tokenizer.decode(src[i]) == data.sources("train")[i]
        assert data.tokenizer.decode(tgt[i]) == data.targets("train")[i]
    assert data.batch("train", np.array([3]))["src"].shape[0] == 1


def test_training_order_groups_pairs_of_similar_length(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 700)  # a translation's length follows its source's
    rows = ["source\ttarget"] + [f"{'word ' * int(k)}end\t{'mot ' * int(k + rng.integers(0, 3))}fin" for k in lengths]
    path = write(tmp_path / "pairs.tsv", "\n".join(rows) + "\n")
    data = load_pair_data({"name": f"pairs:{path}", "vocab_size": 400, "val_fraction": 0.02, "test_fraction": 0.02},
                          root=tmp_path)
    n, b = data.num_examples("train"), 8
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))

    def padded_fraction(indices):
        batches = [indices[i : i + b] for i in range(0, n // b * b, b)]
        cells = sum(data.batch("train", x)["src"].numel() + data.batch("train", x)["tgt"].numel() for x in batches)
        real = sum(int(data.train.src_len[x].sum() + data.train.tgt_len[x].sum()) for x in batches)
        return 1 - real / cells

    grouped = data.order_batches(order, b, torch.Generator().manual_seed(2))
    assert sorted(grouped.tolist()) == list(range(n))  # every pair once per epoch
    assert torch.equal(grouped[n // b * b:], order[n // b * b:])  # the last partial batch as drawn
    assert torch.equal(grouped, data.order_batches(order, b, torch.Generator().manual_seed(2)))  # deterministic
    assert padded_fraction(order) > 0.25 and padded_fraction(grouped) < 0.05
    lengths = (data.train.src_len + data.train.tgt_len)[grouped[: n // b * b]].view(-1, b).float().mean(1)
    assert not torch.equal(lengths, lengths.sort().values)  # the batches are shuffled, not short to long
    data.spec.group_by_length = False
    assert torch.equal(data.order_batches(order, b, torch.Generator().manual_seed(2)), order)


def test_truncation_keeps_the_start_and_eos_and_is_reported_once(tmp_path, capsys):
    long_source = " ".join(f"w{i}" for i in range(40))
    rows = ["source\ttarget", f"{long_source}\t{long_source}"] + [f"short {i}\tkurz {i}" for i in range(30)]
    path = write(tmp_path / "long.tsv", "\n".join(rows))
    spec = {"name": f"pairs:{path}", "vocab_size": 400, "max_source_len": 8, "max_target_len": 6,
            "val_fraction": 0.1, "test_fraction": 0.1}
    data = load_pair_data(spec, root=tmp_path)
    err = capsys.readouterr().err
    assert err.count("data.max_source_len=8") == 1 and err.count("data.max_target_len=6") == 1
    assert "keeping the start" in err
    split = next(s for s in ("train", "val", "test") if long_source in data.sources(s))
    i = data.sources(split).index(long_source)
    batch = data.batch(split, [i])
    assert batch["src"].shape == (1, 8) and batch["src"][0, -1] == EOS_ID
    assert data.tokenizer.decode(batch["src"][0]) == data.tokenizer.decode(data.tokenizer.encode(long_source)[:7])
    assert batch["tgt"].shape == (1, 6) and batch["tgt"][0, 0] == BOS_ID and batch["tgt"][0, -1] == EOS_ID
    ids, cut = translation_source_ids(data.tokenizer, long_source, 8)
    assert cut and ids.tolist() == batch["src"][0].tolist()


def test_dialogue_source_keeps_the_newest_turns(tokenizer):
    turns = [("user", "I want a table for two."), ("assistant", "Which city?"), ("user", "San Jose, please.")]
    ids, cut = dialogue_source_ids(tokenizer, turns, 128)
    assert not cut and ids[0] == USER_ID and ids[-1] == EOS_ID
    assert ids.tolist().count(USER_ID) == 2 and ids.tolist().count(ASSISTANT_ID) == 1
    newest = tokenizer.encode("San Jose, please.").tolist()
    assert ids.tolist()[-len(newest) - 2:] == [USER_ID, *newest, EOS_ID]
    # A window too small for all of them: whole oldest turns go first.
    short, cut = dialogue_source_ids(tokenizer, turns, len(newest) + 2 + 3)
    assert cut and short.tolist() == [USER_ID, *newest, EOS_ID]
    # The newest turn alone too long: its tag, then its last tokens.
    tiny, cut = dialogue_source_ids(tokenizer, turns, 4)
    assert cut and tiny.tolist() == [USER_ID, *newest[-2:], EOS_ID]
    # context_turns keeps the last N turns; without speaker tags the turns are joined by <sep>.
    last, _ = dialogue_source_ids(tokenizer, turns, 128, context_turns=2, speaker_tags=False)
    assert last.tolist() == [*tokenizer.encode("Which city?"), SEP_ID, *newest, EOS_ID]
    with pytest.raises(GenlabError, match="role 'system'"):
        dialogue_source_ids(tokenizer, [("system", "be brief"), ("user", "hi")], 128)
    with pytest.raises(GenlabError, match="conversation is empty"):
        dialogue_source_ids(tokenizer, [], 128)
    with pytest.raises(GenlabError, match="text to translate is empty"):
        translation_source_ids(tokenizer, "  \n ", 128)


# ----------------------------------------------------------------------------- sgd


def test_sgd_examples_are_assistant_turns_after_their_context(capsys):
    spec = PairDataSpec(name="sgd", context_turns=3, limit=300, vocab_size=1000)
    raw = load_pair_examples(spec, SHARED)
    # Every non-empty assistant turn after the first turn is one example, in the published splits.
    expected = collections.Counter()
    dialogues = []
    with gzip.open(SGD, "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            dialogues.append(d)
            split = {"dev": "val"}.get(d["split"], d["split"])
            expected[split] += sum(1 for i, (s, u) in enumerate(d["turns"]) if s == "SYSTEM" and i > 0 and u.strip())
    assert {split: len(part) for split, part in raw.items()} == dict(expected)
    assert expected["train"] > 100_000
    # The file's first conversation is dev's first (ids repeat across splits): its second assistant
    # turn (turn 4) is val's example 1.
    assert dialogues[0]["split"] == "dev"
    first = dialogues[0]["turns"]
    val = raw["val"]
    assert val.targets[:2] == [first[1][1], first[3][1]]
    assert val.contexts[1] == (("user", first[0][1]), ("assistant", first[1][1]), ("user", first[2][1]))  # newest last
    assert val.sources[1] == f"User: {first[0][1]}\nAssistant: {first[1][1]}\nUser: {first[2][1]}"
    assert val.contexts[3] == tuple(("user" if s == "USER" else "assistant", u) for s, u in first[4:7])  # the last 3

    data = load_pair_data(spec, root=SHARED)
    assert [data.num_examples(s) for s in ("train", "val", "test")] == [300, 300, 300]
    assert data.is_dialogue and data.target_language is None
    src = data.batch("val", torch.arange(300))["src"]
    for row, context in zip(src[:50], data.contexts("val")[:50]):
        row = row[row != PAD_ID].tolist()
        tags = [t for t in row if t in (USER_ID, ASSISTANT_ID)]
        assert tags == [USER_ID if role == "user" else ASSISTANT_ID for role, _ in context][-len(tags):]
        assert row[-1] == EOS_ID and tags[-1] == USER_ID


def test_sgd_is_converted_once_from_the_original_files(tmp_path, monkeypatch, capsys):
    """Offline: the original files are already in <root>/sgd/ (as a download leaves them), with
    their checksums; the loader converts them to <root>/sgd_dialogues/sgd_dialogues.jsonl.gz once."""
    import hashlib

    from genlab.data import pairs
    from genlab.data.download import RemoteFile

    originals = tmp_path / "sgd"
    originals.mkdir()
    files = {}
    for split in ("train", "dev", "test"):
        conversations = [{"dialogue_id": f"{split}_{i}", "services": ["Banks_1"], "turns": [
            {"speaker": "USER", "utterance": f"check my balance {i}", "frames": []},
            {"speaker": "SYSTEM", "utterance": f"your balance is {i} dollars", "frames": []}]} for i in range(3)]
        body = json.dumps(conversations).encode()
        name = f"{split}_dialogues_001.json"
        (originals / name).write_bytes(body)
        files[split] = [RemoteFile(name, ("https://example.invalid/x",), sha256=hashlib.sha256(body).hexdigest())]
    monkeypatch.setattr(pairs, "SGD_FILES", files)
    assert pair_dataset_status("sgd", tmp_path) == "download"
    raw = load_pair_examples(PairDataSpec(name="sgd"), tmp_path)
    assert raw["val"].targets == [f"your balance is {i} dollars" for i in range(3)]
    assert raw["test"].contexts[1] == (("user", "check my balance 1"),)
    assert "converted the 3 SGD files" in capsys.readouterr().err
    assert pair_dataset_status("sgd", tmp_path) == "present"
    for original in originals.iterdir():
        original.unlink()  # from now on the converted file is enough
    assert load_pair_examples(PairDataSpec(name="sgd"), tmp_path)["train"].targets == raw["train"].targets


# ----------------------------------------------------------------------------- pairs:FILE


def test_pairs_tsv_and_csv_with_bom_and_crlf(tmp_path):
    tsv = write(tmp_path / "a.tsv", "\ufeffen\tde\r\nHello.\tHallo.\r\n\r\nGood \"night\".\tGute Nacht.\r\nYes\tJa\r\n")
    sources, targets, _ = read_pairs_file(tsv, "en", "de")
    assert sources == ["Hello.", 'Good "night".', "Yes"] and targets == ["Hallo.", "Gute Nacht.", "Ja"]
    csv_path = write(tmp_path / "b.csv", '\ufeffid,source,target\r\n1,"Hello, you.","Hallo, du."\r\n'
                                         '2,"Two\r\nlines","Zwei Zeilen"\r\n3,Yes,Ja\r\n')
    sources, targets, _ = read_pairs_file(csv_path, "source", "target")
    assert sources == ["Hello, you.", "Two\nlines", "Yes"] and targets == ["Hallo, du.", "Zwei Zeilen", "Ja"]
    semicolons = write(tmp_path / "c.txt", "q;a\nx;y\n")
    assert read_pairs_file(semicolons, "q", "a", delimiter=";")[:2] == (["x"], ["y"])
    # Through the loader: every pair lands in exactly one split.
    raw = load_pair_examples(PairDataSpec(name=f"pairs:{csv_path}"))
    assert sorted(s for part in raw.values() for s in part.sources) == sorted(["Hello, you.", "Two\nlines", "Yes"])


def test_pairs_split_column_and_grouped_split(tmp_path):
    rows = ["source\ttarget\tsplit"] + [f"s{i}\tt{i}\t{['train', 'dev', 'test'][i % 3]}" for i in range(30)]
    raw = load_pair_examples(PairDataSpec(name=f"pairs:{write(tmp_path / 'split.tsv', chr(10).join(rows))}",
                                          split_column="split"))
    assert [len(raw[s]) for s in ("train", "val", "test")] == [10, 10, 10]
    assert raw["val"].sources[0] == "s1"
    # Without a split column, pairs sharing a source stay together.
    rows = ["source\ttarget"] + [f"s{i // 3}\tt{i}" for i in range(300)]
    raw = load_pair_examples(PairDataSpec(name=f"pairs:{write(tmp_path / 'dup.tsv', chr(10).join(rows))}"))
    seen = [set(raw[s].sources) for s in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2]) and all(seen)


@pytest.mark.parametrize("name, content, needles", [
    ("bad.tsv", "source\ttarget\nok\tfine\nno tab here\nx\ty\n", ["bad.tsv, line 3", "1 field(s)", "2"]),
    ("extra.csv", "source,target\r\na,b\r\na,b,c\r\n", ["extra.csv, line 3", "3 field(s)"]),
    ("cols.tsv", "en\tzh\nHi\t嗨\n", ["cols.tsv has no column 'source'", "'en', 'zh'", "data.source_column"]),
    ("empty.tsv", "", ["empty.tsv is empty"]),
    ("header.tsv", "source\ttarget\n\n", ["no pairs after its header"]),
    ("quote.csv", 'source,target\na,"unclosed\n', ["quote.csv, line"]),
    ("latin1.tsv", "source\ttarget\ncaf\xe9\tx\n".encode("latin-1"), ["not UTF-8"]),
    ("split.tsv", "source\ttarget\tpart\na\tb\tholdout\n", ["split.tsv, line 2", "unknown split 'holdout'"]),
])
def test_pairs_file_errors_name_file_and_line(tmp_path, name, content, needles):
    path = write(tmp_path / name, content)
    split = {"split_column": "part"} if name == "split.tsv" else {}
    with pytest.raises(GenlabError) as error:
        load_pair_examples(PairDataSpec(name=f"pairs:{path}", **split))
    for needle in needles:
        assert needle in str(error.value), str(error.value)


def test_pairs_file_skips_empty_fields_with_a_notice(tmp_path, capsys):
    path = write(tmp_path / "gaps.tsv", "source\ttarget\na\tb\n\tonly target\nc\t\nd\te\n")
    raw = load_pair_examples(PairDataSpec(name=f"pairs:{path}"))
    assert sum(len(p) for p in raw.values()) == 2
    assert "skipped 2 line(s)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dialogue:FILE


def _conversation(i: int, **extra) -> str:
    turns = [["USER", f"hello {i}"], ["SYSTEM", f"hi {i}, how can I help?"], ["USER", "a table"], ["SYSTEM", "done"]]
    return json.dumps({"id": f"d{i}", "turns": turns, **extra})


def test_dialogue_file_loads_and_splits_by_conversation(tmp_path):
    lines = [_conversation(i) for i in range(40)] + [json.dumps({"turns": [{"role": "user", "content": "hey"},
                                                                          {"role": "assistant", "content": "hello"}]})]
    path = write(tmp_path / "chats.jsonl", "\n".join(lines) + "\n")
    raw = load_pair_examples(PairDataSpec(name=f"dialogue:{path}", context_turns=2))
    assert sum(len(p) for p in raw.values()) == 81
    assert all(len(part) for part in raw.values())
    train = raw["train"]
    i = next(k for k, t in enumerate(train.targets) if t == "done")
    assert train.contexts[i] == (("assistant", train.contexts[i][0][1]), ("user", "a table"))
    gz = tmp_path / "chats.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert load_pair_examples(PairDataSpec(name=f"dialogue:{gz}", context_turns=2))["train"].targets == train.targets


@pytest.mark.parametrize("lines, needles", [
    ([_conversation(0), '{"turns": [["USER", "hi"], ', _conversation(2)], ["bad.jsonl, line 2", "not valid JSON"]),
    ([_conversation(0), '["USER", "hi"]'], ["line 2", 'no "turns" list']),
    ([_conversation(0), json.dumps({"turns": [["USER", "hi"], ["BOT", "yo"]]})], ["line 2", "turn 2", "'BOT'"]),
    ([json.dumps({"turns": [["USER"]]})], ["line 1", "turn 1 is not a [speaker, text] pair"]),
    ([json.dumps({"turns": [["USER", 5]]})], ["line 1", "turn 1 has no text"]),
    ([_conversation(0, split="train"), _conversation(1)], ["some conversations name their split"]),
    ([_conversation(0, split="later")], ["line 1", "unknown split 'later'"]),
    (["", "  "], ["holds no conversations"]),
])
def test_dialogue_file_errors_name_the_line(tmp_path, lines, needles):
    path = write(tmp_path / "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(GenlabError) as error:
        load_pair_examples(PairDataSpec(name=f"dialogue:{path}"))
    for needle in needles:
        assert needle in str(error.value), str(error.value)


# ----------------------------------------------------------------------------- resuming with a tokenizer


def test_a_given_tokenizer_is_used_as_is(tmp_path):
    rows = ["source\ttarget"] + [f"line {i} here\tZeile {i} hier" for i in range(40)]
    path = write(tmp_path / "p.tsv", "\n".join(rows))
    first = load_pair_data({"name": f"pairs:{path}", "vocab_size": 400}, root=tmp_path)
    again = load_pair_data({"name": f"pairs:{path}", "vocab_size": 400}, tokenizer=first.tokenizer, root=tmp_path)
    assert again.tokenizer is first.tokenizer
    assert torch.equal(again.train.src, first.train.src) and torch.equal(again.test.tgt, first.test.tgt)
    with pytest.raises(GenlabError, match="tokenizer is bpe, but the data asks for unigram"):
        load_pair_data({"name": f"pairs:{path}", "tokenizer": "unigram"}, tokenizer=first.tokenizer, root=tmp_path)
    assert dataclasses.asdict(first.spec)["name"] == f"pairs:{path}"
