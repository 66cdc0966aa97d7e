"""Latent traversal: vary one latent dimension at a time from an image's code (or z = 0) into a
PNG grid and an animated GIF."""

from __future__ import annotations

from pathlib import Path

from ..registry import Application, register_application
from ..tasks.interpolate import traverse
from .common import add_inputs, input_source

EXAMPLES = """examples:
  genlab apply traverse runs/vae-mnist-... digit.png --dims 8 --span 3 -o traverse.png --gif traverse.gif
  genlab apply traverse runs/vae-mnist-...              # from the prior's centre, dimensions 0..7"""


def add_arguments(p) -> None:
    add_inputs(p, "?")
    p.add_argument("--dims", type=int, default=8, help="dimensions to traverse, most informative first (default 8)")
    p.add_argument("--span", type=float, default=3.0, help="from -SPAN to +SPAN prior standard deviations (default 3)")
    p.add_argument("--steps", type=int, default=9, help="values per dimension (default 9)")
    p.add_argument("--class", dest="label", type=int, help="class (conditional models)")
    p.add_argument("-o", "--output", default="traverse.png", help="PNG grid, one row per dimension (default traverse.png)")
    p.add_argument("--gif", help="animated GIF (default: the grid's name with .gif)")


def run(model, args) -> None:
    from ..tasks.images import dataset_images, load_image, save_gif, save_strip

    model.require("decode", "latent traversal")
    images = None
    if args.images or args.against:
        shape = tuple(model.config.input_shape)
        images = load_image(args.images, shape, model.data_range)[0] if input_source(args) == "files" else \
            dataset_images(model, args.against, 1, args.seed)[0]
    grid, dims = traverse(model, images, dims=args.dims, span=args.span, steps=args.steps, label=args.label)
    data_range = model.data_range
    strip = save_strip(args.output, grid.flatten(0, 1), data_range, nrow=args.steps)
    gif = save_gif(args.gif or Path(args.output).with_suffix(".gif"), [grid[:, j] for j in range(grid.shape[1])],
                   data_range, nrow=len(dims))
    start = "the image's code" if images is not None else "z = 0"
    print(f"traversed dimensions {dims} from {start}, {-args.span:g}..{args.span:g}: wrote {strip} (one row each) "
          f"and {gif}")


TRAVERSE = register_application(Application(
    name="traverse",
    summary="vary one latent dimension at a time: PNG grid and animated GIF",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="decode",
    function=traverse,
))
