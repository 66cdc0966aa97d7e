"""A toy plugin, declared from the tests alone: a data kind (points on a ring), a family that
fits them (a diagonal Gaussian) and an application (the statistics of samples), each registered
the way docs/extending.md says. No genlab module names any of them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn

from genlab.limits import ModelName, Seed, Strict
from genlab.models.base import GenerativeModel
from genlab.registry import Application, Catalogue, DataKind, HttpRoute, register_application, register_data_kind, \
    register_family

RING_RADIUS = 3.0


# ----------------------------------------------------------------------------- the data kind


@dataclass
class PointsSpec:
    name: str = "ring"
    n: int = 600
    split_seed: int = 0


class PointsData:
    """Points on a noisy ring of radius 3 around (1, -2), split 80/10/10."""

    classes: list = []
    value_range = (-10.0, 10.0)

    def __init__(self, spec: PointsSpec):
        self.spec = spec
        g = torch.Generator().manual_seed(spec.split_seed)
        angle = torch.rand(spec.n, generator=g) * 2 * math.pi
        radius = RING_RADIUS + 0.1 * torch.randn(spec.n, generator=g)
        points = torch.stack([1 + radius * angle.cos(), -2 + radius * angle.sin()], 1)
        cut = [int(spec.n * 0.8), int(spec.n * 0.9)]
        self.parts = dict(zip(("train", "val", "test"), points.tensor_split(cut)))

    def num_examples(self, split: str) -> int:
        return len(self.parts[split])

    def batch(self, split: str, indices, generator=None) -> dict:
        return {"x": self.parts[split][indices]}

    def model_fields(self) -> dict:
        return {"dim": 2}


def evaluate_points(model, **options) -> dict:
    data = PointsData(PointsSpec(**model.artifact_config["data"]))
    x = data.parts["test"]
    with torch.no_grad():
        nll = float(-model.log_prob(x).mean())
    return {"data": "ring:test", "nll": nll, "n": len(x)}


POINTS = register_data_kind(DataKind(
    name="points",
    spec_class=PointsSpec,
    load=lambda spec, resumed_run: PointsData(spec),
    catalogue=Catalogue("points (toy-gaussian; a test plugin)", {"ring": "points on a noisy ring"},
                        lambda name, root: "embedded"),
    evaluate=evaluate_points,
    report=lambda result: [f"test NLL on {result['data']}: {result['nll']:.4f} nats per point ({result['n']} points)"],
    sample=lambda model, options: print("\n".join(
        f"{x:.3f},{y:.3f}" for x, y in model.sample(options["n"] or 5,
                                                     generator=torch.Generator().manual_seed(options["seed"])).tolist())),
    next_steps=lambda run_dir: f"next: genlab apply points-stats {run_dir}",
))


# ----------------------------------------------------------------------------- the family


@dataclass
class ToyGaussianConfig:
    dim: int = 2


@register_family("toy-gaussian")
class ToyGaussian(GenerativeModel):
    """A diagonal Gaussian fitted by maximum likelihood: mean (D,), log standard deviation (D,)."""

    config_class = ToyGaussianConfig
    data_kind = "points"
    capabilities = frozenset({"sample", "log_likelihood"})

    def __init__(self, config: ToyGaussianConfig):
        super().__init__(config)
        self.mean = nn.Parameter(torch.zeros(config.dim))
        self.log_std = nn.Parameter(torch.zeros(config.dim))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B,)
        return torch.distributions.Normal(self.mean, self.log_std.exp()).log_prob(x).sum(-1)

    def training_step(self, batch, step, optimizers):
        loss = -self.log_prob(batch["x"]).mean()
        optimizers["main"].step(loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch):
        return {"loss": -self.log_prob(batch["x"]).mean().item()}

    @torch.no_grad()
    def sample(self, n, *, condition=None, generator=None):
        noise = torch.randn((n, self.config.dim), generator=generator)
        return self.mean + self.log_std.exp() * noise


# ----------------------------------------------------------------------------- the application


def sample_statistics(model, n: int, seed: int) -> dict:
    points = model.sample(n, generator=torch.Generator().manual_seed(seed))
    return {"n": n, "mean": points.mean(0).tolist(), "std": points.std(0).tolist()}


def add_arguments(parser) -> None:
    parser.add_argument("-n", type=int, default=1000, help="samples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)


def run(model, args) -> None:
    stats = sample_statistics(model, args.n, args.seed)
    print(f"mean of {stats['n']} samples: {stats['mean'][0]:.3f} {stats['mean'][1]:.3f}")


class StatsRequest(Strict):
    model: str = ModelName
    n: int = Field(1000, ge=1, le=100_000, description="samples")
    seed: int = Seed


STATS = register_application(Application(
    name="points-stats",
    summary="mean and standard deviation of a toy model's samples",
    examples="examples:\n  genlab apply points-stats MODEL -n 1000",
    add_arguments=add_arguments,
    run=run,
    kinds=("points",),
    capability="sample",
    function=sample_statistics,
    http=HttpRoute("/v1/points/stats", "statistics of samples (a test plugin)", StatsRequest,
                   lambda model, body, files: sample_statistics(model, body.n, body.seed),
                   body="json"),
    studio=True,
))

RECIPE = {"name": "toy-ring", "description": "a Gaussian on the toy ring", "family": "toy-gaussian",
          "data": {"name": "ring"}, "model": {},
          "train": {"steps": 200, "batch_size": 64, "lr": 0.05, "progress": False, "tensorboard": False}}
