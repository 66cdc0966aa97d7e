"""Anomaly scores: negative ELBO, IWAE bound or reconstruction error of images under a VAE; AUROC
for one-class models."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..fileio import atomic_write_text
from ..limits import CLASS_OPTION, MAX_ANOMALY_IMAGES, MAX_ANOMALY_SAMPLES, FormFields, Seed, bounded_int
from ..registry import Application, HttpRoute, register_application
from ..tasks.anomaly import anomaly_scores, auroc
from .common import add_inputs, image_files, input_source, load_uploads, print_table, write_output

EXAMPLES = """examples:
  genlab train vae-mnist data.only_classes=[3] --out runs/vae-3        # a model of "normal" = digit 3
  genlab apply anomaly runs/vae-3 --against mnist:test                  # AUROC: other digits vs 3
  genlab apply anomaly runs/vae-3 a.png b.png --method recon -o scores.csv

For a model trained with data.only_classes, those classes are the normal ones; --normal-class
sets them for any other model. Higher scores are more anomalous."""


def add_arguments(p) -> None:
    add_inputs(p)
    p.add_argument("--method", choices=("elbo", "iwae", "recon"), default="elbo",
                   help="score (default elbo: negative ELBO in nats)")
    p.add_argument("--samples", type=bounded_int("--samples", 1, 10_000), default=8, help="latent draws per image for elbo / iwae (default 8)")
    p.add_argument("--normal-class", type=CLASS_OPTION, action="append", help="a normal class for the AUROC (repeatable)")
    p.add_argument("-o", "--output", help="CSV of the scores (image, label, score)")


def _require(model, method: str) -> None:
    model.require("encode" if method == "recon" else "log_likelihood", f"{method} anomaly scores")


def run(model, args) -> None:
    from ..tasks.images import dataset_images, load_images

    _require(model, args.method)
    source = input_source(args)
    shape, data_range = tuple(model.config.input_shape), model.data_range
    if source == "files":
        names = image_files(args)
        images, labels = load_images(names, shape, data_range), None
    else:
        images, labels = dataset_images(model, args.against, args.n, args.seed)
        names = [f"{args.against}#{i}" for i in range(len(images))]
    scores = anomaly_scores(model, images, method=args.method, samples=args.samples, seed=args.seed)
    unit = "nats" if args.method != "recon" else "squared error"
    if source == "files":
        for name, score in zip(names, scores.tolist()):
            print(f"{score:12.4f}  {name}")
        print(f"scores: {args.method} ({unit}); higher = more anomalous")
    else:
        _print_auroc(model, args, images, labels, scores, unit)
    if args.output:
        lines = ["image,label,score"] + [f"{n},{'' if labels is None else int(labels[i])},{s:.6f}"
                                          for i, (n, s) in enumerate(zip(names, scores.tolist()))]
        print(f"wrote {write_output(args.output, lambda path: atomic_write_text(path, chr(10).join(lines) + chr(10)))}")


def _print_auroc(model, args, images, labels, scores, unit: str) -> None:
    rows = [(f"class {c}", f"{scores[labels == c].mean():.3f}", f"{int((labels == c).sum())} images")
            for c in labels.unique().tolist()]
    print_table(f"mean {args.method} score ({unit}) per class on {len(images)} images of {args.against}", rows)
    normal = args.normal_class or model.artifact_config["data"].get("only_classes")
    if normal:
        is_anomaly = ~torch.isin(labels, torch.as_tensor(list(normal)))
        print(f"AUROC {auroc(scores, is_anomaly):.4f} for telling the other classes from the normal class(es) "
              f"{sorted(normal)} (0.5 = chance, 1 = perfect)")
    else:
        print("no normal class known: pass --normal-class K (or train with data.only_classes=[K]) for the AUROC")


class AnomalyForm(FormFields):
    method: Literal["elbo", "iwae", "recon"] = "elbo"
    samples: int = Field(8, ge=1, le=MAX_ANOMALY_SAMPLES, description="latent draws per image (elbo, iwae)")
    seed: int = Seed


def serve(model, form: AnomalyForm, files: dict):
    """{model, method, unit, scores: [{index, filename, score}]}; higher = more anomalous."""
    _require(model, form.method)
    uploads = files["image"]
    images, _ = load_uploads(uploads, tuple(model.config.input_shape), model.data_range)
    scores = anomaly_scores(model, images, method=form.method, samples=form.samples, seed=form.seed).tolist()
    return {"model": form.model, "method": form.method, "unit": "squared error" if form.method == "recon" else "nats",
            "scores": [{"index": i, "filename": u.filename, "score": s} for i, (u, s) in enumerate(zip(uploads, scores))]}


ANOMALY = register_application(Application(
    name="anomaly",
    summary="score images by negative ELBO or reconstruction error; AUROC for one-class models",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="log_likelihood",
    function=anomaly_scores,
    # A conditional model scores an image only with its class, which the endpoint does not take.
    http=HttpRoute("/v1/anomaly/scores", "anomaly scores of images (higher = more anomalous)", AnomalyForm, serve,
                   serves=lambda kind, caps: kind == "image" and bool(caps & {"log_likelihood", "encode"})
                   and "conditional" not in caps,
                   files={"image": "many"}, max_files=MAX_ANOMALY_IMAGES),
))
