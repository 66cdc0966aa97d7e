"""Latent interpolation and traversal: walk through a VAE's latent space and decode each step.

Interpolation encodes two images to their posterior means z_a, z_b and decodes points
between them:

  linear  z(t) = (1 - t) z_a + t z_b
  slerp   z(t) = sin((1 - t) w) / sin w * z_a + sin(t w) / sin w * z_b,  cos w = z_a.z_b / |z_a||z_b|
          (spherical, White 2016): under a Gaussian prior in many dimensions, mass lies near
          a sphere, and the straight line's midpoint falls inside it, where decodings look
          washed out; slerp keeps the path on the sphere's scale.

A traversal moves one latent dimension at a time through [-span, span] (prior standard
deviations) from a starting code, the others held fixed, for the `dims` dimensions that
carry the most information: those with the largest KL(q(z_i | x) || p(z_i)), averaged over
the given images (a dimension the encoder ignores has KL near 0 and decodes to the same
image everywhere, so traversing it shows nothing).
"""

from __future__ import annotations

import torch

from ..errors import GenlabError
from ..metrics.likelihood import gaussian_kl_standard_normal

METHODS = ("slerp", "linear")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows a and b [D] at fractions t [T] -> [T, D]."""
    t = t.reshape(-1, 1).to(a.dtype)
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-4:  # (nearly) parallel: slerp and the line coincide, and sin w -> 0
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def _labels(model, label: int | None, n: int) -> torch.Tensor | None:
    if "conditional" not in model.capabilities:
        if label is not None:
            raise GenlabError(f"this {model.family} model is unconditional, so it takes no class", "leave out the class")
        return None
    if label is None:
        raise GenlabError("this model is class-conditional: give the class to encode and decode with", "e.g. --class 3")
    if not 0 <= label < model.config.num_classes:
        raise GenlabError(f"class {label} is out of range", f"this model knows classes 0..{model.config.num_classes - 1}")
    return torch.full((n,), label, dtype=torch.long, device=model.device)


@torch.no_grad()
def interpolate(model, image_a: torch.Tensor, image_b: torch.Tensor, *, steps: int = 10, method: str = "slerp",
                label: int | None = None) -> torch.Tensor:
    """Decoded images [steps, C, H, W] along the path from image_a's code to image_b's (both [1, C, H, W])."""
    model.require("encode", "latent interpolation between images")
    if method not in METHODS:
        raise GenlabError(f"unknown interpolation {method!r}", f"use one of {', '.join(METHODS)}")
    if steps < 2:
        raise GenlabError(f"an interpolation needs at least 2 steps, got {steps}")
    labels = _labels(model, label, 2)
    mu, _ = model.encode(torch.cat([image_a, image_b]).to(model.device), labels)
    t = torch.linspace(0.0, 1.0, steps, device=mu.device)
    path = slerp(mu[0], mu[1], t) if method == "slerp" else (1 - t[:, None]) * mu[0] + t[:, None] * mu[1]
    return model.decode(path, None if labels is None else labels[:1].expand(steps)).cpu()


@torch.no_grad()
def traverse(model, images: torch.Tensor | None = None, *, dims: int = 8, span: float = 3.0, steps: int = 9,
             label: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """Decoded images [dims, steps, C, H, W] and the dimensions traversed (most informative first).

    Starts from the posterior mean of the first image, or from z = 0 (the prior's centre)
    without images; then dimensions are ranked by KL only when images are given."""
    model.require("decode", "latent traversal")
    if dims < 1 or steps < 2 or span <= 0:
        raise GenlabError(f"need dims >= 1, steps >= 2 and span > 0, got dims={dims}, steps={steps}, span={span}")
    latent_dim = model.config.latent_dim
    dims = min(dims, latent_dim)
    if images is not None:
        model.require("encode", "a traversal from an image")
        labels = _labels(model, label, len(images))
        mu, logvar = model.encode(images.to(model.device), labels)
        # A trailing axis of size 1 makes the summed KL a per-dimension one.
        kl_per_dim = gaussian_kl_standard_normal(mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0)
        chosen = kl_per_dim.argsort(descending=True)[:dims].tolist()
        start = mu[0]
    else:
        labels = _labels(model, label, 1)
        chosen = list(range(dims))
        start = torch.zeros(latent_dim, device=model.device)
    values = torch.linspace(-span, span, steps, device=start.device)
    codes = start.repeat(dims, steps, 1)  # [dims, steps, latent]
    for row, dim in enumerate(chosen):
        codes[row, :, dim] = values
    decode_labels = None if labels is None else labels[:1].expand(dims * steps)
    decoded = model.decode(codes.reshape(dims * steps, latent_dim), decode_labels)
    return decoded.reshape(dims, steps, *decoded.shape[1:]).cpu(), chosen
