"""Image grids and PNG output (Pillow + plain tensor ops; no torchvision)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import GenlabError


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    lo, hi = value_range
    x = (images.detach().float().cpu() - lo) / (hi - lo)
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def make_grid(images: torch.Tensor, value_range=(0.0, 1.0), nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """[N, C, H, W] -> one uint8 image [H', W', C] (C is 1 or 3), tiles separated by `padding`."""
    x = to_uint8(images, value_range)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid.permute(1, 2, 0).numpy()


def picture_of(array: np.ndarray) -> Image.Image:
    """A uint8 [H, W, C] array (C is 1 or 3) as a Pillow image (L or RGB)."""
    return Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")


def image_picture(image: torch.Tensor, value_range=(0.0, 1.0)) -> Image.Image:
    """One [C, H, W] (or [1, C, H, W]) image at its own resolution: the exact pixels."""
    return picture_of(to_uint8(image.reshape(-1, *image.shape[-3:])[0], value_range).permute(1, 2, 0).numpy())


def grid_picture(images: torch.Tensor, value_range=(0.0, 1.0), nrow: int | None = None, scale: int = 1,
                 padding: int = 2) -> Image.Image:
    """[N, C, H, W] images as one grid picture, enlarged `scale` times (nearest) so small tiles are visible."""
    picture = picture_of(make_grid(images, value_range, nrow, padding))
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


def png_bytes(picture: Image.Image) -> bytes:
    """A Pillow image encoded as PNG, in memory (for HTTP replies)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(path: str | Path, images: torch.Tensor, value_range=(0.0, 1.0), nrow: int | None = None, scale: int = 1) -> Path:
    """Save a grid PNG; small images are scaled up (nearest) so an 8x8 digit is visible."""
    return save_picture(grid_picture(images, value_range, nrow, scale), path)


# What -o may name: the format follows the file's extension (a .jpg is a JPEG, not PNG bytes).
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF"}


def image_format(path: str | Path) -> str:
    """The Pillow format an output path's extension names, or a GenlabError listing the ones there are."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise GenlabError(f"cannot tell an image format from {Path(path).name!r}",
                          f"name the file with one of {', '.join(IMAGE_FORMATS)}, e.g. grid.png")
    return IMAGE_FORMATS[suffix]


def save_picture(picture: Image.Image, path: str | Path) -> Path:
    """Write a Pillow image in the format its extension names, creating the folder; a clear error if
    it cannot be written."""
    path = Path(path)
    kind = image_format(path)
    if kind in ("JPEG", "BMP") and picture.mode not in ("L", "RGB"):
        picture = picture.convert("RGB")  # these formats have no alpha
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, format=kind, **({"quality": 95} if kind == "JPEG" else {}))
    except (OSError, ValueError) as e:
        # a ValueError (e.g. an unknown extension) has no strerror
        raise GenlabError(f"cannot write {path}: {getattr(e, 'strerror', None) or e}",
                          "choose an output path in a writable directory") from None
    return path


def display_scale(height: int) -> int:
    """Upscaling factor that makes tiles at least ~64 px tall in saved grids."""
    return max(1, 64 // height)


def save_bar_chart(path: str | Path, values, labels: list[str], title: str, reference: float | None = None) -> Path:
    """A small bar chart PNG (Pillow only): one bar per value, a dashed line at `reference`."""
    from PIL import ImageDraw

    values = [float(v) for v in values]
    width, height, margin, top = 40 * len(values) + 40, 220, 20, 30
    top_value = max(max(values), reference or 0.0, 1e-9) * 1.1
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((margin, 8), title, fill="black")
    base = height - margin - 12
    scale = (base - top) / top_value
    for i, (value, label) in enumerate(zip(values, labels)):
        left = margin + 40 * i + 6
        draw.rectangle([left, base - value * scale, left + 28, base], fill=(70, 110, 180))
        draw.text((left + 10, base + 2), label, fill="black")
    if reference is not None:
        y = base - reference * scale
        for x in range(margin, width - margin, 8):
            draw.line([x, y, x + 4, y], fill=(200, 60, 60))
    return save_picture(picture, path)
