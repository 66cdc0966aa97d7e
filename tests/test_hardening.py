"""The adversarial sweep of the hardening issue, one test per line that broke: every bad input is
one clean line and exit 2 (no traceback), allocations are refused before they happen (checked
under an address-space cap), and no finished work is lost or damaged."""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess

import numpy as np
import pytest
import torch
from conftest import TINY_VAE, assert_clean_error, genlab_cmd, run_cli, subprocess_env
from PIL import Image
from safetensors.torch import load_file, save_file

import genlab

ADDRESS_SPACE_CAP = 6 << 30  # bytes: torch needs ~2 GiB of address space to start; the refused cases ask for far more


def capped_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`genlab ARGS` in a subprocess whose address space is capped: an allocation the check missed
    dies (MemoryError, exit 1) instead of passing."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))

    return subprocess.run(genlab_cmd(*args), capture_output=True, text=True, timeout=timeout, preexec_fn=cap,
                          env=subprocess_env())


def assert_refused(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert_clean_error(result.returncode, result.stderr, *needles)
    assert len([line for line in result.stderr.splitlines() if line.startswith("error: ")]) == 1


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    """A writable copy of the tiny vae-digits model."""
    return shutil.copytree(tiny_model_dir, tmp_path / "vae")


# ----------------------------------------------------------------------------- runaway allocation


def test_sample_count_is_bounded_before_the_model_loads(tiny_model_dir, capsys):
    code, _, err = run_cli(capsys, "sample", str(tiny_model_dir), "-n", "10000000")
    assert_clean_error(code, err, "-n", "10,000")


@pytest.mark.parametrize("args, needle", [
    (["apply", "inpaint", "{m}", "--against", "test", "--mask", "half:top", "--restarts", "100000000"], "--restarts"),
    (["apply", "inpaint", "{m}", "--against", "test", "--mask", "half:top", "--steps", "100000000"], "--steps"),
    (["apply", "augment", "{m}", "--per-class", "100000000"], "--per-class"),
    (["apply", "anomaly", "{m}", "--against", "test", "--samples", "100000000"], "--samples"),
    (["compose", "{m}", "--bars", "100000"], "--bars"),
    (["compose", "{m}", "--tempo", "1e9"], "--tempo"),
    (["eval", "{m}", "--iwae-k", "100000000"], "--iwae-k"),
], ids=["inpaint-restarts", "inpaint-steps", "augment-per-class", "anomaly-samples", "compose-bars", "compose-tempo",
        "eval-iwae-k"])
def test_counts_on_the_command_line_are_bounded(tiny_model_dir, capsys, args, needle):
    code, _, err = run_cli(capsys, *[a.format(m=tiny_model_dir) for a in args])
    assert_clean_error(code, err, needle)


@pytest.mark.parametrize("command", [["sample", "{m}"], ["eval", "{m}"], ["compose", "{m}"],
                                     ["apply", "traverse", "{m}"], ["apply", "anomaly", "{m}", "--against", "test"]])
@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", "-5"])
def test_seeds_are_0_to_2_63_minus_1_on_every_command(tiny_model_dir, capsys, command, seed):
    code, _, err = run_cli(capsys, *[a.format(m=tiny_model_dir) for a in command], "--seed", seed)
    assert_clean_error(code, err, "--seed", "9,223,372,036,854,775,807")


def test_a_config_that_describes_a_huge_model_fails_fast_from_the_weights_header(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["model"]["hidden"] = [30000, 30000]
    (model_copy / "config.json").write_text(json.dumps(config))
    result = capped_cli("sample", str(model_copy), "-n", "4", "-o", str(model_copy.parent / "s.png"))
    assert_refused(result, "does not match config.json", "wrong shape")


@pytest.mark.parametrize("override", ["model.latent_dim=1000000000", "model.hidden=[1000000,1000000]"])
def test_training_refuses_a_model_bigger_than_the_machine(tmp_path, override):
    out = tmp_path / "run"
    result = capped_cli("train", "vae-digits", override, "--out", str(out))
    assert_refused(result, "parameters", "GiB", "model.*")
    assert not out.exists()  # nothing left behind


def test_training_refuses_a_context_window_bigger_than_the_machine(tmp_path):
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("family: gpt\ndata: {name: tinyshakespeare, block_size: 1000000000}\nmodel: {}\ntrain: {steps: 1}\n")
    result = capped_cli("train", str(recipe), "--out", str(tmp_path / "run"))
    assert_refused(result, "block_size")  # the data refuses it before the model (1e9 x n_embd positions) is built
    assert not (tmp_path / "run").exists()


def test_a_decompression_bomb_is_refused_from_its_header(tiny_model_dir, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (13000, 13000)).save(bomb, optimize=True)  # ~650 KB on disk, 169 M pixels decoded
    result = capped_cli("apply", "inpaint", str(tiny_model_dir), str(bomb), "--mask", "half:top",
                        "-o", str(tmp_path / "out.png"))
    assert_refused(result, "13000x13000", "pixels")
    assert "DecompressionBombWarning" not in result.stderr and "site-packages" not in result.stderr


# ----------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("text, needle", [
    (b"family: vae\ndata: [unclosed\n", "not valid YAML at line"),
    (b"!!python/object/apply:os.system ['echo owned']\n", "not valid YAML"),
    (b"family: vae\n\xff\xfe data: {}\n", "not UTF-8"),
    (b"family: vae\ndata: {}\nmodel: 5\ntrain: {}\n", "model must be a mapping"),
    (b"family: [vae]\ndata: {}\nmodel: {}\ntrain: {}\n", "family must be a name"),
], ids=["unclosed", "python-tag", "not-utf8", "model-5", "family-list"])
def test_malformed_recipes_are_one_line(tmp_path, capsys, text, needle):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(text)
    code, out, err = run_cli(capsys, "train", str(recipe), "--out", str(tmp_path / "run"))
    assert_clean_error(code, err, needle)
    assert "owned" not in out + err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("dtype", [torch.int8, torch.float16, torch.float64])
