"""Text: corpora and splits, tokenizers, the GPT and LSTM families through genlab.train,
exact resume, the train -> load -> generate CLI path, and bad input."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

import genlab
from genlab.cli import main
from genlab.config import TrainConfig
from genlab.data.text import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    TextDataSpec,
    load_corpus,
    load_text_data,
    tokenizer_from_json,
)
from genlab.errors import GenlabError
import genlab.models.transformer as transformer
from genlab.models.transformer import GPT, ElementDropout, GPTConfig, Rotary, causal_attention_explicit
from genlab.training import Trainer

from conftest import SHARED_DATA, assert_clean_error, run_cli

# Tiny models and windows: every training run here takes a second or two.
TINY_GPT = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=32", "batch_size=8",
            "train.eval_batches=4", "train.progress=false", "train.tensorboard=false"]
TINY_LSTM = ["model.n_embd=16", "model.hidden_size=32", "data.block_size=32", "batch_size=8",
             "train.eval_batches=4", "train.progress=false", "train.tensorboard=false"]
NASTY_STRINGS = [
    "", "plain ascii", "naïve café — “quotes” …", "日本語のテキスト", "emoji 😀👍🏽 and ZWJ 👩‍👩‍👧",
    "combining e\u0301 and \u0000 NUL and \t tab\r\n", "RTL שלום مرحبا", "\U0010ffff max code point",
]


def random_unicode(seed: int, length: int = 200) -> str:
    rng = random.Random(seed)
    # Every code point except the surrogates, which no valid Python text from a file contains.
    points = [rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)])
              for _ in range(length)]
    return "".join(map(chr, points))


# ----------------------------------------------------------------------------- corpora and splits


def test_pydoc_is_embedded_and_split_contiguously():
    from pydoc_data.topics import topics

    text = load_corpus("pydoc", SHARED_DATA)
    assert len(text) > 100_000 and topics["assert"].strip() in text
    data = load_text_data(TextDataSpec(name="pydoc", tokenizer="char", block_size=64))
    decoded = [data.tokenizer.decode(getattr(data, s).tokens) for s in ("train", "val", "test")]
    assert "".join(decoded) == text  # train | val | test, in order, nothing lost
    assert len(decoded[1]) == round(0.05 * len(text)) and len(decoded[2]) == pytest.approx(0.05 * len(text), abs=1)
    assert data.val.tokens_per_char == 1.0
    assert data.model_fields() == {"vocab_size": len(set(text)), "block_size": 64}


def test_tinyshakespeare_from_the_data_dir():
    data = load_text_data(TextDataSpec(name="tinyshakespeare", tokenizer="char", block_size=128))
    assert data.tokenizer.vocab_size == 65
    assert sum(len(getattr(data, s)) for s in ("train", "val", "test")) == 1_115_394
    assert data.tokenizer.decode(data.train.tokens[:14]) == "First Citizen:"


def test_training_windows_are_contiguous_and_seeded_and_validation_covers_the_split():
    data = load_text_data(TextDataSpec(name="pydoc", tokenizer="byte", block_size=16))
    batch = data.batch("train", torch.arange(64), torch.Generator().manual_seed(0))
    x = batch["x"]
    assert x.shape == (64, 17) and x.dtype == torch.long
    stream = bytes(data.train.tokens.tolist())  # byte tokens: the stream is the text's UTF-8
    assert all(bytes(row.tolist()) in stream for row in x)  # each window is a slice of the stream
    again = data.batch("train", torch.arange(64), torch.Generator().manual_seed(0))["x"]
    other = data.batch("train", torch.arange(64), torch.Generator().manual_seed(1))["x"]
    assert torch.equal(x, again) and not torch.equal(x, other)
    n = data.num_examples("val")
    val = data.batch("val", torch.arange(n))["x"]
    assert torch.equal(val[:, :-1].flatten(), data.val.tokens[: n * 16].long())  # consecutive, no overlap
    assert batch["tokens_per_char"] == pytest.approx(len(data.train) / data.train.num_chars)


def test_user_text_files_and_folders(tmp_path):
    (tmp_path / "a.txt").write_bytes("first line\r\nsecond line".encode("utf-8"))
    assert load_corpus(f"file:{tmp_path / 'a.txt'}", tmp_path) == "first line\nsecond line"
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("bee\n", encoding="utf-8")
    (folder / "sub" / "c.txt").write_text("sea", encoding="utf-8")
    (folder / ".hidden").write_bytes(b"\xff\xfe binary junk")
    assert load_corpus(f"folder:{folder}", tmp_path) == "bee\n\nsea\n"


@pytest.mark.parametrize(
    "content, needles",
    [
        (b"", ["empty"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", ["binary"]),
        (b"\xff\xfeh\x00i", ["UTF-16 byte-order mark", "data.encoding"]),  # odd bytes after the mark
    ],
    ids=["empty", "binary", "broken-utf-16"],
)  # legacy encodings (cp1252, Latin-1, UTF-16 with a byte-order mark) load: tests/test_style.py
def test_bad_text_files_get_clear_errors(tmp_path, capsys, content, needles):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    code, _, err = run_cli(capsys, "train", "gpt-shakespeare-char", f"data.name=file:{path}", "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, str(path), *needles)


def test_too_little_text_and_bad_data_settings(tmp_path, capsys):
    path = tmp_path / "short.txt"
    path.write_text("a short note\n" * 20)
    code, _, err = run_cli(capsys, "train", "gpt-shakespeare-char", f"data.name=file:{path}", "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "fewer than one window", "block_size")
    for bad, needle in [("data.vocab_size=500", "only to data.tokenizer=bpe"), ("data.tokenizer=word", "char, byte, bpe"),
                        ("data.name=shakespeare", "unknown text corpus"), ("model.block_size=64", "data.block_size"),
                        ("data.val_fraction=0", "val_fraction"), ("model.n_embd=30", "multiple of model.n_head")]:
        code, _, err = run_cli(capsys, "train", "gpt-shakespeare-char", bad, "--out", str(tmp_path / "r2"))
        assert_clean_error(code, err, needle)
    code, _, err = run_cli(capsys, "train", "gpt-pydoc-bpe", "data.vocab_size=100", "--out", str(tmp_path / "r3"))
    assert_clean_error(code, err, "256 byte symbols")


# ----------------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trips_any_unicode_string():
    tokenizer = tokenizer_from_json(ByteTokenizer().to_json())
    for text in NASTY_STRINGS + [random_unicode(seed) for seed in range(20)]:
        ids = tokenizer.encode(text)
        assert ids.max(initial=0) < 256 and len(ids) == len(text.encode("utf-8"))
        assert tokenizer.decode(ids) == text
    with pytest.raises(GenlabError, match="not valid Unicode"):
        tokenizer.encode("lone surrogate \ud800")


def test_char_tokenizer_round_trip_and_unknown_characters():
    tokenizer = CharTokenizer.from_text("hello world\n")
    restored = tokenizer_from_json(tokenizer.to_json())
    assert restored.symbols == tokenizer.symbols and restored.vocab_size == 9
    assert restored.decode(restored.encode("hello\nworld")) == "hello\nworld"
    with pytest.raises(GenlabError, match="never seen: 'H', 'x'") as error:
        restored.encode("Hello xw")
    assert "data.tokenizer=byte" in error.value.hint


def test_bpe_tokenizer_survives_save_and_load_exactly(tmp_path):
    text = load_corpus("pydoc", SHARED_DATA)[:150_000]
    tokenizer = BPETokenizer.train(text, vocab_size=400)
    assert tokenizer.vocab_size == 400
    (tmp_path / "tokenizer.json").write_text(tokenizer.to_json())
    restored = tokenizer_from_json((tmp_path / "tokenizer.json").read_text())
    assert restored.to_json() == tokenizer.to_json()
    held_out = load_corpus("pydoc", SHARED_DATA)[-20_000:]
    for sample in [held_out, *NASTY_STRINGS, random_unicode(1)]:
        ids = tokenizer.encode(sample)
        assert restored.encode(sample).tolist() == ids.tolist()
        assert restored.decode(ids) == sample  # byte-level: lossless on any text
    assert len(tokenizer.encode(held_out)) < 0.6 * len(held_out.encode("utf-8"))  # the merges compress
    assert BPETokenizer.train(text, vocab_size=400).to_json() == tokenizer.to_json()  # training is deterministic


def test_damaged_tokenizer_files(tmp_path):
    for content, needle in [("{not json", "not valid JSON"), ('{"genlab_tokenizer": "word"}', "not a char, byte or BPE"),
                            ('{"model": {"type": "BPE", "vocab": 3}}', "not a readable BPE")]:
        with pytest.raises(GenlabError, match=needle):
            tokenizer_from_json(content)


# ----------------------------------------------------------------------------- models


def test_loss_perplexity_and_bits_per_char_agree():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    x = torch.randint(50, (4, 9))
    metrics = model.validation_step({"x": x, "tokens_per_char": 0.5})
    # An untrained model is close to uniform: about ln(50) nats per token.
    assert metrics["loss"] == pytest.approx(math.log(50), abs=0.1)
    assert metrics["bits_per_char"] == pytest.approx(metrics["loss"] * 0.5 / math.log(2))
    assert model.summarize_validation(metrics)["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert model.log_likelihood(x).shape == (4,)
    torch.testing.assert_close(model.log_likelihood(x), model.token_log_likelihoods(x).sum(1))


def test_attention_dropout_is_separate_from_the_residual_dropout():
    """model.attention_dropout=0 with model.dropout=p: the attention weights are kept, so in training an attention
    layer's output is its eval output with elements zeroed or scaled by 1/(1-p) (residual dropout alone)."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16)
    for attention_dropout, exact in ((0.0, True), (0.5, False), (None, False)):  # None: the same rate as model.dropout
        model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.5,
                              attention_dropout=attention_dropout))
        attention = model.transformer.blocks[0].attention
        expected = attention.eval()(x)
        trained = attention.train()(x)
        kept = trained != 0
        assert 0.3 < kept.float().mean() < 0.7
        assert torch.allclose(trained[kept], 2 * expected[kept], atol=1e-6) == exact
    with pytest.raises(GenlabError, match="model.attention_dropout"):
        GPTConfig(attention_dropout=1.0)


