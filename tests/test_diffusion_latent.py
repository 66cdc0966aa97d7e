"""Latent diffusion (the autoencoder phase, then the UNet on scaled latents, one artifact) and the
GPU-sized ddpm-cifar10 recipe run end to end at a tiny size on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import genlab
from genlab.config import from_dict, load_recipe
from genlab.errors import GenlabError
from genlab.models.diffusion import Diffusion, DiffusionConfig

from conftest import assert_clean_error, run_cli

# ldm-mnist's structure on 8x8 digits: a 2x2 latent grid with 2 channels, a one-level UNet.
TINY_LATENT = ["data.name=digits", "model.latent_channels=2", "model.autoencoder_channels=[8,8]", "model.channels=[8]",
               "model.layers_per_block=1", "model.norm_groups=4", "model.sample_steps=3", "model.preview_steps=2",
               "model.autoencoder_steps=4", "batch_size=32", "train.progress=false", "train.tensorboard=false",
               "train.eval_batches=1", "train.eval_every=2", "train.samples_every=1000", "train.warmup_steps=0",
               "train.lr_schedule=constant"]  # constant: a split run (4 steps, then resume to 8) has the same schedule


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    return genlab.train("ldm-mnist", ["steps=8", *TINY_LATENT], out=tmp_path_factory.mktemp("ldm") / "run")


def test_the_autoencoder_trains_first_then_the_unet_on_scaled_latents(latent_run):
    import json

    history = [json.loads(line) for line in (latent_run / "history.jsonl").read_text().splitlines()]
    phases = [("autoencoder_loss" in h["train"], "loss" in h["train"]) for h in history]
    assert phases == [(True, False), (True, False), (False, True), (False, True)]  # steps 2, 4 | 6, 8
    assert all("reconstruction" in h["val"] for h in history)

    weights = load_file(str(latent_run / "model.safetensors"))
    assert any(k.startswith("autoencoder.") for k in weights) and any(k.startswith("unet.") for k in weights)
    model = genlab.load(latent_run)
    assert model.latent_scale.item() > 0
    # The scale makes the latents of the calibration batch unit-variance: re-measure it independently.
    data = genlab.data.load_image_data({"name": "digits", "scale": "symmetric"})
    images = data.batch("train", torch.arange(min(512, data.num_examples("train"))), torch.Generator().manual_seed(0))["x"]
    with torch.no_grad():
        mean, logvar = model.autoencoder.posterior(model.to_diffusion_space(images))
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    assert model.latent_scale.item() == pytest.approx(1 / z.std().item(), rel=1e-4)

    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8)
    low, high = model.data_range
    assert samples.min() >= low and samples.max() <= high
    seen = []
    model.sample(2, steps=3, callback=lambda i, x: seen.append((i, tuple(x.shape), tuple(model.preview_image(x).shape))),
                 generator=torch.Generator().manual_seed(0))
    assert seen == [(i, (2, 2, 2, 2), (2, 1, 8, 8)) for i in range(3)]  # latents, and their pictures


def test_the_autoencoder_is_frozen_in_the_diffusion_phase_and_resume_is_exact(tmp_path, latent_run):
    # 4 steps (the autoencoder phase exactly), then resume to 8: the same weights as 8 straight,
    # and the autoencoder's weights are those at the end of its phase.
    first = genlab.train("ldm-mnist", ["steps=4", *TINY_LATENT], out=tmp_path / "split")
    after_phase_one = load_file(str(first / "model.safetensors"))
    resumed = genlab.train(None, ["steps=8"], out=first, resume=True)
    straight, split = load_file(str(latent_run / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert straight.keys() == split.keys()
    for key in straight:
        assert torch.equal(straight[key], split[key]), key
    for key, value in after_phase_one.items():
        if key.startswith("autoencoder."):
            assert torch.equal(value, split[key]), key
    assert after_phase_one["latent_scale"].item() == 0  # measured only when the diffusion phase starts


def test_the_ema_averages_the_unet_from_the_start_of_its_phase():
    model = Diffusion(DiffusionConfig(input_shape=(1, 8, 8), latent_channels=2, autoencoder_channels=(8, 8), channels=(8,),
                                      norm_groups=4, autoencoder_steps=7))
    names = model.ema_parameter_names()
    assert names and all(name.startswith("unet.") for name in names)
    assert model.sampling_starts_at() == 7
    assert Diffusion(DiffusionConfig(input_shape=(1, 8, 8), channels=(8,), norm_groups=4)).sampling_starts_at() == 0


def test_latent_bad_input():
    with pytest.raises(GenlabError, match="divisible by 4"):
        DiffusionConfig(input_shape=(1, 10, 10), latent_channels=4)
    with pytest.raises(GenlabError, match="latent grid"):
        DiffusionConfig(input_shape=(1, 28, 28), latent_channels=4, channels=(32, 64))  # 7x7 cannot halve
    untrained = Diffusion(DiffusionConfig(input_shape=(1, 8, 8), latent_channels=2, autoencoder_channels=(8, 8),
                                          channels=(8,), norm_groups=4))
    with pytest.raises(GenlabError, match="diffusion phase"):
        untrained.sample(2)


def test_sampling_an_artifact_missing_its_autoencoder_is_a_clean_error(tmp_path, latent_run, capsys):
    import shutil

    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    shutil.copytree(latent_run, broken)
    weights = {k: v for k, v in load_file(str(broken / "model.safetensors")).items() if not k.startswith("autoencoder.")}
    save_file(weights, str(broken / "model.safetensors"))
    code, _, err = run_cli(capsys, "sample", str(broken), "-n", "2", "-o", str(tmp_path / "x.png"))
    assert_clean_error(code, err, "autoencoder")


def test_ddpm_cifar10_is_the_paper_size_and_runs_end_to_end_at_a_tiny_size(tmp_path):
    recipe = load_recipe("ddpm-cifar10")
    full = Diffusion(from_dict(DiffusionConfig, {**recipe["model"], "input_shape": (3, 32, 32)}, "model"))
    assert sum(p.numel() for p in full.parameters()) == pytest.approx(35.7e6, rel=0.01)  # Ho et al. 2020, CIFAR-10
    blocks = [type(b).__name__ for b in full.unet.down_blocks]
    assert blocks == ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]  # attention at 16x16
    del full

    rng = np.random.default_rng(0)
    npz = tmp_path / "photos.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 48))
    out = genlab.train("ddpm-cifar10", [f"data.name=npz:{npz}", "model.channels=[8,8,8,8]", "model.norm_groups=4",
                                        "steps=3", "batch_size=8", "train.warmup_steps=1", "train.eval_batches=1",
                                        "train.progress=false", "train.tensorboard=false", "model.sample_steps=2",
                                        "model.preview_steps=2"], out=tmp_path / "cifar")
    model = genlab.load(out)
    assert model.config.input_shape == (3, 32, 32) and model.config.dropout == 0.1
    assert model.sample(2, steps=2, generator=torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)


def test_hflip_mirrors_training_batches_only_and_follows_the_generator():
    data = genlab.data.load_image_data({"name": "digits", "hflip": True})
    idx = torch.arange(64)
    plain = genlab.data.load_image_data({"name": "digits"}).batch("train", idx)["x"]
    a = data.batch("train", idx, torch.Generator().manual_seed(3))["x"]
    b = data.batch("train", idx, torch.Generator().manual_seed(3))["x"]
    assert torch.equal(a, b)
    mirrored = (a == plain.flip(-1)).flatten(1).all(1) & ~(a == plain).flatten(1).all(1)
    unchanged = (a == plain).flatten(1).all(1)
    assert (mirrored | unchanged).all() and 10 < mirrored.sum() < 54
    assert torch.equal(data.batch("val", idx, torch.Generator().manual_seed(3))["x"],
                       genlab.data.load_image_data({"name": "digits"}).batch("val", idx)["x"])
