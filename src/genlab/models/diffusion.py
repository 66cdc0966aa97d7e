"""Denoising diffusion: DDPM training, DDIM / DPM-Solver++ sampling, classifier-free guidance.

Method (Ho et al. 2020). Images are mapped to [-1, 1] and a fixed forward process adds
Gaussian noise over T steps (T = 1000) with variances beta_1..beta_T ("linear": 1e-4 to
0.02; "cosine": Nichol & Dhariwal 2021, diffusers' "squaredcos_cap_v2"). With
alpha_bar_t = prod_{s <= t} (1 - beta_s) any step has the closed form

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I).

A UNet f(x_t, t) is trained, at a uniformly drawn t, to predict either the noise eps
("epsilon", the DDPM paper's simple loss) or the velocity v = sqrt(alpha_bar_t) eps -
sqrt(1 - alpha_bar_t) x_0 ("v", Salimans & Ho 2022), by the mean squared error. With
min_snr_gamma = g > 0 each image's error is weighted by min(SNR_t, g) / SNR_t (epsilon) or
min(SNR_t, g) / (SNR_t + 1) (v), SNR_t = alpha_bar_t / (1 - alpha_bar_t): the "min-SNR-g" weighting
(Hang et al. 2023), which stops the nearly clean steps, easy and many, from dominating the
gradient. Both weights are the same loss on x_0, min(SNR_t, g) ||x_0_hat - x_0||^2, in each
parametrisation; on 2 CPU cores it cut a latent model's FD after 5 minutes from 119 to 99
(bench/latent_denoisers.py).

Sampling starts at x_T ~ N(0, I) and lets a scheduler turn each prediction into a step
towards x_0: DDPM ancestral, DDIM (eta settable) or DPM-Solver++ (2M), all diffusers'
schedulers, driven by genlab.sampling.diffusion ("the network predicts, the scheduler steps").

Class-conditional models (Ho & Salimans 2022, classifier-free guidance) add a learned label
embedding to the timestep embedding. In training the label is replaced by a "null" label
(index num_classes) with probability label_dropout, so one network learns both the
conditional f(x_t, t, y) and the unconditional f(x_t, t, null). Sampling mixes the two with
a guidance scale w:

    f_guided = f(x_t, t, null) + w * (f(x_t, t, y) - f(x_t, t, null))

w = 0 is the unconditional model, w = 1 the conditional one, w > 1 trades diversity for
samples that look more like their class.

Latent diffusion (Rombach et al. 2022), the CPU route: with latent_channels > 0 the model
first trains a small KL autoencoder (genlab.models.autoencoder; 28x28 -> 4x7x7) for
autoencoder_steps steps, then freezes it and trains the UNet on its latents scaled to unit
variance (the scale measured once, on a fixed batch of training images, when the second phase
starts). Sampling denoises a latent and decodes it. One artifact holds both networks.

Network: diffusers' UNet2DModel (ResNet blocks with GroupNorm, sinusoidal timestep
embedding, skip connections; `channels` per resolution, halving the image between them),
about as fast on a CPU as a hand-written UNet of the same size at 8x8..32x32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import GenlabError
from ..limits import MAX_DIFFUSION_TIMESTEPS, MAX_GUIDANCE
from ..registry import register_family
from ..sampling.diffusion import (BETA_SCHEDULES, SAMPLERS, alphas_cumprod, check_sampler, check_steps, denoise,
                                  make_scheduler)
from .autoencoder import DOWNSAMPLING, KLAutoencoder
from .base import GenerativeModel, ImageConfig, check_sample_count, rand, randint, randn


@dataclass
class DiffusionConfig(ImageConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W), filled in from the data
    num_classes: int = 10  # filled in from the data; used when conditional
    data_range: tuple[float, ...] = (0.0, 1.0)  # filled in from the data
    channels: tuple[int, ...] = (32, 64)  # UNet channels per resolution (the image halves between them)
    layers_per_block: int = 1  # ResNet blocks per resolution on the way down (one more on the way up)
    attention: bool = False  # self-attention blocks at the lowest resolution
    attention_levels: tuple[int, ...] = ()  # ... and/or at these levels (0: full size; the DDPM paper's CIFAR-10 UNet: [1])
    dropout: float = 0.0  # in the ResNet blocks (the DDPM paper: 0.1 on CIFAR-10)
    norm_groups: int = 8  # GroupNorm groups (divides every entry of channels)
    timesteps: int = 1000  # T, the forward process's steps
    schedule: str = "linear"  # linear | cosine (diffusers' squaredcos_cap_v2)
    beta_start: float = 1e-4  # linear schedule: beta_1 ...
    beta_end: float = 0.02  # ... to beta_T
    prediction: str = "epsilon"  # epsilon | v
    min_snr_gamma: float = 0.0  # > 0: min-SNR-gamma loss weighting (Hang et al. 2023 use 5); 0: the plain simple loss
    conditional: bool = False  # a class label embedding (classifier-free guidance)
    label_dropout: float = 0.1  # conditional: share of training labels replaced by the null label
    # The sampling defaults (genlab sample --sampler/--steps/--guidance override them).
    sampler: str = "ddim"  # ddpm | ddim | dpm++
    sample_steps: int = 50
    eta: float = 0.0  # DDIM: 0 deterministic, 1 DDPM-like
    guidance_scale: float = 2.0  # conditional models only
    preview_steps: int = 20  # sampler steps for the training previews
    # Latent diffusion: latent_channels > 0 first trains a KL autoencoder to (latent_channels,
    # H/4, W/4) for autoencoder_steps steps, then the diffusion model on its latents.
    latent_channels: int = 0  # 0: diffusion on the pixels
    autoencoder_channels: tuple[int, ...] = (32, 64)  # the autoencoder's widths at H/2 and H/4
    autoencoder_steps: int = 2000
    autoencoder_lr: float = 1e-3
    kl_weight: float = 1e-4  # the KL term's weight against the summed squared reconstruction error

    @property
    def latent(self) -> bool:
        return self.latent_channels > 0

    @property
    def diffusion_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the UNet denoises: the image, or the autoencoder's latent grid."""
        channels, height, width = self.input_shape
        if not self.latent:
            return (channels, height, width)
        return (self.latent_channels, height // DOWNSAMPLING, width // DOWNSAMPLING)

    def __post_init__(self):
        self.check_data_range()
        if len(self.input_shape) != 3 or any(size < 1 for size in self.input_shape):
            raise GenlabError(f"the diffusion model needs (C, H, W) images, got input_shape={tuple(self.input_shape)}")
        if self.schedule not in BETA_SCHEDULES:
            raise GenlabError(f"unknown model.schedule {self.schedule!r}", f"use one of {', '.join(BETA_SCHEDULES)}")
        if self.prediction not in ("epsilon", "v"):
            raise GenlabError(f"unknown model.prediction {self.prediction!r}", "use epsilon or v")
        if self.sampler not in SAMPLERS:
            raise GenlabError(f"unknown model.sampler {self.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
        if not 1 <= self.timesteps <= MAX_DIFFUSION_TIMESTEPS:
            raise GenlabError(f"model.timesteps must be in 1..{MAX_DIFFUSION_TIMESTEPS}, got {self.timesteps}")
        if not 1 <= self.sample_steps <= self.timesteps or not 1 <= self.preview_steps <= self.timesteps:
            raise GenlabError(f"model.sample_steps and model.preview_steps must be in 1..model.timesteps "
                              f"({self.timesteps})")
        if not self.channels or any(c < 1 or c % self.norm_groups for c in self.channels) or self.layers_per_block < 1:
            raise GenlabError(f"model.channels must be positive multiples of model.norm_groups ({self.norm_groups}) "
                              "and model.layers_per_block >= 1")
        if any(not 0 <= level < len(self.channels) for level in self.attention_levels) or not 0 <= self.dropout < 1:
            raise GenlabError(f"model.attention_levels must index model.channels (0..{len(self.channels) - 1}) and "
                              f"model.dropout be in [0, 1), got {list(self.attention_levels)} and {self.dropout}")
        if self.latent_channels < 0:
            raise GenlabError(f"model.latent_channels must be >= 0 (0: pixel space), got {self.latent_channels}")
        if self.latent:
            if self.input_shape[1] % DOWNSAMPLING or self.input_shape[2] % DOWNSAMPLING:
                raise GenlabError(f"latent diffusion needs height and width divisible by {DOWNSAMPLING}, got "
                                  f"{self.input_shape[1]}x{self.input_shape[2]}", "use model.latent_channels=0 (pixel space)")
            if (len(self.autoencoder_channels) != 2 or any(c < 1 or c % self.norm_groups for c in self.autoencoder_channels)
                    or self.autoencoder_steps < 1 or self.autoencoder_lr <= 0 or self.kl_weight < 0):
                raise GenlabError("model.autoencoder_channels must be two multiples of model.norm_groups "
                                  f"({self.norm_groups}), model.autoencoder_steps >= 1, model.autoencoder_lr > 0 "
                                  "and model.kl_weight >= 0")
        factor = 2 ** (len(self.channels) - 1)
        _, height, width = self.diffusion_shape
        if height % factor or width % factor:
            what = "latent grid" if self.latent else "image"
            raise GenlabError(f"{len(self.channels)} resolutions need the {what}'s height and width divisible by "
                              f"{factor}, got {height}x{width}", "use fewer entries in model.channels")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise GenlabError("model.beta_start and model.beta_end need 0 < beta_start < beta_end < 1")
        if not (math.isfinite(self.min_snr_gamma) and self.min_snr_gamma >= 0):
            raise GenlabError(f"model.min_snr_gamma must be >= 0 (0: no weighting; 5 is usual), got {self.min_snr_gamma}")
        if not 0 <= self.label_dropout < 1 or not 0 <= self.eta <= 1 or not 0 <= self.guidance_scale <= MAX_GUIDANCE:
            raise GenlabError(f"model.label_dropout must be in [0, 1), model.eta in [0, 1] and "
                              f"model.guidance_scale in [0, {MAX_GUIDANCE:g}]")
        if self.conditional and self.num_classes < 1:
            raise GenlabError("a conditional diffusion model needs labelled data (model.num_classes >= 1)")


@register_family("diffusion")
class Diffusion(GenerativeModel):
    config_class = DiffusionConfig
    # An instance drops "conditional" unless it was trained with labels.
    capabilities = frozenset({"sample", "conditional"})

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        from diffusers import UNet2DModel

        if not config.conditional:
            self.capabilities = Diffusion.capabilities - {"conditional"}
        image_channels, height, _ = config.diffusion_shape
        levels = len(config.channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        for level in {*config.attention_levels, *([levels - 1] if config.attention else [])}:
            down[level], up[levels - 1 - level] = "AttnDownBlock2D", "AttnUpBlock2D"
        # f(x_t, t, y): [B, C, H, W], [B], [B] -> [B, C, H, W]. Labels 0..K-1 are the classes, K the null label.
        self.unet = UNet2DModel(
            sample_size=height, in_channels=image_channels, out_channels=image_channels,
            block_out_channels=tuple(config.channels), layers_per_block=config.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=config.norm_groups,
            num_class_embeds=config.num_classes + 1 if config.conditional else None, dropout=config.dropout,
        )
        # alpha_bar_t, [T]: recomputed from the config, so not part of the saved weights.
        schedule = dict(timesteps=config.timesteps, schedule=config.schedule, beta_start=config.beta_start,
                        beta_end=config.beta_end)
        self.register_buffer("alphas_cumprod", alphas_cumprod(**schedule), persistent=False)
        if config.latent:
            self.autoencoder = KLAutoencoder(config.input_shape[0], config.latent_channels,
                                             tuple(config.autoencoder_channels), config.norm_groups)
            # 1 / std of the latents, set when the diffusion phase starts (0: not yet); saved with the weights.
            self.register_buffer("latent_scale", torch.zeros(()))
            self._calibration_images: torch.Tensor | None = None

    # -- latent diffusion ---------------------------------------------------------------
    def initialize_from_data(self, data, resumed: bool) -> None:
        if self.config.latent:
            # A fixed batch (the same on every rank and every resume) to measure the latent scale on.
            n = min(512, data.num_examples("train"))
            self._calibration_images = data.batch("train", torch.arange(n), torch.Generator().manual_seed(0))["x"]

    def sampling_starts_at(self) -> int:
        """The first step that trains the UNet (after the autoencoder's phase)."""
        return self.config.autoencoder_steps if self.config.latent else 0

    def to_latents(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latent draws z ~ q(z | x), [B, *diffusion_shape]."""
        mean, logvar = self.autoencoder.posterior(x0)
        noise = randn(tuple(mean.shape), generator, mean.device, mean.dtype)
        return (mean + (0.5 * logvar).exp() * noise) * self._scale()

    def from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] space, [B, C, H, W]."""
        return self.autoencoder.decode(z / self._scale())

    def _scale(self) -> torch.Tensor:
        return self.latent_scale if self.latent_scale > 0 else torch.ones_like(self.latent_scale)

    @torch.no_grad()
    def _measure_latent_scale(self) -> None:
        images = self._calibration_images
        if images is None:
            raise GenlabError("the latent scale is measured on training data; train through genlab.train")
        mean, logvar = self.autoencoder.posterior(self.to_diffusion_space(images.to(self.device)))
        generator = torch.Generator(self.device).manual_seed(0)
        z = mean + (0.5 * logvar).exp() * randn(tuple(mean.shape), generator, mean.device, mean.dtype)
        self.latent_scale.fill_(1.0 / z.float().std().clamp_min(1e-6).item())

    # -- data <-> diffusion space ([-1, 1]) ----------------------------------------------
    def to_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.data_range
        return (x - low) / (high - low) * 2 - 1

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.data_range
        return ((x.clamp(-1, 1) + 1) / 2 * (high - low) + low).clamp(low, high)

    # -- the forward process q(x_t | x_0) --------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: [B, C, H, W] at timesteps t [B]."""
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: eps, or v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
        if self.config.prediction == "epsilon":
            return noise
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0

    # -- the network ---------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """f(x_t, t, y): the predicted eps or v, [B, C, H, W]. labels [B] (K = the null label) or None."""
        if self.config.conditional and labels is None:
            labels = self.null_labels(x_t.shape[0], x_t.device)
        return self.unet(x_t, t, class_labels=labels if self.config.conditional else None).sample

    def null_labels(self, n: int, device) -> torch.Tensor:
        return torch.full((n,), self.config.num_classes, dtype=torch.long, device=device)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                guidance_scale: float = 1.0) -> torch.Tensor:
        """The guided prediction f(null) + w (f(y) - f(null)), [B, C, H, W]; w = 1 (or an
        unconditional model) is f(y) alone, w = 0 is f(null) alone (one network call each)."""
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t
        if labels is None or guidance_scale == 1:
            return self(x_t, t, labels)
        if guidance_scale == 0:
            return self(x_t, t, self.null_labels(x_t.shape[0], x_t.device))
        both = self(torch.cat([x_t, x_t]), torch.cat([t, t]),
                    torch.cat([labels, self.null_labels(x_t.shape[0], x_t.device)]))  # [2B, C, H, W]
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"main": torch.optim.Adam(self.unet.parameters(), lr=train.lr, weight_decay=train.weight_decay)}
        if self.config.latent:
            optimizers["autoencoder"] = torch.optim.Adam(self.autoencoder.parameters(), lr=self.config.autoencoder_lr)
        return optimizers

    def ema_parameter_names(self) -> list[str]:
        # The UNet only: the autoencoder is trained first and then frozen, so its last weights are the ones to keep.
        return [name for name, _ in self.named_parameters() if name.startswith("unet.")]

    def loss(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The simple loss E_{t, eps} ||f(x_t, t, y) - target||^2 (a mean over pixels), one draw per image,
        each image's error weighted by loss_weights(t) when min_snr_gamma > 0."""
        x0 = self.to_diffusion_space(x)  # [B, C, H, W] in [-1, 1]
        if self.config.latent:
            with torch.no_grad():
                x0 = self.to_latents(x0, generator)  # [B, *diffusion_shape], unit variance
        n = x0.shape[0]
        t = randint(self.config.timesteps, (n,), generator, x0.device)  # [B]
        noise = randn(tuple(x0.shape), generator, x0.device, x0.dtype)  # eps: [B, C, H, W]
        labels = None
        if self.config.conditional:
            drop = rand((n,), generator, x0.device) < self.config.label_dropout  # [B]: train f(null) too
            labels = torch.where(drop, self.null_labels(n, x0.device), y.to(x0.device, torch.long))
        prediction = self(self.add_noise(x0, noise, t), t, labels)
        if not self.config.min_snr_gamma:
            return F.mse_loss(prediction.float(), self.target(x0, noise, t).float())
        errors = (prediction.float() - self.target(x0, noise, t).float()).pow(2).flatten(1).mean(1)  # [B]
        return (self.loss_weights(t) * errors).mean()

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """The min-SNR-gamma weight of each timestep t [B]: min(SNR_t, gamma) / SNR_t for epsilon,
        / (SNR_t + 1) for v, SNR_t = alpha_bar_t / (1 - alpha_bar_t)."""
        alpha_bar = self.alphas_cumprod[t].double()
        snr = alpha_bar / (1 - alpha_bar)
        clipped = snr.clamp(max=self.config.min_snr_gamma)
        return (clipped / (snr if self.config.prediction == "epsilon" else snr + 1)).float()

    def autoencoder_loss(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(the autoencoder's loss, its summed squared reconstruction error), means over the batch."""
        x0 = self.to_diffusion_space(x)
        latent_shape = (x0.shape[0], *self.config.diffusion_shape)
        return self.autoencoder.loss(x0, self.config.kl_weight, randn(latent_shape, generator, x0.device, x0.dtype))

    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        if step < self.sampling_starts_at():  # latent diffusion, first phase: the autoencoder
            loss, reconstruction = self.autoencoder_loss(batch["x"])
            optimizers["autoencoder"].step(loss)
            return {"autoencoder_loss": loss.item(), "reconstruction": reconstruction.item()}
        if self.config.latent and self.latent_scale <= 0:
            self._measure_latent_scale()
        loss = self.loss(batch["x"], batch.get("y"))
        optimizers["main"].step(loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        # A fixed generator: every validation pass sees the same t and eps, so losses compare.
        generator = torch.Generator(self.device).manual_seed(0)
        metrics = {"loss": self.loss(batch["x"], batch.get("y"), generator).item()}
        if self.config.latent:
            _, reconstruction = self.autoencoder_loss(batch["x"], torch.Generator(self.device).manual_seed(1))
            metrics["reconstruction"] = reconstruction.item()
        return metrics

    # -- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None, steps: int | None = None,
               sampler: str | None = None, guidance_scale: float | None = None, eta: float | None = None,
               callback=None) -> torch.Tensor:
        """n images [n, C, H, W] in the data range. steps, sampler, guidance_scale and eta
        default to the config's; callback(i, x_t) sees each intermediate x_t in diffusion space (a
        latent model's latents: `preview_image(x_t)` makes an image of either, so that a progress
        bar costs no decoding)."""
        cfg = self.config
        check_sample_count(n)
        sampler = check_sampler(cfg.sampler if sampler is None else sampler)
        steps = check_steps(cfg.sample_steps if steps is None else steps, cfg.timesteps)
        if guidance_scale is not None and not cfg.conditional:
            raise GenlabError("guidance needs a class-conditional model; this diffusion model is unconditional",
                              "drop --guidance, or train with model.conditional=true", param="guidance_scale")
        guidance_scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale)
                and 0 <= guidance_scale <= MAX_GUIDANCE):
            raise GenlabError(f"guidance_scale must be in 0..{MAX_GUIDANCE:g}, got {guidance_scale!r}",
                              param="guidance_scale")
        eta = cfg.eta if eta is None else eta
        if cfg.latent and self.latent_scale <= 0:
            raise GenlabError("this latent diffusion model has not reached its diffusion phase (no latent scale yet)",
                              f"train past model.autoencoder_steps ({cfg.autoencoder_steps}) steps")
        labels = self._labels_for_sampling(n, condition, generator)  # [n] or None
        # Pixels live in [-1, 1], so each step's predicted x_0 is clipped there; latents are
        # unit-variance and unbounded, so a latent model's are not.
        scheduler = make_scheduler(sampler, timesteps=cfg.timesteps, schedule=cfg.schedule, beta_start=cfg.beta_start,
                                   beta_end=cfg.beta_end, prediction=cfg.prediction, clip=None if cfg.latent else 1.0)

        def predict(x_t, t):
            return self.predict(x_t, t.to(self.device), labels, guidance_scale)

        x0 = denoise(predict, (n, *cfg.diffusion_shape), scheduler, steps, generator=generator, device=self.device,
                     eta=eta, callback=callback)
        if cfg.latent:
            x0 = self.from_latents(x0)
        return self.to_data_space(x0)

    @torch.no_grad()
    def preview_image(self, x_t: torch.Tensor) -> torch.Tensor:
        """An intermediate x_t of `sample` as an image in [-1, 1] space, [n, C, H, W] (latents decoded)."""
        return self.from_latents(x_t) if self.config.latent else x_t

    @torch.no_grad()
    def preview(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        n_samples = 64
        # Cycling through the classes puts one class per column in a grid num_classes wide.
        condition = torch.arange(n_samples) % self.config.num_classes if self.config.conditional else None
        previews = {}
        if self.config.latent:
            mean, _ = self.autoencoder.posterior(self.to_diffusion_space(batch["x"]))
            previews["reconstructions"] = self.to_data_space(self.autoencoder.decode(mean))
            if self.latent_scale <= 0:
                return previews  # still training the autoencoder
        previews["samples"] = self.sample(n_samples, condition=condition, generator=generator,
                                          steps=self.config.preview_steps)
        return previews

