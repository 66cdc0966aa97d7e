"""Translation end to end: `genlab train` of a tiny seq2seq on a slice of tatoeba-cmn, genlab.load
restoring its tokenizer, `genlab eval` (BLEU and chrF equal to sacreBLEU called directly on the
same outputs), `genlab translate` (argument, stdin, files, n-best), bad input, and exact resume."""

from __future__ import annotations

import io
import json
import math

import pytest
import sacrebleu
import torch
from safetensors.torch import load_file

import genlab
from genlab.data.pairs import PairDataSpec, PairTokenizer, load_pair_data
from genlab.kinds.pairs import translation_scores

from conftest import assert_clean_error, run_cli

# A few seconds of training: a 1+1-layer model of width 32 on 160 pairs per split, a small vocabulary.
TINY = ["data.limit=160", "data.vocab_size=2000", "model.d_model=32", "model.n_head=2", "model.n_encoder_layers=1",
        "model.n_decoder_layers=1", "model.d_ff=64", "batch_size=32", "lr=0.003", "train.eval_batches=2",
        "train.progress=false", "train.tensorboard=false", "data.max_target_len=32"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny zh->en model trained through `genlab train` (the CLI), and what the command printed."""
    from genlab.cli import main

    out = tmp_path_factory.mktemp("translate") / "zh-en"
    code = main(["train", "translate-zh-en", "steps=40", *TINY, "--out", str(out)])
    assert code == 0
    return out


def test_datasets_lists_the_pair_data_sets(capsys):
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0
    for name in ("tatoeba-cmn", "sgd", "pairs:FILE", "dialogue:FILE"):
        assert name in out
    assert "text pairs" in out


def test_training_writes_a_model_that_loads_with_its_tokenizer(run):
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "seq2seq" and config["data"]["direction"] == "zh-en" and config["data"]["limit"] == 160
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 40 and metrics["training"]["tokens_per_s"] > 0
    assert math.isfinite(metrics["test"]["loss"]) and metrics["test"]["perplexity"] > 1
    assert (run / "samples.txt").read_text().startswith("--- example 1")
    model = genlab.load(run)
    assert isinstance(model.tokenizer, PairTokenizer) and model.tokenizer.vocab_size == model.config.vocab_size == 2000
    assert model.tokenizer.to_json() + "\n" == (run / "tokenizer.json").read_text(encoding="utf-8")
    for text in ("我们走吧。", "Let's go.", "Привет"):
        assert model.tokenizer.decode(model.tokenizer.encode(text)) == model.tokenizer.normalize(text)


def test_eval_reports_sacrebleu_scores_of_the_beam_search_outputs(run, capsys):
    code, out, err = run_cli(capsys, "eval", str(run))
    assert code == 0, err
    assert "BLEU" in out and "chrF" in out and "tok:13a" in out and "nats/token" in out
    result = json.loads((run / "metrics.json").read_text())["eval"]
    assert result["kind"] == "pairs" and result["data"] == "tatoeba-cmn:test" and result["sentences"] == 160
    assert result["decoding"]["num_beams"] == 4 and result["target_language"] == "other"
    # The same outputs through genlab.translate (beam 4 by default), scored by sacreBLEU itself.
    model = genlab.load(run)
    data = load_pair_data(PairDataSpec(**json.loads((run / "config.json").read_text())["data"]), tokenizer=model.tokenizer)
    outputs = genlab.translate(model, data.test.sources)
    assert [e["output"] for e in result["examples"]] == outputs[:3]
    bleu = sacrebleu.corpus_bleu(outputs, [data.test.targets], tokenize="13a")
    chrf = sacrebleu.corpus_chrf(outputs, [data.test.targets])
    scores = result["scores"]
    assert scores["bleu"] == pytest.approx(bleu.score, abs=1e-9) and scores["chrf"] == pytest.approx(chrf.score, abs=1e-9)
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert scores["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    # The references' likelihood is the Trainer's exact test loss (every target token once).
    train_test = json.loads((run / "metrics.json").read_text())["test"]
    assert result["likelihood"]["loss"] == pytest.approx(train_test["loss"], rel=1e-4)
    assert result["likelihood"]["perplexity"] == pytest.approx(math.exp(result["likelihood"]["loss"]))
    # -n: a seeded sample; --against val; --metrics likelihood skips decoding.
    code, out, err = run_cli(capsys, "eval", str(run), "-n", "20", "--seed", "1", "--against", "val",
                             "--metrics", "likelihood")
    assert code == 0, err
    result = json.loads((run / "metrics.json").read_text())["eval"]
    assert result["data"] == "tatoeba-cmn:val" and result["sentences"] == 20 and "scores" not in result


def test_eval_takes_the_beam_width_and_length_penalty(run, tiny_model_dir, capsys):
    code, out, err = run_cli(capsys, "eval", str(run), "-n", "30", "--against", "val", "--metrics", "bleu",
                             "--beams", "2", "--length-penalty", "1.5", "--no-repeat-ngram", "2")
    assert code == 0, err
    assert "beam 2, length penalty 1.5, no repeated 2-grams" in out
    result = json.loads((run / "metrics.json").read_text())["eval"]
    assert result["decoding"]["num_beams"] == 2 and result["decoding"]["length_penalty"] == 1.5
    assert result["decoding"]["no_repeat_ngram_size"] == 2
    model = genlab.load(run)
    data = load_pair_data(PairDataSpec(**json.loads((run / "config.json").read_text())["data"]), tokenizer=model.tokenizer)
    first = [e["source"] for e in result["examples"]]
    assert [e["output"] for e in result["examples"]] == genlab.translate(model, first, num_beams=2, length_penalty=1.5,
                                                                         no_repeat_ngram_size=2)
    assert all(source in data.val.sources for source in first)
    for args, needles in [(("--beams", "0"), ("--beams",)), (("--length-penalty", "-1"), ("--length-penalty",)),
                          (("--no-repeat-ngram", "65"), ("--no-repeat-ngram",))]:
        code, _, err = run_cli(capsys, "eval", str(run), *args)
        assert_clean_error(code, err, *needles)
    code, _, err = run_cli(capsys, "eval", str(tiny_model_dir), "--beams", "2")
    assert_clean_error(code, err, "text-pair models", "leave them out")


def test_chinese_targets_are_scored_with_sacrebleus_zh_tokenizer():
    hypotheses, references = ["我们走吧。", "他不在家。", "你好"], ["我们走吧。", "他在家。", "你好吗？"]
    scores = translation_scores(hypotheses, references, "zh")
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh").score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert "tok:zh" in scores["bleu_signature"]
    english = translation_scores(["the cat sat"], ["the cat sat down"], None)
    assert english["bleu"] == pytest.approx(sacrebleu.corpus_bleu(["the cat sat"], [["the cat sat down"]]).score)


def test_translate_an_argument_stdin_lines_and_files(run, tmp_path, capsys, monkeypatch):
    model = genlab.load(run)
    expected = genlab.translate(model, ["我们走吧。", "你好。"])
    code, out, err = run_cli(capsys, "translate", str(run), "我们走吧。")
    assert code == 0, err
    assert out == expected[0] + "\n"
    # Lines from stdin: one output line per input line, blank lines kept blank.
    monkeypatch.setattr("sys.stdin", io.StringIO("我们走吧。\n\n你好。\n"))
    code, out, err = run_cli(capsys, "translate", str(run))
    assert code == 0, err
    assert out.split("\n") == [expected[0], "", expected[1], ""]
    # --input / --output
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("我们走吧。\n你好。\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "translate", str(run), "--input", str(source), "--output", str(target))
    assert code == 0, err
    assert target.read_text(encoding="utf-8") == f"{expected[0]}\n{expected[1]}\n" and "wrote 2 translations" in out
    # n-best: TSV of line, rank, score, text, best first; the first is the 1-best translation.
    code, out, err = run_cli(capsys, "translate", str(run), "我们走吧。", "--n-best", "3")
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[:2] for r in rows] == [["1", "1"], ["1", "2"], ["1", "3"]] and rows[0][3] == expected[0]
    assert [float(r[2]) for r in rows] == sorted((float(r[2]) for r in rows), reverse=True)
    nbest = genlab.translate(model, "我们走吧。", n_best=3)
    assert [h["text"] for h in nbest[0]] == [r[3] for r in rows]
    # Sampling: reproducible from the seed.
    a = genlab.translate(model, "我们走吧。", temperature=1.0, top_p=0.9, n_best=2, seed=3)
    assert a == genlab.translate(model, "我们走吧。", temperature=1.0, top_p=0.9, n_best=2, seed=3)
    code, out, err = run_cli(capsys, "translate", str(run), "我们走吧。", "--temperature", "1", "--seed", "3")
    assert code == 0, err


def test_long_and_unknown_text_are_translated_with_a_notice(run, capsys):
    code, out, err = run_cli(capsys, "translate", str(run), "我们走吧。" * 100)
    assert code == 0, err
    assert "cut to their first 127 tokens" in err and len(out.splitlines()) == 1
    code, out, err = run_cli(capsys, "translate", str(run), "Привет, мир")
    assert code == 0, err
    assert "character(s) are not in the model's vocabulary" in err and "'П'" in err
    unknown = genlab.load(run).tokenizer.unknown_count("Привет, мир")
    assert unknown >= 7 and f"{unknown} character(s)" in err


def test_bad_translation_input_is_a_one_line_error(run, tiny_model_dir, tmp_path, capsys):
    for args, needles in [
        (("   ",), ("empty",)),
        (("text", "--input", str(tmp_path / "missing.txt")), ("not both",)),
        (("--input", str(tmp_path / "missing.txt")), ("no such file",)),
        (("你好", "--n-best", "5", "--beams", "2"), ("at most num_beams",)),
        (("你好", "--temperature", "0.8", "--beams", "4"), ("beam search is deterministic",)),
    ]:
        code, _, err = run_cli(capsys, "translate", str(run), *args)
        assert_clean_error(code, err, *needles)
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    code, _, err = run_cli(capsys, "translate", str(run), "--input", str(tmp_path / "blank.txt"))
    assert_clean_error(code, err, "no text to translate")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "translate", str(run), "--input", str(tmp_path / "latin1.txt"))
    assert_clean_error(code, err, "not UTF-8")
    code, _, err = run_cli(capsys, "translate", str(tiny_model_dir), "hello")
    assert_clean_error(code, err, "needs a translation model", "genlab train translate-zh-en")
    code, _, err = run_cli(capsys, "sample", str(run))
    assert_clean_error(code, err, "translation model", "genlab translate")
    code, _, err = run_cli(capsys, "translate", str(run), "hi", "--output", str(run / "config.json"))
    assert_clean_error(code, err, "overwrite")
    with pytest.raises(genlab.GenlabError, match="text 2 of 2 .*empty"):
        genlab.translate(genlab.load(run), ["你好", ""])


def test_resume_of_a_translation_run_is_exact(tmp_path):
    # A constant rate after a warm-up in steps: the recipe's cosine and warm-up fraction follow the run's
    # length, which a shorter first run does not share. Dropout exercises the noise across the resume.
    common = [*TINY, "data.limit=64", "train.checkpoint_every=4", "train.eval_every=4", "model.dropout=0.2",
              "train.lr_schedule=constant", "train.warmup_fraction=null", "train.warmup_steps=3"]
    straight = genlab.train("translate-zh-en", ["steps=8", *common], out=tmp_path / "straight")
    first = genlab.train("translate-zh-en", ["steps=4", *common], out=tmp_path / "split")
    resumed = genlab.train(None, ["steps=8"], out=first, resume=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (straight / "tokenizer.json").read_text() == (resumed / "tokenizer.json").read_text()


def test_translate_help_has_examples(capsys):
    from genlab.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["translate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--input" in out and "--n-best" in out and "--beams" in out
