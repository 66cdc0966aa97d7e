"""Data augmentation: labelled samples from a conditional model, and a small classifier's test
accuracy with and without them."""

from __future__ import annotations

import numpy as np

from ..imageio import to_uint8
from ..limits import MAX_AUGMENT_PER_CLASS, MAX_CLASSIFIER_STEPS, SEED_OPTION, bounded_int
from ..registry import Application, register_application
from ..tasks.augment import augmentation_benefit, few_labels, synthesize
from .common import print_table, write_output

EXAMPLES = """examples:
  genlab apply augment runs/cvae-mnist-... --per-class 500 --real-per-class 10 -o synthetic.npz
  genlab train vae-mnist data.name=npz:synthetic.npz      # the written samples are a genlab data set

The classifier is trained twice (same seed and steps): on real-per-class labelled images of
each class from the model's training split alone, and with synthetic images in half of every
batch; both are scored on the test split."""


def add_arguments(p) -> None:
    p.add_argument("--per-class", type=bounded_int("--per-class", 1, MAX_AUGMENT_PER_CLASS), default=500, help="synthetic images per class (default 500)")
    p.add_argument("--real-per-class", type=bounded_int("--real-per-class", 1, 100_000), default=10, help="real labelled images per class (default 10: 100 for MNIST)")
    p.add_argument("--classifier-steps", type=bounded_int("--classifier-steps", 1, MAX_CLASSIFIER_STEPS), default=600, help="training steps of each classifier (default 600)")
    p.add_argument("--against", metavar="DATASET", help="real data (default: the model's data set; train and test splits)")
    p.add_argument("-n", type=bounded_int("-n", 1, 1_000_000), help="test images (default: the whole test split)")
    p.add_argument("--seed", type=SEED_OPTION, default=0)
    p.add_argument("--no-eval", action="store_true", help="only write the samples, skip the classifier comparison")
    p.add_argument("-o", "--output", help=".npz of the synthetic images and labels (a genlab data set: data.name=npz:FILE)")


def run(model, args) -> None:
    from ..tasks.images import dataset_images

    model.require("conditional", "generating labelled samples")
    if args.no_eval:
        images, labels = synthesize(model, args.per_class, seed=args.seed)
    else:
        name = args.against or model.artifact_config["data"]["name"]
        train_images, train_labels = dataset_images(model, f"{name}:train", None, args.seed)
        real_images, real_labels = few_labels(train_images, train_labels, args.real_per_class, args.seed)
        test_images, test_labels = dataset_images(model, f"{name}:test", args.n, args.seed)
        result = augmentation_benefit(model, real_images, real_labels, test_images, test_labels,
                                      synthetic_per_class=args.per_class, steps=args.classifier_steps, seed=args.seed)
        metrics, images, labels = result["metrics"], result["synthetic_images"], result["synthetic_labels"]
        print_table(f"small CNN, {metrics['classifier_steps']} steps, test accuracy on {metrics['test_examples']} "
                    f"{name} test images",
                    [("real labels only", f"{metrics['accuracy_real_only']:.2%}", f"{metrics['real_examples']} real images"),
                     ("real + synthetic", f"{metrics['accuracy_with_synthetic']:.2%}",
                      f"+ {metrics['synthetic_examples']} synthetic (half of every batch)"),
                     ("gain", f"{100 * metrics['gain']:+.2f} points", "")])
    if args.output:
        path = write_output(args.output, lambda path: np.savez_compressed(
            path, images=to_uint8(images, model.data_range).numpy(), labels=labels.numpy()))
        print(f"wrote {len(labels)} labelled samples to {path} (train on them with data.name=npz:{path})")


AUGMENT = register_application(Application(
    name="augment",
    summary="labelled samples from a conditional model; a small classifier's accuracy with and without them",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    capability="conditional",
    function=synthesize,
))
