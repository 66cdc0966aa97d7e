"""Variational autoencoders: VAE, beta-VAE, class-conditional VAE, IWAE training and the VampPrior.

Method. A latent z ~ p(z) (N(0, I) unless the VampPrior below is chosen) generates an image
through a decoder p(x | z): independent Bernoulli pixels (logits out of the decoder) or
independent Gaussians N(mean, sigma^2) with one shared sigma, learned or fixed. An encoder
q(z | x) = N(mu(x), diag(exp(logvar(x)))) amortises inference. Training maximises the
evidence lower bound

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))  <=  log p(x),

with one reparameterised sample z = mu + sigma * eps for the first term and the analytic
KL for the second. A beta-VAE weights the KL by `beta` in the training loss only; the
ELBO it reports is always the true bound (beta = 1). With `kl_warmup_steps` the KL's weight
rises linearly from 0 to beta over the first steps (a function of the step number, so a
resumed run continues exactly).

Evaluation uses the importance-weighted bound (Burda et al., 2016)

    IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

which equals the ELBO in expectation for k = 1, increases with k and tends to log p(x).
With `train_k` = k > 1 the model also trains on it: the loss is -IWAE_k, with gradients,
from the same log-weights as the estimator (the IWAE of Burda et al.). Its weight on the KL
(beta, warm-up) multiplies log p(z_i) - log q(z_i | x) inside every importance weight, which
for k = 1 would be the beta-ELBO with a one-sample KL.

The VampPrior (Tomczak & Welling, 2018) replaces N(0, I) by the mixture of the encoder's own
posteriors at K learned pseudo-inputs u_k (parameters shaped like images, clipped into the
data range by a hardtanh):

    p(z) = (1/K) sum_k q(z | u_k).

KL(q(z | x) || p(z)) then has no closed form; the ELBO uses the one-sample estimate
log q(z | x) - log p(z) at its own draw z, and sampling picks a component uniformly, then
z ~ q(z | u_k). Unconditional VAEs only: a conditional encoder would need a class per
pseudo-input.

A conditional VAE (Sohn et al., 2015) concatenates the one-hot class label to the
encoder's input and to the decoder's input, so sampling can ask for a class.

The networks are plain MLPs (optionally with gated units, h = (W x + b) * sigmoid(V x + c),
as in the VampPrior paper) or stride-2 convolution stacks with no normalisation layers,
so every example's likelihood depends on that example alone and distributed training
needs no synchronised statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError
from ..metrics.likelihood import gaussian_kl_standard_normal
from ..registry import register_family
from .base import GenerativeModel, ImageConfig, check_sample_count, mlp, randint, randn

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
GAUSSIAN_SCALES = ("learned", "fixed")
PRIORS = ("standard", "vampprior")
LOG_2PI = math.log(2.0 * math.pi)
# The IWAE decodes chunk * batch images at once; about this many output floats per chunk
# keeps k = 5000 on a full batch within a few hundred MB.
IWAE_FLOATS_PER_CHUNK = 20_000_000
# The VampPrior's log p(z) holds about this many float32-sized [samples * batch, K] tensors at once
# (a float64 product, its float32 copy, logsumexp's own).
MIXTURE_TEMPORARIES = 5
# Pseudo-inputs start at this fraction of the data range (MNIST's background is 0), with this
# spread: the initialisation of the VampPrior paper's code (0.05, 0.01).
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01


@dataclass
class VAEConfig(ImageConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W), filled in from the data
    num_classes: int = 10  # filled in from the data; used when conditional
    data_range: tuple[float, ...] = (0.0, 1.0)  # filled in from the data
    architecture: str = "mlp"  # mlp | conv
    hidden: tuple[int, ...] = (512, 256)  # mlp: hidden sizes; conv: channels of the stride-2 convs
    latent_dim: int = 32
    likelihood: str = "bernoulli"  # bernoulli (data in [0, 1]) | gaussian
    gaussian_scale: str = "learned"  # learned: one log-sigma, starting at gaussian_sigma | fixed
    gaussian_sigma: float = 0.1
    beta: float = 1.0  # KL weight in the training loss (beta-VAE); reported ELBO uses 1
    conditional: bool = False  # one-hot class label into encoder and decoder
    iwae_k: int = 64  # importance samples for the validation IWAE NLL; 0 disables it
    train_k: int = 1  # importance samples in the training loss: 1 = the ELBO, k > 1 = the IWAE_k bound
    prior: str = "standard"  # standard: N(0, I) | vampprior: mixture of q(z | u_k) at learned pseudo-inputs
    vamp_components: int = 500  # vampprior: the number K of pseudo-inputs
    kl_warmup_steps: int = 0  # the KL's weight rises linearly from 0 to beta over these first steps (steps, not epochs)
    gated: bool = False  # mlp: gated hidden units (W x + b) * sigmoid(V x + c) instead of ReLU

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise GenlabError(
                f"unknown model.architecture {self.architecture!r}", f"use one of {', '.join(ARCHITECTURES)}"
            )
        if self.likelihood not in LIKELIHOODS:
            raise GenlabError(f"unknown model.likelihood {self.likelihood!r}", f"use one of {', '.join(LIKELIHOODS)}")
        if self.gaussian_scale not in GAUSSIAN_SCALES:
            raise GenlabError(
                f"unknown model.gaussian_scale {self.gaussian_scale!r}", f"use one of {', '.join(GAUSSIAN_SCALES)}"
            )
        self.check_data_range()
        if self.likelihood == "bernoulli" and tuple(self.data_range) != (0.0, 1.0):
            raise GenlabError(
                f"a Bernoulli likelihood needs data in [0, 1], but the data range is {tuple(self.data_range)}",
                "use data.scale=unit, or model.likelihood=gaussian",
            )
        if self.latent_dim < 1 or any(size < 1 for size in self.hidden) or any(size < 1 for size in self.input_shape):
            raise GenlabError("model.latent_dim, model.hidden and model.input_shape must hold positive sizes")
        if self.gaussian_sigma <= 0 or self.beta < 0 or self.iwae_k < 0:
            raise GenlabError("model.gaussian_sigma must be > 0, model.beta >= 0 and model.iwae_k >= 0")
        if self.conditional and self.num_classes < 1:
            raise GenlabError("a conditional VAE needs labelled data (model.num_classes >= 1)")
        self._check_training_options()
        if self.architecture == "conv":
            if len(self.input_shape) != 3 or not self.hidden:
                raise GenlabError(
                    "the conv architecture needs (C, H, W) images and at least one conv layer in model.hidden",
                    f"got input_shape={tuple(self.input_shape)}, hidden={tuple(self.hidden)}",
                )
            factor = 2 ** len(self.hidden)
            _, height, width = self.input_shape
            if height % factor or width % factor:
                raise GenlabError(
                    f"{len(self.hidden)} stride-2 conv layers need height and width divisible by {factor}, "
                    f"got {height}x{width}",
                    "use fewer entries in model.hidden, or architecture=mlp",
                )

    def _check_training_options(self):
        if self.train_k < 1:
            raise GenlabError(
                f"model.train_k must be at least 1, got {self.train_k}",
                "1 trains on the ELBO, e.g. 5 on the IWAE_5 bound",
            )
        if self.prior not in PRIORS:
            raise GenlabError(f"unknown model.prior {self.prior!r}", f"use one of {', '.join(PRIORS)}")
        if self.vamp_components < 1:
            raise GenlabError(
                f"model.vamp_components must be at least 1, got {self.vamp_components}",
                "the VampPrior paper uses 500 on MNIST",
            )
        if self.prior == "vampprior" and self.conditional:
            raise GenlabError(
                "model.prior=vampprior needs an unconditional VAE (a conditional encoder would need a class "
                "for every pseudo-input)",
                "set model.conditional=false, or model.prior=standard",
            )
        if self.kl_warmup_steps < 0:
            raise GenlabError(
                f"model.kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}", "0 turns the warm-up off"
            )
        if self.gated and self.architecture != "mlp":
            raise GenlabError(
                f"model.gated works with architecture=mlp only, not {self.architecture!r}",
                "set model.gated=false, or model.architecture=mlp",
            )


# ----------------------------------------------------------------------------- densities


def log_posterior(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z | x) in nats at z = mu + sigma * eps, from eps [..., latent] and logvar: [...]."""
    return -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) in nats, z [..., latent] -> [...]."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def log_gaussian_mixture(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; means_k, diag(exp(logvars_k))) in nats, z [..., D] -> [...] in float32,
    for means and logvars [K, D].

    Each component's log density -1/2 sum_d ((z_d - m_kd)^2 / v_kd + log v_kd + log 2 pi) expands
    into [z^2, z] . [-1/(2 v_k), m_k / v_k] + const_k: one matrix product, so the largest tensor is
    [N, K], never [N, K, D], and it runs at matmul speed, which the IWAE's thousands of samples
    per image need. The product is in float64: its terms (z^2 / v) are large and cancel, and in
    float32 posterior standard deviations near 0.05 already cost up to 0.01 nats."""
    shape = z.shape[:-1]
    z = z.reshape(-1, z.shape[-1]).double()  # [N, D]
    means, logvars = means.double(), logvars.double()
    precisions = torch.exp(-logvars)  # [K, D]
    constants = -0.5 * (means.pow(2) * precisions + logvars + LOG_2PI).sum(-1)  # [K]
    features = torch.cat([z.pow(2), z], dim=1)  # [N, 2D]
    coefficients = torch.cat([-0.5 * precisions, means * precisions], dim=1)  # [K, 2D]
    log_components = torch.addmm(constants, features, coefficients.T).float()  # [N, K]
    return (torch.logsumexp(log_components, dim=1) - math.log(means.shape[0])).view(shape)


def draw_eps(samples: int, shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal noise [samples, *shape], one draw per sample in order: the same values
    however the samples are split into chunks."""
    return torch.stack([randn(shape, generator, device) for _ in range(samples)])


