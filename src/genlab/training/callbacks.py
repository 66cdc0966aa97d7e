"""Side work around the training loop: previews, TensorBoard, class shares, early stopping.

The Trainer calls each callback's hooks at fixed points of `fit`; the loop itself only
trains, evaluates, reports and checkpoints. The Trainer adds the defaults from its config
(Previews always, TensorBoard when cfg.tensorboard, EarlyStopping when early stopping or
keep_best is set); a caller passes others, e.g. ClassShareMonitor, which needs a classifier
that only the caller may load (training/ never imports genlab.metrics).

A callback with state (early stopping's best value and count) returns it from state_dict();
the Trainer stores it in the checkpoint, so a resumed run continues exactly where it was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import GenlabError
from ..fileio import atomic_save_safetensors, atomic_write_text
from ..imageio import display_scale, make_grid, save_bar_chart, save_grid

BEST_NAME = "best.safetensors"
# Validation metrics where more is better; everything else (losses, NLLs, perplexities) is minimised.
# A name is taken without its "@k" part, so ndcg@10 and recall@20 are maximised like ndcg@100.
HIGHER_IS_BETTER = frozenset({"elbo", "psnr", "accuracy", "ndcg", "recall"})


class Callback:
    """Hooks the Trainer calls; every hook is optional. `trainer` is the running Trainer."""

    def on_fit_start(self, trainer) -> None:
        """After a resume has restored the step and this callback's state."""

    def on_train_step(self, trainer, logs: dict[str, float]) -> None:
        """After every optimisation step; trainer.step already counts it."""

    def on_evaluation(self, trainer, val_metrics: dict[str, float]) -> bool:
        """After each validation pass (the same metrics on every rank); True asks the run to stop."""
        return False

    def on_previews(self, trainer, directory: Path, tag_step: bool) -> dict[str, Path]:
        """Write previews into `directory` (main rank only); name -> path of what was written.
        tag_step: put the step in the file names (during training; not for the final copies)."""
        return {}

    def on_fit_end(self, trainer, result) -> None:
        """After the loop; may fill in fields of `result` (a TrainResult)."""

    def state_dict(self) -> dict | None:
        """JSON-able state to keep in checkpoints, or None for a stateless callback."""
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

    def close(self) -> None:
        """Release files (the Trainer's close)."""


class TensorBoard(Callback):
    """Train and validation scalars; other callbacks add images and text via `tensorboard_writer`."""

    def __init__(self):
        self.writer = None

    def writer_for(self, trainer):
        if self.writer is None and trainer.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter  # slow to import: only when used

            # purge_step drops events a killed run wrote after the checkpoint it resumes from.
            self.writer = SummaryWriter(str(trainer.run_dir / "tensorboard"), purge_step=trainer.step or None)
        return self.writer

    def on_train_step(self, trainer, logs):
        if trainer.step % trainer.cfg.log_every == 0 and (writer := self.writer_for(trainer)) is not None:
            for k, v in logs.items():
                writer.add_scalar(f"train/{k}", v, trainer.step)

    def on_evaluation(self, trainer, val_metrics):
        if (writer := self.writer_for(trainer)) is not None:
            for k, v in val_metrics.items():
                writer.add_scalar(f"val/{k}", v, trainer.step)
        return False

    def on_fit_end(self, trainer, result):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tensorboard_writer(trainer):
    """The run's SummaryWriter, or None when TensorBoard is off or on a non-main rank."""
    for callback in trainer.callbacks:
        if isinstance(callback, TensorBoard):
            return callback.writer_for(trainer)
    return None


class Previews(Callback):
    """The family's `preview` of a fixed validation batch: image grids as PNG, texts as .txt."""

    @torch.no_grad()
    def on_previews(self, trainer, directory, tag_step):
        batch = trainer.preview_batch()
        with trainer.evaluation_weights():
            previews = trainer.model.preview(batch, torch.Generator(trainer.device).manual_seed(trainer.cfg.seed))
        suffix = f"_step{trainer.step:07d}" if tag_step else ""
        writer = tensorboard_writer(trainer)
        written = {}
        for name, preview in previews.items():
            if isinstance(preview, str):  # generated text (the autoregressive families)
                written[name] = directory / f"{name}{suffix}.txt"
                atomic_write_text(written[name], preview)
                if writer is not None:  # TensorBoard renders markdown: a code block keeps line breaks
                    writer.add_text(f"preview/{name}", "```\n" + preview + "\n```", trainer.step)
                continue
            value_range = trainer.data.value_range
            path = directory / f"{name}{suffix}.png"
            written[name] = save_grid(path, preview, value_range, nrow=8, scale=display_scale(preview.shape[-2]))
            if writer is not None:
                writer.add_image(f"preview/{name}", make_grid(preview, value_range, nrow=8), trainer.step, dataformats="HWC")
        return written


