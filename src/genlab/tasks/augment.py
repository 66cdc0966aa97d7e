"""Data augmentation: labelled samples from a class-conditional model, and what they do for a classifier.

`synthesize` draws `per_class` samples of every class from a model with the "conditional"
capability (a conditional VAE or GAN). `augmentation_benefit` measures their worth the
direct way: a small CNN is trained twice with the same seed, steps and batch size, once on
the few real labelled images alone and once with half of every batch drawn from the
synthetic ones, and both are scored on real test images. Nothing else differs.

Read the result with the generator's own training data in mind: a conditional model
trained on many labelled images carries their label information into its samples, so the
gain measures how much of it transfers to a classifier that sees only a few real labels
(a cheap form of distillation), not a semi-supervised result from the few labels alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError

BATCH = 1000


@torch.no_grad()
def synthesize(model, per_class: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """per_class samples of each class: images [K * per_class, C, H, W] in the model's data range, labels [K * per_class]."""
    model.require("conditional", "generating labelled samples")
    if per_class < 1:
        raise GenlabError(f"the number of samples per class must be at least 1, got {per_class}")
    labels = torch.arange(model.config.num_classes).repeat_interleave(per_class)
    generator = torch.Generator(model.device).manual_seed(seed)
    images = torch.cat([model.sample(len(part), condition=part.to(model.device), generator=generator).cpu()
                        for part in labels.split(BATCH)])
    return images, labels


def few_labels(images: torch.Tensor, labels: torch.Tensor, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random choice of per_class images of every class present (e.g. 10 x 10 = 100 MNIST labels)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique().tolist():
        where = (labels == label).nonzero().squeeze(1)
        if len(where) < per_class:
            raise GenlabError(f"class {label} has only {len(where)} images, fewer than {per_class} asked for")
        chosen.append(where[torch.randperm(len(where), generator=generator)[:per_class]])
    index = torch.cat(chosen).sort().values
    return images[index], labels[index]


class SmallCNN(nn.Module):
    """Two 3x3 conv + max-pool stages and a linear read-out: a few tens of thousands of weights."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )  # fmt: skip
        self.read_out = nn.Linear(32 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read_out(self.features(x).flatten(1))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                     synthetic: tuple[torch.Tensor, torch.Tensor] | None = None, steps: int = 600,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> SmallCNN:
    """A SmallCNN trained with Adam for a fixed number of steps; images in [0, 1]. Deterministic in seed.

    With `synthetic` (images, labels), half of every batch is real and half synthetic, so a
    few real images are not drowned out by many synthetic ones."""
    with torch.random.fork_rng():  # the initial weights come from the seed without disturbing the caller's RNG
        torch.manual_seed(seed)
        net = SmallCNN(images.shape[1], num_classes)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        real_count = batch_size if synthetic is None else batch_size // 2
        index = torch.randint(len(images), (real_count,), generator=generator)
        x, y = images[index], labels[index]
        if synthetic is not None:
            extra = torch.randint(len(synthetic[1]), (batch_size - real_count,), generator=generator)
            x, y = torch.cat([x, synthetic[0][extra]]), torch.cat([y, synthetic[1][extra]])
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = sum((net(x).argmax(1) == y).sum().item() for x, y in zip(images.split(BATCH), labels.split(BATCH)))
    return correct / len(labels)


def augmentation_benefit(model, real_images: torch.Tensor, real_labels: torch.Tensor, test_images: torch.Tensor,
                         test_labels: torch.Tensor, *, synthetic_per_class: int = 500, steps: int = 600,
                         seed: int = 0) -> dict:
    """Test accuracy of the same classifier trained on the real images alone and with synthetic ones added.

    Images in the model's data range (they are mapped to [0, 1] for the classifier)."""
    low, high = model.data_range

    def unit(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - low) / (high - low)).clamp(0.0, 1.0)

    synthetic_images, synthetic_labels = synthesize(model, synthetic_per_class, seed=seed)
    num_classes = model.config.num_classes
    real_only = train_classifier(unit(real_images), real_labels, num_classes, steps=steps, seed=seed)
    mixed = train_classifier(unit(real_images), real_labels, num_classes, synthetic=(unit(synthetic_images), synthetic_labels),
                             steps=steps, seed=seed)
    result = {
        "real_examples": len(real_labels),
        "synthetic_examples": len(synthetic_labels),
        "classifier_steps": steps,
        "test_examples": len(test_labels),
        "accuracy_real_only": accuracy(real_only, unit(test_images), test_labels),
        "accuracy_with_synthetic": accuracy(mixed, unit(test_images), test_labels),
    }
    result["gain"] = result["accuracy_with_synthetic"] - result["accuracy_real_only"]
    return {"metrics": result, "synthetic_images": synthetic_images, "synthetic_labels": synthetic_labels}
