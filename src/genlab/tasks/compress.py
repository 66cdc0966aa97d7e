"""Lossy compression with a VAE: quantised latent codes and their entropy-coded size.

Method (the transform-coding view of a VAE, as in Ballé et al. 2017, with a fixed
quantiser). Encode x to its posterior mean mu(x) in R^D and quantise every coordinate to
the nearest multiple of `step`: k_i = round(mu_i / step). The decoder reconstructs from
k * step. The code's size is what an arithmetic coder spends under a static probability
model of the symbols: sum_i -log2 P_i(k_i) bits, within 2 bits per image of a real
arithmetic-coded stream. The probability model (`EntropyModel`) is a histogram per latent
dimension, fitted on training images with add-half smoothing; dimensions the encoder does
not use sit at k = 0 almost always and cost almost nothing. The model is shared by all
images, like a codec's tables, so its size is not counted per image.

The baselines are the same image as a PNG file (lossless; Pillow at its strongest setting,
headers included, as a file on disk would be) and the raw 8 bits per value. A smaller step
spends more bits for a decoded image closer to the VAE's unquantised reconstruction; PSNR
of the decoded image against the original measures the loss.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image

from ..errors import GenlabError
from ..imageio import to_uint8
from ..metrics.image import psnr

BATCH = 1000
MAX_SYMBOL = 127  # codes are clipped to [-127, 127]: int8, and no histogram needs more bins


@dataclass
class EntropyModel:
    step: float
    probabilities: torch.Tensor  # [D, 2 * MAX_SYMBOL + 1], row i: P(k_i = k - MAX_SYMBOL)

    def bits(self, codes: torch.Tensor) -> torch.Tensor:
        """Ideal code length in bits of each row of integer codes [N, D]."""
        index = (codes.long() + MAX_SYMBOL).clamp(0, 2 * MAX_SYMBOL)
        p = self.probabilities.gather(1, index.T).T  # [N, D]: P_i(k_i)
        return -torch.log2(p).sum(1)


def _check(model) -> None:
    model.require("encode", "latent-code compression")
    model.require("decode", "latent-code compression")
    if "conditional" in model.capabilities:
        raise GenlabError("compression needs an unconditional VAE: a conditional one would need the label coded too",
                          "train one without model.conditional")


@torch.no_grad()
def encode_codes(model, images: torch.Tensor, step: float) -> torch.Tensor:
    """Integer codes [N, D]: the posterior means rounded to multiples of `step`."""
    _check(model)
    if not step > 0:
        raise GenlabError(f"the quantisation step must be positive, got {step}", "e.g. --step 0.25")
    codes = torch.cat([torch.round(model.encode(x.to(model.device))[0] / step) for x in images.split(BATCH)])
    largest = codes.abs().max().item() if codes.numel() else 0.0
    if largest > MAX_SYMBOL:  # clipping would decode other images than the codes claim: refuse instead
        raise GenlabError(f"a quantisation step of {step:g} is too fine for this model: codes reach {largest:,.0f}, "
                          f"beyond the +-{MAX_SYMBOL} an int8 code holds",
                          f"use --step {step * largest / MAX_SYMBOL:.3g} or coarser")
    return codes.to(torch.int8).cpu()


@torch.no_grad()
def decode_codes(model, codes: torch.Tensor, step: float) -> torch.Tensor:
    """Images [N, C, H, W] in the model's data range from integer codes."""
    _check(model)
    return torch.cat([model.decode(part.float().to(model.device) * step).cpu() for part in codes.split(BATCH)])


def fit_entropy_model(model, images: torch.Tensor, step: float) -> EntropyModel:
    """Per-dimension symbol histograms of the codes of `images` (training images), add-half smoothed."""
    codes = encode_codes(model, images, step).long() + MAX_SYMBOL
    counts = torch.zeros(codes.shape[1], 2 * MAX_SYMBOL + 1, dtype=torch.float64)
    counts.scatter_add_(1, codes.T, torch.ones(codes.T.shape, dtype=torch.float64))
    counts += 0.5  # every symbol stays codable, at a price
    return EntropyModel(step=step, probabilities=counts / counts.sum(1, keepdim=True))


def png_bits(images: torch.Tensor, data_range=(0.0, 1.0)) -> torch.Tensor:
    """Size in bits of each image [N, C, H, W] saved as an 8-bit PNG file (Pillow, compress_level=9, optimize)."""
    sizes = []
    for image in to_uint8(images, data_range):
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        sizes.append(8 * buffer.tell())
    return torch.tensor(sizes, dtype=torch.float64)


def compress(model, images: torch.Tensor, entropy_model: EntropyModel) -> dict:
    """Codes, their size, the decoded images and PSNR against the originals; PNG and raw sizes beside them."""
    step = entropy_model.step
    codes = encode_codes(model, images, step)
    decoded = decode_codes(model, codes, step)
    low, high = tuple(model.config.data_range)
    bits = entropy_model.bits(codes)
    png = png_bits(images, (low, high))
    values = images[0].numel()
    return {
        "metrics": {
            "step": step,
            "n": len(images),
            "latent_dims": codes.shape[1],
            "bits_per_image": bits.mean().item(),
            "png_bits_per_image": png.mean().item(),
            "raw_bits_per_image": 8.0 * values,
            "compression_vs_png": png.mean().item() / max(bits.mean().item(), 1e-9),
            # the lossless baseline is the smaller of the PNG file and the raw 8-bit pixels (tiny
            # images: PNG's header and chunk overhead outweigh the pixels)
            "baseline_bits_per_image": min(png.mean().item(), 8.0 * values),
            "compression_vs_baseline": min(png.mean().item(), 8.0 * values) / max(bits.mean().item(), 1e-9),
            "psnr": psnr(decoded, images, high - low),
            "bits_per_value": bits.mean().item() / values,
        },
        "codes": codes,
        "decoded": decoded,
    }


def rate_distortion(model, images: torch.Tensor, train_images: torch.Tensor, steps=(1.0, 0.5, 0.25, 0.1)) -> list[dict]:
    """`compress` metrics at several quantisation steps (an entropy model fitted per step)."""
    return [compress(model, images, fit_entropy_model(model, train_images, step))["metrics"] for step in steps]


def unquantised_psnr(model, images: torch.Tensor) -> float:
    """PSNR of the plain reconstruction (posterior mean, no quantisation): the ceiling for any step."""
    with torch.no_grad():
        decoded = torch.cat([model.decode(model.encode(x.to(model.device))[0]).cpu() for x in images.split(BATCH)])
    low, high = tuple(model.config.data_range)
    return psnr(decoded, images, high - low)
