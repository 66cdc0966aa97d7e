"""Latent interpolation: decode a path between the codes of two images (linear or slerp) into a
PNG strip and an animated GIF."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..errors import GenlabError, InvalidInput
from ..limits import CLASS_OPTION, MAX_CLASS, MAX_PATH_STEPS, FormFields, bounded_int
from ..registry import Application, HttpRoute, register_application
from ..tasks.interpolate import interpolate
from ..tasks.images import gif_bytes
from .common import add_inputs, b64, frame_items, image_files, input_source, load_uploads

EXAMPLES = """examples:
  genlab apply interpolate runs/vae-mnist-... a.png b.png --steps 10 -o path.png --gif path.gif
  genlab apply interpolate runs/vae-mnist-... --against mnist:test --method linear --seed 3"""


def add_arguments(p) -> None:
    add_inputs(p)
    p.add_argument("--steps", type=bounded_int("--steps", 2, MAX_PATH_STEPS), default=10, help="images along the path, ends included (default 10)")
    p.add_argument("--method", choices=("slerp", "linear"), default="slerp")
    p.add_argument("--class", dest="label", type=CLASS_OPTION, help="class (conditional models)")
    p.add_argument("-o", "--output", default="interpolation.png", help="PNG strip (default interpolation.png)")
    p.add_argument("--gif", help="animated GIF (default: the strip's name with .gif)")


def _two_images(model, args):
    from ..tasks.images import dataset_images, load_images

    shape, data_range = tuple(model.config.input_shape), model.data_range
    if input_source(args) == "files":
        files = image_files(args)
        if len(files) != 2:
            raise GenlabError(f"interpolation needs exactly two images, got {len(files)}",
                              "genlab apply interpolate MODEL a.png b.png")
        return load_images(files, shape, data_range)
    images, _ = dataset_images(model, args.against, 2, args.seed)  # a seeded random pair
    return images


def run(model, args) -> None:
    from ..tasks.images import save_gif, save_strip

    model.require("encode", "latent interpolation between images")
    pair = _two_images(model, args)
    frames = interpolate(model, pair[:1], pair[1:], steps=args.steps, method=args.method, label=args.label)
    data_range = model.data_range
    strip = save_strip(args.output, frames, data_range, nrow=len(frames))
    gif = save_gif(args.gif or Path(args.output).with_suffix(".gif"), [f[None] for f in frames], data_range)
    print(f"{args.method} interpolation, {args.steps} steps: wrote {strip} and {gif}")


# ----------------------------------------------------------------------------- HTTP


class InterpolateForm(FormFields):
    steps: int = Field(10, ge=2, le=MAX_PATH_STEPS, description="images along the path, ends included")
    method: Literal["slerp", "linear"] = "slerp"
    class_: int | None = Field(None, alias="class", ge=0, le=MAX_CLASS, description="class (conditional models)")


def serve(model, form: InterpolateForm, files: dict):
    """{model, method, steps, width, height, data: [{b64_json}] (the frames, first = the first image's
    decoding), gif_b64_json (the animated GIF)}: exactly two images, sent as two `image` fields."""
    uploads = files["image"]
    if len(uploads) != 2:
        raise InvalidInput(f"interpolation needs exactly two images, got {len(uploads)}",
                           "send two image fields, e.g. -F image=@a.png -F image=@b.png", param="image")
    model.require("encode", "latent interpolation between images")
    data_range = model.data_range
    pair, _ = load_uploads(uploads, tuple(model.config.input_shape), data_range)
    frames = interpolate(model, pair[:1], pair[1:], steps=form.steps, method=form.method, label=form.class_)
    return {"model": form.model, "method": form.method, "steps": form.steps,
            "width": int(frames.shape[-1]), "height": int(frames.shape[-2]), "nrow": form.steps,
            "data": frame_items(frames, data_range),
            "gif_b64_json": b64(gif_bytes([f[None] for f in frames], data_range))}


INTERPOLATE = register_application(Application(
    name="interpolate",
    summary="decode a latent path between two images (linear or slerp): PNG strip and animated GIF",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="encode",
    function=interpolate,
    http=HttpRoute("/v1/images/interpolate", "decode a latent path between two images: frames and an animated GIF",
                   InterpolateForm, serve, files={"image": "many"}, max_files=2),
    studio=True,
))
