"""Latent traversal: vary one latent dimension at a time from an image's code (or z = 0) into a
PNG grid and an animated GIF."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..limits import (CLASS_OPTION, MAX_CLASS, MAX_PATH_STEPS, MAX_TRAVERSE_DIMS, MAX_TRAVERSE_SPAN, FormFields,
                      bounded_float, bounded_int)
from ..registry import Application, HttpRoute, register_application
from ..tasks.interpolate import traverse
from ..tasks.images import gif_bytes
from .common import add_inputs, b64, frame_items, input_source, load_uploads

EXAMPLES = """examples:
  genlab apply traverse runs/vae-mnist-... digit.png --dims 8 --span 3 -o traverse.png --gif traverse.gif
  genlab apply traverse runs/vae-mnist-...              # from the prior's centre, dimensions 0..7"""


def add_arguments(p) -> None:
    add_inputs(p, "?")
    p.add_argument("--dims", type=bounded_int("--dims", 1, MAX_TRAVERSE_DIMS), default=8, help="dimensions to traverse, most informative first (default 8)")
    p.add_argument("--span", type=bounded_float("--span", 0.0, MAX_TRAVERSE_SPAN), default=3.0, help="from -SPAN to +SPAN prior standard deviations (default 3)")
    p.add_argument("--steps", type=bounded_int("--steps", 2, MAX_PATH_STEPS), default=9, help="values per dimension (default 9)")
    p.add_argument("--class", dest="label", type=CLASS_OPTION, help="class (conditional models)")
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


class TraverseForm(FormFields):
    dims: int = Field(8, ge=1, le=MAX_TRAVERSE_DIMS, description="dimensions to traverse, most informative first")
    span: float = Field(3.0, gt=0, le=MAX_TRAVERSE_SPAN, description="from -span to +span prior standard deviations")
    steps: int = Field(9, ge=2, le=MAX_PATH_STEPS, description="values per dimension")
    class_: int | None = Field(None, alias="class", ge=0, le=MAX_CLASS, description="class (conditional models)")


def serve(model, form: TraverseForm, files: dict):
    """{model, dims: [traversed dimensions], span, steps, nrow, width, height, data: [{b64_json, dim, value}]
    (row by row: one row of `steps` frames per dimension), gif_b64_json}; from the optional image's code,
    else from z = 0."""
    import torch

    model.require("decode", "latent traversal")
    data_range = model.data_range
    upload = files.get("image")
    images = None if upload is None else load_uploads([upload], tuple(model.config.input_shape), data_range)[0]
    grid, dims = traverse(model, images, dims=form.dims, span=form.span, steps=form.steps, label=form.class_)
    values = torch.linspace(-form.span, form.span, form.steps).tolist()
    items = frame_items(grid.flatten(0, 1), data_range)
    for i, item in enumerate(items):
        row, column = divmod(i, form.steps)
        item.update(dim=dims[row], value=values[column])
    return {"model": form.model, "dims": dims, "span": form.span, "steps": form.steps, "nrow": form.steps,
            "start": "image" if images is not None else "z = 0",
            "width": int(grid.shape[-1]), "height": int(grid.shape[-2]), "data": items,
            "gif_b64_json": b64(gif_bytes([grid[:, j] for j in range(grid.shape[1])], data_range, nrow=len(dims)))}


TRAVERSE = register_application(Application(
    name="traverse",
    summary="vary one latent dimension at a time: PNG grid and animated GIF",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="decode",
    function=traverse,
    http=HttpRoute("/v1/images/traverse", "vary one latent dimension at a time: frames and an animated GIF",
                   TraverseForm, serve, files={"image": "optional"}),
    studio=True,
))
