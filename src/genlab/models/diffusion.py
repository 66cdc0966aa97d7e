"""Denoising diffusion: DDPM training, DDIM / DPM-Solver++ sampling, classifier-free guidance.

Method (Ho et al. 2020). Images are mapped to [-1, 1] and a fixed forward process adds
Gaussian noise over T steps (T = 1000) with variances beta_1..beta_T ("linear": 1e-4 to
0.02; "cosine": Nichol & Dhariwal 2021, diffusers' "squaredcos_cap_v2"). With
alpha_bar_t = prod_{s <= t} (1 - beta_s) any step has the closed form

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I).

A UNet f(x_t, t) is trained, at a uniformly drawn t, to predict either the noise eps
("epsilon", the DDPM paper's simple loss) or the velocity v = sqrt(alpha_bar_t) eps -
sqrt(1 - alpha_bar_t) x_0 ("v", Salimans & Ho 2022), by the mean squared error.

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
from .base import GenerativeModel, ImageConfig, check_sample_count, rand, randint, randn


@dataclass
class DiffusionConfig(ImageConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W), filled in from the data
    num_classes: int = 10  # filled in from the data; used when conditional
    data_range: tuple[float, ...] = (0.0, 1.0)  # filled in from the data
    channels: tuple[int, ...] = (32, 64)  # UNet channels per resolution (the image halves between them)
    layers_per_block: int = 1  # ResNet blocks per resolution on the way down (one more on the way up)
    attention: bool = False  # self-attention blocks at the lowest resolution
    norm_groups: int = 8  # GroupNorm groups (divides every entry of channels)
    timesteps: int = 1000  # T, the forward process's steps
    schedule: str = "linear"  # linear | cosine (diffusers' squaredcos_cap_v2)
    beta_start: float = 1e-4  # linear schedule: beta_1 ...
    beta_end: float = 0.02  # ... to beta_T
    prediction: str = "epsilon"  # epsilon | v
    conditional: bool = False  # a class label embedding (classifier-free guidance)
    label_dropout: float = 0.1  # conditional: share of training labels replaced by the null label
    # The sampling defaults (genlab sample --sampler/--steps/--guidance override them).
    sampler: str = "ddim"  # ddpm | ddim | dpm++
    sample_steps: int = 50
    eta: float = 0.0  # DDIM: 0 deterministic, 1 DDPM-like
    guidance_scale: float = 2.0  # conditional models only
    preview_steps: int = 20  # sampler steps for the training previews

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
        factor = 2 ** (len(self.channels) - 1)
        if self.input_shape[1] % factor or self.input_shape[2] % factor:
            raise GenlabError(f"{len(self.channels)} resolutions need height and width divisible by {factor}, "
                              f"got {self.input_shape[1]}x{self.input_shape[2]}", "use fewer entries in model.channels")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise GenlabError("model.beta_start and model.beta_end need 0 < beta_start < beta_end < 1")
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
        image_channels, height, _ = config.input_shape
        levels = len(config.channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if config.attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        # f(x_t, t, y): [B, C, H, W], [B], [B] -> [B, C, H, W]. Labels 0..K-1 are the classes, K the null label.
        self.unet = UNet2DModel(
            sample_size=height, in_channels=image_channels, out_channels=image_channels,
            block_out_channels=tuple(config.channels), layers_per_block=config.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=config.norm_groups,
            num_class_embeds=config.num_classes + 1 if config.conditional else None,
        )
        # alpha_bar_t, [T]: recomputed from the config, so not part of the saved weights.
        schedule = dict(timesteps=config.timesteps, schedule=config.schedule, beta_start=config.beta_start,
                        beta_end=config.beta_end)
        self.register_buffer("alphas_cumprod", alphas_cumprod(**schedule), persistent=False)

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
    def loss(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The simple loss E_{t, eps} ||f(x_t, t, y) - target||^2 (a mean over pixels), one draw per image."""
        x0 = self.to_diffusion_space(x)  # [B, C, H, W] in [-1, 1]
        n = x0.shape[0]
        t = randint(self.config.timesteps, (n,), generator, x0.device)  # [B]
        noise = randn(tuple(x0.shape), generator, x0.device, x0.dtype)  # eps: [B, C, H, W]
        labels = None
        if self.config.conditional:
            drop = rand((n,), generator, x0.device) < self.config.label_dropout  # [B]: train f(null) too
            labels = torch.where(drop, self.null_labels(n, x0.device), y.to(x0.device, torch.long))
        prediction = self(self.add_noise(x0, noise, t), t, labels)
        return F.mse_loss(prediction.float(), self.target(x0, noise, t).float())

    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        loss = self.loss(batch["x"], batch.get("y"))
        optimizers["main"].step(loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        # A fixed generator: every validation pass sees the same t and eps, so losses compare.
        generator = torch.Generator(self.device).manual_seed(0)
        return {"loss": self.loss(batch["x"], batch.get("y"), generator).item()}

    # -- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None, steps: int | None = None,
               sampler: str | None = None, guidance_scale: float | None = None, eta: float | None = None,
               callback=None) -> torch.Tensor:
        """n images [n, C, H, W] in the data range. steps, sampler, guidance_scale and eta
        default to the config's; callback(i, x_t) sees each intermediate x_t in [-1, 1] space."""
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
        labels = self._labels_for_sampling(n, condition, generator)  # [n] or None
        scheduler = make_scheduler(sampler, timesteps=cfg.timesteps, schedule=cfg.schedule, beta_start=cfg.beta_start,
                                   beta_end=cfg.beta_end, prediction=cfg.prediction)

        def predict(x_t, t):
            return self.predict(x_t, t.to(self.device), labels, guidance_scale)

        x0 = denoise(predict, (n, *cfg.input_shape), scheduler, steps, generator=generator, device=self.device,
                     eta=eta, callback=callback)
        return self.to_data_space(x0)

    @torch.no_grad()
    def preview(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        n_samples = 64
        # Cycling through the classes puts one class per column in a grid num_classes wide.
        condition = torch.arange(n_samples) % self.config.num_classes if self.config.conditional else None
        return {"samples": self.sample(n_samples, condition=condition, generator=generator,
                                       steps=self.config.preview_steps)}

