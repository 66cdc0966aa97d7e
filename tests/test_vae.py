"""VAE family: the bounds against closed forms, sampling contracts, training, configs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlab.config import from_dict, to_dict
from genlab.errors import GenlabError
from genlab.metrics.likelihood import bits_per_dim, gaussian_kl_standard_normal, log_mean_exp
from genlab.models.base import ImageConfig, eval_mode, mlp, randn
from genlab.models.vae import VAE, VAEConfig


class AdamStep:
    """Stand-in for genlab.training.optim.ManagedOptimizer: the same `.step(loss)` contract."""

    def __init__(self, parameters, lr: float):
        self.optimizer = torch.optim.Adam(parameters, lr=lr)

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def binary_images(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """n noisy copies of four random binary prototypes: structure a VAE can learn quickly."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(4, *shape, generator=g) < 0.5).float()
    images = prototypes[torch.randint(4, (n,), generator=g)]
    flips = (torch.rand(images.shape, generator=g) < 0.05).float()
    return (images - flips).abs()


# ----------------------------------------------------------------------------- metrics


def test_kl_to_standard_normal_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.5
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(gaussian_kl_standard_normal(mu, logvar), monte_carlo, atol=0.02, rtol=0.01)


def test_bits_per_dim_and_log_mean_exp_on_hand_values():
    # 784 * ln 2 nats over 784 dimensions is exactly one bit each.
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)
    assert bits_per_dim(torch.tensor([100.0]), 10).item() == pytest.approx(100.0 / (10 * math.log(2.0)))
    assert log_mean_exp(torch.log(torch.tensor([1.0, 3.0])), 0).item() == pytest.approx(math.log(2.0))
    # A naive exp would overflow here.
    assert log_mean_exp(torch.tensor([[1000.0, 1000.0]]), 1).item() == pytest.approx(1000.0)


# ----------------------------------------------------------------------------- closed form
# With no hidden layers and a fixed-sigma Gaussian likelihood the VAE is linear-Gaussian:
# z ~ N(0, I), x | z ~ N(W z + b, sigma^2 I), so p(x) = N(b, W W^T + sigma^2 I) exactly and
# the posterior is N(S W^T (x - b) / sigma^2, S) with S = (I + W^T W / sigma^2)^-1. The
# encoder is set to the posterior mean and the posterior's marginal variances, so q is the
# true posterior when W^T W is diagonal and a mean-field approximation with a known gap
# KL(q || posterior) otherwise.

DATA_DIM, LATENT_DIM, SIGMA = 6, 2, 0.5


def linear_gaussian_vae(gram: torch.Tensor, n: int = 64):
    """A linear-Gaussian VAE with W^T W = gram, n data points drawn from it, and the exact
    log p(x) and KL(q || posterior) per point."""
    config = VAEConfig(
        input_shape=(1, 2, 3),
        hidden=(),
        latent_dim=LATENT_DIM,
        likelihood="gaussian",
        gaussian_scale="fixed",
        gaussian_sigma=SIGMA,
        data_range=(-10.0, 10.0),
        iwae_k=0,
    )
    model = VAE(config)
    g = torch.Generator().manual_seed(0)
    orthonormal, _ = torch.linalg.qr(torch.randn(DATA_DIM, LATENT_DIM, generator=g, dtype=torch.float64))
    W = orthonormal @ torch.linalg.cholesky(gram).T  # W^T W = L L^T = gram
    b = 0.3 * torch.randn(DATA_DIM, generator=g, dtype=torch.float64)
    S = torch.linalg.inv(torch.eye(LATENT_DIM, dtype=torch.float64) + W.T @ W / SIGMA**2)
    A = S @ W.T / SIGMA**2  # posterior mean = A (x - b)
    decoder, encoder = model.decoder.net[0], model.encoder.net[0]
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(b)
        encoder.weight.zero_()
        encoder.weight[:LATENT_DIM] = A
        encoder.bias[:LATENT_DIM] = -(A @ b)
        encoder.bias[LATENT_DIM:] = torch.diagonal(S).log()

    z = torch.randn(n, LATENT_DIM, generator=g, dtype=torch.float64)
    x = z @ W.T + b + SIGMA * torch.randn(n, DATA_DIM, generator=g, dtype=torch.float64)
    covariance = W @ W.T + SIGMA**2 * torch.eye(DATA_DIM, dtype=torch.float64)
    exact_log_px = torch.distributions.MultivariateNormal(b, covariance).log_prob(x)
    posterior_mean = (x - b) @ A.T
    q = torch.distributions.MultivariateNormal(posterior_mean, torch.diag(torch.diagonal(S)))
    posterior = torch.distributions.MultivariateNormal(posterior_mean, S)
    gap = torch.distributions.kl_divergence(q, posterior)
    return model, x.float().view(n, 1, 2, 3), exact_log_px, gap


