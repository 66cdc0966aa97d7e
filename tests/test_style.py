"""Style-conditioned text (data.styles, styles:A+B, genlab generate --style, the "style" eval
group) and text files in legacy encodings (detection with a notice, data.encoding=NAME)."""

from __future__ import annotations

import codecs
import json
import random

import pytest
import torch

import genlab
from genlab.data.text import (
    BPETokenizer,
    CharTokenizer,
    StyledTextData,
    StyledTokenizer,
    TextDataSpec,
    load_corpus,
    load_style_corpora,
    load_text_data,
    read_text_file,
    tokenizer_from_json,
)
from genlab.errors import GenlabError
from genlab.models.transformer import GPT, GPTConfig
from genlab.sampling import GenerationConfig, generate

from conftest import SHARED_DATA, assert_clean_error, assert_http_error, run_cli

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=32", "batch_size=16",
        "train.lr=0.01", "train.warmup_steps=10", "train.eval_every=100", "train.eval_batches=4",
        "train.checkpoint_every=1000", "train.samples_every=1000", "train.progress=false", "train.tensorboard=false"]
VOWELS, CONSONANTS = "aeiou", "bcdfg"


def words(letters: str, n_words: int, seed: int) -> str:
    """Lines of random words over `letters`: two styles with disjoint alphabets, so a crossing shows."""
    rng = random.Random(seed)
    lines = [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 6))) for _ in range(8))
             for _ in range(n_words // 8)]
    return "\n".join(lines) + "\n"


def style_folder(root, n_words: int = 4000):
    """folder/vowels/*.txt and folder/consonants/**/*.txt (one file cp1252-encoded, one CRLF)."""
    folder = root / "styles"
    (folder / "vowels").mkdir(parents=True)
    (folder / "consonants" / "deeper").mkdir(parents=True)
    (folder / "vowels" / "a.txt").write_text(words(VOWELS, n_words, 0), encoding="utf-8")
    (folder / "vowels" / "b.txt").write_bytes(words(VOWELS, n_words // 4, 1).replace("\n", "\r\n").encode("cp1252"))
    (folder / "consonants" / "c.txt").write_text(words(CONSONANTS, n_words, 2), encoding="utf-8")
    (folder / "consonants" / "deeper" / "d.txt").write_text(words(CONSONANTS, n_words // 4, 3), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- legacy encodings

SMART = "“Quoted” café – 5 € naïve\r\nsecond line\r\n"


@pytest.mark.parametrize("raw, expected, named", [
    (SMART.encode("cp1252"), SMART.replace("\r\n", "\n"), "cp1252"),
    (("Ça coûte 5 francs. " * 60 + "\x90").encode("latin-1"), "Ça coûte 5 francs. " * 60 + "\x90", "Latin-1"),
    (SMART.encode("utf-16"), SMART.replace("\r\n", "\n"), "UTF-16"),  # with a byte-order mark
    (codecs.BOM_UTF16_BE + SMART.encode("utf-16-be"), SMART.replace("\r\n", "\n"), "UTF-16"),
    (codecs.BOM_UTF32_LE + "日本語 text".encode("utf-32-le"), "日本語 text", "UTF-32"),
    (codecs.BOM_UTF8 + SMART.encode("utf-8"), SMART.replace("\r\n", "\n"), None),  # UTF-8: no notice
    (SMART.encode("utf-8"), SMART.replace("\r\n", "\n"), None),
], ids=["cp1252", "latin-1", "utf-16-le-bom", "utf-16-be-bom", "utf-32-bom", "utf-8-bom", "utf-8-crlf"])
def test_legacy_encodings_load_with_a_notice_naming_them(tmp_path, capsys, raw, expected, named):
    path = tmp_path / "notes.txt"
    path.write_bytes(raw)
    assert load_corpus(f"file:{path}", tmp_path) == expected
    err = capsys.readouterr().err
    if named is None:
        assert err == ""
    else:
        assert named in err and str(path) in err and "data.encoding" in err


def test_forced_encoding_reads_what_detection_cannot(tmp_path, capsys):
    text = "Привет, мир! Это проверка.\n" * 40
    path = tmp_path / "ru.txt"
    path.write_bytes(text.encode("cp1251"))
    detected = load_corpus(f"file:{path}", tmp_path)  # cp1251 bytes are valid cp1252: mojibake, with a notice
    assert detected != text and "cp1252" in capsys.readouterr().err
    data = load_text_data(TextDataSpec(name=f"file:{path}", encoding="cp1251", block_size=16))
    assert data.tokenizer.decode(data.train.tokens).startswith("Привет, мир!") and capsys.readouterr().err == ""
    (tmp_path / "odd.txt").write_bytes(b"abc")
    with pytest.raises(GenlabError, match="is not utf-16 text"):
        load_corpus(f"file:{tmp_path / 'odd.txt'}", tmp_path, encoding="utf-16")
    for bad in ("klingon", "base64"):  # unknown, and a codec that is not a text encoding
        with pytest.raises(GenlabError, match=f"data.encoding='{bad}'"):
            TextDataSpec(name=f"file:{path}", encoding=bad)


def test_cli_refuses_an_unknown_encoding_and_binary_files_stay_refused(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("hello\n" * 100)
    code, _, err = run_cli(capsys, "train", "gpt-shakespeare-char", f"data.name=file:{path}", "data.encoding=nope",
                           "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "unknown text encoding", "nope", "cp1252")
    assert not (tmp_path / "r").exists()
    binary = tmp_path / "noise.bin"
    rng = random.Random(0)  # control bytes and bytes that UTF-8 refuses, no NUL: cp1252 would read it
    binary.write_bytes(bytes(rng.choice([rng.randrange(1, 32), rng.randrange(0xC0, 0x100)]) for _ in range(2000)))
    with pytest.raises(GenlabError, match="control characters"):
        load_corpus(f"file:{binary}", tmp_path)
    (tmp_path / "nul.bin").write_bytes(b"text\x00more")
    with pytest.raises(GenlabError, match="NUL bytes"):
        load_corpus(f"file:{tmp_path / 'nul.bin'}", tmp_path)


def test_the_strict_reader_is_unchanged_for_other_callers(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(GenlabError, match="not UTF-8"):
        read_text_file(path)  # e.g. text-pair files keep strict UTF-8
    assert read_text_file(path, None) == "café\n"


def test_any_bytes_detect_to_text_or_a_clear_error(tmp_path):
    rng = random.Random(1)
    marks = [b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
    for i in range(300):
        path = tmp_path / f"{i}.txt"
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        if i % 3 == 0:
            body = "".join(chr(rng.randrange(32, 0x3000)) for _ in range(20)).encode(rng.choice(["utf-8", "cp1252", "utf-16"]),
                                                                                    errors="ignore")
        path.write_bytes(rng.choice(marks) + body)
        try:
            text = read_text_file(path, None)
        except GenlabError as e:
            assert str(path) in e.message
            continue
        assert isinstance(text, str) and text and "\r\n" not in text


def test_a_folder_gets_one_notice_per_encoding(tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.txt").write_text("plain\n", encoding="utf-8")
    (folder / "b.txt").write_bytes("caf\xe9\n".encode("cp1252"))
    (folder / "c.txt").write_bytes("na\xefve\r\n".encode("cp1252"))
    assert load_corpus(f"folder:{folder}", tmp_path) == "plain\n\ncafé\n\nnaïve\n"
    notices = [line for line in capsys.readouterr().err.splitlines() if "cp1252" in line]
    assert len(notices) == 1 and "b.txt" in notices[0] and "c.txt" in notices[0]


# ----------------------------------------------------------------------------- styled data


def test_styled_windows_stay_inside_one_style_and_lead_with_its_token(tmp_path):
    folder = style_folder(tmp_path)
    data = load_text_data(TextDataSpec(name=f"folder:{folder}", styles=True, block_size=32))
    assert isinstance(data, StyledTextData) and data.styles == ["consonants", "vowels"]  # sorted sub-folders
    tokenizer = data.tokenizer
    base = tokenizer.base.vocab_size
    assert tokenizer.vocab_size == base + 2 and data.model_fields()["vocab_size"] == base + 2
    windows = data.batch("train", torch.arange(4000), torch.Generator().manual_seed(0))["x"]
    styled = windows[:, 0] >= base
    assert 0.86 < styled.float().mean() < 0.94  # one window in ten goes without its style token
    for window, has_style in zip(windows.tolist(), styled.tolist()):
        text = set(tokenizer.decode(window)) - set(" \n")
        alphabet = set(data.styles[window[0] - base] == "vowels" and VOWELS or CONSONANTS) if has_style else None
        assert text <= set(VOWELS) or text <= set(CONSONANTS)  # never across two styles
        assert alphabet is None or text <= alphabet
        assert all(t < base for t in window[1:])
    for split in ("val", "test"):  # every held-out token scored once, after its style's token
        x = data.batch(split, torch.arange(data.num_examples(split)))["x"]
        for k, style in enumerate(data.styles):
            mine = x[x[:, 0] == base + k][:, 1:].flatten()
            stream = data.style_split(split, style).tokens
            assert torch.equal(mine, stream[: len(mine)].long()) and len(stream) - len(mine) < 32


def test_builtin_styles_need_no_folder():
    data = load_text_data(TextDataSpec(name="styles:tinyshakespeare+pydoc", block_size=64), root=SHARED_DATA)
    assert data.styles == ["tinyshakespeare", "pydoc"] and data.spec.styles is True
    corpora = load_style_corpora("styles:tinyshakespeare+pydoc", SHARED_DATA)
    assert corpora["pydoc"] == load_corpus("pydoc", SHARED_DATA) and corpora["tinyshakespeare"].startswith("First Citizen")
    shakespeare = data.style_split("train", "tinyshakespeare").tokens
    assert data.tokenizer.decode(shakespeare[:13]) == "First Citizen"


def test_styled_data_errors_are_clear(tmp_path, capsys):
    folder = style_folder(tmp_path, n_words=200)
    for spec, needle in [
        (dict(name=f"file:{folder / 'vowels' / 'a.txt'}", styles=True), "needs folder:DIR"),
        (dict(name="styles:pydoc+tinyshakespeare", styles=False), "data.styles=false does not apply"),
        (dict(name="pydoc", styles="yes"), "true or false"),
    ]:
        with pytest.raises(GenlabError, match=needle):
            TextDataSpec(**spec)
    for name, needle in [("styles:pydoc", "two or more corpora"), ("styles:pydoc+pydoc", "two styles named 'pydoc'"),
                         ("styles:pydoc+", "two or more"), (f"folder:{folder / 'vowels'}", "0 sub-folder")]:
        with pytest.raises(GenlabError, match=needle):
            load_text_data(TextDataSpec(name=name, styles=True), root=SHARED_DATA)
    (folder / "README.txt").write_text("about these texts\n")
    corpora = load_style_corpora(f"folder:{folder}", tmp_path)
    assert list(corpora) == ["consonants", "vowels"] and "README.txt" in capsys.readouterr().err
    (folder / "README.txt").unlink()
    load_text_data(TextDataSpec(name=f"folder:{folder}", block_size=8))  # one corpus, as before styles
    assert "data.styles=true" in capsys.readouterr().err


def labeled_rows(n_rows: int) -> list[tuple[str, str]]:
    """Rows alternating between two labels, consonants first: (text, label)."""
    return [(words(CONSONANTS if i % 2 == 0 else VOWELS, 40, i).replace("\n", " ").strip(),
             "consonants" if i % 2 == 0 else "vowels") for i in range(n_rows)]


def test_a_labeled_file_is_one_style_per_label(tmp_path, capsys):
    rows = labeled_rows(60)
    tsv = tmp_path / "quotes.tsv"
    tsv.write_text("id\ttext\tlabel\n" + "".join(f"{i}\t{t}\t{l}\n" for i, (t, l) in enumerate(rows))
                   + "60\t\tvowels\n", encoding="utf-8")
    data = load_text_data(TextDataSpec(name=f"labeled:{tsv}", block_size=32))
    err = capsys.readouterr().err
    assert "skipped 1 line(s)" in err and "(line 62)" in err
    assert isinstance(data, StyledTextData) and data.spec.styles is True and data.styles == ["consonants", "vowels"]
    corpora = load_style_corpora(f"labeled:{tsv}", tmp_path)
    for style in data.styles:
        assert corpora[style] == "\n".join(t for t, l in rows if l == style)
        assert set(corpora[style]) - set(" \n") <= set(VOWELS if style == "vowels" else CONSONANTS)
    # Other column names, a CSV; data.styles=false reads every row's text, in file order, as one corpus.
    csv_file = tmp_path / "quotes.csv"
    csv_file.write_text("author,quote\n" + "".join(f'{l},"{t}"\n' for t, l in rows), encoding="utf-8")
    spec = TextDataSpec(name=f"labeled:{csv_file}", text_column="quote", label_column="author", block_size=32)
    assert load_text_data(spec).styles == ["consonants", "vowels"]
    plain = TextDataSpec(name=f"labeled:{csv_file}", text_column="quote", styles=False)
    assert load_corpus(plain.name, tmp_path, text_column="quote") == "\n".join(t for t, _ in rows)
    assert not isinstance(load_text_data(TextDataSpec(name=plain.name, text_column="quote", styles=False,
                                                      block_size=32)), StyledTextData)
    # Bad input: a missing column, one label only, columns on another corpus, the same column twice.
    with pytest.raises(GenlabError, match="no column 'label'.*'author', 'quote'") as error:
        load_text_data(TextDataSpec(name=f"labeled:{csv_file}", text_column="quote"))
    assert "data.label_column=NAME" in error.value.hint
    one = tmp_path / "one.tsv"
    one.write_text("text\tlabel\n" + "".join(f"{t}\tsame\n" for t, _ in rows), encoding="utf-8")
    with pytest.raises(GenlabError, match="1 label\\(s\\).*at least two"):
        load_text_data(TextDataSpec(name=f"labeled:{one}"))
    with pytest.raises(GenlabError, match="data.text_column applies only to labeled:FILE"):
        TextDataSpec(name="pydoc", text_column="text")
    with pytest.raises(GenlabError, match="both 'x'"):
        TextDataSpec(name=f"labeled:{one}", text_column="x", label_column="x")
    with pytest.raises(GenlabError, match="does not exist"):
        load_text_data(TextDataSpec(name=f"labeled:{tmp_path / 'missing.tsv'}"))
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0 and "labeled:FILE" in out
    # Not UTF-8: read by detection with a notice, as file: and folder: are, or as data.encoding says.
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes(("text,label\n" + "".join(f"{t} café,{l}\n" for t, l in rows)).encode("cp1252"))
    corpora = load_style_corpora(f"labeled:{legacy}", tmp_path)
    assert "cp1252" in capsys.readouterr().err and corpora["vowels"].endswith(" café")
    assert load_style_corpora(f"labeled:{legacy}", tmp_path, encoding="latin-1") == corpora


def test_a_model_of_labeled_text_is_evaluated_against_other_text_as_plain_text(tmp_path, capsys):
    tsv = tmp_path / "quotes.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in labeled_rows(200)), encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text(words(VOWELS + CONSONANTS, 3000, 5), encoding="utf-8")
    for styles in ("true", "false"):
        run = genlab.train("gpt-styles", ["steps=5", f"data.name=labeled:{tsv}", f"data.styles={styles}", *TINY],
                           out=tmp_path / f"styles-{styles}")
        assert json.loads((run / "config.json").read_text())["data"]["label_column"] == "label"
        for against in (f"file:{other}:test", f"labeled:{tsv}:test"):
            code, _, err = run_cli(capsys, "eval", str(run), "--against", against, "--metrics", "likelihood")
            assert code == 0, err
            result = json.loads((run / "metrics.json").read_text())["eval"]
            assert result["data"] == against and result["likelihood"]["test"]["tokens"] > 0


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_styled_tokenizer_round_trips_and_hides_control_tokens(kind):
    text = "the quick brown fox <jumps>: over the lazy dog\n" * 50
    base = CharTokenizer.from_text(text) if kind == "char" else BPETokenizer.train(text, 300)
    tokenizer = StyledTokenizer(base, ["plain", "fancy"])
    restored = tokenizer_from_json(tokenizer.to_json())
    assert isinstance(restored, StyledTokenizer) and restored.styles == ["plain", "fancy"]
    assert restored.vocab_size == base.vocab_size + 2 and restored.kind == kind
    ids = restored.encode("the lazy fox")
    assert restored.decode([restored.style_token("fancy"), *ids.tolist()]) == "the lazy fox"
    assert restored.encode("<style:fancy>").tolist() == base.encode("<style:fancy>").tolist()  # text, not control
    with pytest.raises(GenlabError, match="unknown style 'plane'") as error:
        restored.style_token("plane")
    assert "plain, fancy" in error.value.hint
    damaged = json.loads(tokenizer.to_json())
    damaged["styles"] = ["same", "same"]
    with pytest.raises(GenlabError, match="not a valid styled tokenizer"):
        tokenizer_from_json(json.dumps(damaged))


# ----------------------------------------------------------------------------- training and generation


@pytest.fixture(scope="module")
def style_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("style")
    folder = style_folder(root)
    return genlab.train("gpt-styles", ["steps=200", f"data.name=folder:{folder}", "data.styles=true", *TINY],
                        out=root / "run")


def letters(text: str) -> str:
    return "".join(c for c in text if not c.isspace())


def test_a_style_model_writes_in_the_style_asked_for(style_run):
    model = genlab.load(style_run)
    assert model.tokenizer.styles == ["consonants", "vowels"]
    for style, alphabet in [("vowels", VOWELS), ("consonants", CONSONANTS)]:
        # 120 tokens: far past the 32-token context, so the style must outlive the sliding window.
        texts = genlab.generate(model, "", style=style, max_new_tokens=120, num_return_sequences=8, seed=3)
        written = letters("".join(texts))
        assert len(written) > 400 and sum(c in alphabet for c in written) / len(written) > 0.97, (style, texts[:2])
    mixed = letters("".join(genlab.generate(model, "", max_new_tokens=60, num_return_sequences=20, seed=1)))
    assert set(mixed) <= set(VOWELS + CONSONANTS)  # no style: any style, and never a control token
    with pytest.raises(GenlabError, match="unknown style 'dickens'") as error:
        genlab.generate(model, "", style="dickens")
    assert error.value.param == "style" and "consonants, vowels" in error.value.hint


def test_the_style_token_stays_in_the_context(style_run):
    model = genlab.load(style_run)
    token = model.tokenizer.style_token("vowels")
    contexts = []
    hook = model.transformer.register_forward_pre_hook(lambda module, args: contexts.append(args[0].clone()))
    try:
        config = GenerationConfig(max_new_tokens=100, style="vowels", seed=5)
        cached = generate(model, "", config)
        refills = [c for c in contexts if c.shape[1] > 1]
        contexts.clear()
        uncached = generate(model, "", GenerationConfig(max_new_tokens=100, style="vowels", seed=5, use_cache=False))
    finally:
        hook.remove()
    assert cached == uncached  # the cache is a pure speed-up with a pinned token too
    assert len(refills) >= 3  # the context restarted as the text outgrew the window
    for context in refills + contexts:
        assert context.shape[1] <= 32 and (context[:, 0] == token).all()


def test_generation_with_a_style_on_a_model_without_styles_is_refused():
    model = GPT(GPTConfig(vocab_size=27, block_size=16, n_layer=1, n_head=1, n_embd=8))
    model.tokenizer = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz\n"))
    assert genlab.generate(model, "ab", max_new_tokens=5)  # no style: as before
    with pytest.raises(GenlabError, match="trained without styles") as error:
        genlab.generate(model, "ab", style="pydoc", max_new_tokens=5)
    assert "gpt-styles" in error.value.hint
    with pytest.raises(GenlabError, match="style must be"):
        GenerationConfig(style="")


def test_the_completions_endpoint_writes_in_a_style(style_run):
    from starlette.testclient import TestClient

    from genlab.serve import create_app
    from test_serve import parse_sse

    request = {"model": style_run.name, "prompt": "", "max_tokens": 40, "n": 3, "seed": 4, "style": "vowels"}
    model = genlab.load(style_run)
    expected = genlab.generate(model, "", style="vowels", max_new_tokens=40, num_return_sequences=3, seed=4)
    expected_one = genlab.generate(model, "", style="vowels", max_new_tokens=40, seed=4)[0]
    with TestClient(create_app(style_run.parent, workers=1, queue_size=4), base_url="http://127.0.0.1") as client:
        reply = client.post("/v1/completions", json=request)
        assert reply.status_code == 200, reply.text
        assert [choice["text"] for choice in reply.json()["choices"]] == expected
        with client.stream("POST", "/v1/completions", json={**request, "n": 1, "stream": True}) as response:
            events = parse_sse(response.read().decode())
        assert "".join(event["choices"][0]["text"] for event in events) == expected_one
        assert_http_error(client.post("/v1/completions", json={**request, "style": "dickens"}), 400,
                          "unknown style 'dickens'", "consonants, vowels", param="style")
        assert_http_error(client.post("/v1/completions", json={**request, "style": ""}), 422, "style")


def test_cli_generate_and_eval_with_styles(style_run, capsys):
    code, out, err = run_cli(capsys, "generate", str(style_run), "--style", "vowels", "--max-new-tokens", "80",
                             "--temperature", "0.8")
    assert code == 0, err
    written = letters(out)
    assert sum(c in VOWELS for c in written) / len(written) > 0.95
    code, _, err = run_cli(capsys, "generate", str(style_run), "--style", "Vowels")
    assert_clean_error(code, err, "unknown style 'Vowels'", "consonants, vowels")
    code, out, err = run_cli(capsys, "eval", str(style_run), "--metrics", "style", "-n", "20", "--max-new-tokens", "40")
    assert code == 0, err
    assert "attributed" in out and "vowels" in out and "held-out" in out
    result = json.loads((style_run / "metrics.json").read_text())["eval"]
    style = result["style"]
    assert set(style["styles"]) == {"consonants", "vowels"} and style["n_per_style"] == 20
    assert style["held_out_accuracy"] == 1.0  # disjoint alphabets: the classifier cannot miss
    for row in style["styles"].values():
        assert row["attributed"] >= 0.9 and sum(row["attributed_to"].values()) == 20
    assert "likelihood" not in result  # only the group asked for
    # Another corpus: scored as plain text (no style token) in the base tokenizer's ids.
    other = style_run.parent / "more-vowels.txt"
    other.write_text(words(VOWELS, 2000, 9), encoding="utf-8")
    code, out, err = run_cli(capsys, "eval", str(style_run), "--against", f"file:{other}:test", "--metrics", "likelihood")
    assert code == 0, err
    result = json.loads((style_run / "metrics.json").read_text())["eval"]
    test = result["likelihood"]["test"]
    text = other.read_text(encoding="utf-8")
    base = genlab.load(style_run).tokenizer.base
    stream = base.encode(text[len(text) - round(len(text) * 0.05):])  # the last 5%, in the base tokenizer's ids
    assert result["data"] == f"file:{other}:test" and test["tokens"] == (len(stream) - 1) // 32 * 32  # whole windows
    assert test["perplexity"] < 7  # random vowels: ~5; uniform over its 12 characters: 12; shifted ids: far worse


def test_style_metrics_need_a_style_model(tmp_path, capsys):
    run = genlab.train("gpt-shakespeare-char", ["steps=2", "data.name=pydoc", *TINY], out=tmp_path / "plain")
    assert json.loads((run / "config.json").read_text())["data"]["styles"] is False
    code, _, err = run_cli(capsys, "eval", str(run), "--metrics", "style")
    assert_clean_error(code, err, "style metrics need a model trained with styles")
