"""Image input and output for the tasks: any PNG/JPEG in, the model's shape out; masks; strips and GIFs.

A model takes images of one shape (C, H, W) in one value range. A person's file may have
another size or mode (RGB, palette, alpha, 16-bit grey), so `load_image` converts the mode
and resizes, and says so on stderr: a silent conversion would hide why a result looks
different from what was expected. A file Pillow cannot decode is a GenlabError naming it.

Masks mark the *missing* pixels: white (> 127) in a mask image, or a spec drawn at the
input image's own size (so `box:8,8,12,12` means the same pixels whether or not the image
is then resized):

    box:LEFT,TOP,WIDTH,HEIGHT   a rectangle, in pixels of the input image
    half:top|bottom|left|right  one half of the image
    random:FRACTION             that share of pixels, drawn from the seed
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import GenlabError, InputTooLarge, warn
from ..fileio import atomic_write_bytes
from ..limits import MAX_FILE_PIXELS
from ..imageio import display_scale, grid_picture, image_picture, save_grid, save_picture

GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}
MASK_SPECS = "box:LEFT,TOP,WIDTH,HEIGHT, half:top|bottom|left|right, random:FRACTION, or a PNG (white = missing)"


def _open(source: str | Path | bytes, what: str = "image", name: str | None = None) -> Image.Image:
    """A decoded Pillow image from a file path, or from the bytes of an upload (`name` names it in messages)."""
    if isinstance(source, (bytes, bytearray)):
        name, stream = name or f"the {what}", io.BytesIO(source)
    else:
        stream = Path(source)
        name = name or str(stream)
        if not stream.is_file():
            raise GenlabError(f"no {what} file at {stream}", "pass the path of a PNG or JPEG file")
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning names its install path; the check below is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(stream)
            width, height = picture.size  # from the header: nothing decoded yet
            if width * height > MAX_FILE_PIXELS:
                raise InputTooLarge(f"{what} {name} is {width}x{height} pixels, more than the limit of "
                                    f"{MAX_FILE_PIXELS:,} (decoding it would take {width * height * 4 / 2**30:.1f} GiB)",
                                    "shrink the image first (the models work at their training size, e.g. 28x28)")
            picture.load()  # decode now: a truncated file fails here, not deep inside a conversion
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise GenlabError(f"cannot read {what} {name}: not a readable image ({e})",
                          "pass a PNG or JPEG file; the file may be damaged") from None
    return picture


def load_image(source: str | Path | bytes, shape: tuple[int, ...], data_range=(0.0, 1.0), *,
               name: str | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file (a path, or the bytes of an upload called `name`) as a [1, C, H, W] float
    tensor of `shape` (C, H, W) in `data_range`, and the image's own size (width, height),
    which mask specs are drawn at."""
    picture = _open(source, name=name)
    path = name or (source if not isinstance(source, (bytes, bytearray)) else "the image")  # for notices
    channels, height, width = shape
    target_mode = "L" if channels == 1 else "RGB"
    colour = picture.mode not in GREY_MODES
    if picture.mode == "P":
        picture = picture.convert("RGBA")  # palette images: through RGBA, keeping any transparency
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        # Transparent pixels become black, the background of the built-in data sets.
        background = Image.new("RGBA", picture.size, (0, 0, 0, 255))
        picture = Image.alpha_composite(background, picture.convert("RGBA"))
        warn(f"{path}: transparency flattened onto black")
    if channels == 1 and colour:
        warn(f"{path}: converted the colour image to grayscale for this 1-channel model")
    elif channels == 3 and not colour:
        warn(f"{path}: converted the grayscale image to RGB for this 3-channel model")
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: scaled to 8 bits by its own range
        values = np.asarray(picture, dtype=np.float64)
        span = max(values.max() - values.min(), 1e-12)
        picture = Image.fromarray(((values - values.min()) / span * 255.0 + 0.5).astype(np.uint8), mode="L")
    picture = picture.convert(target_mode)
    original_size = picture.size
    if original_size != (width, height):
        warn(f"{path}: resized from {original_size[0]}x{original_size[1]} to {width}x{height}, the model's image size")
        # Lanczos keeps edges when shrinking (Pillow's antialiased filter); bicubic when enlarging.
        shrinking = original_size[0] > width or original_size[1] > height
        picture = picture.resize((width, height), Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC)
    pixels = np.asarray(picture, dtype=np.uint8)
    pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    low, high = data_range
    image = torch.from_numpy(pixels.copy()).float().div(255.0) * (high - low) + low  # a copy: Pillow's buffer is read-only
    return image[None], original_size


