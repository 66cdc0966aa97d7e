"""The family-agnostic training loop.

The Trainer owns everything around a family's `training_step`: devices, seeding, the data
order, distributed gradient averaging, clipping, EMA, mixed precision, checkpoints and
resume, evaluation, progress, TensorBoard and divergence checks.

Determinism. Every source of randomness is a pure function of (seed, step, rank): the
data order of an epoch is a permutation seeded by (seed, epoch); before each step the
global torch RNG (the model's noise) and a separate data generator (e.g. dynamic
binarisation) are re-seeded from (seed, step, rank). So resuming from the checkpoint at
step k replays steps k, k+1, ... exactly as the uninterrupted run did, bit for bit on CPU,
without having to capture RNG states.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import TrainConfig
from ..errors import GenlabError
from ..imageio import display_scale, make_grid, save_bar_chart, save_grid
from ..fileio import atomic_write_text
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import (
    DistInfo,
    all_reduce_sum_,
    broadcast_parameters,
    init_distributed,
    ranks_in_sync,
    resolve_device,
)
from .ema import EMA
from ..errors import DivergenceError
from .optim import ManagedOptimizer

CHECKPOINT_NAME = "checkpoint.safetensors"
CLASS_MONITOR_SAMPLES = 1000  # samples classified at each preview to show mode collapse

# Distinct streams so the model's noise, the data's noise and the data order never share a seed.
_STREAM_MODEL, _STREAM_DATA, _STREAM_ORDER, _STREAM_EVAL = 0, 1, 2, 3


def derived_seed(seed: int, stream: int, *keys: int) -> int:
    """A 63-bit seed from (seed, stream, keys), mixed so that neighbouring inputs differ."""
    h = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    for k in keys:
        h ^= (k + 0x94D049BB133111EB + (h << 6) + (h >> 2)) & (2**64 - 1)
        h = (h * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    return h >> 1


@dataclass
class TrainResult:
    steps: int
    status: str  # finished | interrupted (checkpoint saved) | aborted (last checkpoint kept)
    val_metrics: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    train_time_s: float = 0.0  # time inside training steps only (no eval, no checkpoints)
    examples_per_s: float = 0.0  # training throughput over all ranks


class Trainer:
    def __init__(self, model, data, cfg: TrainConfig, run_dir: str | Path, *, log=None):
        self.cfg = cfg
        self.data = data
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        self.log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
        self.model = model.to(self.device)
        broadcast_parameters(self.model, self.dist)
        self.optimizers = {
            name: ManagedOptimizer(name, opt, grad_clip=cfg.grad_clip, dist_info=self.dist)
            for name, opt in model.configure_optimizers(cfg).items()
        }
        for managed in self.optimizers.values():
            for group in managed.optimizer.param_groups:  # the schedule scales each group's own lr
                group.setdefault("initial_lr", group["lr"])
        self.ema = EMA(model, model.ema_parameter_names(), cfg.ema_decay) if cfg.ema_decay else None
        n_train = data.num_examples("train")
        self.steps_per_epoch = (n_train // self.dist.world_size) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise GenlabError(
                f"batch_size={cfg.batch_size} is larger than the training split ({n_train} examples"
                + (f" over {self.dist.world_size} ranks" if self.dist.enabled else "")
                + ")",
                f"use batch_size={max(1, n_train // self.dist.world_size)} or smaller",
            )
        if cfg.steps is not None:
            self.total_steps = cfg.steps
        elif cfg.epochs is not None:
            self.total_steps = cfg.epochs * self.steps_per_epoch
        else:
            raise GenlabError("set either epochs= or steps=")
        if self.total_steps <= 0:
            raise GenlabError(f"nothing to train: {self.total_steps} steps", "use epochs>=1 or steps>=1")
        self.step = 0
        self._stop_requested = False
        self._writer = None

    # ------------------------------------------------------------------ helpers
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        order = torch.Generator().manual_seed(derived_seed(self.cfg.seed, _STREAM_ORDER, epoch))
        perm = torch.randperm(self.data.num_examples("train"), generator=order)
        shard = perm[self.dist.rank :: self.dist.world_size]
        b = self.cfg.batch_size
        return shard[i * b : (i + 1) * b]

    def learning_rate_factor(self, step: int) -> float:
        """The schedule at `step`, as a fraction of each optimizer group's base learning rate.

        A function of the step alone, so a resumed run continues the same schedule. Cosine
        decays over the run's total steps: extending a run (steps= on resume) stretches
        what is left of it.
        """
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, self.total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _set_learning_rates(self, step: int) -> None:
        if self.cfg.lr_schedule == "constant" and self.cfg.warmup_steps == 0:
            return  # leave the optimizers exactly as the family configured them
        factor = self.learning_rate_factor(step)
        for managed in self.optimizers.values():
            for group in managed.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _ema_weights(self):
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

    def _writer_or_none(self):
        if self._writer is None and self.cfg.tensorboard and self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step or None)
        return self._writer

    def _request_stop(self, signum, frame):
        if self._stop_requested:  # second Ctrl-C: leave now, keeping the last checkpoint
            raise KeyboardInterrupt
        self._stop_requested = True
        self.log("interrupt received: finishing this step, saving a checkpoint and exiting (Ctrl-C again to abort)")

    def _stop_agreed(self) -> bool:
        if not self.dist.enabled:
            return self._stop_requested
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        return all_reduce_sum_(flag, self.dist).item() > 0

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            # Finite gradients can still overflow the weights; never overwrite a good checkpoint with them.
            raise DivergenceError(
                f"training diverged: non-finite weights at step {self.step}; "
                f"the last good checkpoint {self.checkpoint_path} is kept",
                "lower the learning rate (lr=...) or enable clipping (grad_clip=1.0)",
            )
        meta = {"step": self.step, "world_size": self.dist.world_size, "seed": self.cfg.seed}
        save_checkpoint(
            self.checkpoint_path,
            self.model,
            {n: m.optimizer for n, m in self.optimizers.items()},
            self.ema.state_dict() if self.ema else None,
            meta,
        )

    def load_checkpoint(self) -> None:
        if not self.checkpoint_path.is_file():
            raise GenlabError(f"no checkpoint to resume from in {self.run_dir}", "start the run without --resume")
        meta, ema_state = load_checkpoint(self.checkpoint_path, self.model, {n: m.optimizer for n, m in self.optimizers.items()})
        if self.ema is not None:
            if ema_state is None:
                raise GenlabError("the checkpoint has no EMA weights but ema_decay is set", "resume with the run's original settings")
            self.ema.load_state_dict(ema_state)
        if meta.get("world_size", 1) != self.dist.world_size:
            self.log(
                f"warning: checkpoint was written by {meta['world_size']} rank(s), resuming on {self.dist.world_size}; "
                "the data order changes, so the result will not match an uninterrupted run exactly"
            )
        self.step = int(meta["step"])
        history = self.run_dir / "history.jsonl"
        if self.dist.is_main and history.is_file():  # forget evaluations the resumed run will redo
            kept = []
            for line in history.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line cut short by a kill
            history.write_text("".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "val", max_batches: int | None = None) -> dict[str, float]:
        """Mean of the family's validation_step scalars over a split (EMA weights if enabled)."""
        n = self.data.num_examples(split)
        indices = torch.arange(self.dist.rank, n, self.dist.world_size)
        b = self.cfg.batch_size
        batches = [indices[i : i + b] for i in range(0, len(indices), b)][:max_batches]
        sums: dict[str, float] = {}
        count = 0
        self.model.eval()
        try:
            with self._ema_weights(), self._autocast():
                for j, idx in enumerate(batches):
                    torch.manual_seed(derived_seed(self.cfg.seed, _STREAM_EVAL, j, self.dist.rank))
                    gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, _STREAM_EVAL, j, self.dist.rank, 1))
                    out = self.model.validation_step(self._to_device(self.data.batch(split, idx, gen)))
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                    count += len(idx)
        finally:
            self.model.train()
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64, device=self.device)
        totals = all_reduce_sum_(totals, self.dist)
        return self.model.summarize_validation({k: (totals[i] / totals[-1]).item() for i, k in enumerate(keys)})

    @torch.no_grad()
    def write_previews(self, directory: Path | None = None, tag_step: bool = True) -> dict[str, Path]:
        """The family's `preview`: image batches as PNG grids, texts as .txt files; both in TensorBoard."""
        if not self.dist.is_main:
            return {}
        directory = directory or self.run_dir / "samples"
        idx = torch.arange(min(32, self.data.num_examples("val")))
        gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, _STREAM_EVAL, 10**6))
        batch = self._to_device(self.data.batch("val", idx, gen))
        self.model.eval()
        try:
            with self._ema_weights():
                previews = self.model.preview(batch, torch.Generator(self.device).manual_seed(self.cfg.seed))
        finally:
            self.model.train()
        written = {}
        for name, preview in previews.items():
            suffix = f"_step{self.step:07d}" if tag_step else ""
            writer = self._writer_or_none()
            if isinstance(preview, str):  # generated text (the autoregressive families)
                written[name] = directory / f"{name}{suffix}.txt"
                atomic_write_text(written[name], preview)
                if writer is not None:  # TensorBoard renders markdown: a code block keeps line breaks
                    writer.add_text(f"preview/{name}", "```\n" + preview + "\n```", self.step)
                continue
            value_range = self.data.value_range
            scale = display_scale(preview.shape[-2])
            written[name] = save_grid(directory / f"{name}{suffix}.png", preview, value_range, nrow=8, scale=scale)
            if writer is not None:
                writer.add_image(f"preview/{name}", make_grid(preview, value_range, nrow=8), self.step, dataformats="HWC")
        if "sample" in self.model.capabilities:
            path = self._write_class_shares(directory, f"_step{self.step:07d}" if tag_step else "")
            if path is not None:
                written["class_histogram"] = path
        return written

    @functools.cached_property
    def _class_monitor(self):
        """The shipped classifier for the data set (None without one), loaded at first use."""
        from ..metrics.features import classifier_for_dataset

        dataset = getattr(getattr(self.data, "spec", None), "name", None)
        return classifier_for_dataset(dataset) if dataset else None

    @torch.no_grad()
    def _write_class_shares(self, directory: Path, suffix: str) -> Path | None:
        """Shares of each class among samples, as the shipped classifier for the data set sees them.

        Mode collapse shows here first: a GAN that draws only a few digits still makes sharp
        sample grids. Written as a bar chart PNG, TensorBoard scalars and a log line; skipped
        for data sets without a shipped classifier."""
        from ..metrics.image import class_histogram

        classifier = self._class_monitor
        if classifier is None:
            return None
        low, high = self.data.value_range
        self.model.eval()
        try:
            with self._ema_weights():
                generator = torch.Generator(self.device).manual_seed(self.cfg.seed)
                images = self.model.sample(CLASS_MONITOR_SAMPLES, generator=generator)
        finally:
            self.model.train()
        unit = ((images.float().cpu() - low) / (high - low)).clamp(0.0, 1.0)
        probabilities = classifier.probabilities(unit)
        predicted = probabilities.argmax(1)
        shares = class_histogram(predicted, probabilities.shape[1])
        labels = [str(k) for k in range(len(shares))]
        even = 1.0 / len(shares)
        path = save_bar_chart(directory / f"class_histogram{suffix}.png", shares, labels,
                              f"classes of {CLASS_MONITOR_SAMPLES} samples, step {self.step}", reference=even)
        writer = self._writer_or_none()
        if writer is not None:
            writer.add_scalar("samples/class_share_min", float(shares.min()), self.step)
            writer.add_scalar("samples/class_share_max", float(shares.max()), self.step)
            writer.add_histogram("samples/predicted_class", predicted, self.step, bins=np.arange(len(shares) + 1) - 0.5)
        if suffix:  # during training; the final copy into the model directory repeats the last one
            self.log(f"step {self.step}: class shares of samples {min(shares):.1%}..{max(shares):.1%} "
                     f"(even: {even:.1%}; far apart means mode collapse)")
        return path

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        if resume:
            self.load_checkpoint()
            if self.step >= self.total_steps:
                self.log(f"checkpoint is at step {self.step}; nothing left to do (raise epochs= or steps= to train longer)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        previous_handlers = {}
        with contextlib.suppress(ValueError):  # only the main thread may install handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous_handlers[sig] = signal.signal(sig, self._request_stop)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (cfg.progress and self.dist.is_main),
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=0.5,
        )
        status = "finished"
        val_metrics: dict[str, float] = {}
        start = time.perf_counter()
        train_time = 0.0
        steps_run = 0
        examples_per_step = cfg.batch_size * self.dist.world_size
        eval_every = cfg.eval_every or self.steps_per_epoch
        samples_every = cfg.samples_every or self.steps_per_epoch
        self.model.train()
        try:
            while self.step < self.total_steps:
                if self._stop_agreed():
                    status = "interrupted"
                    break
                t0 = time.perf_counter()
                torch.manual_seed(derived_seed(cfg.seed, _STREAM_MODEL, self.step, self.dist.rank))
                data_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, _STREAM_DATA, self.step, self.dist.rank))
                batch = self._to_device(self.data.batch("train", self._train_indices(self.step), data_gen))
                self._set_learning_rates(self.step)
                try:
                    with self._autocast():
                        logs = self.model.training_step(batch, self.step, self.optimizers)
                except DivergenceError as e:
                    where = f"at step {self.step}"
                    kept = (
                        f"the last good checkpoint {self.checkpoint_path} is intact; resume from it with --resume after changing settings"
                        if self.checkpoint_path.is_file()
                        else "no checkpoint was written yet"
                    )
                    raise DivergenceError(f"{e.message} {where}; {kept}", e.hint) from None
                if self.ema is not None:
                    self.ema.update(self.step)
                self.step += 1
                steps_run += 1
                train_time += time.perf_counter() - t0
                bar.update(1)
                if self.dist.is_main:
                    if steps_run % 10 == 0 or self.step == self.total_steps:
                        rate = steps_run * examples_per_step / max(train_time, 1e-9)
                        bar.set_postfix({**{k: f"{v:.4g}" for k, v in logs.items() if k == "loss"}, "ex/s": f"{rate:.0f}"}, refresh=False)
                    writer = self._writer_or_none()
                    if writer is not None and self.step % cfg.log_every == 0:
                        for k, v in logs.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                end_of_epoch = self.step % self.steps_per_epoch == 0
                out_of_time = self._over_time_budget(start)
                if out_of_time:
                    self.log(f"time budget of {cfg.time_budget_s:.0f} s reached at step {self.step}; finishing")
                last = self.step == self.total_steps or out_of_time
                if self.step % eval_every == 0 or last:
                    val_metrics = self.evaluate("val", cfg.eval_batches)
                    self._report(val_metrics, logs)
                if self.dist.is_main and (self.step % samples_every == 0 or last):
                    self.write_previews()
                if self.step % cfg.checkpoint_every == 0 or end_of_epoch or last:
                    self.save_checkpoint()
                if out_of_time:
                    break
        except KeyboardInterrupt:
            # A second Ctrl-C may land mid-step: the weights in memory are then half-updated,
            # so keep the last checkpoint rather than saving them.
            status = "aborted"
        finally:
            bar.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        if status == "interrupted":
            self.save_checkpoint()
        if self.dist.enabled:
            if not ranks_in_sync(self.model, self.dist):
                raise GenlabError("distributed ranks ended with different weights", "this is a bug in genlab; please report it")
            if self.dist.is_main:
                self.log(f"weights identical on all {self.dist.world_size} ranks")
        if self._writer is not None:
            self._writer.flush()
        wall = time.perf_counter() - start
        return TrainResult(
            steps=self.step,
            status=status,
            val_metrics=val_metrics,
            wall_time_s=wall,
            train_time_s=train_time,
            examples_per_s=steps_run * examples_per_step / train_time if train_time > 0 else 0.0,
        )

    def _over_time_budget(self, start: float) -> bool:
        if self.cfg.time_budget_s is None:
            return False
        over = torch.tensor([1.0 if time.perf_counter() - start > self.cfg.time_budget_s else 0.0], device=self.device)
        return all_reduce_sum_(over, self.dist).item() > 0  # any rank over budget stops them all

    def _report(self, val_metrics: dict, logs: dict) -> None:
        if not self.dist.is_main:
            return
        epoch = self.step / self.steps_per_epoch
        train_part = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
        val_part = "  ".join(f"{k} {v:.4g}" for k, v in val_metrics.items())
        self.log(f"step {self.step}/{self.total_steps} (epoch {epoch:.2f})  train: {train_part}  |  val: {val_part}")
        writer = self._writer_or_none()
        if writer is not None:
            for k, v in val_metrics.items():
                writer.add_scalar(f"val/{k}", v, self.step)
        with open(self.run_dir / "history.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "epoch": epoch, "train": logs, "val": val_metrics}) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
