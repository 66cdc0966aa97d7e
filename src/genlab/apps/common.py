"""What the applications share: reading their inputs (image files, a data set split, uploads)
and presenting their results (tables, comparison grids, image replies)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import GenlabError, InputTooLarge, UnreadableInput
from ..imageio import image_picture, png_bytes
from ..limits import MAX_IMAGE_PIXELS, SEED_OPTION, bounded_int

# ----------------------------------------------------------------------------- command line


def add_inputs(parser, nargs: str = "*", default_n: int | None = None) -> None:
    """IMAGE arguments, or --against DATASET[:SPLIT] with -n, and --seed."""
    parser.add_argument("images", nargs=nargs, metavar="IMAGE",
                        help="image file(s): PNG, JPEG, ...; converted and resized to the model's shape")
    parser.add_argument("--against", metavar="DATASET[:SPLIT]",
                        help="use a data set split instead of files, e.g. mnist:test or test")
    parser.add_argument("-n", type=bounded_int("-n", 1, 1_000_000), default=default_n,
                        help=f"images from the split (default: {default_n or 'all'})")
    parser.add_argument("--seed", type=SEED_OPTION, default=0, help="fixes every random choice (default 0)")


def image_files(args) -> list[str]:
    return [f for f in (args.images if isinstance(args.images, list) else [args.images]) if f]


def input_source(args) -> str:
    """'files' or 'dataset', after checking that exactly one was given."""
    files = image_files(args)
    if files and args.against:
        raise GenlabError("give image files or --against, not both")
    if args.n is not None and args.n < 1:
        raise GenlabError(f"-n must be a positive integer, got {args.n}")
    if files:
        return "files"
    if not args.against:
        raise GenlabError("no input", "give an image file, or --against DATASET[:SPLIT] (e.g. --against mnist:test)")
    return "dataset"


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(title)
    for name, value, note in rows:
        print(f"  {name:<30}{value:>12}  {note}")


def save_result(output: str, source: str, data_range, result, columns: dict) -> None:
    """Write -o: for an image file, the result itself at its own resolution; for a data set, a
    comparison grid of the first 8 images, one row each with `columns` (name -> images) side by side."""
    from ..tasks.images import save_image, save_strip

    if source == "files":
        path = save_image(output, result[0], data_range)
    else:
        rows = torch.stack(list(columns.values()), dim=1)[:8].flatten(0, 1)
        path = save_strip(output, rows, data_range, nrow=len(columns))
        print(f"grid rows: {' | '.join(columns)}")
    print(f"wrote {path}")


def write_output(path: str | Path, write) -> Path:
    """Run write(path) after making its folder; an OSError becomes one line naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {e.strerror or e}", "choose a writable output path") from None
    return path


# ----------------------------------------------------------------------------- HTTP uploads


@dataclass
class Upload:
    """An uploaded file, read (with a size limit) by the server before the job starts."""

    param: str  # the form field it came in
    filename: str
    data: bytes


def check_image(upload: Upload) -> None:
    """A readable image of bounded size, or an error naming the field (413 / 415 when served)."""
    try:
        with Image.open(io.BytesIO(upload.data)) as picture:
            width, height = picture.size  # from the header: nothing decoded yet
            if width * height > MAX_IMAGE_PIXELS:
                raise InputTooLarge(f"{upload.param} {upload.filename!r} is {width}x{height} pixels, more than the "
                                    f"limit of {MAX_IMAGE_PIXELS:,}", "send a smaller image (the models work at "
                                    "their training size, e.g. 28x28, and resize anything larger)", param=upload.param)
            picture.load()
    except InputTooLarge:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise UnreadableInput(f"{upload.param} {upload.filename!r} is not a readable image ({e})",
                              "send a PNG or JPEG file", param=upload.param) from None


def load_uploads(uploads: list[Upload], shape, value_range) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Uploaded images as one [N, C, H, W] batch in the model's shape and range (converted and
    resized by genlab.tasks.images.load_image), with each image's own (width, height)."""
    from ..tasks.images import load_image

    for upload in uploads:
        check_image(upload)
    loaded = [load_image(upload.data, tuple(shape), value_range, name=f"{upload.param} {upload.filename!r}")
              for upload in uploads]
    return torch.cat([image for image, _ in loaded]), [size for _, size in loaded]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_png(image: torch.Tensor, value_range) -> bytes:
    """One [C, H, W] image as PNG bytes at its own resolution (the exact result pixels)."""
    return png_bytes(image_picture(image, value_range))


def frame_items(images: torch.Tensor, value_range) -> list[dict]:
    """[N, C, H, W] images as [{b64_json}], each a PNG at its own resolution."""
    return [{"b64_json": b64(image_png(image, value_range))} for image in images]


def image_reply(image: torch.Tensor, value_range, extra: dict, response_format: str, model: str):
    """One [C, H, W] result image as JSON ({data: [{b64_json}], width, height, ...extra}) or a PNG."""
    import time

    from ..registry import FileReply

    png = image_png(image, value_range)
    if response_format == "png":
        return FileReply(png, "image/png")
    return {"created": int(time.time()), "model": model, "data": [{"b64_json": b64(png)}],
            "width": int(image.shape[-1]), "height": int(image.shape[-2]), **extra}

