"""`genlab apply TASK MODEL ...`: the image applications on the command line (a thin layer over genlab.tasks).

Every task reads its input either from image files (any size and mode: converted and
resized to the model's shape, with a notice) or from a data set split (`--against
mnist:test -n 500`), where the truth is known and the task reports its number beside the
baseline's. Results go to stdout, notices to stderr, pictures to -o.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import GenlabError

TASK_HELP = {
    "inpaint": "fill the masked part of an image (VAE latent optimisation or resampling; GAN latent search)",
    "superres": "upscale x2 or x4 with a superres model; compared with bicubic",
    "denoise": "remove Gaussian or salt-and-pepper noise; compared with the noisy input and a tuned classical filter",
    "anomaly": "score images by negative ELBO or reconstruction error; AUROC for one-class models",
    "interpolate": "decode a latent path between two images (linear or slerp): PNG strip and animated GIF",
    "traverse": "vary one latent dimension at a time: PNG grid and animated GIF",
    "augment": "labelled samples from a conditional model; a small classifier's accuracy with and without them",
    "compress": "encode images to quantised latent codes; bits per image vs PNG and PSNR of the decoded image",
}

EXAMPLES = {
    "inpaint": """examples:
  genlab apply inpaint runs/vae-mnist-... digit.png --mask box:8,8,12,12 -o filled.png
  genlab apply inpaint runs/vae-mnist-... digit.png --mask mask.png      # white = missing, same size as the image
  genlab apply inpaint runs/vae-mnist-... --against mnist:test -n 200 --mask half:bottom -o inpaint.png
  genlab apply inpaint runs/dcgan-mnist-... digit.png --mask box:0,14,28,14 --restarts 8   # GAN latent search

Masks: box:LEFT,TOP,WIDTH,HEIGHT (pixels of the input image), half:top|bottom|left|right,
random:FRACTION, or a PNG where white marks the missing pixels. Known pixels are never
changed. The PSNR is over the masked pixels, against what the input has there, beside
filling them with the mean of the known pixels.""",
    "superres": """examples:
  genlab apply superres runs/sr-mnist-x2-... small.png -o big.png          # the file is the low-resolution input
  genlab apply superres runs/sr-mnist-x4-... digit.png --evaluate -o x4.png  # the file is the truth: shrink, upscale, compare
  genlab apply superres runs/sr-mnist-x2-... --against mnist:test -n 1000 -o superres.png

Train a model first: genlab train sr-mnist-x2 (or sr-mnist-x4).""",
    "denoise": """examples:
  genlab apply denoise runs/denoise-mnist-... noisy.png -o clean.png                 # the file is noisy
  genlab apply denoise runs/denoise-mnist-... digit.png --noise gaussian:0.3 -o d.png  # add noise, then compare
  genlab apply denoise runs/denoise-mnist-... --against mnist:test -n 1000 --noise salt-pepper:0.2

Noise: gaussian:SIGMA or salt-pepper:SHARE, in units of the value range ([0, 1] images).
The classical filter is the best of scikit-image's Gaussian blur, median, total variation and
non-local means over a grid of strengths, chosen on held-out images with the same noise.""",
    "anomaly": """examples:
  genlab train vae-mnist data.only_classes=[3] --out runs/vae-3        # a model of "normal" = digit 3
  genlab apply anomaly runs/vae-3 --against mnist:test                  # AUROC: other digits vs 3
  genlab apply anomaly runs/vae-3 a.png b.png --method recon -o scores.csv

