"""Super-resolution: upscale x2 or x4 with a superres model, beside bicubic interpolation."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from ..limits import FormFields
from ..registry import Application, HttpRoute, register_application
from ..tasks.superres import evaluate_superres, superres
from .common import add_inputs, image_reply, input_source, load_uploads, print_table, save_result

EXAMPLES = """examples:
  genlab apply superres runs/sr-mnist-x2-... small.png -o big.png          # the file is the low-resolution input
  genlab apply superres runs/sr-mnist-x4-... digit.png --evaluate -o x4.png  # the file is the truth: shrink, upscale, compare
  genlab apply superres runs/sr-mnist-x2-... --against mnist:test -n 1000 -o superres.png

Train a model first: genlab train sr-mnist-x2 (or sr-mnist-x4)."""


def add_arguments(p) -> None:
    add_inputs(p, "?", 1000)
    p.add_argument("--evaluate", action="store_true",
                   help="treat the image file as the high-resolution truth: shrink, upscale, compare")
    p.add_argument("-o", "--output", default="superres.png", help="PNG: the upscaled image (one file) or a comparison grid")


def run(model, args) -> None:
    from ..tasks.images import dataset_images, load_image, save_image

    model.require("upscale", "super-resolution")
    source = input_source(args)
    config, data_range = model.config, model.data_range
    if source == "files" and not args.evaluate:
        low_res, _ = load_image(args.images, config.low_res_shape, data_range)
        path = save_image(args.output, superres(model, low_res)[0], data_range)
        shape = config.low_res_shape
        print(f"upscaled {shape[2]}x{shape[1]} x{config.scale} -> {shape[2] * config.scale}x{shape[1] * config.scale}; "
              "no truth to compare with (use --evaluate with a high-resolution image for PSNR vs bicubic)")
        print(f"wrote {path}")
        return
    high_res = load_image(args.images, tuple(config.input_shape), data_range)[0] if source == "files" else \
        dataset_images(model, args.against, args.n, args.seed)[0]
    result = evaluate_superres(model, high_res)
    m = result["metrics"]
    print_table(f"x{m['scale']} super-resolution on {m['n']} image(s) (inputs made by {config.downsample} downscaling)",
                [("PSNR model", f"{m['psnr']:.2f} dB", f"SSIM {m['ssim']:.4f}"),
                 ("PSNR bicubic (baseline)", f"{m['psnr_bicubic']:.2f} dB", f"SSIM {m['ssim_bicubic']:.4f}"),
                 ("gain", f"{m['psnr_gain_db']:+.2f} dB", "")])
    nearest = F.interpolate(result["low_res"], scale_factor=config.scale, mode="nearest")  # the input, pixels enlarged
    save_result(args.output, source, data_range, result["upscaled"],
                {"low-res input": nearest, "bicubic": result["bicubic"], "model": result["upscaled"], "original": high_res})


class UpscaleForm(FormFields):
    response_format: Literal["b64_json", "png"] = "b64_json"


def serve(model, form: UpscaleForm, files: dict):
    """The upscaled image; the upload is the low-resolution input."""
    model.require("upscale", "super-resolution")
    value_range = model.data_range
    low_res, _ = load_uploads([files["image"]], model.config.low_res_shape, value_range)
    return image_reply(superres(model, low_res)[0], value_range, {"scale": model.config.scale}, form.response_format,
                       form.model)


SUPERRES = register_application(Application(
    name="superres",
    summary="upscale x2 or x4 with a superres model; compared with bicubic",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="upscale",
    function=superres,
    http=HttpRoute("/v1/images/upscale", "x2 / x4 super-resolution (superres models)", UpscaleForm, serve, files={"image": "one"}),
    studio=True,
))
