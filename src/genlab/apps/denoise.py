"""Denoising: remove Gaussian or salt-and-pepper noise with a denoiser, beside the noisy input and
the best tuned classical filter."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..data.splits import parse_against
from ..limits import FormFields, Seed
from ..registry import Application, HttpRoute, register_application
from ..tasks.denoise import denoise, evaluate_denoise, parse_noise
from .common import add_inputs, b64, image_png, image_reply, input_source, load_uploads, print_table, save_result

EXAMPLES = """examples:
  genlab apply denoise runs/denoise-mnist-... noisy.png -o clean.png                 # the file is noisy
  genlab apply denoise runs/denoise-mnist-... digit.png --noise gaussian:0.3 -o d.png  # add noise, then compare
  genlab apply denoise runs/denoise-mnist-... --against mnist:test -n 1000 --noise salt-pepper:0.2

Noise: gaussian:SIGMA or salt-pepper:SHARE, in units of the value range ([0, 1] images).
The classical filter is the best of scikit-image's Gaussian blur, median, total variation and
non-local means over a grid of strengths, chosen on held-out images with the same noise."""


def add_arguments(p) -> None:
    add_inputs(p, "?", 1000)
    p.add_argument("--noise", help="add this noise first (gaussian:0.3, salt-pepper:0.2) and compare; "
                   "default for --against: gaussian:0.3")
    p.add_argument("-o", "--output", default="denoise.png", help="PNG: the denoised image (one file) or a comparison grid")


def run(model, args) -> None:
    from ..tasks.images import dataset_images, load_image, save_image

    model.require("denoise", "denoising")
    source = input_source(args)
    shape, data_range = tuple(model.config.input_shape), model.data_range
    if args.noise is not None:
        parse_noise(args.noise)  # a bad spec fails before any work
    if source == "files" and args.noise is None:
        noisy, _ = load_image(args.images, shape, data_range)
        path = save_image(args.output, denoise(model, noisy)[0], data_range)
        print("denoised; no clean truth to compare with (pass --noise with a clean image for PSNR vs the baselines)")
        print(f"wrote {path}")
        return
    noise = args.noise or "gaussian:0.3"
    if source == "files":
        clean = load_image(args.images, shape, data_range)[0]
        tuning = None  # the filter is tuned on the image itself, which can only favour the baseline
    else:
        clean, _ = dataset_images(model, args.against, args.n, args.seed)
        tuning = _tuning_images(model, args.against, args.seed)
    result = evaluate_denoise(model, clean, noise, tuning=tuning, seed=args.seed)
    m = result["metrics"]
    print_table(f"denoising {noise} on {m['n']} image(s)",
                [("PSNR model", f"{m['psnr']:.2f} dB", f"SSIM {m['ssim']:.4f}"),
                 ("PSNR noisy input", f"{m['psnr_noisy']:.2f} dB", f"SSIM {m['ssim_noisy']:.4f}"),
                 ("PSNR classical filter", f"{m['psnr_classical']:.2f} dB", f"SSIM {m['ssim_classical']:.4f}"
             + ("  (tuned on this image: favours the filter)" if tuning is None else "  (tuned on other images)")),
                 ("gain over the filter", f"{m['psnr'] - m['psnr_classical']:+.2f} dB", m["classical_filter"])])
    save_result(args.output, source, data_range, result["denoised"],
                {"noisy": result["noisy"], "classical filter": result["classical"], "model": result["denoised"],
                 "clean": clean})


def _tuning_images(model, against: str, seed: int):
    """200 images for tuning the classical filter, from another split of the same data set than
    the evaluation images, so the filter is not tuned on the images it is scored on."""
    from ..tasks.images import dataset_images

    name, split = parse_against(against, model.artifact_config["data"]["name"])
    return dataset_images(model, f"{name}:{'val' if split != 'val' else 'test'}", 200, seed + 1)[0]


class DenoiseForm(FormFields):
    noise: str | None = Field(None, max_length=32, description="gaussian:SIGMA | salt-pepper:SHARE: take the upload "
                              "as clean, add this noise first and report PSNRs")
    seed: int = Seed
    response_format: Literal["b64_json", "png"] = "b64_json"


def serve(model, form: DenoiseForm, files: dict):
    """The denoised image; with `noise`, the upload is taken as clean, noise is added first (seeded),
    and the noisy input and PSNRs against the upload come back too."""
    from ..metrics.image import mean_psnr
    from ..models.denoiser import add_noise

    model.require("denoise", "denoising")
    value_range = model.data_range
    kind_level = parse_noise(form.noise) if form.noise else None  # a bad spec fails before any work
    images, _ = load_uploads([files["image"]], tuple(model.config.input_shape), value_range)
    noisy = images if kind_level is None else add_noise(images, *kind_level, value_range,
                                                        torch.Generator().manual_seed(form.seed))
    result = denoise(model, noisy)
    extra = {}
    if kind_level is not None:
        peak = value_range[1] - value_range[0]
        extra = {"noise": form.noise, "noisy_b64_json": b64(image_png(noisy[0], value_range)),
                 # floored (mean_psnr): noise that changed no pixel would give inf, which JSON cannot carry
                 "psnr_db": mean_psnr(result, images, peak), "psnr_noisy_db": mean_psnr(noisy, images, peak)}
    return image_reply(result[0], value_range, extra, form.response_format, form.model)


DENOISE = register_application(Application(
    name="denoise",
    summary="remove Gaussian or salt-and-pepper noise; compared with the noisy input and a tuned classical filter",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="denoise",
    function=denoise,
    http=HttpRoute("/v1/images/denoise", "remove noise (denoiser models)", DenoiseForm, serve, files={"image": "one"}),
    studio=True,
))
