"""Variational autoencoders: VAE, beta-VAE and class-conditional VAE.

Method. A latent z ~ N(0, I) generates an image through a decoder p(x | z): independent
Bernoulli pixels (logits out of the decoder) or independent Gaussians N(mean, sigma^2)
with one shared sigma, learned or fixed. An encoder q(z | x) = N(mu(x), diag(exp(logvar(x))))
amortises inference. Training maximises the evidence lower bound

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))  <=  log p(x),

with one reparameterised sample z = mu + sigma * eps for the first term and the analytic
KL for the second. A beta-VAE weights the KL by `beta` in the training loss only; the
ELBO it reports is always the true bound (beta = 1).

Evaluation uses the importance-weighted bound (Burda et al., 2016)

    IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

which equals the ELBO in expectation for k = 1, increases with k and tends to log p(x).

A conditional VAE (Sohn et al., 2015) concatenates the one-hot class label to the
encoder's input and to the decoder's input, so sampling can ask for a class.

The networks are plain MLPs or stride-2 convolution stacks with no normalisation layers,
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
from .base import GenerativeModel, ImageConfig, check_sample_count, mlp, randn

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
GAUSSIAN_SCALES = ("learned", "fixed")
LOG_2PI = math.log(2.0 * math.pi)
# The IWAE decodes chunk * batch images at once; about this many output floats per chunk
# keeps k = 5000 on a full batch within a few hundred MB.
IWAE_FLOATS_PER_CHUNK = 20_000_000


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


# ----------------------------------------------------------------------------- networks
# Every network takes a condition vector next to its input: the one-hot label for a
# conditional VAE, an empty [B, 0] tensor otherwise, so both cases share one code path.


class MLPEncoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...], condition_dim: int, latent_dim: int):
        super().__init__()
        self.net = mlp([math.prod(input_shape) + condition_dim, *hidden, 2 * latent_dim])

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.flatten(1), condition], dim=1))


class MLPDecoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...], condition_dim: int, latent_dim: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.net = mlp([latent_dim + condition_dim, *reversed(hidden), math.prod(input_shape)])

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
        self.encoder = encoder_class(config.input_shape, config.hidden, condition_dim, config.latent_dim)
        self.decoder = decoder_class(config.input_shape, config.hidden, condition_dim, config.latent_dim)
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

    # -- bounds on log p(x) ---------------------------------------------------------------
    def elbo(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example ELBO, reconstruction term log p(x | z) and KL, each [B] in nats."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * randn(mu.shape, generator, mu.device, mu.dtype)
        recon = self.reconstruction_log_likelihood(x, self.decode_logits(z, y))
        kl = gaussian_kl_standard_normal(mu.float(), logvar.float())
        return {"elbo": recon - kl, "recon": recon, "kl": kl}

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
        std = torch.exp(0.5 * logvar)
        batch_size, latent_dim = mu.shape
        if chunk_size is None:
            chunk_size = max(1, IWAE_FLOATS_PER_CHUNK // (batch_size * math.prod(self.config.input_shape)))
        log_sum_weights = torch.full((batch_size,), -math.inf, device=mu.device)
        for start in range(0, k, chunk_size):
            samples = min(chunk_size, k - start)
            # One draw per importance sample, in order, so the value does not depend on chunk_size.
            eps = torch.stack([randn((batch_size, latent_dim), generator, mu.device) for _ in range(samples)])
            z = mu + std * eps  # [samples, B, latent]
            labels = None if y is None else y.repeat(samples)
            decoded = self.decode_logits(z.flatten(0, 1), labels).view(samples, batch_size, *self.config.input_shape)
            log_p_x_given_z = self.reconstruction_log_likelihood(x, decoded)
            log_p_z = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            log_q_z = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
            log_weights = log_p_x_given_z + log_p_z - log_q_z  # [samples, B]
            log_sum_weights = torch.logaddexp(log_sum_weights, torch.logsumexp(log_weights, dim=0))
        return log_sum_weights - math.log(k)

    def log_likelihood(
        self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 5000, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The "log_likelihood" capability: the IWAE_k bound, nats per example."""
        return self.iwae_log_likelihood(x, y, k=k, generator=generator)

    # -- training -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        terms = self.elbo(batch["x"], batch["y"])
        loss = -(terms["recon"] - self.config.beta * terms["kl"]).mean()
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
        """n images [n, C, H, W] in the data range: decoder means of z ~ N(0, I) (no pixel noise)."""
        check_sample_count(n)
        labels = self._labels_for_sampling(n, condition, generator)
        z = randn((n, self.config.latent_dim), generator, self.device)
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