# ----------------------------------------------------------------------------- networks
# Every network takes a condition vector next to its input: the one-hot label for a
# conditional VAE, an empty [B, 0] tensor otherwise, so both cases share one code path.


class GatedLinear(nn.Module):
    """h = (W x + b) * sigmoid(V x + c), [B, n_in] -> [B, n_out]: a gated unit (Dauphin et al.,
    2017), the hidden layer of the VampPrior paper's MLPs. Value and gate share one matmul."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.linear(x).chunk(2, dim=-1)
        return value * torch.sigmoid(gate)


def gated_mlp(sizes: list[int]) -> nn.Sequential:
    """Gated layers sizes[0] -> ... -> sizes[-2], then a plain linear read-out to sizes[-1]."""
    hidden = [GatedLinear(n_in, n_out) for n_in, n_out in zip(sizes[:-2], sizes[1:-1])]
    return nn.Sequential(*hidden, nn.Linear(sizes[-2], sizes[-1]))


class MLPEncoder(nn.Module):
    def __init__(
        self, input_shape: tuple[int, ...], hidden: tuple[int, ...], condition_dim: int, latent_dim: int,
        gated: bool = False,
    ):  # fmt: skip
        super().__init__()
        self.net = (gated_mlp if gated else mlp)([math.prod(input_shape) + condition_dim, *hidden, 2 * latent_dim])

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.flatten(1), condition], dim=1))


class MLPDecoder(nn.Module):
    def __init__(
        self, input_shape: tuple[int, ...], hidden: tuple[int, ...], condition_dim: int, latent_dim: int,
        gated: bool = False,
    ):  # fmt: skip
        super().__init__()
        self.input_shape = tuple(input_shape)
        sizes = [latent_dim + condition_dim, *reversed(hidden), math.prod(input_shape)]
        self.net = (gated_mlp if gated else mlp)(sizes)

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, condition], dim=1)).view(-1, *self.input_shape)


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions halve the image per layer; a linear layer reads out (mu, logvar)."""

    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, ...], condition_dim: int, latent_dim: int):
        super().__init__()
        image_channels, height, width = input_shape
        layers: list[nn.Module] = []
        for c_in, c_out in zip((image_channels, *channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        factor = 2 ** len(channels)
        features = channels[-1] * (height // factor) * (width // factor)
        # The label joins after the convolutions: as many extra input channels it would cost
        # num_classes full-resolution planes for the same information.
        self.to_latent = nn.Linear(features + condition_dim, 2 * latent_dim)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.to_latent(torch.cat([self.convs(x).flatten(1), condition], dim=1))


class ConvDecoder(nn.Module):
    """The encoder mirrored: a linear layer to the smallest feature map, then stride-2 transposed convs."""

    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, ...], condition_dim: int, latent_dim: int):
        super().__init__()
        image_channels, height, width = input_shape
        factor = 2 ** len(channels)
        self.feature_shape = (channels[-1], height // factor, width // factor)
        self.from_latent = nn.Linear(latent_dim + condition_dim, math.prod(self.feature_shape))
        upsampling_channels = (*reversed(channels), image_channels)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(upsampling_channels[:-1], upsampling_channels[1:])):
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.from_latent(torch.cat([z, condition], dim=1)))
        return self.deconvs(features.view(-1, *self.feature_shape))