def mean_elbo_over_draws(model: VAE, x: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    n = x.shape[0]
    elbo = model.elbo(x.repeat(draws, 1, 1, 1), generator=torch.Generator().manual_seed(seed))["elbo"]
    return elbo.view(draws, n).double().mean(0)


def test_bounds_are_exact_when_the_posterior_is_in_the_variational_family():
    model, x, exact_log_px, gap = linear_gaussian_vae(torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64)))
    assert gap.abs().max() < 1e-9
    # q = posterior makes every importance weight p(x, z) / q(z | x) equal p(x): one sample
    # is exact, which checks every constant in the log-weights.
    iwae_1 = model.iwae_log_likelihood(x, k=1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(iwae_1.double(), exact_log_px, atol=1e-4, rtol=0)
    elbo = mean_elbo_over_draws(model, x, draws=2000, seed=2)
    assert (elbo - exact_log_px).mean().abs() < 0.01


def test_iwae_tightens_with_k_to_the_exact_log_likelihood():
    model, x, exact_log_px, gap = linear_gaussian_vae(torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64))
    expected_elbo = exact_log_px - gap
    assert gap.min() > 0.3  # the ELBO is visibly loose, so convergence below is a real check

    elbo = mean_elbo_over_draws(model, x, draws=2000, seed=0)
    assert (elbo - expected_elbo).mean().abs() < 0.03

    # Mean bound gaps over many draws: IWAE_1 estimates the ELBO, and larger k closes the gap.
    repeats = 50
    repeated_x, repeated_exact = x.repeat(repeats, 1, 1, 1), exact_log_px.repeat(repeats)
    mean_gap = {}
    for k in (1, 10, 100):
        iwae = model.iwae_log_likelihood(repeated_x, k=k, generator=torch.Generator().manual_seed(k))
        mean_gap[k] = (iwae.double() - repeated_exact).mean().item()
    assert mean_gap[1] == pytest.approx(-gap.mean().item(), abs=0.08)
    assert mean_gap[1] < mean_gap[10] < mean_gap[100] < 0.005

    iwae_5000 = model.iwae_log_likelihood(x, k=5000, generator=torch.Generator().manual_seed(5000)).double()
    assert (iwae_5000 - exact_log_px).mean().abs() < 0.01
    assert (iwae_5000 - exact_log_px).abs().max() < 0.06


