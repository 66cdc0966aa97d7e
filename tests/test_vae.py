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


# ----------------------------------------------------------------------------- IWAE training, VampPrior, KL warm-up


class RecordLoss:
    """An optimizer stand-in that keeps the loss it is given and updates nothing."""

    def __init__(self):
        self.losses = []

    def step(self, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach())


def small_vae(**settings) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(**{"input_shape": (1, 8, 8), "hidden": (32,), "latent_dim": 3, "iwae_k": 0, **settings}))


def brute_force_mixture(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; means_k, exp(logvars_k)), one component at a time, in float64."""
    per_component = [
        torch.distributions.Normal(m.double(), torch.exp(0.5 * lv.double())).log_prob(z.double()).sum(-1)
        for m, lv in zip(means, logvars)
    ]
    return torch.logsumexp(torch.stack(per_component), dim=0) - math.log(len(means))


def test_train_k_1_trains_on_exactly_the_elbo_loss():
    model = small_vae(beta=2.0)
    x = binary_images(16, (1, 8, 8), seed=0)
    optimizer = RecordLoss()
    torch.manual_seed(3)
    stats = model.training_step({"x": x, "y": torch.zeros(16, dtype=torch.long)}, 0, {"main": optimizer})
    # The loss as the VAE computed it before train_k existed: one draw, the analytic KL, beta on the KL.
    torch.manual_seed(3)
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape)
    recon = model.reconstruction_log_likelihood(x, model.decode_logits(z))
    kl = gaussian_kl_standard_normal(mu.float(), logvar.float())
    expected = -(recon - 2.0 * kl).mean()
    assert torch.equal(optimizer.losses[0], expected.detach())
    assert stats["loss"] == expected.item() and stats["kl"] == kl.mean().item()


@pytest.mark.parametrize("prior", ["standard", "vampprior"])
def test_iwae_training_bound_is_the_estimator_with_gradients(prior):
    model = small_vae(prior=prior, vamp_components=6)
    x = binary_images(5, (1, 8, 8), seed=1)
    bound = model.iwae_bound(x, k=7, generator=torch.Generator().manual_seed(5))
    for chunk_size in (3, None):  # the same draws, however the estimator chunks them
        estimate = model.iwae_log_likelihood(x, k=7, chunk_size=chunk_size, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(bound["iwae"], estimate, atol=1e-5, rtol=0)
    torch.testing.assert_close(bound["elbo"], bound["recon"] - bound["kl"])

    bound["iwae"].sum().backward()  # a loss: gradients reach every network (and the pseudo-inputs)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    # On average over draws the bound is above the ELBO (Burda et al.: IWAE_k >= IWAE_1 = ELBO in
    # expectation), visibly so when q is too wide.
    repeated = x.repeat(200, 1, 1, 1)
    with torch.no_grad():
        model.encoder.net[-1].bias[3:] += 2.0  # logvar + 2
        iwae = model.iwae_bound(repeated, k=8, generator=torch.Generator().manual_seed(0))["iwae"]
        elbo = model.elbo(repeated, generator=torch.Generator().manual_seed(1))["elbo"]
    assert iwae.mean() > elbo.mean() + 1.0


def test_iwae_bound_with_one_sample_is_the_elbo_and_tempers_only_the_prior_term():
    model = small_vae(prior="vampprior", vamp_components=4)
    x = binary_images(6, (1, 8, 8), seed=2)
    elbo = model.elbo(x, generator=torch.Generator().manual_seed(7))
    for weight in (1.0, 0.3, 0.0):
        bound = model.iwae_bound(x, k=1, generator=torch.Generator().manual_seed(7), kl_weight=weight)
        torch.testing.assert_close(bound["iwae"], elbo["recon"] - weight * elbo["kl"], atol=1e-5, rtol=0)
        torch.testing.assert_close(bound["kl"], elbo["kl"])


def test_iwae_training_step_logs_the_first_samples_elbo():
    model = small_vae(train_k=4)
    x = binary_images(8, (1, 8, 8), seed=3)
    optimizer = RecordLoss()
    stats = model.training_step({"x": x, "y": torch.zeros(8, dtype=torch.long)}, 0, {"main": optimizer})
    assert set(stats) == {"loss", "elbo", "kl", "recon"}
    assert stats["elbo"] == pytest.approx(stats["recon"] - stats["kl"], rel=1e-5)
    assert stats["loss"] == optimizer.losses[0].item() and stats["loss"] < -stats["elbo"]
    # Under N(0, I) the logged KL is the analytic one, as with train_k = 1.
    assert stats["kl"] == pytest.approx(gaussian_kl_standard_normal(*model.encode(x)).mean().item(), rel=1e-6)


def test_gaussian_mixture_log_density_matches_a_loop_over_components():
    from genlab.models.vae import log_gaussian_mixture

    g = torch.Generator().manual_seed(0)
    K, D = 50, 8
    means = 1.5 * torch.randn(K, D, generator=g)
    # Narrow components (sd 0.05) far from the origin: the expanded square cancels badly in float32.
    logvars = math.log(0.05**2) + 0.3 * torch.randn(K, D, generator=g)
    near = means[torch.randint(K, (300,), generator=g)] + 0.05 * torch.randn(300, D, generator=g)
    z = torch.cat([near, torch.randn(100, D, generator=g)]).view(20, 20, D)  # extra leading dims
    fast = log_gaussian_mixture(z, means, logvars)
    assert fast.shape == (20, 20) and fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), brute_force_mixture(z, means, logvars), atol=1e-4, rtol=1e-6)


def test_vampprior_log_prior_is_the_mixture_of_the_pseudo_inputs_posteriors():
    model = small_vae(prior="vampprior", vamp_components=7)
    with torch.no_grad():  # spread the pseudo-inputs so the components differ
        model.pseudo_input_values.uniform_(-0.5, 1.5, generator=torch.Generator().manual_seed(0))
    u = model.pseudo_inputs()
    assert u.shape == (7, 1, 8, 8) and u.min() == 0.0 and u.max() == 1.0  # hardtanh into the data range
    means, logvars = model.encode(u)
    z = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.log_prior(z).double(), brute_force_mixture(z, means, logvars), atol=1e-5, rtol=0)
    # The standard prior is still N(0, I).
    standard = small_vae()
    torch.testing.assert_close(standard.log_prior(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_vampprior_kl_estimate_averages_to_the_closed_form_with_one_component():
    # With K = 1 the prior is the single Gaussian q(z | u_1), so KL(q(z | x) || p(z)) has a closed
    # form that the ELBO's one-sample estimate log q(z | x) - log p(z) must average to.
    model = small_vae(prior="vampprior", vamp_components=1)
    x = binary_images(4, (1, 8, 8), seed=4)
    with torch.no_grad():
        model.pseudo_input_values.fill_(1.0)  # a white image, unlike the data
        model.encoder.net[0].weight *= 3.0
        mu, logvar = model.encode(x)
        prior_mu, prior_logvar = model.prior_components()
        closed_form = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu.double(), torch.exp(0.5 * logvar.double())),
            torch.distributions.Normal(prior_mu.double(), torch.exp(0.5 * prior_logvar.double())),
        ).sum(-1)
        draws = 20_000
        kl = model.elbo(x.repeat(draws, 1, 1, 1), generator=torch.Generator().manual_seed(0))["kl"]
    assert closed_form.min() > 0.05  # the posteriors differ from the prior: not a trivial zero
    estimate = kl.view(draws, 4).double().mean(0)
    standard_error = kl.view(draws, 4).double().std(0) / math.sqrt(draws)
    assert ((estimate - closed_form).abs() < 4 * standard_error + 1e-3).all()


def test_vampprior_samples_come_from_the_mixture_and_are_reproducible():
    model = small_vae(prior="vampprior", vamp_components=3)
    with torch.no_grad():
        model.pseudo_input_values.uniform_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
        model.encoder.net[-1].bias[:3] += torch.tensor([4.0, -4.0, 2.0])  # components away from N(0, I)
    fed_to_decoder = []
    model.decoder.register_forward_pre_hook(lambda module, args: fed_to_decoder.append(args[0]))

    images = model.sample(4000, generator=torch.Generator().manual_seed(1))
    assert images.shape == (4000, 1, 8, 8) and 0.0 <= images.min() and images.max() <= 1.0
    z = fed_to_decoder[-1]
    means, logvars = model.prior_components()
    mixture_mean = means.mean(0)
    mixture_var = (logvars.exp() + means.pow(2)).mean(0) - mixture_mean.pow(2)
    torch.testing.assert_close(z.mean(0), mixture_mean, atol=0.06, rtol=0)
    torch.testing.assert_close(z.var(0), mixture_var, atol=0.1, rtol=0.1)

    again = model.sample(5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again, model.sample(5, generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(again, model.sample(5, generator=torch.Generator().manual_seed(3)))


def test_vampprior_model_round_trips_through_the_artifact(tmp_path):
    from genlab.artifact import load, save, write_config

    model = small_vae(prior="vampprior", vamp_components=5, train_k=3, kl_warmup_steps=10, gated=True)
    write_config(tmp_path, {"family": "vae", "model": to_dict(model.config), "data": {"name": "digits"}, "train": {}})
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert loaded.config == model.config
    assert torch.equal(loaded.pseudo_inputs(), model.pseudo_inputs())
    assert torch.equal(loaded.sample(6, generator=torch.Generator().manual_seed(0)),
                       model.eval().sample(6, generator=torch.Generator().manual_seed(0)))  # fmt: skip
    x = binary_images(3, (1, 8, 8), seed=5)
    torch.testing.assert_close(
        loaded.log_likelihood(x, k=20, generator=torch.Generator().manual_seed(1)),
        model.log_likelihood(x, k=20, generator=torch.Generator().manual_seed(1)),
    )


def test_default_settings_keep_old_artifacts_loadable():
    old_keys = {"input_shape", "num_classes", "data_range", "architecture", "hidden", "latent_dim", "likelihood",
                "gaussian_scale", "gaussian_sigma", "beta", "conditional", "iwae_k"}  # fmt: skip
    old_config = {key: value for key, value in to_dict(VAEConfig()).items() if key in old_keys}
    config = from_dict(VAEConfig, old_config, "model")
    assert (config.train_k, config.prior, config.kl_warmup_steps, config.gated) == (1, "standard", 0, False)
    # The same weights as before: no pseudo-inputs, plain linear layers.
    assert set(VAE(config).state_dict()) == {
        f"{net}.net.{i}.{p}" for net in ("encoder", "decoder") for i in (0, 2, 4) for p in ("weight", "bias")
    }


def test_iwae_chunks_count_the_mixture_priors_columns(monkeypatch):
    import genlab.models.vae as vae_module

    model = small_vae(prior="vampprior", vamp_components=50)
    x = binary_images(5, (1, 8, 8), seed=6)
    # Room for 4 samples of 5 images with the prior's columns counted, 19 without.
    monkeypatch.setattr(vae_module, "IWAE_FLOATS_PER_CHUNK", 4 * 5 * (64 + vae_module.MIXTURE_TEMPORARIES * 50))
    decoder_calls = []
    model.decoder.register_forward_hook(lambda module, args, output: decoder_calls.append(len(output)))
    model.iwae_log_likelihood(x, k=20)
    assert decoder_calls == [4 * 5] * 5


def test_kl_warmup_rises_linearly_to_beta_by_step():
    model = small_vae(beta=2.0, kl_warmup_steps=100)
    assert [model.kl_weight(step) for step in (0, 25, 50, 100, 5000)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert small_vae(beta=2.0).kl_weight(0) == 2.0
    # At step 0 the loss has no KL term; later steps weight it by the warm-up factor.
    x = binary_images(8, (1, 8, 8), seed=7)
    batch = {"x": x, "y": torch.zeros(8, dtype=torch.long)}
    stats = model.training_step(batch, 0, {"main": RecordLoss()})
    assert stats["loss"] == pytest.approx(-stats["recon"], rel=1e-6) and stats["kl"] > 0
    stats = model.training_step(batch, 25, {"main": RecordLoss()})
    assert stats["loss"] == pytest.approx(-(stats["recon"] - 0.5 * stats["kl"]), rel=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        {"train_k": 4},
        {"prior": "vampprior", "vamp_components": 10},
        {"gated": True},
        {"prior": "vampprior", "vamp_components": 10, "train_k": 3, "kl_warmup_steps": 20, "gated": True},
    ],
)
def test_a_few_training_steps_reduce_the_loss_with_the_new_options(settings):
    model = small_vae(hidden=(64,), **settings)
    batch = {"x": binary_images(32, (1, 8, 8), seed=0), "y": torch.zeros(32, dtype=torch.long)}

    def evaluation_loss() -> float:
        with torch.no_grad():
            return -model.elbo(batch["x"], generator=torch.Generator().manual_seed(0))["elbo"].mean().item()

    before = evaluation_loss()
    optimizers = {"main": AdamStep(model.parameters(), lr=3e-3)}
    for step in range(60):
        model.training_step(batch, step, optimizers)
    assert evaluation_loss() < 0.75 * before
    metrics = VAE.validation_step(model, batch)
    assert all(math.isfinite(value) for value in metrics.values())


def test_new_options_round_trip_through_json():
    config = VAEConfig(train_k=5, prior="vampprior", vamp_components=50, kl_warmup_steps=1000, gated=True)
    restored = from_dict(VAEConfig, json.loads(json.dumps(to_dict(config))), "model")
    assert restored == config


@pytest.mark.parametrize(
    "settings, hint",
    [
        ({"train_k": 0}, "ELBO"),
        ({"prior": "mixture"}, "standard, vampprior"),
        ({"prior": "vampprior", "vamp_components": 0}, "500"),
        ({"prior": "vampprior", "conditional": True}, "model.conditional=false"),
        ({"kl_warmup_steps": -1}, "0 turns"),
        ({"gated": True, "architecture": "conv", "hidden": [8, 16]}, "architecture=mlp"),
    ],
)
def test_bad_new_settings_say_how_to_fix_them(settings, hint):
    with pytest.raises(GenlabError) as error:
        from_dict(VAEConfig, settings, "model")
    assert hint in error.value.hint
