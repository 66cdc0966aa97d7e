"""The interface every model family implements.

Families own their update rule, the Trainer owns everything else: a model says how one
optimisation step goes (a GAN steps its critic and generator inside its own
`training_step`), while the Trainer owns the loop, devices, mixed precision, distributed
gradient averaging, clipping, EMA, checkpoints, logging and divergence checks. The bridge
is `ManagedOptimizer.step(loss)` (genlab.training.optim), which a family calls instead of
`loss.backward(); opt.step()`.

Capabilities are small protocols that tasks and metrics check with `require`: `sample`
(unconditional draws; what sample-quality metrics need), `encode`/`decode` (latent models;
`decode(z, y=None)` returns images in the data range), `log_likelihood` (a bound or exact
value in nats per example), `conditional` (sampling takes a class label), `generate`
(continues a prompt; the autoregressive families), `recommend` (`scores(history)`: a
score per item for each history of clicks; the recommender families).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import GenlabError
from ..limits import MAX_SAMPLES
from ..metrics.ranking import ranking_sums
from ..tensors import eval_mode, rand, randint, randn  # noqa: F401  (the families' helpers, re-exported)


class GenerativeModel(nn.Module):
    family: ClassVar[str]  # set by @register_family
    config_class: ClassVar[type]  # the family's dataclass config
    data_kind: ClassVar[str] = "image"  # which data a recipe's data section describes: image | text
    needs_tokenizer: ClassVar[bool] = False  # text families: prompts and samples go through `tokenizer`

    # Set by genlab.train / genlab.load (genlab.artifact); None on a model built in code.
    artifact_config: dict | None = None  # the run's resolved recipe (data, model, train sections)
    artifact_dir: Path | None = None  # the run directory the model was loaded from
    tokenizer = None  # a text model's tokenizer (genlab.data.text), when needs_tokenizer
    supports_muon = False  # configure_optimizers honours train.optimizer=muon

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # -- training ---------------------------------------------------------------------
    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """Name -> optimizer. `train` is the TrainConfig (lr, weight_decay)."""
        return {"main": torch.optim.Adam(self.parameters(), lr=train.lr, weight_decay=train.weight_decay)}

    def training_step(self, batch: dict[str, torch.Tensor], step: int, optimizers: dict) -> dict[str, float]:
        """One optimisation step; call optimizers[name].step(loss). Returns scalars to log."""
        raise NotImplementedError

    def initialize_from_data(self, data, resumed: bool) -> None:
        """Called by the Trainer once at the start of every fit, before the first step, with the
        data object it batches. For what a family computes from the whole training split rather
        than from batches: item counts (popularity), the item-item Gram matrix (EASE's closed
        form). Every rank calls it; it must be a deterministic function of the data. resumed:
        the weights came from a checkpoint (do not overwrite what training has changed)."""

    @torch.no_grad()
    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Scalars for one validation batch (means over the batch); the Trainer averages them."""
        return {}

    def summarize_validation(self, means: dict[str, float]) -> dict[str, float]:
        """The validation metrics from the averaged scalars; add those that are not means
        (e.g. a perplexity is exp of the mean loss)."""
        return means

    # -- generation -------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None) -> torch.Tensor:
        # A family that can sample overrides this; one that cannot (an upsampler, a denoiser:
        # they need an input image) says so with the families that can.
        self.require("sample", "drawing samples")
        raise NotImplementedError(f"{self.family} advertises 'sample' but does not implement it")

    @torch.no_grad()
    def preview(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Named image batches for sample grids and TensorBoard (e.g. samples, reconstructions),
        in the data's value range."""
        return {}

    def ema_parameter_names(self) -> list[str]:
        """Parameters the Trainer keeps an exponential moving average of (all by default)."""
        return [name for name, _ in self.named_parameters()]

    def sampling_starts_at(self) -> int:
        """The first step that trains what sampling uses (later than 0 for a family that trains it in a
        second phase, e.g. latent diffusion after its autoencoder): the EMA's warm-up counts from
        there, and callbacks that draw samples wait for it."""
        return 0

    # Shared by the class-conditional families (config.conditional, config.num_classes).
    def _labels_for_sampling(self, n: int, condition, generator: torch.Generator | None) -> torch.Tensor | None:
        if not self.config.conditional:
            if condition is not None:
                raise GenlabError(
                    f"this {self.family} model is unconditional, so it cannot sample a given class",
                    "train with model.conditional=true to sample by class",
                )
            return None
        num_classes = self.config.num_classes
        if condition is None:  # no class asked for: draw classes uniformly
            return randint(num_classes, (n,), generator, self.device)
        if isinstance(condition, int) and not isinstance(condition, bool):
            labels = torch.full((n,), condition, dtype=torch.long, device=self.device)
        elif isinstance(condition, torch.Tensor) and not condition.is_floating_point() and condition.shape == (n,):
            labels = condition.to(self.device, torch.long)
        else:
            raise GenlabError(
                f"condition must be a class index or a LongTensor of {n} class indices, got {condition!r}"
            )
        out_of_range = labels[(labels < 0) | (labels >= num_classes)]
        if out_of_range.numel():
            raise GenlabError(
                f"class {out_of_range[0].item()} is out of range", f"this model knows classes 0..{num_classes - 1}"
            )
        return labels

    # -- capabilities -----------------------------------------------------------------
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def require(self, capability: str, purpose: str) -> None:
        if capability not in self.capabilities:
            from ..registry import applications_for, families_with

            can = [f"genlab apply {name}" for name in applications_for(self.data_kind, self.capabilities)]
            if "sample" in self.capabilities:
                can.insert(0, "genlab sample")
            having = families_with(capability)
            raise GenlabError(
                f"{purpose} needs a model with the {capability!r} capability; "
                f"this {self.family} model does not have it",
                (f"this model fits: {', '.join(can)}; " if can else "")
                + f"families with {capability!r}: {', '.join(having) or '(none yet)'}",
            )

    @property
    def data_range(self) -> tuple[float, float]:
        """The (low, high) value range of the images the model takes and makes ((0, 1) if its config has none)."""
        return tuple(getattr(self.config, "data_range", (0.0, 1.0)))

    @property
    def device(self) -> torch.device:
        # buffers too: a closed-form family (EASE, popularity) holds no trainable parameters
        return next(itertools.chain(self.parameters(), self.buffers())).device


# ----------------------------------------------------------------------------- shared helpers


def mlp(sizes: list[int], activation=nn.ReLU) -> nn.Sequential:
    """Linear layers sizes[0] -> sizes[1] -> ... -> sizes[-1], `activation()` between them
    (none after the last): [B, sizes[0]] -> [B, sizes[-1]]."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class ImageConfig:
    """What the image families' configs share: a `data_range` field (low, high) of the images,
    filled in from the data, checked here. A plain mixin, not a dataclass, so each family keeps
    its own fields, defaults and field order (and its config.json keys)."""

    def check_data_range(self) -> None:
        if len(self.data_range) != 2 or not self.data_range[0] < self.data_range[1]:
            raise GenlabError(f"model.data_range must be (low, high) with low < high, got {self.data_range}")


def check_sample_count(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_SAMPLES:
        raise GenlabError(f"the number of samples must be an integer in 1..{MAX_SAMPLES:,}, got {n!r}",
                          "e.g. -n 64; draw more in several calls with different seeds")
    return n


class Recommender(GenerativeModel):
    """What the recommender families (multvae, multdae, ease, popularity) share: they take click
    histories [B, I] (the interactions data kind), score every item, and are validated by the
    ranking metrics of Liang et al. 2018 on the held-out users' evaluated items, with the
    fold-in items excluded from the ranking."""

    data_kind = "interactions"
    capabilities = frozenset({"recommend"})
    VALIDATION = {"ndcg_ks": (100,), "recall_ks": (20, 50)}

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """[B, I] clicks (0/1) -> [B, I] scores; higher = recommended first."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_step(self, batch):
        # Sums / batch size: the Trainer's size-weighted mean of these is sum / users, which
        # summarize_validation turns into the mean over the users with an evaluated item.
        sums = ranking_sums(self.scores(batch["x"]), batch["heldout"], exclude=batch["x"], **self.VALIDATION)
        return {key: value / len(batch["x"]) for key, value in sums.items()}

    def summarize_validation(self, means):
        users = means.pop("users", 0.0)
        return {key: value / users if users else float("nan") for key, value in means.items()}

    def check_history(self, history: torch.Tensor) -> None:
        if history.ndim != 2 or history.shape[1] != self.config.num_items:
            raise GenlabError(f"a history must be [users, {self.config.num_items}] clicks, got {list(history.shape)}")