def test_iwae_does_not_depend_on_the_chunk_size():
    model = VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(32,), latent_dim=4, iwae_k=0))
    x = binary_images(5, (1, 8, 8), seed=0)
    values = [
        model.iwae_log_likelihood(x, k=50, chunk_size=chunk, generator=torch.Generator().manual_seed(3))
        for chunk in (1, 7, 50, None)
    ]
    for value in values[1:]:
        torch.testing.assert_close(value, values[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(model.log_likelihood(x, k=50).mean(), values[0].mean(), atol=1.0, rtol=0)


# ----------------------------------------------------------------------------- sampling


def test_conditional_sampling_feeds_the_requested_labels_to_the_decoder():
    model = VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(32,), latent_dim=4, num_classes=5, conditional=True))
    assert "conditional" in model.capabilities
    fed_to_decoder = []
    model.decoder.register_forward_pre_hook(lambda module, args: fed_to_decoder.append(args[1]))

    images = model.sample(6, condition=3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (6, 1, 8, 8) and 0.0 <= images.min() and images.max() <= 1.0
    assert fed_to_decoder[-1].argmax(1).tolist() == [3] * 6 and (fed_to_decoder[-1].sum(1) == 1).all()

    labels = torch.tensor([0, 4, 2, 1])
    model.sample(4, condition=labels)
    assert fed_to_decoder[-1].argmax(1).tolist() == labels.tolist()

    model.sample(200, generator=torch.Generator().manual_seed(0))  # no condition: uniform classes
    assert set(fed_to_decoder[-1].argmax(1).tolist()) == set(range(5))

    # The label changes the image for the same latent draw.
    as_class_0 = model.sample(4, condition=0, generator=torch.Generator().manual_seed(1))
    as_class_1 = model.sample(4, condition=1, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(as_class_0, as_class_1)

    for bad_condition in (5, -1, torch.tensor([0, 1, 9, 2])):
        with pytest.raises(GenlabError, match="out of range"):
            model.sample(4, condition=bad_condition)
    with pytest.raises(GenlabError):
        model.sample(4, condition=torch.tensor([0, 1]))  # wrong number of labels
    with pytest.raises(GenlabError):
        model.encode(torch.zeros(2, 1, 8, 8))  # a conditional encoder needs y


def test_sampling_errors_on_an_unconditional_model():
    model = VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2))
    assert "conditional" not in model.capabilities and "conditional" in VAE.capabilities
    with pytest.raises(GenlabError, match="unconditional"):
        model.sample(4, condition=1)
    with pytest.raises(GenlabError):
        model.require("conditional", "class-conditional sampling")
    for bad_count in (0, -3):
        with pytest.raises(GenlabError):
            model.sample(bad_count)
    with pytest.raises(GenlabError, match="shape"):
        model.encode(torch.zeros(2, 1, 28, 28))


def test_preview_interleaves_inputs_and_reconstructions():
    model = VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, num_classes=3, conditional=True))
    batch = {"x": binary_images(40, (1, 8, 8), seed=1), "y": torch.arange(40) % 3}
    preview = model.preview(batch, torch.Generator().manual_seed(0))
    assert preview["samples"].shape == (64, 1, 8, 8)
    reconstructions = preview["reconstructions"]
    assert reconstructions.shape == (64, 1, 8, 8)
    torch.testing.assert_close(reconstructions[0::2], batch["x"][:32])
    torch.testing.assert_close(reconstructions[1::2], model.reconstruct(batch["x"][:32], batch["y"][:32]))


# ----------------------------------------------------------------------------- architectures and training


