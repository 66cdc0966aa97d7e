"""JSB Chorales piano rolls: the restricted unpickler, the frame-level NLL, the frame model."""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, assert_clean_error, run_cli

from genlab.config import TrainConfig
from genlab.data.jsb import (
    PIANO_KEYS,
    PianoRollDataSpec,
    load_jsb_pieces,
    load_pianoroll_data,
    pieces_to_frames,
    restricted_pickle_load,
)
from genlab.errors import GenlabError
from genlab.models.pianoroll import PianoRollConfig, PianoRollRNN
from genlab.training import Trainer

TINY = ["model.hidden_size=16", "model.nade_hidden=8", "train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def jsb():
    return load_pianoroll_data("jsb")


def _tiny_model(output: str, **extra) -> PianoRollRNN:
    torch.manual_seed(0)
    return PianoRollRNN(PianoRollConfig(hidden_size=16, nade_hidden=8, output=output, dropout=0.0, **extra)).eval()


# ----------------------------------------------------------------------------- data


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_restricted_unpickler_refuses_globals_and_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"train": [[(60,)]], "evil": _RunsAShellCommand(marker)}, protocol=2)
    with pytest.raises(GenlabError, match=r"refusing to unpickle the global (posix|os|nt)\.system"):
        restricted_pickle_load(payload)
    assert not marker.exists()
    with pytest.raises(GenlabError, match=r"builtins\.eval"):
        restricted_pickle_load(pickle.dumps(_CallsEval()))
    # A numpy array needs numpy's array reconstructor, which the JSB file does not use: refused too.
    with pytest.raises(GenlabError, match="refusing to unpickle"):
        restricted_pickle_load(pickle.dumps(np.zeros(3)))
    # Numeric numpy scalars (what the JSB pickle holds) and builtin containers are read.
    assert restricted_pickle_load(pickle.dumps({"a": [(np.int64(60), 1.5)]}, protocol=4)) == {"a": [(60, 1.5)]}
    with pytest.raises(GenlabError, match="not a readable pickle"):
        restricted_pickle_load(b"\x80\x02}q\x00(X")


def test_real_pickle_matches_the_json_copy_and_the_published_split():
    pieces = load_jsb_pieces("quarter")  # the checksummed pickle, read with the restricted unpickler
    assert {k: len(v) for k, v in pieces.items()} == {"train": 229, "valid": 76, "test": 77}
    reference = json.loads((SHARED_DATA / "jsb_chorales" / "jsb-chorales-quarter.json").read_text())
    for split in ("train", "valid", "test"):
        assert pieces[split] == [[sorted(set(step)) for step in piece] for piece in reference[split]]
    pitches = {p for split in pieces.values() for piece in split for step in piece for p in step}
    assert min(pitches) == 43 and max(pitches) == 96


def test_frames_and_padded_batches(jsb):
    assert jsb.train.frames.shape[1] == PIANO_KEYS and jsb.frame_seconds == 0.5 and jsb.frames_per_bar == 4
    frames, lengths = pieces_to_frames([[[21, 60], []], [[108]]])
    assert lengths.tolist() == [2, 1]
    assert frames[0].nonzero().flatten().tolist() == [0, 39] and frames[1].sum() == 0 and frames[2, 87] == 1
    batch = jsb.batch("test", torch.tensor([3, 0]))
    lengths = jsb.test.lengths[[3, 0]]
    assert batch["x"].shape == (2, int(lengths.max()), PIANO_KEYS)
    assert batch["mask"].sum(1).tolist() == lengths.tolist()
    assert batch["x"][~batch["mask"]].sum() == 0  # padding is silent
    first = jsb.test.frames[: int(jsb.test.lengths[0])].float()
    assert torch.equal(batch["x"][1, : len(first)], first)


def test_transposition_shifts_whole_pieces_and_keeps_notes(jsb):
    spec = PianoRollDataSpec(transpose=3)
    data = load_pianoroll_data(spec)
    plain = jsb.batch("train", torch.arange(8))["x"]
    shifted = data.batch("train", torch.arange(8), torch.Generator().manual_seed(1))["x"]
    assert torch.equal(plain.sum((1, 2)), shifted.sum((1, 2)))  # no note dropped
    for a, b in zip(plain, shifted):
        shifts = [s for s in range(-3, 4) if torch.equal(torch.roll(a, s, -1), b)]
        assert len(shifts) == 1
    assert not torch.equal(plain, shifted)


@pytest.mark.parametrize("values, needle", [
    ({"name": "maestro"}, "unknown piano-roll data set"),
    ({"resolution": "half"}, "unknown data.resolution"),
    ({"transpose": 13}, "data.transpose"),
])
def test_bad_data_settings(values, needle):
    with pytest.raises(GenlabError, match=needle):
        PianoRollDataSpec(**values)


