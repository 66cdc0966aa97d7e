"""The command line: every command works, and bad input gets a message and exit code, never a traceback."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from genlab.cli import main

from conftest import SHARED_DATA, TINY_VAE, assert_clean_error, genlab_cmd, run_cli, subprocess_env


# ----------------------------------------------------------------------------- happy paths


def test_help_has_examples_for_every_command(capsys):
    for command in ("train", "sample", "eval", "info", "recipes", "datasets"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "example" in capsys.readouterr().out


def test_recipes_and_datasets_list(capsys):
    code, out, _ = run_cli(capsys, "recipes")
    assert code == 0 and "vae-digits" in out and "vae-mnist" in out and "cvae-mnist" in out
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0 and "digits" in out and "embedded" in out and "folder:" in out
    assert "mnist" in out and "present" in out  # GENLAB_DATA_DIR points at ../shared/data


def test_train_with_overrides_writes_a_complete_model_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "vae-digits", "steps=15", *TINY_VAE, "model.latent_dim=3", "--out", str(out))
    assert code == 0, err
    assert f"model directory: {out}" in stdout
    for name in ("config.json", "model.safetensors", "metrics.json", "samples.png", "reconstructions.png", "checkpoint.safetensors"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "vae" and config["model"]["latent_dim"] == 3 and config["train"]["steps"] == 15
    assert config["model"]["input_shape"] == [1, 8, 8]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["iwae_nll"] > 0 and metrics["training"]["steps"] == 15
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_sample_eval_info(tiny_model_dir, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    code, out, err = run_cli(capsys, "sample", str(tiny_model_dir), "-n", "16", "--seed", "3", "-o", str(grid))
    assert code == 0, err
    picture = Image.open(grid)
    assert picture.width > 8 * 4 and picture.height > 8 * 4
    again = tmp_path / "again.png"
    run_cli(capsys, "sample", str(tiny_model_dir), "-n", "16", "--seed", "3", "-o", str(again))
    assert grid.read_bytes() == again.read_bytes()  # the seed fixes the samples

    code, out, err = run_cli(capsys, "eval", str(tiny_model_dir), "--iwae-k", "20", "-n", "50")
    assert code == 0, err
    assert "iwae_nll" in out and "elbo" in out and "recon_mse" in out and "fd[lenet-digits]" in out
    evaluation = json.loads((tiny_model_dir / "metrics.json").read_text())["eval"]
    likelihood = evaluation["likelihood"]
    assert likelihood["n"] == 50 and likelihood["iwae_k"] == 20
    assert likelihood["iwae_nll"] <= -likelihood["elbo"] + 1.0  # IWAE_k is the tighter bound (up to noise)
    samples = evaluation["samples"]
    assert samples["n"] == 50 and samples["feature_space"] == "lenet-digits"
    assert set(samples["metrics"]) == set(samples["floor"]) and "kd[lenet-digits]" in samples["metrics"]

    code, out, err = run_cli(capsys, "info", str(tiny_model_dir))
    assert code == 0 and ": vae, " in out and "parameters" in out


# ----------------------------------------------------------------------------- bad input


def test_unknown_recipe_data_set_family_and_setting(tmp_path, capsys):
    assert_clean_error(*run_cli(capsys, "train", "no-such-recipe")[::2], "unknown recipe", "vae-digits")
    assert_clean_error(*run_cli(capsys, "train", "vae-digits", "data.name=imagenet", "--out", str(tmp_path / "a"))[::2],
                       "imagenet", "digits")
    assert_clean_error(*run_cli(capsys, "train", "vae-digits", "model.latent_dims=3", "--out", str(tmp_path / "b"))[::2],
                       "latent_dims", "latent_dim")
    recipe = tmp_path / "strange.yaml"
    recipe.write_text("family: transformer-xl\ndata: {name: digits}\nmodel: {}\ntrain: {steps: 1}\n")
    assert_clean_error(*run_cli(capsys, "train", str(recipe), "--out", str(tmp_path / "c"))[::2],
                       "unknown model family", "vae")


def write_idx(path: Path, array) -> None:
    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_corrupted_idx_file(tmp_path, capsys):
    import numpy as np

    folder = tmp_path / "idx"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((20, 8, 8)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(20))
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:  # corrupt: bad magic number
        f.write(b"\x12\x34\x56\x78" + b"\x00" * 100)
    code, _, err = run_cli(capsys, "train", "vae-digits", f"data.name=idx:{folder}", "steps=1", "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "train-images-idx3-ubyte.gz")


def test_checksum_mismatch(tmp_path, capsys, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(SHARED_DATA / "mnist", data_dir / "mnist")
    bad = data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.chmod(0o644)
    bad.write_bytes(bad.read_bytes()[:-10] + b"0123456789")
    monkeypatch.setenv("GENLAB_DATA_DIR", str(data_dir))
    code, _, err = run_cli(capsys, "train", "vae-mnist", "steps=1", "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "checksum", "t10k-labels-idx1-ubyte.gz")


def test_folder_with_non_image_files(tmp_path, capsys):
    folder = tmp_path / "pictures"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "notes.txt").write_text("not a picture")
    (folder / "cats" / "broken.png").write_bytes(b"this is not a png")
    code, _, err = run_cli(capsys, "train", "vae-digits", f"data.name=folder:{folder}", "steps=1", "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "broken.png")
    (folder / "cats" / "broken.png").unlink()
    code, _, err = run_cli(capsys, "train", "vae-digits", f"data.name=folder:{folder}", "steps=1", "--out", str(tmp_path / "r2"))
    assert_clean_error(code, err, "no images")


def test_truncated_and_foreign_weights(tiny_model_dir, tmp_path, capsys):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_clean_error(*run_cli(capsys, "sample", str(truncated), "-o", str(tmp_path / "a.png"))[::2],
                       "model.safetensors", "damaged")

    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_model_dir, foreign)
    save_file({"encoder.weight": torch.zeros(3, 3), "head.bias": torch.zeros(3)}, str(foreign / "model.safetensors"))
    assert_clean_error(*run_cli(capsys, "sample", str(foreign), "-o", str(tmp_path / "b.png"))[::2],
                       "does not match", "missing")

    garbage = tmp_path / "garbage"
    shutil.copytree(tiny_model_dir, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x00" * 3)
    assert_clean_error(*run_cli(capsys, "info", str(garbage))[::2], "damaged")

    (garbage / "config.json").write_text("{not json")
    assert_clean_error(*run_cli(capsys, "info", str(garbage))[::2], "config.json", "not valid JSON")
    assert_clean_error(*run_cli(capsys, "sample", str(tmp_path / "nowhere"))[::2], "no model at")


@pytest.mark.parametrize("n", ["0", "-5"])
def test_non_positive_sample_count(tiny_model_dir, tmp_path, capsys, n):
    code, _, err = run_cli(capsys, "sample", str(tiny_model_dir), "-n", n, "-o", str(tmp_path / "x.png"))
    assert_clean_error(code, err, "-n must be in 1..")
    code, _, err = run_cli(capsys, "eval", str(tiny_model_dir), "-n", n)
    assert_clean_error(code, err, "-n must be in 1..")


def test_unwritable_output_paths(tiny_model_dir, capsys):
    # /proc refuses new files even for root, so this holds in any sandbox.
    code, _, err = run_cli(capsys, "sample", str(tiny_model_dir), "-n", "4", "-o", "/proc/genlab/grid.png")
    assert_clean_error(code, err, "/proc/genlab/grid.png")
    code, _, err = run_cli(capsys, "train", "vae-digits", "steps=1", "--out", "/proc/genlab-run")
    assert_clean_error(code, err, "/proc/genlab-run", "writable")


def test_conditional_sampling_errors(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "sample", str(tiny_model_dir), "-n", "4", "--class", "3", "-o", str(tmp_path / "c.png"))
    assert_clean_error(code, err, "condition")


def test_resume_errors(tmp_path, capsys):
    assert_clean_error(*run_cli(capsys, "train", "--resume", str(tmp_path / "nothing"))[::2], "no model at")
    out = tmp_path / "done"
    run_cli(capsys, "train", "vae-digits", "steps=3", *TINY_VAE, "--out", str(out))
    assert_clean_error(*run_cli(capsys, "train", "vae-digits", "steps=3", "--out", str(out))[::2], "--resume")


def test_real_process_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run(genlab_cmd("train", "vae-digits", "data.name=nosuch", "--out", str(tmp_path / "r")),
                            capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_settings_are_validated(tmp_path, capsys):
    for bad, needle in (("batch_size=0", "batch_size"), ("lr=-1", "lr"), ("grad_clip=0", "grad_clip"),
                        ("model=3", "model"), ("train.lr=fast", "lr")):
        code, _, err = run_cli(capsys, "train", "vae-digits", bad, "--out", str(tmp_path / "r"))
        assert_clean_error(code, err, needle)
        assert not (tmp_path / "r").exists()  # no empty run folder left behind for a typo


def test_yaml_style_float_overrides(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vae-digits", "steps=2", "lr=3e-4", *TINY_VAE, "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["lr"] == 3e-4


def test_resume_may_change_only_the_length(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "vae-digits", "steps=3", *TINY_VAE, "--out", str(out))[0] == 0
    before = (out / "config.json").read_text()
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "model.latent_dim=64")
    assert_clean_error(code, err, "cannot change when resuming")
    assert (out / "config.json").read_text() == before
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "steps=6")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["training"]["steps"] == 6


def test_conditional_vae_samples_by_class(tmp_path, capsys):
    out = tmp_path / "cvae"
    code, _, err = run_cli(capsys, "train", "vae-digits", "steps=5", *TINY_VAE, "model.conditional=true", "--out", str(out))
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", str(out), "-n", "8", "--class", "3", "-o", str(tmp_path / "threes.png"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", str(out), "-n", "8", "--class", "10", "-o", str(tmp_path / "x.png"))
    assert_clean_error(code, err, "10")