@pytest.mark.parametrize("recipe, tiny", [("gpt-shakespeare-char", TINY_GPT), ("lstm-shakespeare-char", TINY_LSTM),
                                          ("gpt-shakespeare-char", [*TINY_GPT, "train.optimizer=muon"])],
                         ids=["gpt", "lstm", "gpt-muon"])
def test_training_learns_and_resume_is_exact(tmp_path, recipe, tiny):
    # pydoc instead of Shakespeare keeps the test free of the data directory; dropout and a
    # warm-up exercise the noise and the learning-rate schedule across the resume.
    common = [*tiny, "data.name=pydoc", "model.dropout=0.2", "train.warmup_steps=5", "train.lr_schedule=constant",
              "lr=0.01", "train.checkpoint_every=4", "train.eval_every=4"]
    straight = genlab.train(recipe, ["steps=12", *common], out=tmp_path / "straight")
    first = genlab.train(recipe, ["steps=4", *common], out=tmp_path / "split")
    resumed = genlab.train(None, ["steps=12"], out=first, resume=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (straight / "history.jsonl").read_text().splitlines()]
    assert history[-1]["val"]["loss"] < history[0]["val"]["loss"] - 0.3  # it learns
    metrics = json.loads((straight / "metrics.json").read_text())
    assert set(metrics["val"]) == {"loss", "perplexity", "bits_per_char"}
    assert metrics["training"]["tokens_per_s"] > 0
    assert (straight / "samples.txt").read_text().startswith("--- sample 1")
    assert (straight / "tokenizer.json").is_file()