def test_missing_file_offline_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    with pytest.raises(GenlabError, match="jsb-chorales-quarter.pkl") as info:
        load_jsb_pieces("quarter", root=tmp_path)
    assert "raw.githubusercontent.com/czhuang/JSB-Chorales-dataset" in info.value.hint


def test_corrupted_file_is_refused(tmp_path):
    (tmp_path / "jsb_chorales").mkdir()
    (tmp_path / "jsb_chorales" / "jsb-chorales-quarter.pkl").write_bytes(b"not the pickle")
    with pytest.raises(GenlabError, match="corrupted"):
        load_jsb_pieces("quarter", root=tmp_path)


# ----------------------------------------------------------------------------- the metric


def _test_nll(model, data, tmp_path) -> dict:
    # The Trainer's evaluation, as genlab train reports it (batches of 16: the last one is partial).
    cfg = TrainConfig(batch_size=16, progress=False, tensorboard=False, device="cpu")
    return Trainer(model, data, cfg, tmp_path).evaluate("test")


def _closed_form(frames: np.ndarray, p: np.ndarray) -> float:
    """-sum_k [n_k log p_k + (N - n_k) log(1 - p_k)] / N, from the key counts."""
    n = len(frames)
    on = frames.sum(0).astype(np.float64)
    return float(-(on * np.log(p) + (n - on) * np.log1p(-p)).sum() / n)


@pytest.mark.parametrize("output", ["independent", "nade"])
def test_uniform_model_nll_is_88_ln2(jsb, tmp_path, output):
    model = _tiny_model(output)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # every key's logit 0: p = 1/2 for every key, whatever came before
    result = _test_nll(model, jsb, tmp_path)
    assert result["nll_per_frame"] == pytest.approx(88 * math.log(2), rel=1e-6)
    assert result["nll_per_frame_after_first"] == pytest.approx(88 * math.log(2), rel=1e-6)


@pytest.mark.parametrize("output", ["independent", "nade"])
def test_fixed_key_probabilities_match_the_closed_form(jsb, tmp_path, output):
    model = _tiny_model(output)
    p = np.random.default_rng(0).uniform(0.02, 0.9, PIANO_KEYS)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        head = model.key_logits if output == "independent" else model.nade_visible_bias
        head.bias.copy_(torch.from_numpy(np.log(p / (1 - p))))
    result = _test_nll(model, jsb, tmp_path)
    frames = jsb.test.frames.numpy()
    firsts = jsb.test.offsets.numpy()
    assert result["nll_per_frame"] == pytest.approx(_closed_form(frames, p), rel=1e-5)
    after_first = np.delete(frames, firsts, axis=0)
    assert result["nll_per_frame_after_first"] == pytest.approx(_closed_form(after_first, p), rel=1e-5)


def test_nade_is_a_normalised_distribution_and_its_sampler_draws_from_it():
    torch.manual_seed(0)
    model = PianoRollRNN(PianoRollConfig(n_keys=3, lowest_pitch=60, hidden_size=8, nade_hidden=6, output="nade")).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 1.0)
        every_frame = torch.tensor([[(i >> k) & 1 for k in range(3)] for i in range(8)], dtype=torch.float32)
        out, _ = model.rnn(torch.eye(4)[3:].view(1, 1, 4))  # the state after the start flag
        probs = model._nade_log_prob(out[0].expand(8, -1), every_frame).double().exp()
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)  # exact over all 2^3 frames
        # The key-by-key sampler (first frame of 20,000 pieces) must draw from the same distribution.
        drawn = model.sample_frames(20_000, 1, generator=torch.Generator().manual_seed(0))[:, 0]
    codes = (drawn * torch.tensor([1.0, 2.0, 4.0])).sum(1).long()
    frequencies = torch.bincount(codes, minlength=8).double() / len(codes)
    assert torch.allclose(frequencies, probs, atol=0.012), (frequencies, probs)
    assert (probs > 0.02).sum() >= 3  # a non-trivial distribution to compare against


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("output", ["independent", "nade"])
def test_sample_piano_roll_contract(output):
    model = _tiny_model(output)
    roll = model.sample_piano_roll(12, generator=torch.Generator().manual_seed(3))
    assert roll.shape == (12, 128) and roll.dtype == torch.bool
    assert not roll[:, :21].any() and not roll[:, 109:].any()
    again = model.sample_piano_roll(12, generator=torch.Generator().manual_seed(3))
    other = model.sample_piano_roll(12, generator=torch.Generator().manual_seed(4))
    assert torch.equal(roll, again) and not torch.equal(roll, other)
    assert torch.equal(model.sample_piano_roll(5, temperature=0.0), model.sample_piano_roll(5, temperature=0.0))
    prompt = torch.zeros(6, 128, dtype=torch.bool)
    prompt[:, [60, 64, 67]] = True
    continued = model.sample_piano_roll(8, generator=torch.Generator().manual_seed(3), prompt=prompt)
    assert continued.shape == (8, 128)
    assert model.frame_seconds == 0.5 and model.frames_per_bar == 4
    assert {"compose", "log_likelihood", "sample"} <= model.capabilities and model.data_kind == "pianoroll"
    pictures = model.sample(2, generator=torch.Generator().manual_seed(0))  # what genlab sample draws as a grid
    assert pictures.shape == (2, 1, 88, 64) and set(pictures.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("call, needle", [
    (lambda m: m.sample_piano_roll(0), "n_frames"),
    (lambda m: m.sample_piano_roll(2.5), "n_frames"),
    (lambda m: m.sample_piano_roll(4, temperature=-1.0), "temperature"),
    (lambda m: m.sample_piano_roll(4, temperature=float("nan")), "temperature"),
    (lambda m: m.sample_piano_roll(4, prompt=torch.zeros(3, 88)), r"\[frames, 128\]"),
    (lambda m: m.sample_piano_roll(4, prompt=torch.eye(128)[:3].bool()), "MIDI pitch 0"),
    (lambda m: m.sample(2, condition=3), "unconditionally"),
])
def test_bad_sampling_input(call, needle):
    with pytest.raises(GenlabError, match=needle):
        call(_tiny_model("nade"))


@pytest.mark.parametrize("values, needle", [
    ({"output": "softmax"}, "unknown model.output"),
    ({"cell": "rnn"}, "unknown model.cell"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"lowest_pitch": 100}, "not all MIDI pitches"),
])
def test_bad_model_settings(values, needle):
    with pytest.raises(GenlabError, match=needle):
        PianoRollConfig(**values)


