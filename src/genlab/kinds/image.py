"""The image data kind: in-memory uint8 image sets (genlab.data), evaluated by likelihood and
sample quality (genlab.evaluation), sampled into PNG grids."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ..data import ImageDataSpec, load_image_data
from ..data.images import DATASETS, dataset_status
from ..evaluation import evaluate_images
from ..imageio import display_scale, save_grid
from ..registry import Catalogue, DataKind, register_data_kind


def report(result: dict) -> list[str]:
    lines = []
    if "likelihood" in result:
        lik = result["likelihood"]
        lines.append(f"likelihood on {result['data']} (n={lik['n']}, IWAE k={lik['iwae_k']}, seed {result['seed']}; "
                     "nats per image)")
        lines += [f"  {key:<28}{lik[key]:>12.4f}" for key in ("elbo", "iwae_nll", "iwae_bits_per_dim", "recon_mse")]
    if "samples" in result:
        sq = result["samples"]
        accuracy = f", test accuracy {sq['feature_test_accuracy']:.2%}" if sq["feature_test_accuracy"] else ""
        lines.append(f"sample quality vs {result['data']} (n={sq['n']}, seed {result['seed']}; features "
                     f"{sq['feature_space']} sha256 {sq['feature_weights_sha256'][:12]}{accuracy})")
        lines.append(f"  {'metric':<36}{'model':>12}{'floor':>12}")
        lines += [f"  {key:<36}{value:>12.4f}{sq['floor'][key]:>12.4f}" for key, value in sq["metrics"].items()]
        lines.append(f"  floor: {sq['floor_definition']}")
    return lines


def sample(model, options: dict) -> None:
    from ..api import SAMPLER_OPTIONS, sample as draw

    n = options["n"] or 64
    # Sampler options (diffusion models) go through only when given, so other families are unaffected.
    sampling = {key: options[key] for key in SAMPLER_OPTIONS if options.get(key) is not None}
    with _step_bar(model, sampling.get("steps")) as callback:
        if callback is not None:
            sampling["callback"] = callback
        images = draw(model, n, seed=options["seed"], condition=options["label"], **sampling)
    path = save_grid(options["output"] or "samples.png", images, model.data_range, scale=display_scale(images.shape[-2]))
    print(f"wrote {n} samples to {path}")


@contextmanager
def _step_bar(model, steps: int | None):
    """A progress bar over the sampler's steps on stderr (as training's), for models that sample in
    steps (their `sample` takes a callback: diffusion); None for the others. The bar opens at the
    first step, so options the model refuses end in the error line alone."""
    import sys

    from tqdm import tqdm

    from ..api import samples_in_steps

    if not samples_in_steps(model):
        yield None
        return
    total = steps or getattr(model.config, "sample_steps", None)
    bar = None

    def advance(i, x_t):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="sampling", unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
        bar.update(1)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()


def next_steps(run_dir: Path) -> str:
    from ..artifact import read_config
    from ..registry import get_family

    config = read_config(run_dir)
    capabilities = get_family(config["family"]).capabilities
    data = config["data"]["name"]
    if "upscale" in capabilities:
        return (f"next: genlab apply superres {run_dir} --against {data}:test   |   "
                f"genlab apply superres {run_dir} small.png -o big.png")
    if "denoise" in capabilities:
        return (f"next: genlab apply denoise {run_dir} --against {data}:test --noise gaussian:0.3   |   "
                f"genlab apply denoise {run_dir} noisy.png -o clean.png")
    return f"next: genlab sample {run_dir} -n 64 -o grid.png   |   tensorboard --logdir {run_dir}/tensorboard"


IMAGE = register_data_kind(DataKind(
    name="image",
    spec_class=ImageDataSpec,
    load=lambda spec, resumed_run: load_image_data(spec),
    catalogue=Catalogue("images (vae, gan, diffusion, superres, denoiser)", DATASETS, dataset_status),
    evaluate=evaluate_images,
    report=report,
    sample=sample,
    next_steps=next_steps,
    endpoint="/v1/images/generations",
))
