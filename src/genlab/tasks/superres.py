"""Super-resolution: upscale low-resolution images x2 or x4 with a trained `superres` model.

The obvious baseline is bicubic interpolation. `evaluate_superres` makes the low-resolution
inputs from real high-resolution images with the degradation the model was trained to
invert (`model.degrade`: box averaging by default) and scores both the model and bicubic
against the originals with PSNR and SSIM (genlab.metrics.image, checked against
scikit-image in the metric tests), averaged over images.
"""

from __future__ import annotations

import torch

from ..metrics.image import psnr, ssim
from ..models.superres import bicubic_upscale

BATCH = 500


@torch.no_grad()
def superres(model, low_res: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] low-resolution images -> [N, C, h*s, w*s], in the model's data range."""
    model.require("upscale", "super-resolution")
    return torch.cat([model.upscale(part) for part in low_res.split(BATCH)]).cpu()


@torch.no_grad()
def evaluate_superres(model, high_res: torch.Tensor) -> dict:
    """Degrade real images, upscale them with the model and with bicubic; PSNR/SSIM of each.

    Returns the metrics and the images (low_res, bicubic, model) for display."""
    model.require("upscale", "super-resolution")
    config = model.config
    low_res = torch.cat([model.degrade(part.to(model.device)).cpu() for part in high_res.split(BATCH)])
    upscaled = superres(model, low_res)
    bicubic = bicubic_upscale(low_res, config.scale, tuple(config.data_range))
    peak = config.data_range[1] - config.data_range[0]
    metrics = {
        "scale": config.scale,
        "n": len(high_res),
        "psnr": psnr(upscaled, high_res, peak),
        "ssim": ssim(upscaled, high_res, peak),
        "psnr_bicubic": psnr(bicubic, high_res, peak),
        "ssim_bicubic": ssim(bicubic, high_res, peak),
    }
    metrics["psnr_gain_db"] = metrics["psnr"] - metrics["psnr_bicubic"]
    return {"metrics": metrics, "low_res": low_res, "bicubic": bicubic, "upscaled": upscaled}