def test_muon_with_adamw_steps_as_its_two_optimizers_and_round_trips_its_state():
    from genlab.models.optimizers import MuonWithAdamW

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    twin = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    twin.load_state_dict(model.state_dict())
    cfg = TrainConfig(steps=3, lr=0.01, weight_decay=0.1, optimizer="muon", progress=False)
    combined = model.configure_optimizers(cfg)["main"]
    assert isinstance(combined, MuonWithAdamW)
    matrices = [p for p in twin.transformer.blocks.parameters() if p.dim() == 2]
    rest = [p for p in twin.parameters() if all(p is not m for m in matrices)]
    assert len(combined.muon.param_groups[0]["params"]) == len(matrices) > 0
    muon = torch.optim.Muon(matrices, lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.99))
    x = torch.randint(0, 50, (4, 17))
    for _ in range(3):
        for net, opts in ((model, [combined]), (twin, [muon, adamw])):
            for opt in opts:
                opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
            for opt in opts:
                opt.step()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    restored = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    again = restored.configure_optimizers(cfg)["main"]
    again.load_state_dict(combined.state_dict())
    for a, b in zip(again.state_dict()["state"].values(), combined.state_dict()["state"].values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    assert [g["weight_decay"] for g in again.param_groups] == [0.1, 0.1, 0.0]


def test_muon_is_refused_for_a_family_without_it(tmp_path):
    with pytest.raises(GenlabError) as e:
        genlab.train("lstm-shakespeare-char", [*TINY_LSTM, "data.name=pydoc", "steps=1", "train.optimizer=muon"],
                     out=tmp_path / "lstm")
    assert "train.optimizer=muon" in e.value.message and "remove train.optimizer" in e.value.hint


def test_learning_rate_schedule():
    torch.manual_seed(0)
    data = load_text_data(TextDataSpec(name="pydoc", tokenizer="byte", block_size=16))
    model = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=1, n_head=1, n_embd=8))
    cfg = TrainConfig(steps=110, lr=1.0, lr_schedule="cosine", warmup_steps=10, min_lr_ratio=0.1, progress=False)
    trainer = Trainer(model, data, cfg, "/nonexistent")
    factors = [trainer.learning_rate_factor(step) for step in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)  # linear warm-up
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.55)  # half-way down the cosine
    assert factors[109] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    wsd = Trainer(model, data, TrainConfig(steps=100, lr=1.0, lr_schedule="wsd", decay_fraction=0.25, min_lr_ratio=0.0,
                                           progress=False), "/nonexistent")
    assert [wsd.learning_rate_factor(step) for step in (0, 50, 75, 80, 90, 100)] == pytest.approx(
        [1.0, 1.0, 1.0, 0.8, 0.4, 0.0])  # counting steps: held, then down by 1 / 25 per step after step 75
    with pytest.raises(GenlabError, match="train.decay_fraction"):
        TrainConfig(lr_schedule="wsd", decay_fraction=0.0)