NETWORKS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}


# ----------------------------------------------------------------------------- the model


@register_family("vae")
class VAE(GenerativeModel):
    config_class = VAEConfig
    # Everything a VAE can offer, for listing families; an instance drops "conditional"
    # unless it was trained with labels.
    capabilities = frozenset({"sample", "encode", "decode", "log_likelihood", "conditional"})

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        if not config.conditional:
            self.capabilities = VAE.capabilities - {"conditional"}
        condition_dim = config.num_classes if config.conditional else 0
        encoder_class, decoder_class = NETWORKS[config.architecture]
        options = {"gated": True} if config.gated else {}
        self.encoder = encoder_class(config.input_shape, config.hidden, condition_dim, config.latent_dim, **options)
        self.decoder = decoder_class(config.input_shape, config.hidden, condition_dim, config.latent_dim, **options)
        if config.prior == "vampprior":
            # Unconstrained values, read through a hardtanh into the data range (pseudo_inputs()).
            low, high = config.data_range
            start = PSEUDO_INPUT_MEAN + PSEUDO_INPUT_STD * torch.randn(config.vamp_components, *config.input_shape)
            self.pseudo_input_values = nn.Parameter(low + (high - low) * start)
        if config.likelihood == "gaussian":
            log_sigma = torch.tensor(math.log(config.gaussian_sigma))
            if config.gaussian_scale == "learned":
                self.log_sigma = nn.Parameter(log_sigma)
            else:
                self.register_buffer("log_sigma", log_sigma)

    # -- encoder and decoder --------------------------------------------------------------
    def _condition(self, y: torch.Tensor | None, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        """The network's condition input: one-hot labels, or [B, 0] for an unconditional model."""
        if not self.config.conditional:
            return like.new_zeros(batch_size, 0)
        if y is None:
            raise GenlabError("this VAE is class-conditional and needs the class labels y")
        return F.one_hot(y.to(like.device), self.config.num_classes).to(like.dtype)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters (mu, logvar), each [B, latent_dim], of the posterior q(z | x)."""
        if tuple(x.shape[1:]) != tuple(self.config.input_shape):
            raise GenlabError(
                f"this VAE takes images of shape {tuple(self.config.input_shape)}, got {tuple(x.shape[1:])}"
            )
        mu, logvar = self.encoder(x, self._condition(y, x.shape[0], x)).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Parameters of p(x | z), [B, C, H, W]: per-pixel logits (bernoulli) or unclipped means
        (gaussian); what the likelihood reads."""
        return self.decoder(z, self._condition(y, z.shape[0], z))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The "decode" capability: E[x | z] for latents z [B, latent_dim], as images [B, C, H, W]
        in the data range."""
        decoded = self.decode_logits(z, y)
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(decoded)
        # The Gaussian mean is left unconstrained for the likelihood; only images are clipped.
        low, high = self.config.data_range
        return decoded.clamp(low, high)

    def reconstruction_log_likelihood(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """log p(x | z) in nats, summed over pixels; `decoded` may have extra leading sample dims."""
        # float32 even under autocast: a bf16 sum over thousands of pixels loses whole nats.
        decoded = decoded.float()
        x = x.float()
        pixel_dims = tuple(range(-len(self.config.input_shape), 0))
        if self.config.likelihood == "bernoulli":
            # x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)) = x l - softplus(l): the same
            # cross-entropy (grey values in [0, 1] allowed) in fewer passes over memory, which
            # matters when the IWAE evaluates thousands of samples per image.
            return (x * decoded).sum(pixel_dims) - F.softplus(decoded).sum(pixel_dims)
        log_sigma = self.log_sigma.float()
        log_p = -0.5 * ((x - decoded) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * LOG_2PI
        return log_p.sum(pixel_dims)

    # -- the prior p(z) --------------------------------------------------------------------
    def pseudo_inputs(self) -> torch.Tensor:
        """The VampPrior's pseudo-inputs u_k in the data range, [K, C, H, W]."""
        low, high = self.config.data_range
        return F.hardtanh(self.pseudo_input_values, low, high)

    def prior_components(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The VampPrior's components q(z | u_k) as (means, logvars), each [K, latent] in float32;
        None for N(0, I). Computed once per batch and passed to log_prior."""
        if self.config.prior == "standard":
            return None
        means, logvars = self.encode(self.pseudo_inputs())
        return means.float(), logvars.float()

    def log_prior(self, z: torch.Tensor, components: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """log p(z) in nats, z [..., latent] -> [...]; `components` from prior_components()
        (computed here when not given)."""
        if self.config.prior == "standard":
            return log_standard_normal(z)
        return log_gaussian_mixture(z, *(self.prior_components() if components is None else components))

    def kl_weight(self, step: int) -> float:
        """The KL's weight in the training loss at `step`: beta, reached linearly over kl_warmup_steps."""
        warmup = self.config.kl_warmup_steps
        return self.config.beta * min(1.0, step / warmup) if warmup else self.config.beta

    # -- bounds on log p(x) ---------------------------------------------------------------
    def elbo(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example ELBO, reconstruction term log p(x | z) and KL, each [B] in nats (the KL
        analytic under N(0, I), the one-sample estimate log q(z | x) - log p(z) under the VampPrior)."""
        mu, logvar = self.encode(x, y)
        eps = randn(mu.shape, generator, mu.device, mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        recon = self.reconstruction_log_likelihood(x, self.decode_logits(z, y))
        if self.config.prior == "standard":
            kl = gaussian_kl_standard_normal(mu.float(), logvar.float())
        else:
            kl = log_posterior(eps.float(), logvar.float()) - self.log_prior(z.float())
        return {"elbo": recon - kl, "recon": recon, "kl": kl}

    def _log_weights(
        self, x: torch.Tensor, y: torch.Tensor | None, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
        components: tuple[torch.Tensor, torch.Tensor] | None, kl_weight: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Importance log-weights log p(x | z) + kl_weight * (log p(z) - log q(z | x)) at
        z = mu + sigma * eps for eps [S, B, latent], with log p(x | z) and log q(z | x) - log p(z):
        each [S, B]. Shared by the IWAE estimator and the IWAE training loss."""
        samples, batch_size = eps.shape[:2]
        z = mu + torch.exp(0.5 * logvar) * eps  # [S, B, latent]
        labels = None if y is None else y.repeat(samples)
        decoded = self.decode_logits(z.flatten(0, 1), labels).view(samples, batch_size, *self.config.input_shape)
        log_p_x_given_z = self.reconstruction_log_likelihood(x, decoded)
        log_p_z = self.log_prior(z, components)
        log_q_z = log_posterior(eps, logvar)
        if kl_weight == 1.0:  # the true bound, in the order of operations the estimator always had
            log_weights = log_p_x_given_z + log_p_z - log_q_z
        else:
            log_weights = log_p_x_given_z + kl_weight * (log_p_z - log_q_z)
        return log_weights, log_p_x_given_z, log_q_z - log_p_z

    def iwae_bound(
        self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 5, generator: torch.Generator | None = None,
        kl_weight: float = 1.0,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """The IWAE_k bound with gradients, the training objective for train_k > 1: "iwae" [B] in
        nats, and the first sample's "elbo", "recon" and "kl" [B] (the KL as elbo() reports it).
        All k samples are decoded at once, without chunks. kl_weight < 1 tempers the prior term
        inside the weights (beta, warm-up); 1 gives the true bound."""
        if k < 1:
            raise GenlabError(f"the IWAE needs at least one importance sample, got k={k}")
        mu, logvar = self.encode(x, y)
        mu, logvar = mu.float(), logvar.float()
        eps = draw_eps(k, tuple(mu.shape), generator, mu.device)
        log_weights, recon, kl = self._log_weights(x, y, mu, logvar, eps, self.prior_components(), kl_weight)
        recon = recon[0]
        kl = gaussian_kl_standard_normal(mu, logvar) if self.config.prior == "standard" else kl[0]
        bound = torch.logsumexp(log_weights, dim=0) - math.log(k)
        return {"iwae": bound, "elbo": recon - kl, "recon": recon, "kl": kl}

    @torch.no_grad()  # an estimator, not a loss: a graph would keep every chunk alive
    def iwae_log_likelihood(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        k: int = 5000,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """IWAE_k lower bound on log p(x), [B] in nats, from k importance samples in chunks."""
        if k < 1:
            raise GenlabError(f"the IWAE needs at least one importance sample, got k={k}")
        mu, logvar = self.encode(x, y)
        mu, logvar = mu.float(), logvar.float()
        components = self.prior_components()
        batch_size = mu.shape[0]
        if chunk_size is None:
            # Per importance sample and example: the decoded image, and the mixture prior's K columns.
            floats = math.prod(self.config.input_shape)
            if components is not None:
                floats += MIXTURE_TEMPORARIES * self.config.vamp_components
            chunk_size = max(1, IWAE_FLOATS_PER_CHUNK // (batch_size * floats))
        log_sum_weights = torch.full((batch_size,), -math.inf, device=mu.device)
        for start in range(0, k, chunk_size):
            # One draw per importance sample, in order, so the value does not depend on chunk_size.
            eps = draw_eps(min(chunk_size, k - start), tuple(mu.shape), generator, mu.device)
            log_weights, _, _ = self._log_weights(x, y, mu, logvar, eps, components)  # [samples, B]
            log_sum_weights = torch.logaddexp(log_sum_weights, torch.logsumexp(log_weights, dim=0))
        return log_sum_weights - math.log(k)

    def log_likelihood(
        self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 5000, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The "log_likelihood" capability: the IWAE_k bound, nats per example."""
        return self.iwae_log_likelihood(x, y, k=k, generator=generator)

    # -- training -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        kl_weight = self.kl_weight(step)
        if self.config.train_k == 1:
            terms = self.elbo(batch["x"], batch["y"])
            loss = -(terms["recon"] - kl_weight * terms["kl"]).mean()
        else:
            terms = self.iwae_bound(batch["x"], batch["y"], k=self.config.train_k, kl_weight=kl_weight)
            loss = -terms["iwae"].mean()
        optimizers["main"].step(loss)
        return {
            "loss": loss.item(),
            "elbo": terms["elbo"].mean().item(),
            "kl": terms["kl"].mean().item(),
            "recon": terms["recon"].mean().item(),
        }

    @torch.no_grad()
    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        terms = self.elbo(batch["x"], batch["y"])
        elbo = terms["elbo"].mean().item()
        metrics = {"loss": -elbo, "elbo": elbo, "kl": terms["kl"].mean().item(), "recon": terms["recon"].mean().item()}
        if self.config.iwae_k > 0:
            iwae = self.iwae_log_likelihood(batch["x"], batch["y"], k=self.config.iwae_k)
            metrics["iwae_nll"] = -iwae.mean().item()
        return metrics

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images [n, C, H, W] in the data range: decoder means of z ~ p(z) (no pixel noise).
        Under the VampPrior each z comes from a uniformly chosen component q(z | u_k)."""
        check_sample_count(n)
        labels = self._labels_for_sampling(n, condition, generator)
        components = self.prior_components()
        if components is None:
            z = randn((n, self.config.latent_dim), generator, self.device)
        else:
            chosen = randint(self.config.vamp_components, (n,), generator, self.device)
            means, logvars = components[0][chosen], components[1][chosen]  # [n, latent]
            z = means + torch.exp(0.5 * logvars) * randn(tuple(means.shape), generator, self.device)
        return self.decode(z, labels)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean of the posterior mean: the VAE's best single reconstruction of x."""
        mu, _ = self.encode(x, y)
        return self.decode(mu, y)

    @torch.no_grad()
    def preview(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        n_samples = 64
        # Cycling through the classes puts one class per column in a grid num_classes wide.
        condition = torch.arange(n_samples) % self.config.num_classes if self.config.conditional else None
        inputs = batch["x"][:32].to(self.device)
        labels = batch["y"][:32].to(self.device)
        reconstructions = self.reconstruct(inputs, labels)
        return {
            "samples": self.sample(n_samples, condition=condition, generator=generator),
            # input, reconstruction, input, reconstruction, ...: each pair side by side in a grid
            "reconstructions": torch.stack([inputs, reconstructions], dim=1).flatten(0, 1),
        }
