"""Compression: encode images to quantised latent codes; bits per image beside PNG, and the PSNR
of the decoded image."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..errors import GenlabError
from ..limits import (MAX_COMPRESS_FIT_IMAGES, MAX_COMPRESS_IMAGES, MAX_COMPRESS_STEP, MIN_COMPRESS_STEP, FormFields, Seed,
                      bounded_float, bounded_int)
from ..registry import Application, HttpRoute, register_application
from ..tasks.compress import compress, fit_entropy_model, png_bits
from .common import add_inputs, b64, image_files, image_png, input_source, load_uploads, print_table, write_output

EXAMPLES = """examples:
  genlab apply compress runs/vae-mnist-... --against mnist:test -n 1000 --step 0.25
  genlab apply compress runs/vae-mnist-... digit.png --step 0.1 -o codes.npz

Bits per image are the entropy-coded size of the quantised latent code under per-dimension
histograms fitted on the model's training images; PNG is the size of the same image as a file."""


def add_arguments(p) -> None:
    add_inputs(p, "*", 1000)
    p.add_argument("--step", type=bounded_float("--step", 1e-12, MAX_COMPRESS_STEP), default=0.25, help="quantisation step of the latent code (default 0.25)")
    p.add_argument("--fit-n", type=bounded_int("--fit-n", 1, 1_000_000), default=5000, help="training images the code histograms are fitted on (default 5000)")
    p.add_argument("-o", "--output", help=".npz of the codes (int8) and the step")
    p.add_argument("--decoded", help="PNG grid of the decoded images")


def run(model, args) -> None:
    from ..tasks.images import dataset_images, load_images, save_strip

    model.require("encode", "latent-code compression")
    source = input_source(args)
    shape, data_range = tuple(model.config.input_shape), model.data_range
    if args.fit_n < 1:
        raise GenlabError(f"--fit-n must be at least 1, got {args.fit_n}")
    images = load_images(image_files(args), shape, data_range) if source == "files" else \
        dataset_images(model, args.against, args.n, args.seed)[0]
    train_images, _ = dataset_images(model, "train", args.fit_n, args.seed)
    result = compress(model, images, fit_entropy_model(model, train_images, args.step))
    m = result["metrics"]
    print_table(f"compression of {m['n']} image(s), latent step {m['step']:g} ({m['latent_dims']} dimensions)",
                [("latent code", f"{m['bits_per_image']:.1f} bits", f"PSNR {m['psnr']:.2f} dB (lossy)"),
                 ("PNG file (baseline)", f"{m['png_bits_per_image']:.1f} bits", "lossless"),
                 ("raw 8-bit pixels", f"{m['raw_bits_per_image']:.0f} bits", "lossless"),
                 ("smaller than PNG by", f"{m['compression_vs_png']:.1f}x", "")])
    if args.output:
        path = write_output(args.output, lambda path: np.savez_compressed(
            path, codes=result["codes"].numpy(), step=np.float64(args.step)))
        print(f"wrote {path}")
    if args.decoded:
        print(f"wrote {save_strip(args.decoded, result['decoded'], data_range)}")


class CompressForm(FormFields):
    step: float = Field(0.25, ge=MIN_COMPRESS_STEP, le=MAX_COMPRESS_STEP, description="quantisation step of the latent code")
    fit_n: int = Field(1000, ge=1, le=MAX_COMPRESS_FIT_IMAGES,
                       description="training images the code histograms are fitted on")
    seed: int = Seed


def serve(model, form: CompressForm, files: dict):
    """{model, step, n, latent_dims, bits_per_image, png_bits_per_image, raw_bits_per_image, compression_vs_png,
    psnr_db, bits_per_value, data: [{b64_json (the decoded image), filename, bits, png_bits, raw_bits}]}.
    The code histograms are fitted on `fit_n` of the model's training images (a seeded subset), as
    `genlab apply compress --fit-n` does."""
    from ..metrics.image import mean_psnr
    from ..tasks.images import dataset_images

    model.require("encode", "latent-code compression")
    uploads = files["image"]
    data_range = model.data_range
    images, _ = load_uploads(uploads, tuple(model.config.input_shape), data_range)
    train_images, _ = dataset_images(model, "train", form.fit_n, form.seed)
    entropy_model = fit_entropy_model(model, train_images, form.step)
    result = compress(model, images, entropy_model)
    metrics = dict(result["metrics"])
    # floored (mean_psnr): an exactly reproduced image would give inf, which JSON cannot carry
    metrics["psnr_db"] = mean_psnr(result["decoded"], images, data_range[1] - data_range[0])
    del metrics["psnr"]
    bits, png = entropy_model.bits(result["codes"]).tolist(), png_bits(images, data_range).tolist()
    items = [{"b64_json": b64(image_png(decoded, data_range)), "filename": upload.filename,
              "bits": b, "png_bits": p, "raw_bits": metrics["raw_bits_per_image"]}
             for decoded, upload, b, p in zip(result["decoded"], uploads, bits, png)]
    return {"model": form.model, **metrics, "fit_n": len(train_images), "data": items}


COMPRESS = register_application(Application(
    name="compress",
    summary="encode images to quantised latent codes; bits per image vs PNG and PSNR of the decoded image",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="encode",
    function=compress,
    http=HttpRoute("/v1/images/compress", "encode images to quantised latent codes: bits vs PNG and raw, PSNR, "
                   "the decoded images", CompressForm, serve,
                   serves=lambda kind, caps: kind == "image" and {"encode", "decode"} <= caps
                   and "conditional" not in caps,
                   files={"image": "many"}, max_files=MAX_COMPRESS_IMAGES),
    studio=True,
))
