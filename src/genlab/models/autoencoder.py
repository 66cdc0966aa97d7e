"""The first stage of latent diffusion: a small KL-regularised convolutional autoencoder.

Method (Rombach et al. 2022, "LDM", the KL-f4 first stage, without the adversarial and
perceptual losses that only pay off on natural images). An encoder maps an image in [-1, 1]
to a diagonal Gaussian over a latent grid four times smaller on each side,

    q(z | x) = N(mu(x), diag sigma(x)^2),   z: [latent_channels, H/4, W/4]   (28x28 -> 4x7x7),

and a decoder maps z back. The loss per image is the squared reconstruction error summed over
pixels plus a small KL term towards N(0, I),

    L = ||x - dec(z)||^2 + kl_weight * KL(q(z | x) || N(0, I)),   z ~ q(z | x).

The KL weight is tiny on purpose: the latents must keep nearly everything the decoder needs
(the diffusion model's samples can be no better than the reconstructions), and the KL term
only stops the latent scale from drifting. Diffusion then runs on z scaled to unit variance
(genlab.models.diffusion holds the scale).

Layers: 3x3 convolutions with GroupNorm and SiLU, a stride-2 convolution per halving on the
way down and nearest-neighbour upsampling plus a convolution per doubling on the way up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DOWNSAMPLING = 4  # each side of the latent grid is the image's divided by this (two halvings)


def _block(channels_in: int, channels_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.GroupNorm(groups, channels_in), nn.SiLU(), nn.Conv2d(channels_in, channels_out, 3, padding=1))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(_block(channels, channels, groups), _block(channels, channels, groups))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


class KLAutoencoder(nn.Module):
    def __init__(self, image_channels: int, latent_channels: int, channels: tuple[int, int], groups: int):
        super().__init__()
        wide, wider = channels
        # [B, C, H, W] -> [B, 2 * latent_channels, H/4, W/4] (mean and log-variance). The residual
        # blocks sit at H/2 and H/4 only: at full size they would cost most of the time for little.
        self.encoder = nn.Sequential(
            nn.Conv2d(image_channels, wide, 3, padding=1),
            nn.Conv2d(wide, wide, 3, stride=2, padding=1), ResidualBlock(wide, groups),  # H/2
            _block(wide, wider, groups),
            nn.Conv2d(wider, wider, 3, stride=2, padding=1), ResidualBlock(wider, groups),  # H/4
            _block(wider, 2 * latent_channels, groups),
        )
        # [B, latent_channels, H/4, W/4] -> [B, C, H, W]
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, wider, 3, padding=1), ResidualBlock(wider, groups),  # H/4
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(wider, wide, 3, padding=1),
            ResidualBlock(wide, groups),  # H/2
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(wide, wide, 3, padding=1),  # H
            _block(wide, image_channels, groups),
        )

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, log sigma^2 of q(z | x), each [B, latent_channels, H/4, W/4]; x in [-1, 1]."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction in [-1, 1] space (unclamped), [B, C, H, W]."""
        return self.decoder(z)

    def loss(self, x: torch.Tensor, kl_weight: float, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, the reconstruction error alone), each a mean over the batch of per-image sums;
        noise ~ N(0, I) shaped like the latent draws z = mu + sigma * noise."""
        mean, logvar = self.posterior(x)
        z = mean + (0.5 * logvar).exp() * noise
        reconstruction = F.mse_loss(self.decode(z), x, reduction="none").flatten(1).sum(1)  # [B]
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)  # [B]
        return (reconstruction + kl_weight * kl).mean(), reconstruction.mean()