def load_images(paths: list[str | Path], shape: tuple[int, ...], data_range=(0.0, 1.0)) -> torch.Tensor:
    """Several image files as one [N, C, H, W] batch (see `load_image`)."""
    return torch.cat([load_image(path, shape, data_range)[0] for path in paths])


# ----------------------------------------------------------------------------- masks


def make_mask(spec: str | bytes, size: tuple[int, int], target: tuple[int, int], generator: torch.Generator | None = None,
              *, name: str | None = None) -> torch.Tensor:
    """A [1, 1, H, W] bool mask (True = missing) at the model's size `target` (H, W), from a spec,
    or a mask image (a path, or the bytes of an upload called `name`) drawn at the input image's
    `size` (width, height)."""
    width, height = size
    uploaded = isinstance(spec, (bytes, bytearray))
    label = name or ("the uploaded mask" if uploaded else spec)
    kind, _, arg = ("", "", "") if uploaded else spec.partition(":")
    if kind == "box" and arg:
        try:
            left, top, box_w, box_h = (int(v) for v in arg.split(","))
        except ValueError:
            raise GenlabError(f"cannot read mask {spec!r}", "write a box as box:LEFT,TOP,WIDTH,HEIGHT, e.g. box:8,8,12,12") from None
        if box_w < 1 or box_h < 1 or left < 0 or top < 0 or left + box_w > width or top + box_h > height:
            raise GenlabError(f"mask {spec!r} does not lie inside the {width}x{height} image",
                              "LEFT + WIDTH and TOP + HEIGHT must not exceed the image's size, in its own pixels")
        missing = np.zeros((height, width), dtype=bool)
        missing[top : top + box_h, left : left + box_w] = True
    elif kind == "half" and arg in ("top", "bottom", "left", "right"):
        missing = np.zeros((height, width), dtype=bool)
        if arg == "top":
            missing[: height // 2] = True
        elif arg == "bottom":
            missing[height // 2 :] = True
        elif arg == "left":
            missing[:, : width // 2] = True
        else:
            missing[:, width // 2 :] = True
    elif kind == "random" and arg:
        try:
            fraction = float(arg)
        except ValueError:
            fraction = -1.0
        if not 0.0 < fraction <= 1.0:
            raise GenlabError(f"cannot read mask {spec!r}", "write random:FRACTION with a fraction in (0, 1], e.g. random:0.5")
        missing = (torch.rand((height, width), generator=generator) < fraction).numpy()
    elif kind in ("box", "half", "random") and not Path(spec).exists():
        raise GenlabError(f"cannot read mask {spec!r}", f"a mask is {MASK_SPECS}")
    else:
        picture = _open(spec, "mask", name=name)
        if picture.size != (width, height):
            raise GenlabError(
                f"the mask {label} is {picture.size[0]}x{picture.size[1]} but the image is {width}x{height}",
                "draw the mask at the image's size (white = missing), or use a spec such as box:8,8,12,12",
            )
        missing = np.asarray(picture.convert("L"), dtype=np.uint8) > 127
    mask = torch.from_numpy(np.ascontiguousarray(missing))[None, None]
    if (height, width) != tuple(target):
        # Nearest neighbour keeps a mask binary; a pixel is missing if its nearest source pixel is.
        mask = torch.nn.functional.interpolate(mask.float(), size=tuple(target), mode="nearest") > 0.5
    if not mask.any():
        resized = f" at the model's {target[1]}x{target[0]} size" if (height, width) != tuple(target) else ""
        raise GenlabError(f"the mask {label} marks no pixel as missing{resized}",
                          "white (any value above 127) marks the pixels to fill in; a box or half spec marks a region")
    return mask


# ----------------------------------------------------------------------------- output


def save_image(path: str | Path, image: torch.Tensor, data_range=(0.0, 1.0)) -> Path:
    """One [C, H, W] (or [1, C, H, W]) image as a PNG at its own resolution: the exact result pixels."""
    return save_picture(image_picture(image, data_range), path)


def save_strip(path: str | Path, images: torch.Tensor, data_range=(0.0, 1.0), nrow: int | None = None) -> Path:
    """Images [N, C, H, W] as one grid PNG, `nrow` per row, enlarged so small images are visible."""
    return save_grid(path, images, data_range, nrow, scale=display_scale(images.shape[-2]))


def gif_bytes(frames: list[torch.Tensor], data_range=(0.0, 1.0), nrow: int | None = None, duration_ms: int = 120,
              bounce: bool = True) -> bytes:
    """An animated GIF, one frame per [N, C, H, W] batch (a grid when N > 1), in memory; `bounce`
    plays it forwards then backwards so the loop has no jump."""
    scale = display_scale(frames[0].shape[-2])
    pictures = [grid_picture(f, data_range, nrow, scale, padding=1 if len(f) > 1 else 0) for f in frames]
    if bounce and len(pictures) > 2:
        pictures = pictures + pictures[-2:0:-1]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


def save_gif(path: str | Path, frames: list[torch.Tensor], data_range=(0.0, 1.0), nrow: int | None = None,
             duration_ms: int = 120, bounce: bool = True) -> Path:
    """`gif_bytes` written to `path` (atomically; a clear error if it cannot be written)."""
    path = Path(path)
    data = gif_bytes(frames, data_range, nrow, duration_ms, bounce)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {e.strerror or e}", "choose a writable output path") from None
    return path


# ----------------------------------------------------------------------------- data set images


def dataset_images(model, against: str | None, n: int | None, seed: int = 0, shape: tuple[int, ...] | None = None):
    """n images (grey levels, never binarised) and labels of a data set split, in the model's
    value range: `against` is DATASET[:SPLIT] or a split of the model's own data (default: test).
    A seeded random subset when n is smaller than the split."""
    from ..config import from_dict
    from ..data import ImageDataSpec, load_image_data
    from ..data.splits import parse_against

    config = model.artifact_config
    if config is None:  # a model built in Python, not loaded from a directory: it has no data set of its own
        name, split = parse_against(against, "")
        if not name:
            raise GenlabError("this model was not loaded from a model directory, so it has no data set of its own",
                              "name the data set, e.g. --against mnist:test")
        config = {"data": {"name": name}}
    name, split = parse_against(against, config["data"]["name"])
    own = {k: v for k, v in config["data"].items() if k not in ("binarize", "only_classes")}
    values = {**own, "name": name, "binarize": "none"}
    if name != config["data"]["name"]:  # another data set: only the value scale carries over
        values = {"name": name, "scale": own.get("scale", "unit")}
    data = load_image_data(from_dict(ImageDataSpec, values, "data"))
    shape = tuple(shape or model.config.input_shape)
    if tuple(data.shape) != shape:
        raise GenlabError(f"the model takes {shape} images but {name} has {tuple(data.shape)}",
                          "use a data set of the model's image shape, or pass image files (they are resized)")
    part = data.split(split)
    total = len(part)
    if total == 0:
        raise GenlabError(f"the {split} split of {name} is empty", "use another split, e.g. --against mnist:test")
    n = total if n is None else n
    if n < 1:
        raise GenlabError(f"-n must be a positive integer, got {n}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: min(n, total)]
    order = order.sort().values  # a subset in the split's own order
    images = data.to_float(part.images[order])
    return images, part.labels[order]