# ----------------------------------------------------------------------------- the CLI path


@pytest.fixture(scope="module")
def bpe_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "gpt-bpe"
    code = main(["train", "gpt-pydoc-bpe", "steps=30", "data.vocab_size=320", "lr=0.005", *TINY_GPT, "--out", str(out)])
    assert code == 0
    return out


def test_train_load_generate_through_the_cli(bpe_model_dir, capsys):
    model = genlab.load(bpe_model_dir)
    assert model.family == "gpt" and model.tokenizer.kind == "bpe" and model.tokenizer.vocab_size == 320
    code, out, err = run_cli(capsys, "generate", str(bpe_model_dir), "--prompt", "The with", "--max-new-tokens", "40",
                             "--temperature", "0.8", "--top-p", "0.95")
    assert code == 0, err
    assert out.startswith("The with") and len(out) > len("The with") + 10
    expected = genlab.generate(model, "The with", max_new_tokens=40, temperature=0.8, top_p=0.95)[0]
    assert out == "The with" + expected + "\n"  # the stream is the same text as the API gives
    code, out, err = run_cli(capsys, "generate", str(bpe_model_dir), "--prompt", "def", "-n", "3", "--top-k", "20",
                             "--max-new-tokens", "10")
    assert code == 0 and out.count("--- sample") == 3
    code, out, err = run_cli(capsys, "generate", str(bpe_model_dir), "--num-beams", "3", "-n", "2", "--max-new-tokens", "5")
    assert code == 0 and out.count("--- beam") == 2


def test_sample_eval_info_on_a_text_model(bpe_model_dir, tmp_path, capsys):
    code, out, err = run_cli(capsys, "sample", str(bpe_model_dir), "-n", "2")
    assert code == 0 and out.count("--- sample") == 2 and "genlab generate" in err
    code, out, err = run_cli(capsys, "sample", str(bpe_model_dir), "-n", "2", "-o", str(tmp_path / "s.txt"))
    assert code == 0 and (tmp_path / "s.txt").read_text().count("--- sample") == 2
    assert_clean_error(*run_cli(capsys, "sample", str(bpe_model_dir), "-o", str(tmp_path / "s.png"))[::2], "text model")
    code, out, err = run_cli(capsys, "eval", str(bpe_model_dir), "-n", "4", "--max-new-tokens", "60")
    assert code == 0, err
    evaluation = json.loads((bpe_model_dir / "metrics.json").read_text())["eval"]
    for split in ("val", "test"):
        row = evaluation["likelihood"][split]
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]))
        assert row["tokens"] > 1000 and 0 < row["bits_per_char"] < 8
    assert set(evaluation["samples"]["metrics"]) == {"distinct-1", "distinct-2", "distinct-3", "self-bleu"}
    assert "perplexity" in out and "distinct-2" in out
    code, out, err = run_cli(capsys, "info", str(bpe_model_dir))
    assert code == 0 and "tokenizer   bpe, 320 tokens" in out


