"""Inpainting: fill the masked pixels of an image with a VAE or GAN (latent search or resampling)
or a pixel-space diffusion model (RePaint), beside filling them with the mean of the known pixels."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..errors import GenlabError, InputTooLarge, InvalidInput
from ..limits import (CLASS_OPTION, MAX_CLASS, MAX_CLI_RESTARTS, MAX_INPAINT_STEPS, MAX_OPTIMIZER_STEPS, MAX_RESTARTS,
                      FormFields, Seed, bounded_float, bounded_int)
from ..registry import Application, HttpRoute, register_application
from ..sampling.diffusion import repaint_evaluations
from ..tasks.inpaint import (DEFAULT_STEPS, METHODS, REPAINT_ETA, REPAINT_JUMP_LENGTH, REPAINT_JUMP_N_SAMPLE, inpaint,
                             masked_psnr, mean_fill, require_inpainter)
from .common import add_inputs, image_reply, input_source, load_uploads, print_table, save_result, check_image

MASK_SPEC_KINDS = ("box:", "half:", "random:")
MAX_JUMP_N_SAMPLE = 100  # --jump-n-sample on the command line (HTTP: MAX_HTTP_JUMP_N_SAMPLE)
MAX_HTTP_JUMP_N_SAMPLE = 20
MAX_HTTP_REPAINT_EVALUATIONS = 2500  # network calls of one RePaint request (the paper's 250/10/10 is ~4,500)

EXAMPLES = """examples:
  genlab apply inpaint runs/vae-mnist-... digit.png --mask box:8,8,12,12 -o filled.png
  genlab apply inpaint runs/vae-mnist-... digit.png --mask mask.png      # white = missing, same size as the image
  genlab apply inpaint runs/vae-mnist-... --against mnist:test -n 200 --mask half:bottom -o inpaint.png
  genlab apply inpaint runs/dcgan-mnist-... digit.png --mask box:0,14,28,14 --restarts 8   # GAN latent search
  genlab apply inpaint runs/ddpm-digits-... --against digits:test -n 16 --mask half:left   # diffusion: RePaint
  genlab apply inpaint runs/ddpm-digits-... digit.png --mask box:2,2,4,4 --steps 100 --jump-n-sample 10

Masks: box:LEFT,TOP,WIDTH,HEIGHT (pixels of the input image), half:top|bottom|left|right,
random:FRACTION, or a PNG where white marks the missing pixels. Known pixels are never
changed. The PSNR is over the masked pixels, against what the input has there, beside
filling them with the mean of the known pixels.

