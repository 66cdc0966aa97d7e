"""Compression: encode images to quantised latent codes; bits per image beside PNG, and the PSNR
of the decoded image."""

from __future__ import annotations

import numpy as np

from ..errors import GenlabError
from ..registry import Application, register_application
from ..tasks.compress import compress, fit_entropy_model
from .common import add_inputs, image_files, input_source, print_table, write_output

EXAMPLES = """examples:
  genlab apply compress runs/vae-mnist-... --against mnist:test -n 1000 --step 0.25
  genlab apply compress runs/vae-mnist-... digit.png --step 0.1 -o codes.npz

Bits per image are the entropy-coded size of the quantised latent code under per-dimension
histograms fitted on the model's training images; PNG is the size of the same image as a file."""


def add_arguments(p) -> None:
    add_inputs(p, "*", 1000)
    p.add_argument("--step", type=float, default=0.25, help="quantisation step of the latent code (default 0.25)")
    p.add_argument("--fit-n", type=int, default=5000, help="training images the code histograms are fitted on (default 5000)")
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


COMPRESS = register_application(Application(
    name="compress",
    summary="encode images to quantised latent codes; bits per image vs PNG and PSNR of the decoded image",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="encode",
    function=compress,
))
