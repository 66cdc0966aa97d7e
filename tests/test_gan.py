"""GAN family: losses against hand computations, mode coverage on a toy mixture, training,
exact resume and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import genlab
from genlab.config import TrainConfig
from genlab.errors import GenlabError
from genlab.models.gan import (
    GAN,
    GANConfig,
    diff_augment,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)
from genlab.training.distributed import DistInfo
from genlab.errors import DivergenceError
from genlab.training.optim import ManagedOptimizer

TINY_GAN = ["model.base_channels=8", "model.latent_dim=8", "batch_size=32", "train.progress=false",
            "train.tensorboard=false"]


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("objective", ["bce", "hinge", "wgan-gp"])
def test_discriminator_loss_falls_as_real_scores_rise_and_fake_scores_fall(objective):
    real = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    fake = torch.tensor([0.1, 0.4, -0.6], requires_grad=True)
    loss = discriminator_loss(objective, real, fake)
    loss.backward()
    assert (real.grad < 0).all(), "raising D(real) must lower the D loss"
    assert (fake.grad > 0).all(), "lowering D(fake) must lower the D loss"
    with torch.no_grad():
        assert discriminator_loss(objective, real + 0.1, fake) < loss
        assert discriminator_loss(objective, real, fake - 0.1) < loss


@pytest.mark.parametrize("objective", ["bce", "hinge", "wgan-gp"])
def test_generator_loss_falls_as_fake_scores_rise(objective):
    fake = torch.tensor([0.1, 0.4, -0.6], requires_grad=True)
    loss = generator_loss(objective, fake)
    loss.backward()
    assert (fake.grad < 0).all()


def test_losses_match_hand_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 0.5])
    # bce: mean softplus(-real) + mean softplus(fake) = -mean log sigmoid(real) - mean log(1 - sigmoid(fake))
    expected_bce = (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2 + (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert discriminator_loss("bce", real, fake).item() == pytest.approx(expected_bce, rel=1e-6)
    # hinge: mean relu(1 - real) + mean relu(1 + fake) = (0 + 1) / 2 + (0 + 1.5) / 2
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(1.25)
    # wasserstein: mean fake - mean real = -0.25 - 1
    assert discriminator_loss("wgan-gp", real, fake).item() == pytest.approx(-1.25)
    # non-saturating generator: -mean log sigmoid(fake)
    expected_g = (math.log1p(math.exp(1.0)) + math.log1p(math.exp(-0.5))) / 2
    assert generator_loss("bce", fake).item() == pytest.approx(expected_g, rel=1e-6)


def test_gradient_penalty_is_zero_for_unit_lipschitz_linear_critic_and_matches_hand_value():
    torch.manual_seed(0)
    real, fake = torch.randn(16, 3, 4, 4), torch.randn(16, 3, 4, 4)
    direction = torch.randn(48)
    unit = direction / direction.norm()
    assert gradient_penalty(lambda x: x.flatten(1) @ unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    # A linear critic with weight norm 3 has gradient norm 3 everywhere: (3 - 1)^2 = 4.
    steep = gradient_penalty(lambda x: x.flatten(1) @ (3.0 * unit), real, fake)
    assert steep.item() == pytest.approx(4.0, rel=1e-5)
    # The penalty keeps its graph, so the critic's weights get a gradient from it.
    weight = (0.5 * unit).requires_grad_(True)
    gradient_penalty(lambda x: x.flatten(1) @ weight, real, fake).backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||: points against w when ||w|| < 1
    torch.testing.assert_close(weight.grad, 2 * (0.5 - 1.0) * unit, rtol=1e-5, atol=1e-6)


def test_diff_augment_keeps_shape_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert (y == 0).flatten(1).any(1).all(), "every image gets a cutout"


# ----------------------------------------------------------------------------- toy mixture

RING_RADIUS, RING_STD = 2.0, 0.1
RING_MODES = torch.stack(
    [torch.tensor([RING_RADIUS * math.cos(2 * math.pi * k / 8), RING_RADIUS * math.sin(2 * math.pi * k / 8)])
     for k in range(8)]
)


def ring_points(n: int, generator: torch.Generator) -> torch.Tensor:
    return RING_MODES[torch.randint(8, (n,), generator=generator)] + RING_STD * torch.randn(n, 2, generator=generator)


def toy_gan(objective: str, lr: float = 1e-3, **settings):
    # A 2-D latent suits a 2-D target; the data range (-3, 3) holds the ring.
    config = GANConfig(input_shape=(2,), data_range=(-3.0, 3.0), architecture="mlp", objective=objective,
                       **{"latent_dim": 2, "hidden": (128, 128), **settings})
    model = GAN(config)
    optimizers = {name: ManagedOptimizer(name, opt, grad_clip=None, dist_info=DistInfo())
                  for name, opt in model.configure_optimizers(TrainConfig(lr=lr)).items()}
    return model, optimizers


@pytest.mark.parametrize("objective", ["bce", "hinge", "wgan-gp"])
def test_on_the_ring_the_critic_learns_to_rank_real_above_fake_and_its_gradient_moves_fakes_to_the_data(objective):
    """Train D alone against fixed fakes outside the ring: its loss falls and it scores real
    points above fakes; then one small step of the fakes against the generator loss's gradient
    brings them closer to the data."""
    torch.manual_seed(0)
    model, optimizers = toy_gan(objective)
    data = torch.Generator().manual_seed(0)
    fixed_fakes = torch.tensor([2.5, 2.5]) + 0.1 * torch.randn(256, 2, generator=data)
    losses = []
    for _ in range(200):
        real = ring_points(256, data)
        scores = model.discriminate(torch.cat([real, fixed_fakes]), None)
        loss = discriminator_loss(objective, scores[:256], scores[256:])
        if objective == "wgan-gp":
            loss = loss + gradient_penalty(lambda x: model.discriminator(x, None), real, fixed_fakes)
        losses.append(loss.item())
        optimizers["discriminator"].step(loss)
    assert sum(losses[-20:]) < sum(losses[:20]), "training D did not lower its loss"
    with torch.no_grad():
        real_scores = model.discriminate(ring_points(1000, data), None)
        fake_scores = model.discriminate(fixed_fakes, None)
    assert real_scores.mean() > fake_scores.mean() + 0.5
    fakes = fixed_fakes.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(generator_loss(objective, model.discriminate(fakes, None)), fakes)
    moved = fixed_fakes - 0.05 * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
    distance_before = torch.cdist(fixed_fakes, RING_MODES).min(1).values.mean()
    distance_after = torch.cdist(moved, RING_MODES).min(1).values.mean()
    assert distance_after < distance_before - 0.025  # a step of 0.05 straight at the data gains 0.05


# Settings per objective on this toy; the paper defaults are tuned for images. Adam betas
# (0, 0.9) keep the non-saturating GAN from collapsing onto a few modes here, and a
# penalty weight of 1 instead of 10 lets the WGAN critic become sharp enough within 300 steps.
RING_SETTINGS = {
    "bce": ({"betas": (0.0, 0.9)}, 500),
    "hinge": ({}, 500),
    "wgan-gp": ({"gp_weight": 1.0}, 300),
}


@pytest.mark.parametrize("objective", sorted(RING_SETTINGS))
def test_gan_covers_all_modes_of_a_ring_of_gaussians(objective):
    settings, steps = RING_SETTINGS[objective]
    torch.manual_seed(0)
    model, optimizers = toy_gan(objective, **settings)
    data = torch.Generator().manual_seed(0)
    for step in range(steps):
        logs = model.training_step({"x": ring_points(256, data), "y": torch.zeros(256, dtype=torch.long)}, step, optimizers)
    assert set(logs) >= {"d_loss", "g_loss", "d_real", "d_fake"}
    model.eval()
    samples = model.sample(2000, generator=torch.Generator().manual_seed(1))
    distance, mode = torch.cdist(samples, RING_MODES).min(1)
    near = distance < 4 * RING_STD
    counts = torch.bincount(mode[near], minlength=8)
    assert (counts >= 0.02 * 2000).all(), f"samples near each mode: {counts.tolist()}"
    assert near.float().mean() > 0.4, f"only {near.float().mean():.0%} of samples lie near a mode"


# ----------------------------------------------------------------------------- training


def test_dcgan_digits_trains_loads_and_samples(tmp_path):
    logs = []
    run = genlab.train("dcgan-digits", ["steps=6", *TINY_GAN], out=tmp_path / "run", log=logs.append)
    model = genlab.load(run)
    assert model.family == "gan" and "conditional" not in model.capabilities
    images = genlab.sample(model, 5, seed=3)
    assert images.shape == (5, 1, 8, 8)
    assert images.min() >= -1.0 and images.max() <= 1.0
    torch.testing.assert_close(images, genlab.sample(model, 5, seed=3))
    assert (run / "samples.png").is_file()
    # the class shares of samples, as the shipped digits classifier sees them, to expose mode collapse
    with Image.open(run / "class_histogram.png") as chart:
        assert chart.format == "PNG" and chart.width > 100
    share_lines = [line for line in logs if "class shares of samples" in line]
    assert share_lines and "even: 10.0%" in share_lines[-1]
    # only the generator is averaged by the EMA
    assert model.ema_parameter_names() and all(n.startswith("generator.") for n in model.ema_parameter_names())


def test_conditional_gan_samples_requested_classes(tmp_path):
    run = genlab.train("dcgan-digits", ["steps=3", *TINY_GAN, "model.conditional=true", "model.objective=hinge"],
                       out=tmp_path / "run")
    model = genlab.load(run)
    assert "conditional" in model.capabilities
    assert genlab.sample(model, 4, condition=7).shape == (4, 1, 8, 8)
    assert model.preview({}, torch.Generator().manual_seed(0))["samples"].shape == (64, 1, 8, 8)
    with pytest.raises(GenlabError, match="out of range"):
        genlab.sample(model, 4, condition=10)
    with pytest.raises(GenlabError, match="out of range"):
        model.sample(2, condition=torch.tensor([0, -1]))


@pytest.mark.parametrize(
    "extra",
    [["model.objective=bce", "model.diffaugment=true"],
     ["model.objective=hinge", "model.conditional=true"],
     ["model.objective=wgan-gp", "model.n_critic=2"]],
    ids=["bce-diffaugment", "hinge-sn-conditional", "wgan-gp"],
)
def test_resume_is_exact(tmp_path, extra):
    common = [*TINY_GAN, *extra, "ema_decay=0.9", "train.checkpoint_every=3"]
    straight = genlab.train("dcgan-digits", ["steps=7", *common], out=tmp_path / "straight")
    first = genlab.train("dcgan-digits", ["steps=3", *common], out=tmp_path / "split")
    resumed = genlab.train(None, ["steps=7"], out=first, resume=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_discriminator_winning_outright_raises_divergence():
    torch.manual_seed(0)
    model = GAN(GANConfig(input_shape=(2,), architecture="mlp", hidden=(8,), latent_dim=2, collapse_patience=3))
    for step in range(2):
        model._check_discriminator_not_winning(1e-5, step)
    model._check_discriminator_not_winning(0.5, 2)  # a good step resets the streak
    assert model.discriminator_win_streak == 0
    for step in range(2):
        model._check_discriminator_not_winning(1e-5, step)
    with pytest.raises(DivergenceError, match="discriminator") as info:
        model._check_discriminator_not_winning(1e-5, 5)
    assert "lr_d" in info.value.hint


# ----------------------------------------------------------------------------- bad input


def test_conditional_sampling_of_unconditional_model_is_refused():
    model = GAN(GANConfig(input_shape=(1, 8, 8), base_channels=4, latent_dim=4))
    with pytest.raises(GenlabError, match="unconditional"):
        model.sample(2, condition=3)
    with pytest.raises(GenlabError, match="an integer in 1.."):
        model.sample(0)


def test_unsupported_dcgan_image_size_names_the_supported_ones():
    with pytest.raises(GenlabError) as info:
        GANConfig(input_shape=(1, 12, 12))
    message = str(info.value)
    assert "12, 12" in message and "8x8" in message and "28x28" in message and "32x32" in message
    assert "mlp" in (info.value.hint or "")
    GANConfig(input_shape=(1, 12, 12), architecture="mlp")  # any shape is fine for the MLP


@pytest.mark.parametrize(
    "settings, fragment",
    [({"objective": "lsgan"}, "objective"), ({"n_critic": 0}, "n_critic"), ({"betas": (0.5,)}, "betas"),
     ({"input_shape": (2,), "architecture": "mlp", "diffaugment": True}, "diffaugment")],
)
def test_bad_settings_are_rejected(settings, fragment):
    with pytest.raises(GenlabError, match=fragment):
        GANConfig(**settings)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("conditional", [False, True])
def test_dcgan_networks_fit_each_supported_size(shape, conditional):
    torch.manual_seed(0)
    model = GAN(GANConfig(input_shape=shape, base_channels=4, latent_dim=4, conditional=conditional,
                          objective="hinge", diffaugment=True))
    images = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, *shape)
    labels = torch.tensor([0, 1, 2]) if conditional else None
    assert model.discriminate(images, labels).shape == (3,)