def test_generate_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--top-p" in out and "longer than the model's context window" in out


def test_generate_bad_input(bpe_model_dir, tmp_path, capsys):
    for args, needles in [(["--temperature", "-1"], ["temperature", ">= 0"]), (["--top-p", "0"], ["top_p", "(0, 1]"]),
                          (["--top-p", "1.2"], ["top_p"]), (["--max-new-tokens", "0"], ["max-new-tokens"]),
                          (["--top-k", "5", "--num-beams", "2"], ["beam search"])]:
        assert_clean_error(*run_cli(capsys, "generate", str(bpe_model_dir), *args)[::2], *needles)
    code, out, err = run_cli(capsys, "generate", str(bpe_model_dir), "--prompt", "x" * 200, "--max-new-tokens", "3",
                             "--temperature", "0")
    assert code == 0 and "longer than the model's context window of 32" in err
    vae = tmp_path / "vae"
    assert main(["train", "vae-digits", "steps=2", "model.hidden=[8]", "model.latent_dim=2", "train.progress=false",
                 "--out", str(vae)]) == 0
    capsys.readouterr()
    assert_clean_error(*run_cli(capsys, "generate", str(vae), "--prompt", "hi")[::2], "generate", "gpt")
    missing = tmp_path / "no-tokenizer"
    missing.mkdir()
    for name in ("config.json", "model.safetensors"):
        (missing / name).write_bytes((bpe_model_dir / name).read_bytes())
    assert_clean_error(*run_cli(capsys, "generate", str(missing))[::2], "tokenizer.json")