For a model trained with data.only_classes, those classes are the normal ones; --normal-class
sets them for any other model. Higher scores are more anomalous.""",
    "interpolate": """examples:
  genlab apply interpolate runs/vae-mnist-... a.png b.png --steps 10 -o path.png --gif path.gif
  genlab apply interpolate runs/vae-mnist-... --against mnist:test --method linear --seed 3""",
    "traverse": """examples:
  genlab apply traverse runs/vae-mnist-... digit.png --dims 8 --span 3 -o traverse.png --gif traverse.gif
  genlab apply traverse runs/vae-mnist-...              # from the prior's centre, dimensions 0..7""",
    "augment": """examples:
  genlab apply augment runs/cvae-mnist-... --per-class 500 --real-per-class 10 -o synthetic.npz
  genlab train vae-mnist data.name=npz:synthetic.npz      # the written samples are a genlab data set

The classifier is trained twice (same seed and steps): on real-per-class labelled images of
each class from the model's training split alone, and with synthetic images in half of every
batch; both are scored on the test split.""",
    "compress": """examples:
  genlab apply compress runs/vae-mnist-... --against mnist:test -n 1000 --step 0.25
  genlab apply compress runs/vae-mnist-... digit.png --step 0.1 -o codes.npz

Bits per image are the entropy-coded size of the quantised latent code under per-dimension
histograms fitted on the model's training images; PNG is the size of the same image as a file.""",
}