Methods: a VAE or GAN searches its latent space (optimize; resample: a VAE's resampling
chain); a pixel-space diffusion model runs RePaint (Lugmayr et al. 2022), whose
--jump-length / --jump-n-sample set how often the chain goes back up and re-noises (more
passes: a fill that agrees better with the known pixels, at jump_n_sample times the work)."""


def add_arguments(p) -> None:
    add_inputs(p, "?", 200)
    p.add_argument("--mask", required=True, help="box:LEFT,TOP,WIDTH,HEIGHT | half:SIDE | random:FRACTION | PNG (white = missing)")
    p.add_argument("--method", choices=("auto", *METHODS), default="auto",
                   help="auto (default): repaint for a diffusion model, optimize otherwise; optimize: latent search "
                        "(VAE or GAN); resample: conditional resampling chain (VAE); repaint: RePaint (diffusion)")
    p.add_argument("--steps", type=bounded_int("--steps", 1, MAX_OPTIMIZER_STEPS), default=None,
                   help="optimisation or resampling steps (default 200); repaint: diffusion steps, at most the "
                        f"model's timesteps (default {DEFAULT_STEPS['repaint']})")
    p.add_argument("--restarts", type=bounded_int("--restarts", 1, MAX_CLI_RESTARTS), default=4, help="starting points of the latent search (default 4)")
    p.add_argument("--jump-length", type=bounded_int("--jump-length", 1, MAX_OPTIMIZER_STEPS),
                   default=REPAINT_JUMP_LENGTH,
                   help=f"repaint: steps between resampling jumps, and each jump's length (default {REPAINT_JUMP_LENGTH})")
    p.add_argument("--jump-n-sample", type=bounded_int("--jump-n-sample", 1, MAX_JUMP_N_SAMPLE),
                   default=REPAINT_JUMP_N_SAMPLE, help="repaint: passes over each jump's stretch of steps "
                   f"(default {REPAINT_JUMP_N_SAMPLE}; 1: no resampling)")
    p.add_argument("--eta", type=bounded_float("--eta", 0.0, 1.0), default=REPAINT_ETA,
                   help=f"repaint: the filled pixels' step, 1 DDPM (the paper's), 0 DDIM (default {REPAINT_ETA:g})")
    p.add_argument("--class", dest="label", type=CLASS_OPTION, help="class to fill in with (conditional models)")
    p.add_argument("-o", "--output", default="inpaint.png", help="PNG: the filled image (one file) or a comparison grid")


def run(model, args) -> None:
    from ..tasks.images import dataset_images, load_image, make_mask

    method = require_inpainter(model, args.method)  # fail on the model before reading any file
    source = input_source(args)
    shape, data_range = tuple(model.config.input_shape), model.data_range
    generator = torch.Generator().manual_seed(args.seed)
    if source == "files":
        images, size = load_image(args.images, shape, data_range)
    else:
        images, _ = dataset_images(model, args.against, args.n, args.seed)
        size = (shape[2], shape[1])
    mask = make_mask(args.mask, size, shape[1:], generator)
    result = inpaint(model, images, mask, method=method, steps=args.steps, restarts=args.restarts,
                     labels=args.label, seed=args.seed, jump_length=args.jump_length,
                     jump_n_sample=args.jump_n_sample, eta=args.eta)
    baseline = mean_fill(images, mask, data_range)
    model_psnr, baseline_psnr = masked_psnr(result, images, mask, data_range), masked_psnr(baseline, images, mask, data_range)
    pixels = int(mask.sum())
    what = "against the input's own pixels there" if source == "files" else f"on {len(images)} images of {args.against}"
    how = _describe(method, args.steps, args.jump_length, args.jump_n_sample)
    print_table(f"inpainting ({how}, {pixels} of {shape[1] * shape[2]} pixels masked); PSNR on the masked pixels, {what}",
                [("model", f"{model_psnr:.2f} dB", f"{model.family}"),
                 ("mean fill (baseline)", f"{baseline_psnr:.2f} dB",
                  "mean of the known pixels" if pixels < mask.numel() else "mid-grey: no pixel is known"),
                 ("gain", f"{model_psnr - baseline_psnr:+.2f} dB", "")])
    masked = torch.where(mask.expand_as(images), sum(data_range) / 2, images)  # missing pixels shown mid-grey
    save_result(args.output, source, data_range, result,
                {"masked input": masked, "mean fill": baseline, "inpainted": result, "original": images})


def _describe(method: str, steps: int | None, jump_length: int, jump_n_sample: int) -> str:
    if method != "repaint":
        return method
    steps = DEFAULT_STEPS[method] if steps is None else steps
    return (f"repaint, {steps} steps, jumps of {jump_length} x {jump_n_sample}: "
            f"{repaint_evaluations(steps, jump_length, jump_n_sample)} network calls")


class InpaintForm(FormFields):
    mask_spec: str | None = Field(None, max_length=64, description="box:LEFT,TOP,WIDTH,HEIGHT | half:top|bottom|left|"
                                  "right | random:FRACTION (or upload a mask file)")
    method: Literal["auto", "optimize", "resample", "repaint"] = Field(
        "auto", description="auto: repaint for a diffusion model, optimize for a VAE or GAN; resample: VAE only")
    steps: int | None = Field(None, ge=1, le=MAX_INPAINT_STEPS, description="optimize/resample: steps (default 100); "
                              f"repaint: diffusion steps (default {DEFAULT_STEPS['repaint']})")
    restarts: int = Field(4, ge=1, le=MAX_RESTARTS, description="optimize: starting points of the latent search")
    jump_length: int = Field(REPAINT_JUMP_LENGTH, ge=1, le=MAX_INPAINT_STEPS,
                             description="repaint: steps between resampling jumps, and each jump's length")
    jump_n_sample: int = Field(REPAINT_JUMP_N_SAMPLE, ge=1, le=MAX_HTTP_JUMP_N_SAMPLE,
                               description="repaint: passes over each jump's stretch (1: no resampling)")
    eta: float = Field(REPAINT_ETA, ge=0, le=1, description="repaint: the filled pixels' step, 1 DDPM, 0 DDIM")
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
    method = require_inpainter(model, form.method)
    steps = form.steps if form.steps is not None else (DEFAULT_STEPS["repaint"] if method == "repaint" else 100)
    calls = repaint_evaluations(steps, form.jump_length, form.jump_n_sample) if method == "repaint" else 0
    if calls > MAX_HTTP_REPAINT_EVALUATIONS:
        raise InputTooLarge(f"steps={steps} with jumps of {form.jump_length} x {form.jump_n_sample} is {calls:,} network "
                            f"calls, more than the limit of {MAX_HTTP_REPAINT_EVALUATIONS:,}",
                            "lower steps or jump_n_sample (steps x jump_n_sample is about the count)", param="steps")
    shape, value_range = tuple(model.config.input_shape), model.data_range
    images, sizes = load_uploads([files["image"]], shape, value_range)
    generator = torch.Generator().manual_seed(form.seed)
    if mask_file is None:
        missing = make_mask(form.mask_spec, sizes[0], shape[1:], generator)
    else:
        check_image(mask_file)
        missing = make_mask(mask_file.data, sizes[0], shape[1:], generator, name=repr(mask_file.filename))
    result = inpaint(model, images, missing, method=method, steps=steps, restarts=form.restarts,
                     labels=form.class_, seed=form.seed, jump_length=form.jump_length,
                     jump_n_sample=form.jump_n_sample, eta=form.eta)
    return image_reply(result[0], value_range, {"masked_pixels": int(missing.sum()), "method": method},
                       form.response_format, form.model)


INPAINT = register_application(Application(
    name="inpaint",
    summary="fill the masked part of an image (VAE latent optimisation or resampling; GAN latent search; "
            "diffusion: RePaint)",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    # Every image model that samples can inpaint: a VAE or GAN (capability "decode") by latent
    # search, a diffusion model by RePaint. `require_inpainter` says which, and refuses the rest.
    capability="sample",
    function=inpaint,
    http=HttpRoute("/v1/images/inpaint", "fill the masked pixels of an image (VAE, GAN or diffusion)", InpaintForm,
                   serve, files={"image": "one", "mask": "optional"}),
    studio=True,
))