def test_weights_of_an_unexpected_dtype_are_refused(model_copy, capsys, dtype):
    weights = model_copy / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: (v * 10).to(dtype) if v.is_floating_point() else v for k, v in state.items()}, str(weights))
    code, _, err = run_cli(capsys, "sample", str(model_copy), "-n", "2", "-o", str(model_copy.parent / "s.png"))
    assert_clean_error(code, err, "wrong dtype")


def test_weights_with_nan_are_refused(model_copy, capsys):
    weights = model_copy / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    code, _, err = run_cli(capsys, "sample", str(model_copy), "-n", "2", "-o", str(model_copy.parent / "s.png"))
    assert_clean_error(code, err, "NaN", name)


def test_an_unexpected_exception_is_one_line_and_a_log_file(monkeypatch, capsys, tmp_path):
    import genlab.cli as cli

    log = tmp_path / "errors.log"
    monkeypatch.setenv("GENLAB_ERROR_LOG", str(log))
    monkeypatch.setitem(cli.COMMANDS, "recipes", lambda args: 1 / 0)
    code, _, err = run_cli(capsys, "recipes")
    assert code == 1 and err.strip() == f"error: unexpected ZeroDivisionError (details in {log}); please report it"
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()


def test_a_closed_pipe_ends_quietly():
    # `genlab recipes | head -1`: the reader leaves after one line; genlab must not print a BrokenPipeError.
    reader = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer = subprocess.run(genlab_cmd("recipes"), stdout=reader.stdin, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(), timeout=120)
    reader.stdin.close()
    assert reader.wait(timeout=30) == 0 and reader.stdout.read()
    assert writer.returncode == 0 and writer.stderr == "", writer.stderr


# ----------------------------------------------------------------------------- work is never lost


def test_outputs_may_not_overwrite_the_models_own_files(model_copy, capsys):
    before = (model_copy / "config.json").read_bytes()
    code, _, err = run_cli(capsys, "sample", str(model_copy), "-n", "2", "-o", str(model_copy / "config.json"))
    assert_clean_error(code, err, "overwrite the model's own config.json")
    code, _, err = run_cli(capsys, "apply", "traverse", str(model_copy), "-o", str(model_copy / "model.safetensors"))
    assert_clean_error(code, err, "model.safetensors")
    assert (model_copy / "config.json").read_bytes() == before


def test_an_unwritable_second_output_fails_before_the_first_is_written(model_copy, tmp_path, capsys, monkeypatch):
    import genlab.cli as cli

    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    real_access = os.access  # root may write anywhere: make the read-only folder read-only for it too
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    code, _, err = run_cli(capsys, "apply", "interpolate", str(model_copy), "--against", "test",
                           "-o", str(tmp_path / "ok.png"), "--gif", str(locked / "x.gif"))
    assert_clean_error(code, err, "not writable")
    assert not (tmp_path / "ok.png").exists()


def test_eval_keeps_one_entry_per_against_and_prints_before_it_writes(model_copy, capsys):
    for against in ("test", "val"):
        code, out, err = run_cli(capsys, "eval", str(model_copy), "--metrics", "likelihood", "--iwae-k", "2",
                                 "-n", "20", "--against", against)
        assert code == 0, err
        assert out.index("likelihood on") < out.index("written to")
    metrics = json.loads((model_copy / "metrics.json").read_text())
    assert set(metrics["evals"]) == {"digits:test", "digits:val"} and metrics["eval"]["data"] == "digits:val"


