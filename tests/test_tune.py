"""genlab tune: the search space, the checks before any trial, a study end to end (trials are run
directories, the best model and recipe, plots), the recipe reproducing its trial, resuming, pruning
and divergence. Storage and workers: tests/test_tune_storage.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import REPO, assert_clean_error, run_cli
from genlab.errors import GenlabError
from genlab.tuning.space import Param, parse_param

# A VAE on the bundled digits small enough that a trial takes well under a second; 40 steps, an
# evaluation every 10 (the pruner compares trials at these steps).
TINY = ["model.hidden=[16]", "model.iwae_k=4", "batch_size=32", "train.tensorboard=false", "steps=40",
        "train.eval_every=10", "train.samples_every=1000"]


def _trials(study_dir: Path) -> list[dict]:
    return json.loads((study_dir / "summary.json").read_text())["trials"]


# ----------------------------------------------------------------------------- the search space


@pytest.mark.parametrize("key, spec, expected", [
    ("model.latent_dim", "int:8:64", Param("model.latent_dim", "int", 8, 64)),
    ("model.latent_dim", "int:8:64:8", Param("model.latent_dim", "int", 8, 64, 8)),
    ("lr", "logfloat:1e-4:3e-3", Param("train.lr", "logfloat", 1e-4, 3e-3)),
    ("model.dropout", "float:0:0.7", Param("model.dropout", "float", 0.0, 0.7)),
    ("model.hidden_size", "logint:16:512", Param("model.hidden_size", "logint", 16, 512)),
    ("model.cell", "cat:lstm,gru", Param("model.cell", "cat", choices=("lstm", "gru"))),
    ("train.lr", "cat:0.001, 0.01", Param("train.lr", "cat", choices=(0.001, 0.01))),
    ("train.lr", {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, Param("train.lr", "logfloat", 1e-4, 1e-2)),
    ("model.cell", ["lstm", "gru"], Param("model.cell", "cat", choices=("lstm", "gru"))),
])
def test_ranges_are_read_from_text_lists_and_mappings(key, spec, expected):
    param = parse_param(key, spec)
    assert param == expected
    assert parse_param(key, param.text()) == param  # the text form round-trips (it is what a study stores)


def test_a_categorical_of_lists_travels_as_json_and_comes_back_as_lists():
    param = parse_param("model.hidden", [[64], [128, 64]])
    assert param.encoded and param.choices == ("[64]", "[128, 64]")
    assert param.decode("[128, 64]") == [128, 64]
    assert param.probe_values() == [[64], [128, 64]]


@pytest.mark.parametrize("key, spec, needle", [
    ("model.latent_dim", "int:64:8", "must be below"),
    ("lr", "logfloat:0:1e-2", "log range must be positive"),
    ("model.latent_dim", "int:1.5:4", "whole numbers"),
    ("lr", "float:a:b", "not a number"),
    ("lr", "uniform:0:1", "cannot read the range"),
    ("lr", "float:1", "cannot read the range"),
    ("lr", "0.001", "cannot read the range"),
    ("model.cell", "cat:lstm,,gru", "empty choice"),
    ("model.cell", "cat:lstm,lstm", "listed twice"),
    ("lr", "float:0:1:-0.1", "step must be positive"),
    ("model", "int:1:2", "not a setting"),
    ("nonsense", "int:1:2", "not a setting"),
])
def test_malformed_ranges_are_one_line_errors(key, spec, needle):
    with pytest.raises(GenlabError, match=needle):
        parse_param(key, spec)


# ----------------------------------------------------------------------------- bad input, before any trial


@pytest.mark.parametrize("args, needles", [
    (["--search", "model.nope=int:1:4"], ["unknown model setting", "latent_dim"]),
    (["--search", "lr=logfloat:0:1e-2"], ["log range must be positive"]),
    (["--search", "model.latent_dim=float:2:8"], ["model.latent_dim", "must be int"]),
    (["--search", "lr=float:0:1e-2"], ["train.lr must be positive"]),
    (["--search", "lr=logfloat:1e-4:1e-2", "--objective", "val.ndcg@100"], ["val.ndcg@100", "not reported", "val.loss"]),
    (["--search", "lr=logfloat:1e-4:1e-2", "--storage", "postgresql://genlab@127.0.0.1:1/optuna"],
     ["cannot reach the study database", "127.0.0.1:1"]),
    (["--search", "lr=logfloat:1e-4:1e-2", "--storage", "journal:/no/such/folder/x.log"], ["does not exist"]),
    (["--search", "lr=logfloat:1e-4:1e-2", "--storage", "nonsense://"], ["cannot"]),
    (["lr=0.01", "--search", "lr=logfloat:1e-4:1e-2"], ["both searched and fixed"]),
])
def test_bad_input_fails_in_one_line_before_any_trial(tmp_path, capsys, args, needles):
    out = tmp_path / "study"
    code, _, err = run_cli(capsys, "tune", "vae-digits", *TINY, *args, "--trials", "2", "--out", str(out))
    assert_clean_error(code, err, *needles)
    assert not out.exists()  # nothing ran, nothing was left behind
    assert "trial 0" not in err


def test_a_study_needs_a_length_and_the_dashboard_its_package(tmp_path, capsys):
    code, _, err = run_cli(capsys, "tune", "vae-digits", "--search", "lr=logfloat:1e-4:1e-2", "--out", str(tmp_path / "s"))
    assert_clean_error(code, err, "--trials")
    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        code, _, err = run_cli(capsys, "tune", "vae-digits", "--search", "lr=logfloat:1e-4:1e-2", "--trials", "1",
                               "--dashboard", "--out", str(tmp_path / "s"))
        assert_clean_error(code, err, "optuna-dashboard", "not installed")
    assert not (tmp_path / "s").exists()


def test_a_recipe_search_block_is_read_and_checked(tmp_path, capsys):
    recipe = yaml.safe_load((REPO / "src/genlab/recipes/vae-digits.yaml").read_text())
    recipe["search"] = {"objective": "val.nope", "params": {"train.lr": "logfloat:1e-4:1e-2", "model.latent_dim": [2, 4]}}
    path = tmp_path / "searched.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(capsys, "tune", str(path), *TINY, "--trials", "1", "--out", str(tmp_path / "s"))
    assert_clean_error(code, err, "val.nope", "not reported")
    recipe["search"] = "lr"
    path.write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(capsys, "tune", str(path), "--trials", "1", "--out", str(tmp_path / "s"))
    assert_clean_error(code, err, "search must be a mapping")
    # `genlab train` reads a recipe with a search block and ignores the block
    recipe["search"] = {"params": {"train.lr": "logfloat:1e-4:1e-2"}}
    path.write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(capsys, "train", str(path), *TINY, "steps=5", "--out", str(tmp_path / "trained"))
    assert code == 0, err


# ----------------------------------------------------------------------------- a study end to end


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Five trials of lr x latent_dim, in this process (so a retrain here matches them bit for bit)."""
    from genlab.cli import main

    out = tmp_path_factory.mktemp("tune") / "study"
    code = main(["tune", "vae-digits", *TINY, "--search", "lr=logfloat:3e-4:3e-2", "--search", "model.latent_dim=int:2:8",
                 "--trials", "5", "--pruner", "none", "--study", "digits", "--out", str(out)])
    assert code == 0
    return out


