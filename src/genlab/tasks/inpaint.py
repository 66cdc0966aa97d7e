"""Inpainting: fill the missing pixels of an image with a latent-variable model, keeping the rest.

Method. Given an image x and a mask m (1 = missing), find a latent z whose decoded image
g(z) agrees with the known pixels and is likely under the prior, then paste:

    z* = argmin_z  -log p(x_known | z) + |z|^2 / 2,        result = m * g(z*) + (1 - m) * x

so known pixels are copied from the input bit for bit and only missing ones come from the
model. The search runs Adam on z from `restarts` starting points (the first from the
encoder's posterior mean of the mean-filled image where the model has an encoder, the
others perturbed or drawn from the prior) and keeps, per image, the restart with the lowest
objective: the objective is not convex, and a few starts avoid the worst local minima.

- VAE ("decode"): -log p(x_known | z) is the VAE's own pixel likelihood (Bernoulli
  cross-entropy or Gaussian) summed over the known pixels; g(z) is the decoder mean.
  `method="resample"` instead runs the conditional resampling chain of Rezende et al.
  (2014): z ~ q(z | x_t), x_{t+1} = m * E[x | z] + (1 - m) * x, from the mean-filled image.
- GAN: latent search (as in Yeh et al. 2017 without their perceptual term): the generator
  has no pixel likelihood, so known pixels are fitted in squared error scaled by
  `pixel_sigma`, which weighs agreement against the prior term.

A class-conditional model needs the class; when none is given, the restarts cycle through
the classes and the best fit picks one.

The baseline is `mean_fill`: each missing pixel gets the mean of the image's known pixels
(per channel). `masked_psnr` scores a result on the missing pixels only, where the methods
differ; it pools the squared error over all images, so one perfect fill cannot make it infinite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import GenlabError
from ..models.base import randn

METHODS = ("optimize", "resample")
CHUNK = 256  # images per optimisation batch (times restarts latents)


def mean_fill(images: torch.Tensor, mask: torch.Tensor, data_range=(0.0, 1.0)) -> torch.Tensor:
    """The baseline: missing pixels (mask True) set to the mean of the image's known pixels, per
    channel; where no pixel is known, the middle of the data range (mid-grey)."""
    missing = mask.expand_as(images)
    known = (~missing).to(images.dtype)
    count = known.sum((2, 3), keepdim=True)
    mean = (images * known).sum((2, 3), keepdim=True) / count.clamp_min(1.0)
    mean = torch.where(count > 0, mean, torch.full_like(mean, sum(data_range) / 2))
    return torch.where(missing, mean.expand_as(images), images)


def masked_psnr(result: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, data_range=(0.0, 1.0)) -> float:
    """PSNR in dB over the missing pixels of all images together (pooled squared error)."""
    missing = mask.expand_as(truth)
    mse = (result - truth)[missing].double().pow(2).mean().item()
    peak = data_range[1] - data_range[0]
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def require_latent_generator(model, purpose: str):
    """(decode(z, labels) -> images in the data range, encoder or None) for a latent model.

    A VAE also has an encoder to start the search from; a GAN's generator has none, so the
    search starts from prior draws."""
    model.require("decode", purpose)
    return model.decode, (model.encode if "encode" in model.capabilities else None)


def _check_inputs(model, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    shape = tuple(model.config.input_shape)
    if images.dim() != 4 or tuple(images.shape[1:]) != shape:
        raise GenlabError(f"this model takes images of shape {shape}, got {tuple(images.shape[1:])}")
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[-2:] != images.shape[-2:] or mask.shape[0] not in (1, len(images)):
        raise GenlabError(
            f"the mask must be a bool tensor [1 or N, 1 or C, H, W] matching the images' {tuple(images.shape[-2:])} size, "
            f"got {tuple(mask.shape)} ({mask.dtype})",
            "True marks the pixels to fill in",
        )
    if not mask.flatten(1).any(1).all():
        raise GenlabError("the mask marks no pixel as missing (in at least one image)", "True marks the pixels to fill in")
    return mask.expand(len(images), *mask.shape[1:]).expand_as(images)


def _labels_for_restarts(model, labels: torch.Tensor | None, n: int, restarts: int) -> tuple[torch.Tensor | None, int]:
    if "conditional" not in model.capabilities:
        if labels is not None:
            raise GenlabError(f"this {model.family} model is unconditional, so it cannot fill in a given class",
                              "leave out the class")
        return None, restarts
    num_classes = model.config.num_classes
    if labels is not None:
        if labels.min() < 0 or labels.max() >= num_classes:
            raise GenlabError(f"class {labels.max().item()} is out of range", f"this model knows classes 0..{num_classes - 1}")
        return labels.repeat(restarts), restarts
    restarts = math.ceil(max(restarts, num_classes) / num_classes) * num_classes  # every class equally often
    return torch.arange(restarts).repeat_interleave(n) % num_classes, restarts


def _pixel_nll(model, images: torch.Tensor, decoded: torch.Tensor, known: torch.Tensor, pixel_sigma: float) -> torch.Tensor:
    """-log p(x_known | z) per image, up to a constant: the model's own likelihood where it has one."""
    likelihood = getattr(model.config, "likelihood", None)
    if likelihood == "bernoulli":  # decoded are logits: the VAE's cross-entropy
        per_pixel = F.softplus(decoded) - images * decoded
    elif likelihood == "gaussian":
        per_pixel = 0.5 * ((images - decoded) * torch.exp(-model.log_sigma)).pow(2)
    else:
        per_pixel = 0.5 * ((images - decoded) / pixel_sigma).pow(2)
    return (per_pixel * known).flatten(1).sum(1)