def test_eval_of_a_read_only_model_writes_its_results_beside_it(model_copy, capsys, monkeypatch):
    from genlab import artifact

    real = artifact.atomic_write_text

    def refuse_inside(path, text):  # the model directory is read-only (as for a user without write access)
        if path.parent == model_copy:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, text)

    monkeypatch.setattr(artifact, "atomic_write_text", refuse_inside)
    code, out, err = run_cli(capsys, "eval", str(model_copy), "--metrics", "likelihood", "--iwae-k", "2", "-n", "20")
    assert code == 0, err
    beside = model_copy.parent / "vae.metrics.json"
    assert "likelihood on digits:test" in out and str(beside) in out and "not writable" in err
    assert json.loads(beside.read_text())["eval"]["likelihood"]["n"] == 20


def test_an_invalid_setting_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "vae-digits", "batch_size=100000", *TINY_VAE[:3], "--out", str(out))
    assert_clean_error(code, err, "batch_size")
    assert not out.exists()


# ----------------------------------------------------------------------------- results that are right


def test_compress_refuses_codes_an_int8_cannot_hold(tiny_model_dir, capsys):
    code, _, err = run_cli(capsys, "apply", "compress", str(tiny_model_dir), "--against", "test", "-n", "20",
                           "--fit-n", "50", "--step", "1e-9")
    assert_clean_error(code, err, "too fine", "int8", "--step")


def test_compress_baseline_is_the_smaller_of_png_and_raw(tiny_model_dir):
    from genlab.tasks.compress import compress, fit_entropy_model
    from genlab.tasks.images import dataset_images

    model = genlab.load(tiny_model_dir)
    images, _ = dataset_images(model, "test", 20)
    train, _ = dataset_images(model, "train", 100)
    m = compress(model, images, fit_entropy_model(model, train, 0.5))["metrics"]
    assert m["raw_bits_per_image"] == 8 * 64  # 8x8 grey digits
    assert m["baseline_bits_per_image"] == min(m["png_bits_per_image"], m["raw_bits_per_image"])
    assert m["compression_vs_baseline"] == pytest.approx(m["baseline_bits_per_image"] / m["bits_per_image"])


def test_mean_fill_with_nothing_known_is_mid_grey():
    from genlab.tasks.inpaint import mean_fill

    images = torch.rand(2, 1, 4, 4)
    everything = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    assert torch.equal(mean_fill(images, everything, (0.0, 1.0)), torch.full_like(images, 0.5))
    assert torch.equal(mean_fill(images, everything, (-1.0, 1.0)), torch.zeros_like(images))
    half = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    half[..., :2, :] = True
    filled = mean_fill(images, half)
    assert torch.allclose(filled[..., :2, :], images[..., 2:, :].mean((2, 3), keepdim=True).expand(2, 1, 2, 4))


@pytest.mark.parametrize("suffix, magic", [(".jpg", b"\xff\xd8"), (".png", b"\x89PNG"), (".webp", b"RIFF")])
def test_output_format_follows_the_extension(tiny_model_dir, tmp_path, capsys, suffix, magic):
    out = tmp_path / f"grid{suffix}"
    code, _, err = run_cli(capsys, "sample", str(tiny_model_dir), "-n", "4", "-o", str(out))
    assert code == 0, err
    assert out.read_bytes().startswith(magic)


def test_an_output_without_an_image_extension_is_refused(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "sample", str(tiny_model_dir), "-n", "4", "-o", str(tmp_path / "grid.xyz"))
    assert_clean_error(code, err, "grid.xyz", ".png")


# ----------------------------------------------------------------------------- messages that help


def test_a_capability_error_suggests_what_the_model_fits(tiny_model_dir, capsys):
    code, _, err = run_cli(capsys, "apply", "superres", str(tiny_model_dir), "--against", "test")
    assert_clean_error(code, err, "upscale", "genlab apply inpaint", "superres")


def test_info_is_a_short_summary_and_json_has_everything(tiny_model_dir, capsys):
    code, out, _ = run_cli(capsys, "info", str(tiny_model_dir))
    assert code == 0 and len(out.splitlines()) <= 10
    assert "vae" in out and "parameters" in out and "genlab sample" in out and "apply inpaint" in out
    code, out, _ = run_cli(capsys, "info", str(tiny_model_dir), "--json")
    info = json.loads(out)
    model = genlab.load(tiny_model_dir)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["config"]["family"] == "vae" and "test" in info["metrics"]


