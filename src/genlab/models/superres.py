"""Single-image super-resolution: a residual conv net with sub-pixel upsampling.

Method. A high-resolution image y (H x W) is paired with its low-resolution version
x = down(y) (H/s x W/s, s = 2 or 4), made on the fly from the training images by the same
`downsample` operator that the task and the benchmark use, so the model learns to invert
exactly that degradation. The network predicts the *difference* between y and the bicubic
upsampling of x (global residual learning, as in VDSR, Kim et al. 2016): the bicubic image
is already a good first guess, so the net only has to add the detail it lacks, and a net
with zero output is exactly the bicubic baseline.

Network (EDSR-style, Lim et al. 2017): a 3x3 conv lifts x to `channels` features; `num_blocks`
residual blocks (conv-ReLU-conv plus the skip; no batch norm, which EDSR found hurts
super-resolution) work at the low resolution, where convolutions are cheap; each x2 stage
is a 3x3 conv to 4x the channels followed by a pixel shuffle (sub-pixel convolution, ESPCN,
Shi et al. 2016), which rearranges those channels into a 2x larger feature map; a last 3x3
conv maps the features to image channels.

Loss: mean absolute error (L1), which EDSR found trains sharper than L2. With
`adversarial_weight` > 0 an SRGAN-style term (Ledig et al. 2017) is added: a small
spectrally normalised conv discriminator D is trained with the hinge loss to tell real
high-resolution images from super-resolved ones, and the upsampler also minimises
-adversarial_weight * D(output), trading a little PSNR for sharper texture.

Capability: "upscale" (`upscale(low_res)`); this family does not sample, so the sample
quality metrics and `genlab sample` say so instead of failing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import GenlabError
from ..metrics.image import mean_psnr
from ..registry import register_family
from .base import GenerativeModel, ImageConfig

SCALES = (2, 4)
DOWNSAMPLERS = ("area", "bicubic")


@dataclass
class SuperResConfig(ImageConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)  # the HIGH-resolution (C, H, W); filled in from the data
    data_range: tuple[float, ...] = (0.0, 1.0)  # filled in from the data
    scale: int = 2  # upscaling factor: 2 or 4 (two x2 sub-pixel stages)
    channels: int = 32  # feature channels of the conv layers
    num_blocks: int = 4  # residual blocks at the low resolution
    downsample: str = "area"  # how low-res inputs are made: area (box average) | bicubic (antialiased)
    adversarial_weight: float = 0.0  # > 0 adds an SRGAN-style hinge loss to L1
    discriminator_channels: int = 32

    def __post_init__(self):
        if self.scale not in SCALES:
            raise GenlabError(f"model.scale must be 2 or 4, got {self.scale}")
        if self.downsample not in DOWNSAMPLERS:
            raise GenlabError(f"unknown model.downsample {self.downsample!r}", f"use one of {', '.join(DOWNSAMPLERS)}")
        if len(self.input_shape) != 3 or any(size < 1 for size in self.input_shape):
            raise GenlabError(f"super-resolution needs (C, H, W) images, got input_shape={tuple(self.input_shape)}")
        _, height, width = self.input_shape
        if height % self.scale or width % self.scale:
            raise GenlabError(
                f"x{self.scale} super-resolution needs image sides divisible by {self.scale}, got {height}x{width}",
                "use model.scale=2, or images of another size (data.image_size=... for folder data)",
            )
        self.check_data_range()
        if self.channels < 1 or self.num_blocks < 0 or self.discriminator_channels < 1:
            raise GenlabError("model.channels and model.discriminator_channels must be >= 1, model.num_blocks >= 0")
        if self.adversarial_weight < 0:
            raise GenlabError(f"model.adversarial_weight must be >= 0, got {self.adversarial_weight}")

    @property
    def low_res_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.input_shape
        return (channels, height // self.scale, width // self.scale)


# ----------------------------------------------------------------------------- degradation and baseline
# Module-level so that the task, the benchmark and the tests use exactly what training used.


def downscale(images: torch.Tensor, scale: int, method: str = "area") -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H/scale, W/scale]: the degradation the model learns to invert."""
    if method == "area":
        return F.avg_pool2d(images, scale)  # each low-res pixel is the mean of its s x s block
    return F.interpolate(images, scale_factor=1.0 / scale, mode="bicubic", align_corners=False, antialias=True)


def bicubic_upscale(low_res: torch.Tensor, scale: int, data_range=(0.0, 1.0)) -> torch.Tensor:
    """The baseline: bicubic interpolation (Keys, a = -0.75 as in PyTorch), clipped to the data range."""
    up = F.interpolate(low_res, scale_factor=scale, mode="bicubic", align_corners=False)
    return up.clamp(*data_range)


# ----------------------------------------------------------------------------- networks


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.relu(self.conv1(h)))


