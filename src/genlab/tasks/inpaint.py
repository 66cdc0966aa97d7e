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

- Diffusion ("repaint", Lugmayr et al. 2022): no latent to search; the reverse process is
  run from noise with the known pixels replaced, at every step, by the input noised to that
  step's level (q(x_t | x_0)), and every `jump_length` steps it goes back up and down again
  `jump_n_sample` times so the filled region can come to agree with the known one
  (genlab.sampling.diffusion.repaint, on diffusers' RePaintScheduler). Pixel-space models only:
  a latent diffusion model's known "pixels" would be latent cells, which no mask maps onto
  exactly.

A class-conditional model needs the class for `resample`; `optimize` cycles the restarts
through the classes when none is given and the best fit picks one; `repaint` without a class
fills in with the unconditional (null-label) prediction, with one under classifier-free
guidance (the model's guidance_scale unless given).

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
from ..sampling.diffusion import check_steps, make_repaint_scheduler, repaint

METHODS = ("optimize", "resample", "repaint")
CHUNK = 256  # images per optimisation batch (times restarts latents)
# The defaults of each method's steps; RePaint's resampling at CPU sizes: 50 steps with 4 jump
# points each passed 5 times is 210 network calls (the paper: 250 steps, jumps of 10, 10 times).
DEFAULT_STEPS = {"optimize": 200, "resample": 200, "repaint": 50}
REPAINT_JUMP_LENGTH = 10
REPAINT_JUMP_N_SAMPLE = 5
REPAINT_ETA = 1.0  # the unknown pixels' step: 1 the paper's DDPM step, 0 DDIM
# What a diffusion model offers that RePaint uses (genlab.models.diffusion.Diffusion).
DIFFUSION_PROTOCOL = ("predict", "to_diffusion_space", "to_data_space", "alphas_cumprod")


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


def is_diffusion(model) -> bool:
    """Whether `model` denoises by its own forward process: predict(x_t, t, labels, guidance) of
    eps or v, and the maps into and out of its [-1, 1] diffusion space (the diffusion family)."""
    return all(hasattr(model, name) for name in DIFFUSION_PROTOCOL) and hasattr(model.config, "timesteps")


def default_method(model) -> str:
    return "repaint" if is_diffusion(model) else "optimize"


def require_inpainter(model, method: str | None = None) -> str:
    """The method `model` inpaints with (`method`, or its default when None or "auto"), after
    checking that the model can: a latent generator for optimize/resample, a pixel-space
    diffusion model for repaint. One-line errors name the fix."""
    if method in (None, "auto"):
        method = default_method(model)
    if method not in METHODS:
        raise GenlabError(f"unknown inpainting method {method!r}", f"use one of {', '.join(METHODS)}", param="method")
    if method == "repaint":
        if not is_diffusion(model):
            raise GenlabError(f"the repaint method needs a diffusion model; this is a {model.family} model",
                              "use --method optimize (VAE or GAN) or resample (VAE)", param="method")
        if getattr(model.config, "latent_channels", 0) > 0:
            raise GenlabError("repaint inpaints in pixel space, and this diffusion model denoises autoencoder latents",
                              "train a pixel-space diffusion model (model.latent_channels=0) to inpaint with it")
        return method
    if is_diffusion(model):
        raise GenlabError(f"the {method} method searches a VAE's or GAN's latent space; a diffusion model has none",
                          "use the repaint method (the default for diffusion models: --method repaint or auto)",
                          param="method")
    try:
        require_latent_generator(model, "inpainting")
    except GenlabError as e:  # the capability error, with the diffusion route added to its hint
        hint = "; ".join(filter(None, [e.hint, "or a pixel-space diffusion model (--method repaint)"]))
        raise GenlabError(e.message, hint) from None
    return method


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
    method: str | None = None,
    steps: int | None = None,
    restarts: int = 4,
    lr: float = 0.05,
    pixel_sigma: float = 0.1,
    labels: torch.Tensor | int | None = None,
    seed: int = 0,
    jump_length: int = REPAINT_JUMP_LENGTH,
    jump_n_sample: int = REPAINT_JUMP_N_SAMPLE,
    eta: float = REPAINT_ETA,
    guidance_scale: float | None = None,
) -> torch.Tensor:
    """Fill the pixels where `mask` is True; every other pixel is returned unchanged.

    images [N, C, H, W] in the model's data range; mask bool [1 or N, 1 or C, H, W].
    method: optimize | resample (VAE, GAN) | repaint (diffusion); None picks repaint for a
    diffusion model, optimize otherwise. steps: optimisation / resampling steps, or RePaint's
    diffusion steps (DEFAULT_STEPS when None). restarts, lr, pixel_sigma: the latent search's;
    jump_length, jump_n_sample, eta, guidance_scale: RePaint's. Deterministic in `seed`. See the
    module docstring for the methods.
    """
    method = require_inpainter(model, method)
    steps = DEFAULT_STEPS[method] if steps is None else steps
    if method == "repaint":
        _check_repaint_options(model, steps, jump_length, jump_n_sample, eta)
    elif steps < 1 or restarts < 1 or lr <= 0 or pixel_sigma <= 0:
        raise GenlabError("steps and restarts must be >= 1, lr and pixel_sigma > 0",
                          f"got steps={steps}, restarts={restarts}, lr={lr}, pixel_sigma={pixel_sigma}")
    decode, encode = (None, None) if method == "repaint" else require_latent_generator(model, "inpainting")
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
        if method == "repaint":
            filled = _repaint(model, images[chunk], missing[chunk], steps, jump_length, jump_n_sample, eta,
                              chunk_labels, guidance_scale, generator)
        elif method == "resample":
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


def _check_repaint_options(model, steps, jump_length, jump_n_sample, eta) -> None:
    check_steps(steps, model.config.timesteps)
    for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GenlabError(f"{name} must be an integer >= 1, got {value!r}", param=name)
    if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
        raise GenlabError(f"eta must be in [0, 1], got {eta!r}", "1: the paper's DDPM step, 0: DDIM", param="eta")


@torch.no_grad()
def _repaint(model, images, missing, steps, jump_length, jump_n_sample, eta, labels, guidance_scale, generator):
    """RePaint in the model's diffusion space; images [n, C, H, W] in the data range -> filled, same."""
    cfg = model.config
    if labels is not None:
        if "conditional" not in model.capabilities:
            raise GenlabError(f"this {model.family} model is unconditional, so it cannot fill in a given class",
                              "leave out the class")
        if labels.min() < 0 or labels.max() >= cfg.num_classes:
            raise GenlabError(f"class {labels.max().item()} is out of range",
                              f"this model knows classes 0..{cfg.num_classes - 1}")
        guidance_scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
    elif guidance_scale is not None:
        raise GenlabError("guidance needs a class to guide the filling towards", "give the class, or no guidance",
                          param="guidance_scale")
    scheduler = make_repaint_scheduler(timesteps=cfg.timesteps, schedule=cfg.schedule, beta_start=cfg.beta_start,
                                       beta_end=cfg.beta_end, eta=eta)

    def predict(x_t, t):  # without a class, the model's own (null-label) prediction
        return model.predict(x_t, t.to(model.device), labels, 1.0 if labels is None else guidance_scale)

    x0 = repaint(predict, model.to_diffusion_space(images), (~missing).to(images.dtype), scheduler, steps,
                 jump_length=jump_length, jump_n_sample=jump_n_sample, generator=generator,
                 prediction=cfg.prediction)
    return model.to_data_space(x0)
