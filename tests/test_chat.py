"""Dialogue models: genlab.chat / chat_stream, `genlab chat` (--once, a scripted session with
/reset), the conversation's source as the model saw it in training, genlab eval's dialogue
statistics, and bad input."""

from __future__ import annotations

import io
import json

import pytest

import genlab
from genlab.data.pairs import PairDataSpec, dialogue_source_ids, load_pair_data
from genlab.tasks.textpairs import chat_turns

from conftest import assert_clean_error, run_cli

# A few seconds of training: a 1+1-layer model of width 32 on 160 SGD turns per split.
TINY = ["data.limit=160", "data.vocab_size=2000", "model.d_model=32", "model.n_head=2", "model.n_encoder_layers=1",
        "model.n_decoder_layers=1", "model.d_ff=64", "batch_size=32", "lr=0.003", "train.eval_batches=2",
        "train.progress=false", "train.tensorboard=false", "data.max_source_len=64", "data.max_target_len=24"]
HELLO = [{"role": "user", "content": "I need a bus to Fresno."}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from genlab.cli import main

    out = tmp_path_factory.mktemp("chat") / "sgd"
    assert main(["train", "chat-sgd", "steps=30", *TINY, "--out", str(out)]) == 0
    return out


def test_a_dialogue_model_trains_and_says_how_to_talk_to_it(run, capsys):
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["name"] == "sgd" and config["data"]["context_turns"] == 3
    code, out, err = run_cli(capsys, "info", str(run))
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", str(run))
    assert_clean_error(code, err, "dialogue model", "genlab chat")


def test_chat_reads_the_conversation_as_training_did(run):
    model = genlab.load(run)
    turns = [("user", "Hi."), ("assistant", "How can I help?"), ("user", "A bus, please."), ("assistant", "Where to?"),
             ("user", "Fresno.")]
    # The source is built by the same function that built the training sources: the last 3 turns, tagged.
    ids, cut = dialogue_source_ids(model.tokenizer, turns, model.config.max_source_len, 3, True)
    assert not cut
    data = load_pair_data(PairDataSpec(name="sgd", context_turns=3, limit=20, vocab_size=2000, max_source_len=64,
                                       max_target_len=24), tokenizer=model.tokenizer)
    k = next(i for i, c in enumerate(data.train.contexts) if len(c) >= 3)
    expected, _ = dialogue_source_ids(model.tokenizer, data.train.contexts[k], 64, 3, True)
    assert data.train.src[k, : data.train.src_len[k]].tolist() == expected.tolist()
    # The same reply whether the 2 oldest turns are given or not: the model reads 3.
    messages = [{"role": r, "content": t} for r, t in turns]
    assert genlab.chat(model, messages) == genlab.chat(model, messages[2:])


def test_streamed_pieces_make_the_reply(run):
    model = genlab.load(run)
    for settings in ({}, {"temperature": 1.0, "top_p": 0.9, "seed": 7}):
        reply = genlab.chat(model, HELLO, **settings)
        pieces = list(genlab.chat_stream(model, HELLO, **settings))
        assert "".join(pieces) == reply
    assert genlab.chat(model, HELLO, temperature=1.0, seed=7) == genlab.chat(model, HELLO, temperature=1.0, seed=7)
    # (role, text) pairs and OpenAI-shaped dicts are the same conversation; system messages are set aside.
    assert genlab.chat(model, [("user", "I need a bus to Fresno.")]) == genlab.chat(model, HELLO)
    assert genlab.chat(model, [{"role": "system", "content": "Be nice."}, *HELLO]) == genlab.chat(model, HELLO)


def test_genlab_chat_once_and_a_scripted_session(run, capsys, monkeypatch):
    model = genlab.load(run)
    first = genlab.chat(model, HELLO)
    code, out, err = run_cli(capsys, "chat", str(run), "--once", HELLO[0]["content"])
    assert code == 0, err
    assert out == first + "\n"
    # A session from stdin: the second reply answers the whole history; /reset forgets it.
    second_turn = "On March 3rd."
    history = [*HELLO, {"role": "assistant", "content": first}, {"role": "user", "content": second_turn}]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{HELLO[0]['content']}\n{second_turn}\n/reset\n{second_turn}\n"
                                                 "/nonsense\n/quit\nnot read\n"))
    code, out, err = run_cli(capsys, "chat", str(run))
    assert code == 0, err
    assert out.splitlines() == [first, genlab.chat(model, history),
                                genlab.chat(model, [{"role": "user", "content": second_turn}])]
    assert "conversation forgotten" in err and "unknown command /nonsense" in err


def test_eval_of_a_dialogue_model_reports_response_statistics(run, capsys):
    code, out, err = run_cli(capsys, "eval", str(run), "-n", "40")
    assert code == 0, err
    result = json.loads((run / "metrics.json").read_text())["eval"]
    assert result["dialogue"] and result["sentences"] == 40
    assert set(result["responses"]) == {"model", "references"}
    assert 0 < result["responses"]["references"]["distinct-1"] <= 1
    assert "distinct-2" in out and "BLEU" in out and "tok:13a" in out


def test_bad_conversations_are_clear_errors(run, capsys):
    model = genlab.load(run)
    for messages, needle in [
        ([], "empty"),
        ("hello", "list of"),
        ([{"role": "robot", "content": "hi"}], "role 'robot'"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes?"}], "last message is the assistant"),
        ([{"role": "user", "content": "   "}], "empty"),
        ([{"role": "user", "content": 3}], "not text"),
        ([{"role": "system", "content": "Be nice."}], "empty"),
    ]:
        with pytest.raises(genlab.GenlabError, match=needle):
            genlab.chat(model, messages)
    assert chat_turns([("user", "a"), ("assistant", "b"), ("user", "c")]) == [("user", "a"), ("assistant", "b"),
                                                                              ("user", "c")]
    code, _, err = run_cli(capsys, "chat", str(run), "--once", "  ")
    assert_clean_error(code, err, "empty")
    code, out, err = run_cli(capsys, "chat", str(run), "--once", "bus " * 200)
    assert code == 0 and "left out" in err
    code, _, err = run_cli(capsys, "translate", str(run), "hello")
    assert_clean_error(code, err, "dialogue model", "genlab chat")


def test_chat_refuses_a_translation_model(tmp_path, capsys):
    out = tmp_path / "zh-en"
    genlab.train("translate-zh-en", ["steps=2", *[o for o in TINY if not o.startswith("data.max_source")],
                                     "data.limit=40"], out=out)
    code, _, err = run_cli(capsys, "chat", str(out), "--once", "hi")
    assert_clean_error(code, err, "translation model", "genlab translate")