@pytest.mark.parametrize(
    "input_shape, hidden, likelihood, data_range",
    [
        ((1, 8, 8), (8, 16), "bernoulli", (0.0, 1.0)),
        ((1, 28, 28), (16, 32), "bernoulli", (0.0, 1.0)),
        ((3, 32, 32), (8, 16, 32), "gaussian", (-1.0, 1.0)),
    ],
)
def test_conv_shapes(input_shape, hidden, likelihood, data_range):
    config = VAEConfig(
        input_shape=input_shape, architecture="conv", hidden=hidden, latent_dim=5,
        likelihood=likelihood, data_range=data_range, iwae_k=4,
    )  # fmt: skip
    model = VAE(config)
    low, high = data_range
    x = torch.rand(3, *input_shape) * (high - low) + low
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert model.decode_logits(mu).shape == (3, *input_shape)
    decoded = model.decode(mu)  # the "decode" capability: images in the data range
    assert decoded.shape == (3, *input_shape) and low <= decoded.min() and decoded.max() <= high
    assert model.reconstruct(x).shape == (3, *input_shape)
    images = model.sample(2)
    assert images.shape == (2, *input_shape) and low <= images.min() and images.max() <= high
    metrics = model.validation_step({"x": x, "y": torch.zeros(3, dtype=torch.long)})
    assert set(metrics) == {"loss", "elbo", "kl", "recon", "iwae_nll"}
    assert all(math.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize(
    "architecture, hidden, likelihood",
    [("mlp", (64,), "bernoulli"), ("conv", (16, 32), "bernoulli"), ("mlp", (64,), "gaussian")],
)
def test_a_few_training_steps_reduce_the_loss(architecture, hidden, likelihood):
    torch.manual_seed(0)
    config = VAEConfig(
        input_shape=(1, 8, 8), architecture=architecture, hidden=hidden, latent_dim=4,
        likelihood=likelihood, beta=2.0, conditional=True, num_classes=4,
    )  # fmt: skip
    model = VAE(config)
    batch = {"x": binary_images(32, (1, 8, 8), seed=0), "y": torch.arange(32) % 4}

    def evaluation_loss() -> float:
        with torch.no_grad():
            terms = model.elbo(batch["x"], batch["y"], generator=torch.Generator().manual_seed(0))
        return -terms["elbo"].mean().item()

    before = evaluation_loss()
    optimizers = {"main": AdamStep(model.parameters(), lr=3e-3)}
    for step in range(60):
        stats = model.training_step(batch, step, optimizers)
    # The training loss weights the KL by beta; the reported ELBO does not.
    assert stats["loss"] == pytest.approx(-(stats["recon"] - 2.0 * stats["kl"]), rel=1e-5)
    assert stats["elbo"] == pytest.approx(stats["recon"] - stats["kl"], rel=1e-5)
    assert evaluation_loss() < 0.75 * before


# ----------------------------------------------------------------------------- config


def test_config_round_trips_through_json():
    config = VAEConfig(
        input_shape=(3, 32, 32), data_range=(-1.0, 1.0), architecture="conv", hidden=(32, 64),
        likelihood="gaussian", gaussian_scale="fixed", conditional=True, num_classes=7,
    )  # fmt: skip
    restored = from_dict(VAEConfig, json.loads(json.dumps(to_dict(config))), "model")
    assert restored == config
    assert isinstance(restored.input_shape, tuple) and isinstance(restored.hidden, tuple)
    assert isinstance(restored.data_range, tuple)


@pytest.mark.parametrize(
    "settings",
    [
        {"architecture": "rnn"},
        {"likelihood": "poisson"},
        {"gaussian_scale": "per_pixel", "likelihood": "gaussian"},
        {"likelihood": "bernoulli", "data_range": [-1.0, 1.0]},
        {"architecture": "conv", "hidden": [32, 64, 128]},  # 28 is not divisible by 8
        {"architecture": "conv", "hidden": []},
        {"latent_dim": 0},
        {"iwae_k": -1},
        {"latent_dmi": 8},  # unknown key
    ],
)
def test_invalid_configs_raise_genlab_error(settings):
    with pytest.raises(GenlabError):
        from_dict(VAEConfig, settings, "model")


@pytest.mark.parametrize("config_class", ["vae", "gan", "superres", "denoiser"])
def test_image_configs_share_the_data_range_check(config_class):
    from genlab.registry import get_family

    cls = get_family(config_class).config_class
    assert issubclass(cls, ImageConfig)
    with pytest.raises(GenlabError, match="data_range"):
        from_dict(cls, {"data_range": [1.0, 0.0]}, "model")


# ----------------------------------------------------------------------------- shared model helpers


def test_randn_draws_on_the_generator_and_moves_to_the_device():
    expected = torch.randn((2, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    drawn = randn((2, 3), torch.Generator().manual_seed(5), "cpu", torch.float64)
    assert drawn.dtype == torch.float64 and torch.equal(drawn, expected)
    assert randn((4,), None, "cpu").shape == (4,)


def test_eval_mode_restores_the_training_flag_also_on_errors():
    net = mlp([3, 5, 2])
    assert [type(m) for m in net] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    net.train()
    with pytest.raises(RuntimeError), eval_mode(net):
        assert not net.training
        raise RuntimeError
    assert net.training
    net.eval()
    with eval_mode(net):
        pass
    assert not net.training
