"""Denoising: remove Gaussian or salt-and-pepper noise with a trained `denoiser` model.

Two baselines make the number mean something: the noisy input itself (what not denoising
scores), and the best classical filter from scikit-image. The classical filter is chosen
fairly: every filter and strength in CLASSICAL_FILTERS is tried on held-out images with the
same noise, and the best by PSNR is applied to the evaluation images, so the model is
compared with a tuned filter, not a strawman.

Noise specs, in units of the data range: `gaussian:0.3` (standard deviation) or
`salt-pepper:0.2` (share of pixels set to black or white). Noisy images are clipped to the
data range, as in training (genlab.models.denoiser.add_noise).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import GenlabError
from ..metrics.image import psnr, ssim
from ..models.denoiser import NOISE_KINDS, add_noise

BATCH = 500


def parse_noise(spec: str) -> tuple[str, float]:
    """'gaussian:0.3' -> ('gaussian', 0.3)."""
    kind, _, level = spec.partition(":")
    try:
        value = float(level)
    except ValueError:
        value = -1.0
    if kind not in NOISE_KINDS or not (0.0 < value <= (2.0 if kind == "gaussian" else 1.0)):
        raise GenlabError(f"cannot read noise {spec!r}",
                          "write gaussian:SIGMA (e.g. gaussian:0.3) or salt-pepper:SHARE (e.g. salt-pepper:0.2), "
                          "in units of the image's value range")
    return kind, value


# ----------------------------------------------------------------------------- classical filters
# name -> (function(image [H, W] or [H, W, C] in [0, 1], strength), strengths to try)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(image, sigma=sigma, channel_axis=-1 if image.ndim == 3 else None)


def _median(image: np.ndarray, size: float) -> np.ndarray:
    from skimage.filters import median

    footprint = np.ones((int(size), int(size)) + ((1,) if image.ndim == 3 else ()), dtype=bool)
    return median(image, footprint=footprint)


def _total_variation(image: np.ndarray, weight: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(image, weight=weight, channel_axis=-1 if image.ndim == 3 else None)


def _non_local_means(image: np.ndarray, h: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(image, h=h, patch_size=3, patch_distance=5, fast_mode=True,
                            channel_axis=-1 if image.ndim == 3 else None)


CLASSICAL_FILTERS = {
    "gaussian-blur": (_gaussian_blur, (0.5, 0.75, 1.0, 1.5)),
    "median": (_median, (3, 5)),
    "total-variation": (_total_variation, (0.05, 0.1, 0.2, 0.4)),
    "non-local-means": (_non_local_means, (0.1, 0.2, 0.3, 0.45)),
}


def classical_denoise(noisy: torch.Tensor, name: str, strength: float, data_range=(0.0, 1.0)) -> torch.Tensor:
    """Apply one scikit-image filter to each image of a [N, C, H, W] batch."""
    if name not in CLASSICAL_FILTERS:
        raise GenlabError(f"unknown classical filter {name!r}", f"use one of {', '.join(CLASSICAL_FILTERS)}")
    function = CLASSICAL_FILTERS[name][0]
    low, high = data_range
    unit = ((noisy.detach().cpu().double() - low) / (high - low)).clamp(0.0, 1.0).numpy()
    out = np.empty_like(unit)
    for i, image in enumerate(unit):
        hwc = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        filtered = function(hwc, strength)
        out[i] = filtered[None] if image.shape[0] == 1 else filtered.transpose(2, 0, 1)
    return torch.from_numpy(out).float() * (high - low) + low


def tune_classical(clean: torch.Tensor, noisy: torch.Tensor, data_range=(0.0, 1.0)) -> dict:
    """The classical filter and strength with the best PSNR on these (held-out) images."""
    peak = data_range[1] - data_range[0]
    tried = {}
    for name, (_, strengths) in CLASSICAL_FILTERS.items():
        for strength in strengths:
            tried[f"{name}:{strength}"] = psnr(classical_denoise(noisy, name, strength, data_range), clean, peak)
    best = max(tried, key=tried.get)
    name, strength = best.split(":")
    return {"filter": name, "strength": float(strength), "tuning_psnr": tried[best], "tried": tried}


# ----------------------------------------------------------------------------- the task


@torch.no_grad()
def denoise(model, noisy: torch.Tensor) -> torch.Tensor:
    """Noisy [N, C, H, W] images in the model's data range -> denoised, same shape and range."""
    model.require("denoise", "denoising")
    return torch.cat([model.denoise(part) for part in noisy.split(BATCH)]).cpu()


@torch.no_grad()
def evaluate_denoise(model, clean: torch.Tensor, noise: str, *, tuning: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Corrupt clean images with `noise` (seeded), denoise them with the model and with the best
    classical filter (tuned on `tuning` clean images, corrupted alike, or on the first fifth of
    `clean` when none are given, which then also counts in the score); PSNR/SSIM of each."""
    model.require("denoise", "denoising")
    kind, level = parse_noise(noise)
    data_range = tuple(model.config.data_range)
    peak = data_range[1] - data_range[0]
    generator = torch.Generator().manual_seed(seed)
    noisy = add_noise(clean, kind, level, data_range, generator)
    tuning = clean[: max(1, len(clean) // 5)] if tuning is None else tuning
    tuning_noisy = add_noise(tuning, kind, level, data_range, torch.Generator().manual_seed(seed + 1))
    choice = tune_classical(tuning, tuning_noisy, data_range)
    classical = classical_denoise(noisy, choice["filter"], choice["strength"], data_range)
    denoised = denoise(model, noisy)
    metrics = {
        "noise": noise,
        "n": len(clean),
        "psnr": psnr(denoised, clean, peak),
        "ssim": ssim(denoised, clean, peak),
        "psnr_noisy": psnr(noisy, clean, peak),
        "ssim_noisy": ssim(noisy, clean, peak),
        "psnr_classical": psnr(classical, clean, peak),
        "ssim_classical": ssim(classical, clean, peak),
        "classical_filter": f"{choice['filter']} (strength {choice['strength']:g}), best of "
                            f"{len(choice['tried'])} scikit-image settings on {len(tuning)} held-out images",
    }
    return {"metrics": metrics, "noisy": noisy, "classical": classical, "denoised": denoised}