def test_a_gans_end_of_training_line_shows_sample_quality(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "dcgan-digits", "steps=4", "batch_size=16", "model.base_channels=8",
                             "train.progress=false", "train.samples_every=1000", "--out", str(tmp_path / "gan"))
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("sample quality"))
    assert "fd[lenet-digits]" in line and "d_fake" not in out
    recorded = json.loads((tmp_path / "gan" / "metrics.json").read_text())["eval"]["samples"]
    assert f"fd[lenet-digits] {recorded['metrics']['fd[lenet-digits]']:.4g}" in line  # the line is the recorded eval


def test_a_composition_longer_than_the_bound_is_refused_before_composing(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "compose", str(tiny_model_dir), "--bars", "64", "--tempo", "20",
                           "-o", str(tmp_path / "long.mid"))
    assert_clean_error(code, err, "768 s", "fewer bars")
    from genlab.apps.compose import CompositionRequest, check_length
    from genlab.errors import InputTooLarge
    from genlab.limits import MAX_HTTP_AUDIO_SECONDS

    request = CompositionRequest(model="m", bars=64, tempo=20)  # the sweep's 90 MB reply: 768 s of audio
    with pytest.raises(InputTooLarge, match="768 s"):
        check_length(request.bars, request.tempo, MAX_HTTP_AUDIO_SECONDS)


@pytest.mark.parametrize("args, needle", [
    (["apply", "interpolate", "{m}", "--against", "test", "--steps", "10000000"], "--steps"),
    (["apply", "traverse", "{m}", "--steps", "10000000"], "--steps"),
    (["apply", "traverse", "{m}", "--dims", "10000000"], "--dims"),
    (["apply", "traverse", "{m}", "--span", "1e308"], "--span"),
    (["apply", "compress", "{m}", "--against", "test", "--step", "inf"], "--step"),
], ids=["interpolate-steps", "traverse-steps", "traverse-dims", "traverse-span", "compress-step-inf"])
def test_latent_paths_are_bounded(tiny_model_dir, capsys, args, needle):
    code, _, err = run_cli(capsys, *[a.format(m=tiny_model_dir) for a in args])
    assert_clean_error(code, err, needle)


# ----------------------------------------------------------------------------- text generation


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt") / "gpt"
    return genlab.train("gpt-shakespeare-char", ["steps=5", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
                                                 "data.block_size=16", "batch_size=4", "train.progress=false",
                                                 "train.tensorboard=false"], out=out)


@pytest.mark.parametrize("args, needle", [
    (["-n", "10000000"], "num_return_sequences"), (["--num-beams", "10000000"], "num_beams"),
    (["--max-new-tokens", "100000000"], "--max-new-tokens"), (["--seed", "99999999999999999999"], "--seed"),
    (["--top-k", "100000000000"], "top_k"),
], ids=["n", "beams", "tokens", "seed", "top-k"])
def test_generation_counts_are_bounded_before_allocation(tiny_gpt, args, needle):
    assert_refused(capped_cli("generate", str(tiny_gpt), "--prompt", "A", *args), needle)


@pytest.mark.parametrize("args", [["--temperature", "1e-300"], ["--top-p", "1e-300"], ["--repetition-penalty", "1e-300"],
                                  ["--repetition-penalty", "1e300"]], ids=["temperature", "top-p", "penalty-low", "penalty-high"])
def test_extreme_decoding_settings_still_generate(tiny_gpt, capsys, args):
    code, out, err = run_cli(capsys, "generate", str(tiny_gpt), "--prompt", "A", "--max-new-tokens", "8", *args)
    assert code == 0, err
    assert out.startswith("A") and len(out.rstrip("\n")) > 1
    if args[1] == "1e-300" and args[0] in ("--temperature", "--top-p"):  # both leave only the most likely token
        greedy = run_cli(capsys, "generate", str(tiny_gpt), "--prompt", "A", "--max-new-tokens", "8",
                         "--temperature", "0")[1]
        assert out == greedy


def test_denoise_on_one_image_says_its_filter_was_tuned_on_that_image(tmp_path, capsys):
    denoiser = genlab.train("denoise-mnist", ["data.name=digits", "steps=5", "model.channels=8", "model.depth=2",
                                              "batch_size=32", "train.progress=false", "train.tensorboard=false"],
                            out=tmp_path / "denoiser")
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(tmp_path / "d.png")
    code, out, err = run_cli(capsys, "apply", "denoise", str(denoiser), str(tmp_path / "d.png"), "--noise", "gaussian:0.3",
                             "-o", str(tmp_path / "clean.png"))
    assert code == 0, err
    assert "tuned on this image" in out
    code, out, err = run_cli(capsys, "apply", "denoise", str(denoiser), "--against", "test", "-n", "20",
                             "-o", str(tmp_path / "grid.png"))
    assert code == 0, err
    assert "tuned on other images" in out