class ClassShareMonitor(Callback):
    """Shares of each class among samples, as `classifier` sees them.

    Mode collapse shows here first: a GAN that draws only a few digits still makes sharp
    sample grids. Written with the previews as a bar chart PNG and TensorBoard scalars, and a
    log line when some class is drawn at under half its even share. `classifier` is any object with .probabilities(images in [0, 1]) -> [N, K]; the
    caller loads it (e.g. genlab.metrics.features.classifier_for_dataset)."""

    def __init__(self, classifier, samples: int = 1000):
        self.classifier = classifier
        self.samples = samples

    @torch.no_grad()
    def on_previews(self, trainer, directory, tag_step):
        start = trainer.model.sampling_starts_at()
        if "sample" not in trainer.model.capabilities or (start > 0 and trainer.step <= start):
            return {}  # a two-phase model samples only once its second phase has taken a step
        with trainer.evaluation_weights():
            generator = torch.Generator(trainer.device).manual_seed(trainer.cfg.seed)
            images = trainer.model.sample(self.samples, generator=generator)
        low, high = trainer.data.value_range
        probabilities = self.classifier.probabilities(((images.float().cpu() - low) / (high - low)).clamp(0.0, 1.0))
        predicted = probabilities.argmax(1)
        classes = probabilities.shape[1]
        shares = (torch.bincount(predicted, minlength=classes).double() / len(predicted)).numpy()
        even = 1.0 / classes
        suffix = f"_step{trainer.step:07d}" if tag_step else ""
        path = save_bar_chart(directory / f"class_histogram{suffix}.png", shares, [str(k) for k in range(classes)],
                              f"classes of {self.samples} samples, step {trainer.step}", reference=even)
        if (writer := tensorboard_writer(trainer)) is not None:
            writer.add_scalar("samples/class_share_min", float(shares.min()), trainer.step)
            writer.add_scalar("samples/class_share_max", float(shares.max()), trainer.step)
            writer.add_histogram("samples/predicted_class", predicted, trainer.step, bins=np.arange(classes + 1) - 0.5)
        # A terminal line only when a class is drawn at under half its even share (the chart and
        # TensorBoard have the rest); during training only: the final copy repeats the last chart.
        if tag_step and shares.min() < even / 2:
            trainer.log(f"step {trainer.step}: class shares of samples {shares.min():.1%}..{shares.max():.1%} "
                        f"(even: {even:.1%}): some classes are rarely drawn, a sign of mode collapse")
        return {"class_histogram": path}


class EarlyStopping(Callback):
    """Tracks the best value of a validation metric; stops after `patience` evaluations
    without improvement (None: never), and with keep_best saves the best weights to
    run_dir/best.safetensors and puts them back into the model when the run ends.

    The weights saved are those evaluated: the EMA weights when EMA is on. The exported model
    is then exactly the best evaluated one (api.train saves the model under ema_weights(),
    into which the best weights are loaded as well)."""

    def __init__(self, monitor: str = "val.loss", mode: str = "auto", patience: int | None = None, keep_best: bool = False):
        self.key = monitor.removeprefix("val.")
        self.monitor = monitor
        self.higher_is_better = mode == "max" or (mode == "auto" and self.key.split("@")[0] in HIGHER_IS_BETTER)
        self.patience = patience
        self.keep_best = keep_best
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.evaluations_since_best = 0

    def state_dict(self):
        return {"best_value": self.best_value, "best_step": self.best_step, "best_metrics": self.best_metrics,
                "evaluations_since_best": self.evaluations_since_best}

    def load_state_dict(self, state):
        self.best_value, self.best_step = state["best_value"], state["best_step"]
        self.best_metrics, self.evaluations_since_best = state["best_metrics"], state["evaluations_since_best"]

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.higher_is_better else value < self.best_value

    def on_evaluation(self, trainer, val_metrics):
        if self.key not in val_metrics:
            raise GenlabError(f"train.monitor={self.monitor} is not a validation metric of this model",
                              f"use one of {', '.join('val.' + k for k in val_metrics)}")
        value = float(val_metrics[self.key])
        if self._improves(value):
            self.best_value, self.best_step, self.best_metrics = value, trainer.step, dict(val_metrics)
            self.evaluations_since_best = 0
            if self.keep_best and trainer.dist.is_main:
                self._save_best(trainer)
            return False
        self.evaluations_since_best += 1
        if self.patience is None or self.evaluations_since_best < self.patience:
            return False
        if trainer.dist.is_main:
            trainer.log(f"early stopping: {self.monitor} has not improved for {self.patience} evaluations; "
                        f"best {self.best_value:.4g} at step {self.best_step}")
        return True

    def _save_best(self, trainer) -> None:
        meta = {"step": self.best_step, "monitor": self.monitor, "value": self.best_value, "metrics": self.best_metrics}
        with trainer.ema_weights():  # atomic_save_safetensors copies the tensors before the swap ends
            atomic_save_safetensors(trainer.model.state_dict(), trainer.run_dir / BEST_NAME, {"genlab": json.dumps(meta)})

    def on_fit_end(self, trainer, result):
        result.best_step, result.best_metric = self.best_step, self.best_value
        if self.keep_best and self.best_step is not None and result.status in ("finished", "early_stopped"):
            self._load_best(trainer)
            result.val_metrics = dict(self.best_metrics)  # the metrics of the weights that are exported

    def _load_best(self, trainer) -> None:
        path = trainer.run_dir / BEST_NAME
        with safe_open(str(path), framework="pt") as f:
            saved_step = json.loads((f.metadata() or {}).get("genlab", "{}")).get("step")
        if saved_step != self.best_step:
            raise GenlabError(f"{path} holds the weights of step {saved_step}, but the best evaluation was at step "
                              f"{self.best_step}", "the run directory was changed by hand; train the run again")
        best = load_file(str(path))
        with torch.no_grad():
            trainer.model.load_state_dict(best)
            if trainer.ema is not None:  # ema_weights() swaps the shadow in: it must hold the best weights too
                trainer.ema.load_state_dict({name: best[name] for name in trainer.ema.shadow})
        if trainer.dist.is_main:
            trainer.log(f"kept the best weights: {self.monitor} {self.best_value:.4g} at step {self.best_step}")
