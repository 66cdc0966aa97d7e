"""Generative adversarial networks: DCGAN, WGAN-GP, hinge + spectral norm, class-conditional.

Method. A generator G maps a latent z ~ N(0, I) to an image; a discriminator (critic) D
maps an image to a real number. The two are trained against each other, alternating
`n_critic` discriminator updates with one generator update. Three objectives are offered:

  bce      DCGAN (Radford et al., 2016) with the non-saturating generator loss of
           Goodfellow et al. (2014): D minimises softplus(-D(x)) + softplus(D(G(z))),
           i.e. the cross-entropy of classifying real vs fake from the logit D; G
           minimises softplus(-D(G(z))) = -log sigmoid(D(G(z))).
  wgan-gp  Wasserstein GAN with gradient penalty (Gulrajani et al., 2017): the critic
           minimises D(G(z)) - D(x) + gp_weight * (||grad D(x_hat)||_2 - 1)^2, with
           x_hat = e x + (1 - e) G(z), e ~ U(0, 1) per example, so D stays close to
           1-Lipschitz; G minimises -D(G(z)). Default n_critic = 5.
  hinge    Geometric GAN / SNGAN (Lim & Ye, 2017; Miyato et al., 2018): D minimises
           relu(1 - D(x)) + relu(1 + D(G(z))), G minimises -D(G(z)); every layer of D
           is spectrally normalised (one power iteration per forward pass in training).

All `n_critic` discriminator updates of one training step see the same real batch with
fresh latents for the fakes each time; the generator update then draws a fresh batch of
latents of the same size. Adam betas follow the papers: (0.5, 0.999) for DCGAN, (0.0, 0.9)
for WGAN-GP and hinge; the two learning rates may differ (two-timescale updates, Heusel
et al., 2017).

A class-conditional GAN (`conditional`) feeds the label to G through class-conditional
batch norm (a per-class gain and bias after each normalisation; de Vries et al., 2017) in
the conv generator, or a concatenated label embedding in the MLP generator, and to D
through a projection (Miyato & Koyama, 2018): D(x, y) = w . phi(x) + embed(y) . phi(x).

DiffAugment (Zhao et al., 2020) optionally applies the same family of differentiable
augmentations (random translation by up to 1/8 of the image, zero padded, and a cutout of
half the image size) to real and fake images before D, which keeps D from memorising a
small data set. The gradient penalty is taken on un-augmented interpolates.

Networks. `dcgan`: a linear layer to a small feature map, stride-2 4x4 transposed
convolutions with batch norm and ReLU, a 3x3 convolution and tanh; D mirrors it with
stride-2 4x4 convolutions and LeakyReLU(0.2), no normalisation layers (batch norm in the
critic would make D(x) depend on the rest of the batch, which the gradient penalty
forbids), then a linear read-out of the flattened features. Supported image sizes are
8x8, 28x28 and 32x32. `mlp`: fully connected G and D for any input shape, including toy
2-D points. G's tanh output is mapped affinely onto the data range. Sampling runs G in
eval mode, so its batch-norm layers use the running statistics collected in training; the
Trainer's EMA averages G's parameters only (D is not needed to sample).

Failure mode. When D wins completely (its loss stays under `collapse_d_loss` for
`collapse_patience` consecutive steps; bce and hinge only, the WGAN critic loss is an
unbounded estimate) G receives no useful gradient and training will not recover, so the
step raises DivergenceError with a hint. The streak counter is plain Python state and is
not checkpointed: a resumed run starts counting afresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import DivergenceError, GenlabError
from ..registry import register_family
from .base import GenerativeModel, ImageConfig, check_sample_count, mlp, randn

ARCHITECTURES = ("dcgan", "mlp")
OBJECTIVES = ("bce", "wgan-gp", "hinge")
PAPER_BETAS = {"bce": (0.5, 0.999), "wgan-gp": (0.0, 0.9), "hinge": (0.0, 0.9)}
# Image size (H, W) -> (side of the first feature map, number of stride-2 upsamplings).
DCGAN_LAYOUTS = {(8, 8): (2, 2), (28, 28): (7, 2), (32, 32): (4, 3)}
LEAKY_SLOPE = 0.2


@dataclass
class GANConfig(ImageConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) or (D,) for mlp; filled in from the data
    num_classes: int = 10  # filled in from the data; used when conditional
    data_range: tuple[float, ...] = (-1.0, 1.0)  # filled in from the data (data.scale=symmetric)
    architecture: str = "dcgan"  # dcgan (8x8, 28x28, 32x32 images) | mlp (any shape)
    latent_dim: int = 100
    base_channels: int = 64  # dcgan: channels at full resolution, doubled per halving
    hidden: tuple[int, ...] = (256, 256)  # mlp: hidden sizes of G (and, reversed, of D)
    objective: str = "bce"  # bce (non-saturating DCGAN) | wgan-gp | hinge
    spectral_norm: bool | None = None  # spectral norm on every D layer; None: on for hinge only
    gp_weight: float = 10.0  # wgan-gp penalty weight (lambda)
    n_critic: int | None = None  # D updates per G update; None: 5 for wgan-gp, 1 otherwise
    lr_g: float | None = None  # generator learning rate; None: train.lr
    lr_d: float | None = None  # discriminator learning rate; None: train.lr
    betas: tuple[float, ...] | None = None  # Adam betas; None: the objective's paper values
    conditional: bool = False  # class-conditional G (conditional BN) and projection D
    diffaugment: bool = False  # translation + cutout on real and fake before D (images only)
    collapse_d_loss: float = 1e-3  # D loss under this counts as D winning outright ...
    collapse_patience: int = 200  # ... for this many consecutive steps raises; 0 disables

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise GenlabError(
                f"unknown model.architecture {self.architecture!r}", f"use one of {', '.join(ARCHITECTURES)}"
            )
        if self.objective not in OBJECTIVES:
            raise GenlabError(f"unknown model.objective {self.objective!r}", f"use one of {', '.join(OBJECTIVES)}")
        self.check_data_range()
        if not self.input_shape or any(size < 1 for size in self.input_shape):
            raise GenlabError(f"model.input_shape must hold positive sizes, got {tuple(self.input_shape)}")
        if self.latent_dim < 1 or self.base_channels < 1 or not self.hidden or any(s < 1 for s in self.hidden):
            raise GenlabError("model.latent_dim, model.base_channels and model.hidden must hold positive sizes")
        if self.n_critic is not None and self.n_critic < 1:
            raise GenlabError(f"model.n_critic must be at least 1, got {self.n_critic}")
        for name in ("lr_g", "lr_d"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GenlabError(f"model.{name} must be positive (or unset for train.lr), got {value}")
        if self.betas is not None and (len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas)):
            raise GenlabError(f"model.betas must be two numbers in [0, 1), got {self.betas}", "e.g. [0.5, 0.999]")
        if self.gp_weight < 0 or self.collapse_d_loss < 0 or self.collapse_patience < 0:
            raise GenlabError("model.gp_weight, model.collapse_d_loss and model.collapse_patience must be >= 0")
        if self.conditional and self.num_classes < 1:
            raise GenlabError("a conditional GAN needs labelled data (model.num_classes >= 1)")
        is_image = len(self.input_shape) == 3
        if self.diffaugment and not is_image:
            raise GenlabError("model.diffaugment needs (C, H, W) images", f"got input_shape={tuple(self.input_shape)}")
        if self.architecture == "dcgan":
            supported = ", ".join(f"{h}x{w}" for h, w in DCGAN_LAYOUTS)
            if not is_image or tuple(self.input_shape[1:]) not in DCGAN_LAYOUTS:
                raise GenlabError(
                    f"the dcgan architecture supports images of {supported} pixels, "
                    f"got input_shape={tuple(self.input_shape)}",
                    "use model.architecture=mlp, or resize the images (data.image_size=... for folder data)",
                )

    # Resolved settings: what None means for each objective.
    @property
    def critic_steps(self) -> int:
        return self.n_critic if self.n_critic is not None else (5 if self.objective == "wgan-gp" else 1)

    @property
    def uses_spectral_norm(self) -> bool:
        return self.spectral_norm if self.spectral_norm is not None else self.objective == "hinge"

    @property
    def adam_betas(self) -> tuple[float, float]:
        return tuple(self.betas) if self.betas is not None else PAPER_BETAS[self.objective]


# ----------------------------------------------------------------------------- losses
# Each takes D's raw outputs (logits / critic values) and returns a scalar to minimise.


def discriminator_loss(objective: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if objective == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if objective == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return fake.mean() - real.mean()  # wgan-gp, without its penalty


def generator_loss(objective: str, fake: torch.Tensor) -> torch.Tensor:
    if objective == "bce":
        return F.softplus(-fake).mean()  # non-saturating: -log sigmoid(D(G(z)))
    return -fake.mean()  # wgan-gp and hinge


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean of (||grad_x critic(x_hat)||_2 - 1)^2 at random interpolates of real and fake.

    `critic` maps a batch to one value per example; the mixing weights come from the
    global RNG. The result keeps its graph so it can be minimised (double backward)."""
    mix = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    interpolates = (mix * real.detach() + (1.0 - mix) * fake.detach()).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    return (grads.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


# ----------------------------------------------------------------------------- DiffAugment


def diff_augment(x: torch.Tensor, translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> torch.Tensor:
    """Random translation (zero padded) and cutout per image; differentiable in x."""
    batch, _, height, width = x.shape
    device = x.device
    # Translation: read each output pixel from a shifted position of the zero-padded image.
    shift_h, shift_w = int(height * translation_ratio + 0.5), int(width * translation_ratio + 0.5)
    dy = torch.randint(-shift_h, shift_h + 1, (batch, 1, 1), device=device)
    dx = torch.randint(-shift_w, shift_w + 1, (batch, 1, 1), device=device)
    b, rows, cols = torch.meshgrid(
        torch.arange(batch, device=device), torch.arange(height, device=device), torch.arange(width, device=device),
        indexing="ij",
    )
    rows = (rows + dy + 1).clamp(0, height + 1)
    cols = (cols + dx + 1).clamp(0, width + 1)
    x = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)
    # Cutout: zero a square of cutout_ratio of the side at a random centre.
    cut_h, cut_w = int(height * cutout_ratio + 0.5), int(width * cutout_ratio + 0.5)
    centre_y = torch.randint(0, height + (1 - cut_h % 2), (batch, 1, 1), device=device)
    centre_x = torch.randint(0, width + (1 - cut_w % 2), (batch, 1, 1), device=device)
    b, rows, cols = torch.meshgrid(
        torch.arange(batch, device=device), torch.arange(cut_h, device=device), torch.arange(cut_w, device=device),
        indexing="ij",
    )
    rows = (rows + centre_y - cut_h // 2).clamp(0, height - 1)
    cols = (cols + centre_x - cut_w // 2).clamp(0, width - 1)
    mask = torch.ones(batch, height, width, dtype=x.dtype, device=device)
    mask[b, rows, cols] = 0
    return x * mask.unsqueeze(1)


# ----------------------------------------------------------------------------- networks
# Every network takes labels next to its input: a LongTensor [B] for a conditional GAN,
# None otherwise.


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias are looked up per class (one shared pair if num_classes == 0)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(max(num_classes, 1), channels)
        self.bias = nn.Embedding(max(num_classes, 1), channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            labels = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        gain = self.gain(labels)[:, :, None, None]
        bias = self.bias(labels)[:, :, None, None]
        return self.norm(h) * gain + bias


class ConvGenerator(nn.Module):
    """z -> linear -> first feature map -> (transposed conv, BN, ReLU) per doubling -> 3x3 conv."""

    def __init__(self, config: GANConfig):
        super().__init__()
        image_channels, height, width = config.input_shape
        side, upsamplings = DCGAN_LAYOUTS[(height, width)]
        num_classes = config.num_classes if config.conditional else 0
        channels = [config.base_channels * 2 ** (upsamplings - i) for i in range(upsamplings + 1)]
        self.first_shape = (channels[0], side, side)
        self.from_latent = nn.Linear(config.latent_dim, math.prod(self.first_shape))
        self.first_norm = ConditionalBatchNorm2d(channels[0], num_classes)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(c, num_classes) for c in channels[1:])
        self.to_image = nn.Conv2d(channels[-1], image_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.first_norm(self.from_latent(z).view(-1, *self.first_shape), labels))
        for upsample, norm in zip(self.upsample, self.norms):
            h = F.relu(norm(upsample(h), labels))
        return torch.tanh(self.to_image(h))


class ConvDiscriminator(nn.Module):
    """3x3 conv, then stride-2 4x4 convs with LeakyReLU halving the image; flattened features phi(x)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        image_channels, height, width = config.input_shape
        side, downsamplings = DCGAN_LAYOUTS[(height, width)]
        channels = [config.base_channels * 2**i for i in range(downsamplings + 1)]
        layers: list[nn.Module] = [nn.Conv2d(image_channels, channels[0], kernel_size=3, padding=1)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.LeakyReLU(LEAKY_SLOPE), nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)]
        layers.append(nn.LeakyReLU(LEAKY_SLOPE))
        self.features = nn.Sequential(*layers)
        self.feature_dim = channels[-1] * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


class MLPGenerator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        self.output_shape = tuple(config.input_shape)
        # A label embedding as wide as the latent: the label weighs as much as the noise.
        self.label_embedding = nn.Embedding(config.num_classes, config.latent_dim) if config.conditional else None
        condition_dim = config.latent_dim if config.conditional else 0
        self.net = mlp([config.latent_dim + condition_dim, *config.hidden, math.prod(self.output_shape)], nn.ReLU)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        return torch.tanh(self.net(z)).view(-1, *self.output_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        hidden = list(reversed(config.hidden))
        self.features = nn.Sequential(
            mlp([math.prod(config.input_shape), *hidden], lambda: nn.LeakyReLU(LEAKY_SLOPE)), nn.LeakyReLU(LEAKY_SLOPE)
        )
        self.feature_dim = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.flatten(1))


class Discriminator(nn.Module):
    """D(x, y) = w . phi(x) + b [+ embed(y) . phi(x) for the projection discriminator]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.body = ConvDiscriminator(config) if config.architecture == "dcgan" else MLPDiscriminator(config)
        self.read_out = nn.Linear(self.body.feature_dim, 1)
        self.projection = nn.Embedding(config.num_classes, self.body.feature_dim) if config.conditional else None
        if config.uses_spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                    spectral_norm(module)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        phi = self.body(x)
        out = self.read_out(phi).squeeze(1)
        if self.projection is not None:
            out = out + (self.projection(labels) * phi).sum(1)
        return out


# ----------------------------------------------------------------------------- the model


@register_family("gan")
class GAN(GenerativeModel):
    config_class = GANConfig
    # An instance drops "conditional" unless it was trained with labels. "decode": the
    # generator maps a latent code to an image (no encoder), which latent search needs.
    capabilities = frozenset({"sample", "decode", "conditional"})

    def __init__(self, config: GANConfig):
        super().__init__(config)
        if not config.conditional:
            self.capabilities = GAN.capabilities - {"conditional"}
        self.generator = ConvGenerator(config) if config.architecture == "dcgan" else MLPGenerator(config)
        self.discriminator = Discriminator(config)
        # Consecutive steps with D loss under collapse_d_loss; not checkpointed (see the docstring).
        self.discriminator_win_streak = 0

    # -- the two networks -----------------------------------------------------------------
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The "decode" capability: G(z, y) for latents z [B, latent_dim], as images shaped
        [B, *input_shape] in the data range (tanh's (-1, 1) mapped affinely onto (low, high))."""
        low, high = self.config.data_range
        unit = self.generator(z, y)
        return unit if (low, high) == (-1.0, 1.0) else low + (high - low) * (unit + 1.0) / 2.0

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """D's raw output per example, [B] (a logit for bce, a critic value otherwise)."""
        if self.config.diffaugment and self.training:
            x = diff_augment(x)
        return self.discriminator(x, labels)

    def _training_labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.config.conditional:
            return None
        if batch.get("y") is None:
            raise GenlabError("this GAN is class-conditional and needs the class labels y")
        return batch["y"]

    # -- training -------------------------------------------------------------------------
    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config

        def adam(module: nn.Module, lr: float | None) -> torch.optim.Optimizer:
            return torch.optim.Adam(
                module.parameters(), lr=lr or train.lr, betas=cfg.adam_betas, weight_decay=train.weight_decay
            )

        return {"generator": adam(self.generator, cfg.lr_g), "discriminator": adam(self.discriminator, cfg.lr_d)}

    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        cfg = self.config
        real = batch["x"]
        labels = self._training_labels(batch)
        n = real.shape[0]
        logs: dict[str, float] = {}

        # Discriminator: n_critic updates on the same real batch, fresh fakes each time.
        self.discriminator.requires_grad_(True)
        for _ in range(cfg.critic_steps):
            with torch.no_grad():
                fake = self.decode(torch.randn(n, cfg.latent_dim, device=real.device), labels)
            # One forward pass over real and fake together: one spectral-norm power iteration.
            both = self.discriminate(torch.cat([real, fake]), None if labels is None else torch.cat([labels, labels]))
            d_real, d_fake = both[:n], both[n:]
            d_loss = discriminator_loss(cfg.objective, d_real, d_fake)
            if cfg.objective == "wgan-gp":
                penalty = gradient_penalty(lambda x: self.discriminator(x, labels), real, fake)
                d_loss = d_loss + cfg.gp_weight * penalty
                logs["gp"] = penalty.item()
            optimizers["discriminator"].step(d_loss)

        # Generator: D is fixed, so its gradients need not be computed.
        self.discriminator.requires_grad_(False)
        try:
            fake = self.decode(torch.randn(n, cfg.latent_dim, device=real.device), labels)
            g_loss = generator_loss(cfg.objective, self.discriminate(fake, labels))
            optimizers["generator"].step(g_loss)
        finally:
            self.discriminator.requires_grad_(True)

        logs.update(
            d_loss=d_loss.item(), g_loss=g_loss.item(), d_real=d_real.mean().item(), d_fake=d_fake.mean().item()
        )
        self._check_discriminator_not_winning(logs["d_loss"], step)
        return logs

    def _check_discriminator_not_winning(self, d_loss: float, step: int) -> None:
        cfg = self.config
        if cfg.objective == "wgan-gp" or cfg.collapse_patience == 0:
            return
        self.discriminator_win_streak = self.discriminator_win_streak + 1 if d_loss < cfg.collapse_d_loss else 0
        if self.discriminator_win_streak >= cfg.collapse_patience:
            raise DivergenceError(
                f"training collapsed: the discriminator loss stayed below {cfg.collapse_d_loss:g} for "
                f"{cfg.collapse_patience} consecutive steps, so D separates real from fake perfectly and the "
                "generator gets no useful gradient",
                "lower the discriminator's learning rate (model.lr_d=...), use model.objective=hinge with "
                "spectral norm or model.objective=wgan-gp, or turn on model.diffaugment=true for small data",
            )

    @torch.no_grad()
    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Mean D outputs on real and on generated images (a GAN has no likelihood to report)."""
        real = batch["x"]
        labels = self._training_labels(batch)
        fake = self.decode(torch.randn(real.shape[0], self.config.latent_dim, device=real.device), labels)
        return {
            "d_real": self.discriminate(real, labels).mean().item(),
            "d_fake": self.discriminate(fake, labels).mean().item(),
        }

    def ema_parameter_names(self) -> list[str]:
        """The generator's parameters: samples come from G alone, so only G is averaged."""
        return [name for name, _ in self.named_parameters() if name.startswith("generator.")]

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws G(z), z ~ N(0, I), shaped like input_shape and in the data range."""
        check_sample_count(n)
        labels = self._labels_for_sampling(n, condition, generator)
        z = randn((n, self.config.latent_dim), generator, self.device)
        return self.decode(z, labels)

    @torch.no_grad()
    def preview(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        n_samples = 64
        # Eight images per row in the grid: one class per row for a conditional GAN.
        condition = (torch.arange(n_samples) // 8) % self.config.num_classes if self.config.conditional else None
        return {"samples": self.sample(n_samples, condition=condition, generator=generator)}
