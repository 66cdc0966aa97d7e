"""Inpainting: fill the masked pixels of an image with a VAE or GAN (latent search or resampling),
beside filling them with the mean of the known pixels."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..errors import GenlabError, InvalidInput
from ..limits import (CLASS_OPTION, MAX_CLASS, MAX_CLI_RESTARTS, MAX_INPAINT_STEPS, MAX_OPTIMIZER_STEPS, MAX_RESTARTS,
                      FormFields, Seed, bounded_int)
from ..registry import Application, HttpRoute, register_application
from ..tasks.inpaint import inpaint, masked_psnr, mean_fill, require_latent_generator
from .common import add_inputs, image_reply, input_source, load_uploads, print_table, save_result, check_image

MASK_SPEC_KINDS = ("box:", "half:", "random:")

EXAMPLES = """examples:
  genlab apply inpaint runs/vae-mnist-... digit.png --mask box:8,8,12,12 -o filled.png
  genlab apply inpaint runs/vae-mnist-... digit.png --mask mask.png      # white = missing, same size as the image
  genlab apply inpaint runs/vae-mnist-... --against mnist:test -n 200 --mask half:bottom -o inpaint.png
  genlab apply inpaint runs/dcgan-mnist-... digit.png --mask box:0,14,28,14 --restarts 8   # GAN latent search

Masks: box:LEFT,TOP,WIDTH,HEIGHT (pixels of the input image), half:top|bottom|left|right,
random:FRACTION, or a PNG where white marks the missing pixels. Known pixels are never
changed. The PSNR is over the masked pixels, against what the input has there, beside
filling them with the mean of the known pixels."""


def add_arguments(p) -> None:
    add_inputs(p, "?", 200)
    p.add_argument("--mask", required=True, help="box:LEFT,TOP,WIDTH,HEIGHT | half:SIDE | random:FRACTION | PNG (white = missing)")
    p.add_argument("--method", choices=("optimize", "resample"), default="optimize",
                   help="optimize: latent search (default; VAE or GAN); resample: conditional resampling chain (VAE)")
    p.add_argument("--steps", type=bounded_int("--steps", 1, MAX_OPTIMIZER_STEPS), default=200, help="optimisation (or resampling) steps (default 200)")
    p.add_argument("--restarts", type=bounded_int("--restarts", 1, MAX_CLI_RESTARTS), default=4, help="starting points of the latent search (default 4)")
    p.add_argument("--class", dest="label", type=CLASS_OPTION, help="class to fill in with (conditional models)")
    p.add_argument("-o", "--output", default="inpaint.png", help="PNG: the filled image (one file) or a comparison grid")


def run(model, args) -> None:
    from ..tasks.images import dataset_images, load_image, make_mask

    require_latent_generator(model, "inpainting")  # fail on the model before reading any file
    source = input_source(args)
    shape, data_range = tuple(model.config.input_shape), model.data_range
    generator = torch.Generator().manual_seed(args.seed)
    if source == "files":
        images, size = load_image(args.images, shape, data_range)
    else:
        images, _ = dataset_images(model, args.against, args.n, args.seed)
        size = (shape[2], shape[1])
    mask = make_mask(args.mask, size, shape[1:], generator)
    result = inpaint(model, images, mask, method=args.method, steps=args.steps, restarts=args.restarts,
                     labels=args.label, seed=args.seed)
    baseline = mean_fill(images, mask, data_range)
    model_psnr, baseline_psnr = masked_psnr(result, images, mask, data_range), masked_psnr(baseline, images, mask, data_range)
    pixels = int(mask.sum())
    what = "against the input's own pixels there" if source == "files" else f"on {len(images)} images of {args.against}"
    print_table(f"inpainting ({args.method}, {pixels} of {shape[1] * shape[2]} pixels masked); PSNR on the masked "
                f"pixels, {what}",
                [("model", f"{model_psnr:.2f} dB", f"{model.family}"),
                 ("mean fill (baseline)", f"{baseline_psnr:.2f} dB",
                  "mean of the known pixels" if pixels < mask.numel() else "mid-grey: no pixel is known"),
                 ("gain", f"{model_psnr - baseline_psnr:+.2f} dB", "")])
    masked = torch.where(mask.expand_as(images), sum(data_range) / 2, images)  # missing pixels shown mid-grey
    save_result(args.output, source, data_range, result,
                {"masked input": masked, "mean fill": baseline, "inpainted": result, "original": images})


class InpaintForm(FormFields):
    mask_spec: str | None = Field(None, max_length=64, description="box:LEFT,TOP,WIDTH,HEIGHT | half:top|bottom|left|"
                                  "right | random:FRACTION (or upload a mask file)")
    method: Literal["optimize", "resample"] = "optimize"
    steps: int = Field(100, ge=1, le=MAX_INPAINT_STEPS)
    restarts: int = Field(4, ge=1, le=MAX_RESTARTS)
    class_: int | None = Field(None, alias="class", ge=0, le=MAX_CLASS, description="class to fill in with (conditional models)")
    seed: int = Seed
    response_format: Literal["b64_json", "png"] = "b64_json"


def serve(model, form: InpaintForm, files: dict):
    """The filled image; the mask is an uploaded file (white = missing, the image's size) or mask_spec."""
    from ..tasks.images import make_mask

    mask_file = files.get("mask")
    if (mask_file is None) == (form.mask_spec is None):
        raise InvalidInput("give exactly one of mask (an image file, white = missing) and mask_spec",
                           "e.g. -F mask=@mask.png, or -F mask_spec=box:2,2,4,4", param="mask")
    if form.mask_spec is not None and not form.mask_spec.startswith(MASK_SPEC_KINDS):  # never a server path
        raise GenlabError(f"cannot read mask_spec {form.mask_spec!r}", "write box:LEFT,TOP,WIDTH,HEIGHT, "
                          "half:top|bottom|left|right or random:FRACTION; upload a mask image as the mask file",
                          param="mask_spec")
    require_latent_generator(model, "inpainting")
    shape, value_range = tuple(model.config.input_shape), model.data_range
    images, sizes = load_uploads([files["image"]], shape, value_range)
    generator = torch.Generator().manual_seed(form.seed)
    if mask_file is None:
        missing = make_mask(form.mask_spec, sizes[0], shape[1:], generator)
    else:
        check_image(mask_file)
        missing = make_mask(mask_file.data, sizes[0], shape[1:], generator, name=repr(mask_file.filename))
    result = inpaint(model, images, missing, method=form.method, steps=form.steps, restarts=form.restarts,
                     labels=form.class_, seed=form.seed)
    return image_reply(result[0], value_range, {"masked_pixels": int(missing.sum())}, form.response_format, form.model)


INPAINT = register_application(Application(
    name="inpaint",
    summary="fill the masked part of an image (VAE latent optimisation or resampling; GAN latent search)",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="decode",
    function=inpaint,
    http=HttpRoute("/v1/images/inpaint", "fill the masked pixels of an image (VAE or GAN)", InpaintForm, serve,
                   files={"image": "one", "mask": "optional"}),
    studio=True,
))