def test_every_trial_is_a_run_directory_and_the_best_is_exported(study):
    import genlab

    trials = _trials(study)
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    assert all(t["state"] == "complete" and t["outcome"] == "complete" for t in trials)
    for trial in trials:
        run_dir = Path(trial["run_dir"])
        assert run_dir == study / "trials" / f"trial-{trial['number']:04d}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["val"]["loss"] == trial["value"]  # the objective is the run's own validation score
        assert json.loads((run_dir / "config.json").read_text())["train"]["lr"] == trial["params"]["train.lr"]
        assert 3e-4 <= trial["params"]["train.lr"] <= 3e-2 and 2 <= trial["params"]["model.latent_dim"] <= 8
    best = min(trials, key=lambda t: t["value"])
    summary = json.loads((study / "summary.json").read_text())
    assert summary["best"]["number"] == best["number"]
    model = genlab.load(study / "best-model")
    assert model.config.latent_dim == best["params"]["model.latent_dim"]
    assert json.loads((study / "best-model" / "metrics.json").read_text())["val"]["loss"] == best["value"]
    for name in ("history.png", "importances.png", "parallel_coordinate.png", "intermediate_values.png"):
        assert (study / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (study / "study.db").is_file()


def test_the_best_recipe_trains_to_the_same_validation_score(study, tmp_path, capsys):
    recipe = yaml.safe_load((study / "best-recipe.yaml").read_text())
    best = json.loads((study / "summary.json").read_text())["best"]
    assert recipe["train"]["lr"] == best["params"]["train.lr"] and "search" not in recipe
    code, out, err = run_cli(capsys, "train", str(study / "best-recipe.yaml"), "--out", str(tmp_path / "again"))
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["val"]
    assert again == json.loads((Path(best["run_dir"]) / "metrics.json").read_text())["val"]  # exactly
    assert again["loss"] == best["value"]


def test_a_study_resumes_by_name_with_its_own_definition(study, capsys):
    before = {t["number"]: t["value"] for t in _trials(study)}
    code, _, err = run_cli(capsys, "tune", "--study", "digits", "--out", str(study), "--trials", "2", "--no-plots")
    assert code == 0, err
    assert "resumed; 5 trials so far" in err and "sampler tpe, pruner none" in err  # the study's own pruner
    after = _trials(study)
    assert [t["number"] for t in after] == list(range(7))
    assert {t["number"]: t["value"] for t in after[:5]} == before  # nothing finished was lost or changed
    # the same name with another space is refused, and the study is left as it was
    code, _, err = run_cli(capsys, "tune", "vae-digits", *TINY, "--search", "lr=logfloat:1e-3:3e-2", "--search",
                           "model.latent_dim=int:2:8", "--study", "digits", "--out", str(study), "--trials", "1")
    assert_clean_error(code, err, "already exists", "different definition", "search space")
    assert len(_trials(study)) == 7


# ----------------------------------------------------------------------------- pruning and divergence


def test_a_bad_region_is_pruned_and_a_diverging_one_fails_while_the_study_goes_on(tmp_path, capsys):
    """lr 1e-7 barely moves the loss (a bad region: pruned at an early evaluation once three trials
    have finished), lr 1e4 diverges (recorded as a failed, diverged trial), lr 1e-2 learns."""
    out = tmp_path / "pruning"
    code, _, err = run_cli(capsys, "tune", "vae-digits", *TINY, "--search", "lr=cat:0.01,0.0000001,10000",
                           "--sampler", "random", "--seed", "3", "--pruner", "median", "--trials", "10", "--out", str(out))
    assert code == 0, err
    trials = _trials(out)
    assert len(trials) == 10  # every trial ran: neither a pruned nor a diverged one stopped the study
    by_lr = {lr: [t for t in trials if t["params"]["train.lr"] == lr] for lr in (0.01, 1e-7, 1e4)}
    assert all(by_lr.values()), {lr: len(ts) for lr, ts in by_lr.items()}  # the seed visits every region
    for trial in by_lr[1e4]:
        assert (trial["state"], trial["outcome"]) == ("fail", "diverged") and trial["value"] is None
        assert "non-finite" in trial["error"] or "nan" in trial["error"].lower()
    finished_before = 0
    pruned_bad = 0
    for trial in trials:  # in order: once three trials have finished, every bad one is pruned early
        if trial["params"]["train.lr"] == 1e-7 and finished_before >= 3:
            assert trial["state"] == "pruned" and trial["outcome"] == "pruned", trial
            assert trial["steps"] < 40  # stopped before its last step
            assert (Path(trial["run_dir"]) / "history.jsonl").is_file()  # still a run directory, cut short
            assert not (Path(trial["run_dir"]) / "model.safetensors").exists()
            pruned_bad += 1
        finished_before += trial["state"] == "complete"
    assert pruned_bad >= 1
    assert all(t["state"] == "complete" for t in by_lr[0.01])
    best = json.loads((out / "summary.json").read_text())["best"]
    assert best["params"]["train.lr"] == 0.01 and math.isfinite(best["value"])
    assert "diverged" in err and "pruned at step" in err


@pytest.mark.parametrize("sampler, pruner", [("cmaes", "hyperband"), ("random", "median")])
def test_every_sampler_and_pruner_runs_a_study(tmp_path, capsys, sampler, pruner):
    out = tmp_path / "study"
    code, _, err = run_cli(capsys, "tune", "vae-digits", *TINY, "--search", "lr=logfloat:1e-3:3e-2", "--search",
                           "model.latent_dim=int:2:8", "--sampler", sampler, "--pruner", pruner, "--trials", "4",
                           "--no-plots", "--out", str(out))
    assert code == 0, err
    assert f"sampler {sampler}, pruner {pruner}" in err
    trials = _trials(out)
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert {t["state"] for t in trials} <= {"complete", "pruned"} and trials[0]["state"] == "complete"
    assert len({t["params"]["train.lr"] for t in trials}) == 4  # the sampler drew four different points
    assert not list(out.glob("*.png"))  # --no-plots
