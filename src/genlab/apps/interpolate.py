"""Latent interpolation: decode a path between the codes of two images (linear or slerp) into a
PNG strip and an animated GIF."""

from __future__ import annotations

from pathlib import Path

from ..errors import GenlabError
from ..registry import Application, register_application
from ..tasks.interpolate import interpolate
from .common import add_inputs, image_files, input_source

EXAMPLES = """examples:
  genlab apply interpolate runs/vae-mnist-... a.png b.png --steps 10 -o path.png --gif path.gif
  genlab apply interpolate runs/vae-mnist-... --against mnist:test --method linear --seed 3"""


def add_arguments(p) -> None:
    add_inputs(p)
    p.add_argument("--steps", type=int, default=10, help="images along the path, ends included (default 10)")
    p.add_argument("--method", choices=("slerp", "linear"), default="slerp")
    p.add_argument("--class", dest="label", type=int, help="class (conditional models)")
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


INTERPOLATE = register_application(Application(
    name="interpolate",
    summary="decode a latent path between two images (linear or slerp): PNG strip and animated GIF",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="encode",
    function=interpolate,
))