def add_apply_command(sub) -> None:
    """The `apply` command and one sub-command per task, on the main parser's sub-parsers `sub`."""
    apply = sub.add_parser(
        "apply", help="apply a trained model: " + ", ".join(TASK_HELP),
        description="Apply a trained model to images; each task reports its number beside the obvious baseline.",
        epilog="examples:\n" + "\n".join(f"  {text.splitlines()[1].strip()}" for text in EXAMPLES.values())
        + "\n\nRun `genlab apply TASK --help` for a task's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = apply.add_subparsers(dest="task", metavar="TASK")

    def add(name: str) -> argparse.ArgumentParser:
        p = tasks.add_parser(name, help=TASK_HELP[name], description=TASK_HELP[name], epilog=EXAMPLES[name],
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("model", help="model directory")
        return p

    def inputs(p, nargs: str = "*", default_n: int | None = None) -> None:
        p.add_argument("images", nargs=nargs, metavar="IMAGE", help="image file(s): PNG, JPEG, ...; converted and resized to the model's shape")
        p.add_argument("--against", metavar="DATASET[:SPLIT]", help="use a data set split instead of files, e.g. mnist:test or test")
        p.add_argument("-n", type=int, default=default_n, help=f"images from the split (default: {default_n or 'all'})")
        p.add_argument("--seed", type=int, default=0, help="fixes every random choice (default 0)")

    p = add("inpaint")
    inputs(p, "?", 200)
    p.add_argument("--mask", required=True, help="box:LEFT,TOP,WIDTH,HEIGHT | half:SIDE | random:FRACTION | PNG (white = missing)")
    p.add_argument("--method", choices=("optimize", "resample"), default="optimize",
                   help="optimize: latent search (default; VAE or GAN); resample: conditional resampling chain (VAE)")
    p.add_argument("--steps", type=int, default=200, help="optimisation (or resampling) steps (default 200)")
    p.add_argument("--restarts", type=int, default=4, help="starting points of the latent search (default 4)")
    p.add_argument("--class", dest="label", type=int, help="class to fill in with (conditional models)")
    p.add_argument("-o", "--output", default="inpaint.png", help="PNG: the filled image (one file) or a comparison grid")

    p = add("superres")
    inputs(p, "?", 1000)
    p.add_argument("--evaluate", action="store_true", help="treat the image file as the high-resolution truth: shrink, upscale, compare")
    p.add_argument("-o", "--output", default="superres.png", help="PNG: the upscaled image (one file) or a comparison grid")

    p = add("denoise")
    inputs(p, "?", 1000)
    p.add_argument("--noise", help="add this noise first (gaussian:0.3, salt-pepper:0.2) and compare; default for --against: gaussian:0.3")
    p.add_argument("-o", "--output", default="denoise.png", help="PNG: the denoised image (one file) or a comparison grid")

    p = add("anomaly")
    inputs(p)
    p.add_argument("--method", choices=("elbo", "iwae", "recon"), default="elbo", help="score (default elbo: negative ELBO in nats)")
    p.add_argument("--samples", type=int, default=8, help="latent draws per image for elbo / iwae (default 8)")
    p.add_argument("--normal-class", type=int, action="append", help="a normal class for the AUROC (repeatable)")
    p.add_argument("-o", "--output", help="CSV of the scores (image, label, score)")

    p = add("interpolate")
    inputs(p)
    p.add_argument("--steps", type=int, default=10, help="images along the path, ends included (default 10)")
    p.add_argument("--method", choices=("slerp", "linear"), default="slerp")
    p.add_argument("--class", dest="label", type=int, help="class (conditional models)")
    p.add_argument("-o", "--output", default="interpolation.png", help="PNG strip (default interpolation.png)")
    p.add_argument("--gif", help="animated GIF (default: the strip's name with .gif)")

    p = add("traverse")
    inputs(p, "?")
    p.add_argument("--dims", type=int, default=8, help="dimensions to traverse, most informative first (default 8)")
    p.add_argument("--span", type=float, default=3.0, help="from -SPAN to +SPAN prior standard deviations (default 3)")
    p.add_argument("--steps", type=int, default=9, help="values per dimension (default 9)")
    p.add_argument("--class", dest="label", type=int, help="class (conditional models)")
    p.add_argument("-o", "--output", default="traverse.png", help="PNG grid, one row per dimension (default traverse.png)")
    p.add_argument("--gif", help="animated GIF (default: the grid's name with .gif)")

    p = add("augment")
    p.add_argument("--per-class", type=int, default=500, help="synthetic images per class (default 500)")
    p.add_argument("--real-per-class", type=int, default=10, help="real labelled images per class (default 10: 100 for MNIST)")
    p.add_argument("--classifier-steps", type=int, default=600, help="training steps of each classifier (default 600)")
    p.add_argument("--against", metavar="DATASET", help="real data (default: the model's data set; train and test splits)")
    p.add_argument("-n", type=int, help="test images (default: the whole test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-eval", action="store_true", help="only write the samples, skip the classifier comparison")
    p.add_argument("-o", "--output", help=".npz of the synthetic images and labels (a genlab data set: data.name=npz:FILE)")

    p = add("compress")
    inputs(p, "*", 1000)
    p.add_argument("--step", type=float, default=0.25, help="quantisation step of the latent code (default 0.25)")
    p.add_argument("--fit-n", type=int, default=5000, help="training images the code histograms are fitted on (default 5000)")
    p.add_argument("-o", "--output", help=".npz of the codes (int8) and the step")
    p.add_argument("--decoded", help="PNG grid of the decoded images")


def run_apply(args) -> int:
    if args.task is None:
        raise GenlabError("which task?", f"genlab apply TASK MODEL ...; tasks: {', '.join(TASK_HELP)} (genlab apply --help)")
    from ..artifact import load

    model = load(args.model)
    if model.data_kind != "image":
        raise GenlabError(f"genlab apply {args.task} works on image models; {args.model} is a {model.data_kind} model")
    return HANDLERS[args.task](model, args) or 0


# ----------------------------------------------------------------------------- shared pieces


def _source(args) -> str:
    """'files' or 'dataset', after checking that exactly one was given."""
    files = _files(args)
    if files and args.against:
        raise GenlabError("give image files or --against, not both")
    if args.n is not None and args.n < 1:
        raise GenlabError(f"-n must be a positive integer, got {args.n}")
    if files:
        return "files"
    if not args.against:
        raise GenlabError("no input", "give an image file, or --against DATASET[:SPLIT] (e.g. --against mnist:test)")
    return "dataset"


def _files(args) -> list[str]:
    return [f for f in (args.images if isinstance(args.images, list) else [args.images]) if f]


def _table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(title)
    for name, value, note in rows:
        print(f"  {name:<30}{value:>12}  {note}")


def _save_result(output: str, source: str, data_range, result, columns: dict) -> None:
    """Write -o: for an image file, the result itself at its own resolution; for a data set, a
    comparison grid of the first 8 images, one row each with `columns` (name -> images) side by side."""
    import torch

    from .images import save_image, save_strip

    if source == "files":
        path = save_image(output, result[0], data_range)
    else:
        rows = torch.stack(list(columns.values()), dim=1)[:8].flatten(0, 1)
        path = save_strip(output, rows, data_range, nrow=len(columns))
        print(f"grid rows: {' | '.join(columns)}")
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- tasks


def _inpaint(model, args) -> None:
    import torch

    from .images import dataset_images, load_image, make_mask
    from .inpaint import inpaint, masked_psnr, mean_fill, require_latent_generator

    require_latent_generator(model, "inpainting")  # fail on the model before reading any file
    source = _source(args)
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
    baseline = mean_fill(images, mask)
    model_psnr, baseline_psnr = masked_psnr(result, images, mask, data_range), masked_psnr(baseline, images, mask, data_range)
    pixels = int(mask.sum())
    what = "against the input's own pixels there" if source == "files" else f"on {len(images)} images of {args.against}"
    _table(f"inpainting ({args.method}, {pixels} of {shape[1] * shape[2]} pixels masked); PSNR on the masked pixels, {what}",
           [("model", f"{model_psnr:.2f} dB", f"{model.family}"),
            ("mean fill (baseline)", f"{baseline_psnr:.2f} dB", "mean of the known pixels"),
            ("gain", f"{model_psnr - baseline_psnr:+.2f} dB", "")])
    masked = torch.where(mask.expand_as(images), sum(data_range) / 2, images)  # missing pixels shown mid-grey
    _save_result(args.output, source, data_range, result,
                 {"masked input": masked, "mean fill": baseline, "inpainted": result, "original": images})


def _superres(model, args) -> None:
    import torch.nn.functional as F

    from .images import dataset_images, load_image, save_image
    from .superres import evaluate_superres, superres

    model.require("upscale", "super-resolution")
    source = _source(args)
    config, data_range = model.config, model.data_range
    if source == "files" and not args.evaluate:
        low_res, _ = load_image(args.images, config.low_res_shape, data_range)
        upscaled = superres(model, low_res)
        path = save_image(args.output, upscaled[0], data_range)
        shape = config.low_res_shape
        print(f"upscaled {shape[2]}x{shape[1]} x{config.scale} -> {shape[2] * config.scale}x{shape[1] * config.scale}; "
              "no truth to compare with (use --evaluate with a high-resolution image for PSNR vs bicubic)")
        print(f"wrote {path}")
        return
    high_res = load_image(args.images, tuple(config.input_shape), data_range)[0] if source == "files" else \
        dataset_images(model, args.against, args.n, args.seed)[0]
    result = evaluate_superres(model, high_res)
    m = result["metrics"]
    _table(f"x{m['scale']} super-resolution on {m['n']} image(s) (inputs made by {config.downsample} downscaling)",
           [("PSNR model", f"{m['psnr']:.2f} dB", f"SSIM {m['ssim']:.4f}"),
            ("PSNR bicubic (baseline)", f"{m['psnr_bicubic']:.2f} dB", f"SSIM {m['ssim_bicubic']:.4f}"),
            ("gain", f"{m['psnr_gain_db']:+.2f} dB", "")])
    nearest = F.interpolate(result["low_res"], scale_factor=config.scale, mode="nearest")  # the input, pixels enlarged
    _save_result(args.output, source, data_range, result["upscaled"],
                 {"low-res input": nearest, "bicubic": result["bicubic"], "model": result["upscaled"], "original": high_res})


def _denoise(model, args) -> None:
    from .denoise import denoise, evaluate_denoise, parse_noise
    from .images import dataset_images, load_image, save_image

    model.require("denoise", "denoising")
    source = _source(args)
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
    _table(f"denoising {noise} on {m['n']} image(s)",
           [("PSNR model", f"{m['psnr']:.2f} dB", f"SSIM {m['ssim']:.4f}"),
            ("PSNR noisy input", f"{m['psnr_noisy']:.2f} dB", f"SSIM {m['ssim_noisy']:.4f}"),
            ("PSNR classical filter", f"{m['psnr_classical']:.2f} dB", f"SSIM {m['ssim_classical']:.4f}"),
            ("gain over the filter", f"{m['psnr'] - m['psnr_classical']:+.2f} dB", m["classical_filter"])])
    _save_result(args.output, source, data_range, result["denoised"],
                 {"noisy": result["noisy"], "classical filter": result["classical"], "model": result["denoised"], "clean": clean})


def _tuning_images(model, against: str, seed: int):
    """200 images for tuning the classical filter, from another split of the same data set than
    the evaluation images, so the filter is not tuned on the images it is scored on."""
    from ..evaluation import parse_against
    from .images import dataset_images

    name, split = parse_against(against, model.artifact_config["data"]["name"])
    return dataset_images(model, f"{name}:{'val' if split != 'val' else 'test'}", 200, seed + 1)[0]


def _anomaly(model, args) -> None:
    import torch

    from .anomaly import anomaly_scores, auroc
    from .images import dataset_images, load_images

    model.require("encode" if args.method == "recon" else "log_likelihood", f"{args.method} anomaly scores")
    source = _source(args)
    shape, data_range = tuple(model.config.input_shape), model.data_range
    if source == "files":
        names = _files(args)
        images, labels = load_images(names, shape, data_range), None
    else:
        images, labels = dataset_images(model, args.against, args.n, args.seed)
        names = [f"{args.against}#{i}" for i in range(len(images))]
    scores = anomaly_scores(model, images, method=args.method, samples=args.samples, seed=args.seed)
    unit = "nats" if args.method != "recon" else "squared error"
    normal = args.normal_class or getattr(model, "artifact_config", {}).get("data", {}).get("only_classes")
    if source == "files":
        for name, score in zip(names, scores.tolist()):
            print(f"{score:12.4f}  {name}")
        print(f"scores: {args.method} ({unit}); higher = more anomalous")
    else:
        rows = [(f"class {c}", f"{scores[labels == c].mean():.3f}", f"{int((labels == c).sum())} images")
                for c in labels.unique().tolist()]
        _table(f"mean {args.method} score ({unit}) per class on {len(images)} images of {args.against}", rows)
        if normal:
            is_anomaly = ~torch.isin(labels, torch.as_tensor(list(normal)))
            value = auroc(scores, is_anomaly)
            print(f"AUROC {value:.4f} for telling the other classes from the normal class(es) {sorted(normal)} "
                  f"(0.5 = chance, 1 = perfect)")
        else:
            print("no normal class known: pass --normal-class K (or train with data.only_classes=[K]) for the AUROC")
    if args.output:
        lines = ["image,label,score"] + [f"{n},{'' if labels is None else int(labels[i])},{s:.6f}"
                                          for i, (n, s) in enumerate(zip(names, scores.tolist()))]
        _write_text(args.output, "\n".join(lines) + "\n")
        print(f"wrote {args.output}")


def _write_text(path: str, text: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {e.strerror or e}", "choose a writable output path") from None


def _two_images(model, args):
    from .images import dataset_images, load_images

    shape, data_range = tuple(model.config.input_shape), model.data_range
    if _source(args) == "files":
        files = _files(args)
        if len(files) != 2:
            raise GenlabError(f"interpolation needs exactly two images, got {len(files)}", "genlab apply interpolate MODEL a.png b.png")
        return load_images(files, shape, data_range)
    images, _ = dataset_images(model, args.against, 2, args.seed)  # a seeded random pair
    return images


def _interpolate(model, args) -> None:
    from .images import save_gif, save_strip
    from .interpolate import interpolate

    model.require("encode", "latent interpolation between images")
    pair = _two_images(model, args)
    frames = interpolate(model, pair[:1], pair[1:], steps=args.steps, method=args.method, label=args.label)
    data_range = model.data_range
    strip = save_strip(args.output, frames, data_range, nrow=len(frames))
    gif = save_gif(args.gif or Path(args.output).with_suffix(".gif"), [f[None] for f in frames], data_range)
    print(f"{args.method} interpolation, {args.steps} steps: wrote {strip} and {gif}")


def _traverse(model, args) -> None:
    from .images import dataset_images, load_image, save_gif, save_strip
    from .interpolate import traverse

    model.require("decode", "latent traversal")
    images = None
    if args.images or args.against:
        shape = tuple(model.config.input_shape)
        images = load_image(args.images, shape, model.data_range)[0] if _source(args) == "files" else \
            dataset_images(model, args.against, 1, args.seed)[0]
    grid, dims = traverse(model, images, dims=args.dims, span=args.span, steps=args.steps, label=args.label)
    data_range = model.data_range
    strip = save_strip(args.output, grid.flatten(0, 1), data_range, nrow=args.steps)
    gif = save_gif(args.gif or Path(args.output).with_suffix(".gif"), [grid[:, j] for j in range(grid.shape[1])],
                   data_range, nrow=len(dims))
    start = "the image's code" if images is not None else "z = 0"
    print(f"traversed dimensions {dims} from {start}, {-args.span:g}..{args.span:g}: wrote {strip} (one row each) and {gif}")


def _augment(model, args) -> None:
    import numpy as np

    from ..imageio import to_uint8
    from .augment import augmentation_benefit, few_labels, synthesize
    from .images import dataset_images

    model.require("conditional", "generating labelled samples")
    if args.no_eval:
        images, labels = synthesize(model, args.per_class, seed=args.seed)
        metrics = None
    else:
        name = args.against or model.artifact_config["data"]["name"]
        train_images, train_labels = dataset_images(model, f"{name}:train", None, args.seed)
        real_images, real_labels = few_labels(train_images, train_labels, args.real_per_class, args.seed)
        test_images, test_labels = dataset_images(model, f"{name}:test", args.n, args.seed)
        result = augmentation_benefit(model, real_images, real_labels, test_images, test_labels,
                                      synthetic_per_class=args.per_class, steps=args.classifier_steps, seed=args.seed)
        metrics, images, labels = result["metrics"], result["synthetic_images"], result["synthetic_labels"]
        _table(f"small CNN, {metrics['classifier_steps']} steps, test accuracy on {metrics['test_examples']} {name} test images",
               [("real labels only", f"{metrics['accuracy_real_only']:.2%}", f"{metrics['real_examples']} real images"),
                ("real + synthetic", f"{metrics['accuracy_with_synthetic']:.2%}",
                 f"+ {metrics['synthetic_examples']} synthetic (half of every batch)"),
                ("gain", f"{100 * metrics['gain']:+.2f} points", "")])
    if args.output:
        path = Path(args.output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, images=to_uint8(images, model.data_range).numpy(), labels=labels.numpy())
        except OSError as e:
            raise GenlabError(f"cannot write {path}: {e.strerror or e}", "choose a writable output path") from None
        print(f"wrote {len(labels)} labelled samples to {path} (train on them with data.name=npz:{path})")


def _compress(model, args) -> None:
    import numpy as np

    from .compress import compress, fit_entropy_model
    from .images import dataset_images, load_images, save_strip

    model.require("encode", "latent-code compression")
    source = _source(args)
    shape, data_range = tuple(model.config.input_shape), model.data_range
    if args.fit_n < 1:
        raise GenlabError(f"--fit-n must be at least 1, got {args.fit_n}")
    images = load_images(_files(args), shape, data_range) if source == "files" else \
        dataset_images(model, args.against, args.n, args.seed)[0]
    train_images, _ = dataset_images(model, "train", args.fit_n, args.seed)
    result = compress(model, images, fit_entropy_model(model, train_images, args.step))
    m = result["metrics"]
    _table(f"compression of {m['n']} image(s), latent step {m['step']:g} ({m['latent_dims']} dimensions)",
           [("latent code", f"{m['bits_per_image']:.1f} bits", f"PSNR {m['psnr']:.2f} dB (lossy)"),
            ("PNG file (baseline)", f"{m['png_bits_per_image']:.1f} bits", "lossless"),
            ("raw 8-bit pixels", f"{m['raw_bits_per_image']:.0f} bits", "lossless"),
            ("smaller than PNG by", f"{m['compression_vs_png']:.1f}x", "")])
    if args.output:
        path = Path(args.output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, codes=result["codes"].numpy(), step=np.float64(args.step))
        except OSError as e:
            raise GenlabError(f"cannot write {path}: {e.strerror or e}", "choose a writable output path") from None
        print(f"wrote {path}")
    if args.decoded:
        print(f"wrote {save_strip(args.decoded, result['decoded'], data_range)}")


HANDLERS = {"inpaint": _inpaint, "superres": _superres, "denoise": _denoise, "anomaly": _anomaly,
            "interpolate": _interpolate, "traverse": _traverse, "augment": _augment, "compress": _compress}
