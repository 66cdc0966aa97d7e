"""Blind image denoising: a residual convolutional denoiser (DnCNN, Zhang et al. 2017).

Method. Clean training images x are corrupted on the fly, a fresh draw each time an image is
used, by the noise a user is expected to meet:

  gaussian     y = clip(x + sigma * n),  n ~ N(0, I), sigma ~ U(0, sigma_max) per image
  salt-pepper  a share p ~ U(0, amount_max) of the pixels (per image) is set to the lowest
               or highest value, each with probability 1/2
  mixed        each image of a batch gets one of the two at random

Noise levels are in units of the data range ([0, 1] images: sigma = 0.3 is 30% of full
scale), and noisy images are clipped to the data range, as a saved image file would be.
Drawing the level per image makes the model *blind*: it is not told the noise level or
kind and must infer them from the image.

Network: DnCNN's plain stack of `depth` 3x3 convolutions with ReLU (without its batch norm,
so an image's output depends on that image alone), which predicts the noise residual
r = y - x; the denoised image is y - r. Predicting the residual makes the identity easy to
represent, so training starts near "return the input" and learns what to remove. The loss
is the mean squared error of y - r against x, the quantity PSNR measures. The receptive
field is 2 * depth + 1 pixels wide.

Capability: "denoise" (`denoise(noisy)`). `add_noise` is exported so the task, benchmark
and tests corrupt images exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError
from ..metrics.image import mean_psnr
from ..registry import register_family
from .base import GenerativeModel, ImageConfig, rand, randn

# What `add_noise` (and the task, genlab.tasks.denoise) applies; a model trains on one of them
# or on a mix of the two (TRAINING_NOISES).
NOISE_KINDS = ("gaussian", "salt-pepper")
TRAINING_NOISES = (*NOISE_KINDS, "mixed")


@dataclass
class DenoiserConfig(ImageConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W), filled in from the data
    data_range: tuple[float, ...] = (0.0, 1.0)  # filled in from the data
    noise: str = "mixed"  # gaussian | salt-pepper | mixed (each image one of the two)
    sigma_max: float = 0.5  # Gaussian: sigma ~ U(0, sigma_max) per image, in units of the data range
    amount_max: float = 0.3  # salt-and-pepper: share of pixels hit ~ U(0, amount_max) per image
    channels: int = 32
    depth: int = 7  # conv layers; the receptive field is 2 * depth + 1 pixels

    def __post_init__(self):
        if self.noise not in TRAINING_NOISES:
            raise GenlabError(f"unknown model.noise {self.noise!r}", f"use one of {', '.join(TRAINING_NOISES)}")
        if len(self.input_shape) != 3 or any(size < 1 for size in self.input_shape):
            raise GenlabError(f"the denoiser needs (C, H, W) images, got input_shape={tuple(self.input_shape)}")
        self.check_data_range()
        if not 0.0 < self.sigma_max <= 2.0 or not 0.0 < self.amount_max <= 1.0:
            raise GenlabError("model.sigma_max must be in (0, 2] and model.amount_max in (0, 1]",
                              f"got sigma_max={self.sigma_max}, amount_max={self.amount_max}")
        if self.channels < 1 or self.depth < 2:
            raise GenlabError("model.channels must be >= 1 and model.depth >= 2")


# ----------------------------------------------------------------------------- noise


def add_noise(
    images: torch.Tensor,
    kind: str,
    level: float | torch.Tensor,
    data_range=(0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Corrupt [B, C, H, W] images: kind 'gaussian' (level = sigma) or 'salt-pepper' (level =
    share of pixels), in units of the data range; the result is clipped to the data range.
    `level` is a number or a [B] tensor of per-image levels."""
    low, high = data_range
    level = torch.as_tensor(level, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)
    if kind == "gaussian":
        noise = randn(images.shape, generator, images.device)
        return (images + level * (high - low) * noise).clamp(low, high)
    if kind == "salt-pepper":
        # One draw per pixel decides whether it is hit, a second whether it turns black or white;
        # all channels of a pixel are hit together, as a dead sensor pixel would be.
        hit = rand((images.shape[0], 1, *images.shape[2:]), generator, images.device) < level
        white = rand((images.shape[0], 1, *images.shape[2:]), generator, images.device) < 0.5
        impulse = torch.where(white, high, low).to(images.dtype).expand_as(images)
        return torch.where(hit.expand_as(images), impulse, images)
    raise GenlabError(f"unknown noise kind {kind!r}", "use gaussian or salt-pepper")


# ----------------------------------------------------------------------------- the model


@register_family("denoiser")
class Denoiser(GenerativeModel):
    config_class = DenoiserConfig
    capabilities = frozenset({"denoise"})

    def __init__(self, config: DenoiserConfig):
        super().__init__(config)
        channels, image_channels = config.channels, config.input_shape[0]
        layers: list[nn.Module] = [nn.Conv2d(image_channels, channels, 3, padding=1), nn.ReLU()]
        for _ in range(config.depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, image_channels, 3, padding=1))
        self.residual = nn.Sequential(*layers)

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training corruption: a random kind (for mixed) and level per image."""
        cfg = self.config
        n = clean.shape[0]
        sigma = rand((n,), generator, clean.device) * cfg.sigma_max
        amount = rand((n,), generator, clean.device) * cfg.amount_max
        gaussian = add_noise(clean, "gaussian", sigma, cfg.data_range, generator)
        if cfg.noise == "gaussian":
            return gaussian
        salt_pepper = add_noise(clean, "salt-pepper", amount, cfg.data_range, generator)
        if cfg.noise == "salt-pepper":
            return salt_pepper
        use_gaussian = (rand((n,), generator, clean.device) < 0.5).view(-1, 1, 1, 1)
        return torch.where(use_gaussian, gaussian, salt_pepper)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy - self.residual(noisy)

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        """The "denoise" capability: noisy [B, C, H, W] images -> denoised, in the data range."""
        if noisy.dim() != 4 or noisy.shape[1] != self.config.input_shape[0]:
            raise GenlabError(
                f"this denoiser takes [B, {self.config.input_shape[0]}, H, W] images, got shape {tuple(noisy.shape)}"
            )
        return self(noisy.to(self.device)).clamp(*self.config.data_range)

    # -- training ---------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        clean = batch["x"]
        loss = F.mse_loss(self(self.corrupt(clean)), clean)
        optimizers["main"].step(loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        clean = batch["x"]
        noisy = self.corrupt(clean)
        denoised = self(noisy).clamp(*self.config.data_range)
        peak = self.config.data_range[1] - self.config.data_range[0]
        return {"loss": F.mse_loss(denoised, clean).item(), "psnr": mean_psnr(denoised, clean, peak),
                "psnr_noisy": mean_psnr(noisy, clean, peak)}

    # -- previews (no sampling: these families need an input image) -----------------
    @torch.no_grad()
    def preview(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        clean = batch["x"][:16].to(self.device)
        noisy = self.corrupt(clean, torch.Generator(generator.device).manual_seed(0))
        # Pairs of columns per image: noisy input, denoised, clean.
        return {"denoised": torch.stack([noisy, self.denoise(noisy), clean], dim=1).flatten(0, 1)}