class Upsampler(nn.Module):
    """Low-res image -> the residual to add to its bicubic upsampling."""

    def __init__(self, config: SuperResConfig):
        super().__init__()
        image_channels, ch = config.input_shape[0], config.channels
        self.head = nn.Conv2d(image_channels, ch, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(ch) for _ in range(config.num_blocks)))
        self.body_end = nn.Conv2d(ch, ch, 3, padding=1)
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(config.scale))):
            stages += [nn.Conv2d(ch, 4 * ch, 3, padding=1), nn.PixelShuffle(2), nn.ReLU()]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(ch, image_channels, 3, padding=1)
        # Start as the bicubic baseline: a zero residual, so training can only improve on it.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        h = self.head(low_res)
        h = h + self.body_end(self.blocks(h))  # EDSR's long skip over the residual blocks
        return self.tail(self.upsample(h))


class PatchDiscriminator(nn.Module):
    """Stride-2 convs with LeakyReLU and spectral norm; the mean of a map of realness scores."""

    def __init__(self, image_channels: int, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(image_channels, channels, 3, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * channels, 1, 3, padding=1)),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean((1, 2, 3))


# ----------------------------------------------------------------------------- the model


@register_family("superres")
class SuperResolution(GenerativeModel):
    config_class = SuperResConfig
    capabilities = frozenset({"upscale"})

    def __init__(self, config: SuperResConfig):
        super().__init__(config)
        self.upsampler = Upsampler(config)
        # Only built when used, so a plain L1 model's weights file holds no discriminator.
        self.discriminator = (
            PatchDiscriminator(config.input_shape[0], config.discriminator_channels)
            if config.adversarial_weight > 0 else None
        )  # fmt: skip

    def degrade(self, high_res: torch.Tensor) -> torch.Tensor:
        return downscale(high_res, self.config.scale, self.config.downsample)

    def forward_residual(self, low_res: torch.Tensor) -> torch.Tensor:
        """Bicubic upsampling plus the learned residual, unclipped (what the loss sees)."""
        up = F.interpolate(low_res, scale_factor=self.config.scale, mode="bicubic", align_corners=False)
        return up + self.upsampler(low_res)

    @torch.no_grad()
    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """The "upscale" capability: [B, C, h, w] low-res images -> [B, C, h*s, w*s] in the data range."""
        if tuple(low_res.shape[1:]) != self.config.low_res_shape:
            raise GenlabError(
                f"this x{self.config.scale} model takes low-resolution images of shape {self.config.low_res_shape}, "
                f"got {tuple(low_res.shape[1:])}"
            )
        return self.forward_residual(low_res.to(self.device)).clamp(*self.config.data_range)

    # -- training ---------------------------------------------------------------------
    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"main": torch.optim.Adam(self.upsampler.parameters(), lr=train.lr, weight_decay=train.weight_decay)}
        if self.discriminator is not None:
            # The hinge-GAN betas of Miyato et al. (2018), as in genlab's GAN family.
            optimizers["discriminator"] = torch.optim.Adam(self.discriminator.parameters(), lr=train.lr, betas=(0.0, 0.9))
        return optimizers

    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        high_res = batch["x"]
        output = self.forward_residual(self.degrade(high_res))
        logs = {}
        if self.discriminator is not None:
            scores = self.discriminator(torch.cat([high_res, output.detach()]))
            real, fake = scores.chunk(2)
            d_loss = F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
            optimizers["discriminator"].step(d_loss)
            logs["d_loss"] = d_loss.item()
        l1 = (output - high_res).abs().mean()
        loss = l1
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)  # D is fixed for the upsampler's step
            try:
                adversarial = -self.discriminator(output).mean()
            finally:
                self.discriminator.requires_grad_(True)
            loss = l1 + self.config.adversarial_weight * adversarial
            logs["adversarial"] = adversarial.item()
        optimizers["main"].step(loss)
        return {"loss": loss.item(), "l1": l1.item(), **logs}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        high_res = batch["x"]
        low_res = self.degrade(high_res)
        output = self.forward_residual(low_res).clamp(*self.config.data_range)
        bicubic = bicubic_upscale(low_res, self.config.scale, self.config.data_range)
        peak = self.config.data_range[1] - self.config.data_range[0]
        return {"loss": (output - high_res).abs().mean().item(), "psnr": mean_psnr(output, high_res, peak),
                "psnr_bicubic": mean_psnr(bicubic, high_res, peak)}

    # -- previews (no sampling: these families need an input image) -----------------
    @torch.no_grad()
    def preview(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        high_res = batch["x"][:16].to(self.device)
        low_res = self.degrade(high_res)
        bicubic = bicubic_upscale(low_res, self.config.scale, self.config.data_range)
        nearest = F.interpolate(low_res, scale_factor=self.config.scale, mode="nearest")
        # Rows of four: the low-res input (pixels enlarged), bicubic, the model, the original.
        return {"upscaled": torch.stack([nearest, bicubic, self.upscale(low_res), high_res], dim=1).flatten(0, 1)}
