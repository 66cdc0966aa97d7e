"""Data: image data sets as in-memory uint8 tensors, batched by index (text: see data/text.py).

A data set lives in memory as one uint8 tensor [N, C, H, W] plus int64 labels. A batch is
made by indexing that tensor with a LongTensor of positions and converting once, so no
per-item Python runs in the training loop. Scaling to [0, 1] or [-1, 1] and dynamic
binarisation (a fresh Bernoulli draw each time an image is used, the standard protocol
for likelihood models on MNIST) happen at batch time, from a torch.Generator the Trainer
seeds, so they are reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import GenlabError
from .download import data_root
from .images import DATASETS, load_raw
from .text import TEXT_DATASETS, TextData, TextDataSpec, load_text_data

__all__ = ["ImageDataSpec", "ImageSplit", "ImageData", "load_image_data", "DATASETS", "data_root",
           "TextDataSpec", "TextData", "load_text_data", "TEXT_DATASETS"]

SCALES = ("unit", "symmetric")
BINARIZE = ("none", "dynamic", "threshold")


@dataclass
class ImageDataSpec:
    name: str = "digits"  # digits | mnist | fashion_mnist | kmnist | cifar10 | idx:DIR | folder:DIR | npz:FILE
    scale: str = "unit"  # unit: [0, 1]; symmetric: [-1, 1]
    binarize: str = "none"  # none | dynamic (Bernoulli draw per use) | threshold (> 0.5)
    val_fraction: float = 0.1  # held out from train, by a fixed permutation, for validation
    test_fraction: float = 0.15  # only for sets without an official test split (digits, folder, npz)
    image_size: int | None = None  # folder: resize to this square size (None: size of the first image)
    channels: int | None = None  # folder: 1 (grayscale) or 3 (RGB); None: from the first image
    split_seed: int = 0  # the permutation that carves val (and test) out; part of the data's identity
    only_classes: tuple[int, ...] | None = None  # keep only these class indices in every split (one-class training)
    hflip: bool = False  # training batches: mirror each image left-right with probability 1/2 (photos, not digits)

    def __post_init__(self):
        if self.scale not in SCALES:
            raise GenlabError(f"unknown data.scale {self.scale!r}", f"use one of {', '.join(SCALES)}")
        if self.binarize not in BINARIZE:
            raise GenlabError(f"unknown data.binarize {self.binarize!r}", f"use one of {', '.join(BINARIZE)}")
        if self.binarize != "none" and self.scale != "unit":
            raise GenlabError("binarised data must use data.scale=unit (values 0 and 1)")
        if self.split_seed < 0:
            raise GenlabError(f"data.split_seed must be >= 0, got {self.split_seed}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise GenlabError(f"data.{name} must be in [0, 1), got {v}")


@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class ImageData:
    spec: ImageDataSpec
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    classes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> ImageSplit:
        if name not in ("train", "val", "test"):
            raise GenlabError(f"unknown split {name!r}", "use train, val or test")
        return getattr(self, name)

    def num_examples(self, split: str) -> int:
        return len(self.split(split))

    def model_fields(self) -> dict:
        """What a model config may take from the data (filled in by genlab.train)."""
        return {"input_shape": self.shape, "num_classes": self.num_classes, "data_range": self.value_range}

    @property
    def value_range(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.spec.scale == "unit" else (-1.0, 1.0)

    def to_float(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float().div_(255.0)
        if self.spec.binarize == "dynamic":
            # One uniform draw per pixel from the Trainer's generator: reproducible, resumable.
            u = torch.rand(x.shape, generator=generator, device=x.device)
            x = (u < x).float()
        elif self.spec.binarize == "threshold":
            x = (x > 0.5).float()
        if self.spec.scale == "symmetric":
            x = x.mul_(2.0).sub_(1.0)
        return x

    def batch(self, split: str, indices: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        part = self.split(split)
        x = self.to_float(part.images[indices], generator)
        if self.spec.hflip and split == "train":
            flip = torch.rand(len(x), generator=generator) < 0.5  # drawn from the step's data generator: resumable
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return {"x": x, "y": part.labels[indices]}


def _check_only_classes(spec: ImageDataSpec, classes: list[str]) -> np.ndarray:
    keep = np.asarray(spec.only_classes, dtype=np.int64)
    if len(keep) == 0 or keep.min() < 0 or keep.max() >= len(classes):
        raise GenlabError(f"data.only_classes={list(spec.only_classes)} must name classes of {spec.name}",
                          f"use class indices 0..{len(classes) - 1}")
    return keep


def load_image_data(spec: ImageDataSpec | dict | str) -> ImageData:
    """Load a data set into memory and carve out its splits (deterministic in spec.split_seed)."""
    if isinstance(spec, str):
        spec = ImageDataSpec(name=spec)
    elif isinstance(spec, dict):
        from ..config import from_dict

        spec = from_dict(ImageDataSpec, spec, "data")
    raw = load_raw(spec.name, data_root(), image_size=spec.image_size, channels=spec.channels)
    rng = np.random.default_rng(spec.split_seed)
    train_x, train_y = raw.train_images, raw.train_labels
    if raw.test_images is None:
        perm = rng.permutation(len(train_x))
        n_test = int(round(len(perm) * spec.test_fraction))
        test_idx, perm = perm[:n_test], perm[n_test:]
        test_x, test_y = train_x[test_idx], train_y[test_idx]
        train_x, train_y = train_x[perm], train_y[perm]
    else:
        test_x, test_y = raw.test_images, raw.test_labels
    perm = rng.permutation(len(train_x))
    n_val = int(round(len(perm) * spec.val_fraction))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if len(train_idx) == 0:
        raise GenlabError(f"data set {spec.name!r} has too few images ({len(raw.train_images)}) to train on")

    # only_classes filters the finished splits, so each is the full data's split restricted to
    # those classes: a one-class model's test images are held out from the full data's training too.
    keep = None if spec.only_classes is None else _check_only_classes(spec, list(raw.classes))

    def make(x, y):
        if keep is not None:
            chosen = np.isin(y, keep)
            x, y = x[chosen], y[chosen]
        return ImageSplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64)))

    return ImageData(
        spec=spec,
        train=make(train_x[train_idx], train_y[train_idx]),
        val=make(train_x[val_idx], train_y[val_idx]),
        test=make(test_x, test_y),
        classes=list(raw.classes),
    )