def test_genlab_train_lowers_the_nll_and_round_trips(capsys, tmp_path, jsb):
    import genlab
    from genlab.artifact import build_model

    out = tmp_path / "nade"
    code, stdout, err = run_cli(capsys, "train", "rnn-nade-jsb", *TINY, "steps=30", "lr=0.01", "batch_size=8",
                                "train.eval_every=30", "--out", str(out))
    assert code == 0, err
    assert "nll_per_frame" in stdout
    config = json.loads((out / "config.json").read_text())
    test_after = json.loads((out / "metrics.json").read_text())["test"]["nll_per_frame"]
    torch.manual_seed(config["train"]["seed"])  # the same initial weights genlab.train started from
    untrained = build_model(config)
    before = _test_nll(untrained, jsb, tmp_path / "before")["nll_per_frame"]
    assert test_after < before - 10.0  # ~61 nats (88 ln 2) at the start

    model = genlab.load(out)
    assert model.data_kind == "pianoroll" and "compose" in model.capabilities
    assert model.frame_seconds == 0.5 and model.frames_per_bar == 4
    assert _test_nll(model, jsb, tmp_path / "after")["nll_per_frame"] == pytest.approx(test_after, rel=1e-6)
    roll = model.sample_piano_roll(8, generator=torch.Generator().manual_seed(0))
    assert roll.shape == (8, 128) and roll.any()

    code, stdout, err = run_cli(capsys, "eval", str(out))  # scores the test split outside the Trainer
    assert code == 0, err
    assert "frame-level NLL on jsb:quarter:test (77 pieces" in stdout
    evaluated = json.loads((out / "metrics.json").read_text())["eval"]["frame_nll"]
    assert evaluated["nll_per_frame"] == pytest.approx(test_after, rel=1e-6)
    assert evaluated["frames"] == jsb.test.num_frames
    code, _, err = run_cli(capsys, "eval", str(out), "--against", "mnist:test")
    assert_clean_error(code, err, "split of its own data")
    code, stdout, err = run_cli(capsys, "eval", str(out), "--against", "jsb:val")  # the same names as other kinds
    assert code == 0, err
    assert "frame-level NLL on jsb:quarter:val (76 pieces" in stdout


def test_cli_lists_the_data_set(capsys):
    code, stdout, _ = run_cli(capsys, "datasets")
    assert code == 0
    assert any(line.split()[:2] == ["jsb", "present"] for line in stdout.splitlines())


def test_cli_bad_settings_are_clean_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "lstm-jsb", "data.resolution=half", "--out", str(tmp_path / "a"))
    assert_clean_error(code, err, "data.resolution")
    code, _, err = run_cli(capsys, "train", "lstm-jsb", "model.output=softmax", "--out", str(tmp_path / "b"))
    assert_clean_error(code, err, "model.output")
    code, _, err = run_cli(capsys, "train", "lstm-jsb", "model.n_keys=64", "--out", str(tmp_path / "c"))
    assert_clean_error(code, err, "n_keys")