def test_rotary_positions_make_attention_scores_depend_on_the_offset_only():
    """RoPE's defining property: <rotate(q, m), rotate(k, n)> is a function of m - n."""
    torch.manual_seed(0)
    rotary = Rotary(head_dim=8, window=32)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    score = lambda m, n: (rotary(q, m) * rotary(k, n)).sum().item()  # noqa: E731
    assert score(5, 2) == pytest.approx(score(20, 17), abs=1e-5)
    assert score(5, 2) == pytest.approx(score(3, 0), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    assert torch.allclose(rotary(q, 0), q)  # position 0: no rotation
    torch.testing.assert_close(rotary(q, 7).norm(), q.norm())  # a rotation keeps lengths


@pytest.mark.parametrize("positions, activation, qk_norm",
                         [("rotary", "relu2", False), ("rotary", "gelu", True), ("learned", "relu2", True)])
def test_speedrun_options_keep_the_cache_exact(positions, activation, qk_norm):
    """Feeding tokens one at a time through the KV cache gives the logits of one pass over the whole sequence."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                          positions=positions, activation=activation, qk_norm=qk_norm)).eval()
    assert (model.transformer.position_embedding is None) == (positions == "rotary")
    tokens = torch.randint(50, (2, 12))
    with torch.no_grad():
        whole = model(tokens)
        cache = model.new_cache(2)
        prompt = model(tokens[:, :5], cache)  # a prompt, then one token at a time
        steps = [model(tokens[:, t : t + 1], cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([prompt, *steps], dim=1), whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(qk_norm):
    """With QK-norm, scaling the query and key projections leaves every logit unchanged; without, it does not."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                          qk_norm=qk_norm)).eval()
    tokens = torch.randint(50, (2, 12))
    with torch.no_grad():
        before = model(tokens)
        for block in model.transformer.blocks:
            block.attention.qkv.weight[: 2 * 16] *= 10.0  # the query and key rows; values untouched
        after = model(tokens)
    assert torch.allclose(before, after, atol=1e-5) == qk_norm


def test_explicit_causal_attention_matches_the_fused_kernel():
    """The written-out attention bf16 training uses on a CPU: the same values and gradients as torch's fused
    causal attention (in float64, where both are exact to rounding)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    explicit = causal_attention_explicit(q, k, v)
    explicit_grads = torch.autograd.grad(explicit, (q, k, v), grad)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    fused_grads = torch.autograd.grad(fused, (q, k, v), grad)
    torch.testing.assert_close(explicit, fused)
    for mine, theirs in zip(explicit_grads, fused_grads):
        torch.testing.assert_close(mine, theirs)
    with torch.no_grad():  # the future never leaks: changing the last key and value leaves earlier outputs alone
        k2, v2 = k.clone(), v.clone()
        k2[:, :, -1], v2[:, :, -1] = 5.0, 5.0
        torch.testing.assert_close(causal_attention_explicit(q, k2, v2)[:, :, :-1], explicit[:, :, :-1])


def test_gpt_uses_the_explicit_attention_only_for_bf16_training_on_a_cpu(monkeypatch):
    calls = []

    def counted(q, k, v):
        calls.append(q.dtype)
        return causal_attention_explicit(q, k, v)

    monkeypatch.setattr(transformer, "causal_attention_explicit", counted)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    tokens = torch.randint(50, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_logits = model.train()(tokens)
        assert calls == [torch.bfloat16] * 2  # one per layer
        with torch.no_grad():
            model.eval()(tokens)  # generation and evaluation keep the fused kernel (faster without a backward)
    fp32_logits = model.train()(tokens)
    assert len(calls) == 2
    # bf16 through the explicit path agrees with fp32 through the fused kernel to bf16's precision
    torch.testing.assert_close(bf16_logits.float(), fp32_logits, atol=0.05, rtol=0.05)


def test_speedrun_options_are_checked():
    with pytest.raises(GenlabError, match="model.positions"):
        GPTConfig(positions="sinusoidal")
    with pytest.raises(GenlabError, match="model.activation"):
        GPTConfig(activation="swish")
    with pytest.raises(GenlabError, match="n_embd / n_head even"):
        GPTConfig(n_embd=15, n_head=5, positions="rotary")


def test_element_dropout_drops_each_element_independently_at_its_rate():
    """genlab's CPU dropout (16-bit draws): the rate, independence across positions and channels, the scale, the
    gradient, and identity in eval mode."""
    torch.manual_seed(0)
    dropout = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=64, dropout=0.1)).transformer.dropout
    assert isinstance(dropout, ElementDropout)
    x = torch.randn(64, 32, 64, requires_grad=True)
    dropped = dropout.train()(x)
    kept = dropped != 0
    rate = 1 - kept.float().mean().item()
    assert abs(rate - 0.1) < 4 * math.sqrt(0.1 * 0.9 / kept.numel())  # within 4 standard errors of p
    assert not (kept == kept[:, :1]).all() and not (kept == kept[:1]).all()  # not shared over positions or rows
    # Neighbouring elements come from the same 64-bit draw: their masks must still be uncorrelated.
    pairs = kept.flatten()[: kept.numel() // 2 * 2].view(-1, 2).float()
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item() - (1 - rate) ** 2) < 0.01
    scale = 1 / (1 - round(0.1 * 65536) / 65536)
    torch.testing.assert_close(dropped[kept], x[kept] * scale)
    dropped.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * scale)  # the gradient flows through the survivors only
    assert torch.equal(dropout.eval()(x), x)
    assert torch.equal(ElementDropout(0.0).train()(x), x)


def test_sequence_dropout_drops_the_same_channels_at_every_position():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=64, dropout=0.5,
                          dropout_mask="sequence"))
    dropout = model.transformer.dropout
    x = torch.randn(8, 16, 64)
    dropped = dropout.train()(x)
    kept = dropped != 0
    assert (kept == kept[:, :1]).all()  # one mask per sequence: a channel is kept at all positions or at none
    assert not (kept == kept[:1]).all()  # ... and each sequence has its own
    assert 0.35 < kept.float().mean() < 0.65
    torch.testing.assert_close(dropped[kept], 2 * x[kept])  # survivors scaled by 1 / (1 - p)
    assert torch.equal(dropout.eval()(x), x)
    with pytest.raises(GenlabError, match="model.dropout_mask"):
        GPTConfig(dropout_mask="channel")