def inpaint(
    model,
    images: torch.Tensor,
    mask: torch.Tensor,
    *,
    method: str = "optimize",
    steps: int = 200,
    restarts: int = 4,
    lr: float = 0.05,
    pixel_sigma: float = 0.1,
    labels: torch.Tensor | int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Fill the pixels where `mask` is True; every other pixel is returned unchanged.

    images [N, C, H, W] in the model's data range; mask bool [1 or N, 1 or C, H, W].
    Deterministic in `seed`. See the module docstring for the method.
    """
    if method not in METHODS:
        raise GenlabError(f"unknown inpainting method {method!r}", f"use one of {', '.join(METHODS)}")
    if steps < 1 or restarts < 1 or lr <= 0 or pixel_sigma <= 0:
        raise GenlabError("steps and restarts must be >= 1, lr and pixel_sigma > 0",
                          f"got steps={steps}, restarts={restarts}, lr={lr}, pixel_sigma={pixel_sigma}")
    decode, encode = require_latent_generator(model, "inpainting")
    device = model.device
    images = images.to(device)
    missing = _check_inputs(model, images, mask.to(device))
    if method == "resample" and encode is None:
        raise GenlabError("the resample method needs an encoder (a VAE)", "use --method optimize for a GAN")
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).expand(len(images)).to(device)
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, len(images), CHUNK):
        chunk = slice(start, start + CHUNK)
        chunk_labels = None if labels is None else labels[chunk]
        if method == "resample":
            filled = _resample(model, images[chunk], missing[chunk], steps, chunk_labels, generator)
        else:
            filled = _optimize(model, decode, encode, images[chunk], missing[chunk], steps, restarts, lr, pixel_sigma,
                               chunk_labels, generator)
        parts.append(filled)
    # Paste: the model supplies only the missing pixels, so known pixels are exactly the input's.
    return torch.where(missing, torch.cat(parts), images)


def _optimize(model, decode, encode, images, missing, steps, restarts, lr, pixel_sigma, labels, generator):
    n = len(images)
    latent_dim = model.config.latent_dim
    labels, restarts = _labels_for_restarts(model, labels, n, restarts)
    labels = None if labels is None else labels.to(images.device)
    known = (~missing).to(images.dtype)
    noise = randn((restarts, n, latent_dim), generator, images.device)
    with torch.no_grad():
        if encode is not None:
            # Each restart starts at the posterior mean of the mean-filled image (under its own class
            # for a conditional model); all but the first half a prior standard deviation away from it.
            mu, _ = encode(mean_fill(images, missing, model.data_range).repeat(restarts, 1, 1, 1), labels)
            mu = mu.view(restarts, n, latent_dim)
            init = mu + 0.5 * noise
            init[0] = mu[0]
        else:
            init = noise
    z = init.reshape(restarts * n, latent_dim).clone().requires_grad_(True)
    targets, known_r = images.repeat(restarts, 1, 1, 1), known.repeat(restarts, 1, 1, 1)
    optimizer = torch.optim.Adam([z], lr=lr)
    likelihood = getattr(model.config, "likelihood", None)
    raw_decode = model.decode_logits if likelihood is not None else decode  # the VAE's likelihood reads logits / means
    with torch.enable_grad():
        for _ in range(steps):
            objective = _pixel_nll(model, targets, raw_decode(z, labels), known_r, pixel_sigma) + 0.5 * z.pow(2).sum(1)
            # Only z is optimised: autograd.grad leaves the model's parameters without gradients.
            (z.grad,) = torch.autograd.grad(objective.sum(), z)
            optimizer.step()
    with torch.no_grad():
        objective = _pixel_nll(model, targets, raw_decode(z, labels), known_r, pixel_sigma) + 0.5 * z.pow(2).sum(1)
        best = objective.view(restarts, n).argmin(0)  # per image, the restart that fits best
        decoded = decode(z, labels).view(restarts, n, *images.shape[1:])
        return decoded[best, torch.arange(n)]


@torch.no_grad()
def _resample(model, images, missing, steps, labels, generator):
    if "conditional" in model.capabilities and labels is None:
        raise GenlabError("the resample method needs the class for a conditional model", "pass --class, or use --method optimize")
    if labels is not None and "conditional" not in model.capabilities:
        raise GenlabError(f"this {model.family} model is unconditional, so it cannot fill in a given class",
                          "leave out the class")
    x = mean_fill(images, missing, model.data_range)
    for _ in range(steps - 1):
        mu, logvar = model.encode(x, labels)
        eps = randn(mu.shape, generator, mu.device)
        x = torch.where(missing, model.decode(mu + torch.exp(0.5 * logvar) * eps, labels), images)
    mu, _ = model.encode(x, labels)  # the last step at the posterior mean: the chain's clean estimate
    return model.decode(mu, labels)
