"""The family-agnostic training loop.

The Trainer owns everything around a family's `training_step`: devices, seeding, the data
order, distributed gradient averaging, clipping, EMA, mixed precision, checkpoints and
resume, evaluation, progress and divergence checks. Side work (previews, TensorBoard,
class shares, early stopping) lives in callbacks (genlab.training.callbacks).

Determinism. Every source of randomness is a pure function of (seed, step, rank): the
data order of an epoch is a permutation seeded by (seed, epoch); before each step the
global torch RNG (the model's noise) and a separate data generator (e.g. dynamic
binarisation) are re-seeded from (seed, step, rank). So resuming from the checkpoint at
step k replays steps k, k+1, ... exactly as the uninterrupted run did, bit for bit on CPU,
without having to capture RNG states. Callback state (early stopping) is in the checkpoint too.

Time budgets. With train.time_budget_s the run is planned in seconds rather than steps: the
schedule's progress is the fraction of the budget used by the end of the coming step (wall
time since the start, evaluations and checkpoints included, plus the measured length of a
step and of the final side work: the longest evaluation, preview and checkpoint so far, summed,
since the end runs all three), so the learning rate reaches its floor on the last step
and the run stops within one step of the deadline. The budget used is recorded in every
checkpoint: a resumed run continues from it, the steps already taken are exact, and the
rest follows the clock (so, unlike a step-counted run, it does not replay bit for bit).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import TrainConfig
from ..errors import DivergenceError, GenlabError
from ..fileio import atomic_write_text
from ..tensors import eval_mode
from .callbacks import Callback, EarlyStopping, Previews, TensorBoard
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import (DistInfo, all_reduce_sum_, broadcast_parameters, cpu_has_fast_bf16, init_distributed,
                          ranks_in_sync, resolve_device)
from .ema import EMA
from .optim import ManagedOptimizer

CHECKPOINT_NAME = "checkpoint.safetensors"
# Without an explicit eval_every / samples_every: about this many evaluations per run, but at
# most one per epoch (a short epoch would otherwise print a line every few steps).
EVALUATIONS_PER_RUN = 20

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
    # finished | early_stopped (a callback stopped it; the model is complete) |
    # interrupted (checkpoint saved) | aborted (last checkpoint kept)
    status: str
    val_metrics: dict = field(default_factory=dict)  # the last evaluation's; with keep_best, the best one's
    wall_time_s: float = 0.0
    budget_used_s: float | None = None  # with time_budget_s: seconds of the budget used, earlier sessions included
    train_time_s: float = 0.0  # time inside training steps only (no eval, no checkpoints)
    examples_per_s: float = 0.0  # training throughput over all ranks
    best_step: int | None = None  # with early stopping / keep_best: the step of the best evaluation
    best_metric: float | None = None  # ... and its value of cfg.monitor


class Trainer:
    def __init__(self, model, data, cfg: TrainConfig, run_dir: str | Path, *, log=None, callbacks=(), clock=time.perf_counter):
        self.cfg = cfg
        self.clock = clock  # seconds; tests pass a fake one to drive a time budget deterministically
        self.data = data
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        self.log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
        self.model = model.to(self.device)
        broadcast_parameters(self.model, self.dist)
        wants_cpu_bf16 = cfg.cpu_amp and self.device.type == "cpu"
        self.cpu_bf16 = wants_cpu_bf16 and cpu_has_fast_bf16()
        if wants_cpu_bf16 and not self.cpu_bf16:
            self.log("train.cpu_amp: this CPU has no AMX tiles (without them bf16 is ~100x slower than fp32): "
                     "training in fp32")
        if cfg.optimizer == "muon" and not model.supports_muon:
            raise GenlabError(f"train.optimizer=muon is not available for the {type(model).__name__} family",
                              "remove train.optimizer (the family's own optimizer is used), or train a gpt model")
        self.optimizers = {
            name: ManagedOptimizer(name, opt, grad_clip=cfg.grad_clip, dist_info=self.dist)
            for name, opt in model.configure_optimizers(cfg).items()
        }
        for managed in self.optimizers.values():
            for group in managed.optimizer.param_groups:  # the schedule scales each group's own lr
                group.setdefault("initial_lr", group["lr"])
        self.ema = EMA(model, model.ema_parameter_names(), cfg.ema_decay) if cfg.ema_decay else None
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self._total_steps()  # None: a time budget alone ends the run
        # Without a step count the default cadence is in progress: every 1/EVALUATIONS_PER_RUN of the budget.
        cadence = (max(self.steps_per_epoch, math.ceil(self.total_steps / EVALUATIONS_PER_RUN))
                   if self.total_steps is not None and cfg.time_budget_s is None else None)
        self.eval_every = cfg.eval_every or cadence
        self.samples_every = cfg.samples_every or cadence
        # The budget clock (see the module docstring): seconds used in earlier sessions, the
        # measured length of a step and of the final evaluation, and the progress of the last step.
        self._budget_used_before = 0.0
        self._start: float | None = None  # the clock when this session's loop began
        self._step_seconds = 0.0
        # The longest each side job (evaluation, previews, checkpoint) has taken: the final side work runs all
        # three, so the reserve kept free before the deadline is their sum (_final_reserve_s).
        self._side_work_s: dict[str, float] = {}
        self.progress = 0.0
        self._next_job_progress: dict[str, float] = {}  # budget runs: the progress at which each periodic job is next due
        self.callbacks: list[Callback] = [*self._default_callbacks(), *callbacks]
        self.step = 0
        self._epoch_order: tuple[int, torch.Tensor | None] = (-1, None)  # (epoch, this rank's share of its order)
        self.early_stopped = False
        self._stop_requested = False

    def _steps_per_epoch(self) -> int:
        n_train = self.data.num_examples("train")
        steps = (n_train // self.dist.world_size) // self.cfg.batch_size
        if steps == 0:
            raise GenlabError(
                f"batch_size={self.cfg.batch_size} is larger than the training split ({n_train} examples"
                + (f" over {self.dist.world_size} ranks" if self.dist.enabled else "")
                + ")",
                f"use batch_size={max(1, n_train // self.dist.world_size)} or smaller",
            )
        return steps

    def _total_steps(self) -> int | None:
        cfg = self.cfg
        if cfg.steps is None and cfg.epochs is None:
            if cfg.time_budget_s is not None:
                return None
            raise GenlabError("set either epochs= or steps= (or a time budget: train.time_budget_s=SECONDS)")
        total = cfg.steps if cfg.steps is not None else cfg.epochs * self.steps_per_epoch
        if total <= 0:
            raise GenlabError(f"nothing to train: {total} steps", "use epochs>=1 or steps>=1")
        return total

    def _default_callbacks(self) -> list[Callback]:
        cfg = self.cfg
        defaults: list[Callback] = [Previews()]
        if cfg.tensorboard:
            defaults.append(TensorBoard())
        if cfg.early_stopping_patience is not None or cfg.keep_best:
            defaults.append(EarlyStopping(cfg.monitor, cfg.monitor_mode, cfg.early_stopping_patience, cfg.keep_best))
        return defaults

    # ------------------------------------------------------------------ helpers
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.cpu_bf16:  # train.cpu_amp on a CPU with AMX: matmuls in bf16, weights and optimizer state in fp32
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._epoch_order[0] != epoch:
            # Once per epoch: a text corpus has about a million windows, and drawing their
            # permutation at every step would cost a small model a quarter of its step time.
            order = torch.Generator().manual_seed(derived_seed(self.cfg.seed, _STREAM_ORDER, epoch))
            perm = torch.randperm(self.data.num_examples("train"), generator=order)
            if hasattr(self.data, "order_batches"):  # e.g. text pairs: batches of similar length pad less
                perm = self.data.order_batches(perm, self.cfg.batch_size * self.dist.world_size, order)
            self._epoch_order = (epoch, perm[self.dist.rank :: self.dist.world_size])
        b = self.cfg.batch_size
        return self._epoch_order[1][i * b : (i + 1) * b]

    def learning_rate_factor(self, step: int, progress: float | None = None) -> float:
        """The schedule at `step`, as a fraction of each optimizer group's base learning rate.

        progress in [0, 1] is how far through the run the step is: step / total steps when
        counting steps (the default), the fraction of the time budget used by the end of the
        step with one. The closed form: warm-up x decay, where warm-up is
        min(1, (step + 1) / warmup_steps) or min(1, progress / warmup_fraction), and the cosine
        decays from 1 to min_lr_ratio as progress goes from the end of warm-up to 1; wsd holds 1
        until progress 1 - decay_fraction, then falls in a straight line to min_lr_ratio at 1
        (warm-up, stable, decay: Hägele et al. 2024; Bergsma et al. 2025 decay to 0). Counting
        steps it is a function of the step alone, so a resumed run continues the same schedule;
        extending a run (steps= on resume) stretches what is left of it.
        """
        cfg = self.cfg
        if progress is None:
            progress = min(1.0, step / self.total_steps) if self.total_steps else 0.0
        warm, decay_from = 1.0, 0.0
        if cfg.warmup_fraction is not None:
            warm, decay_from = min(1.0, progress / cfg.warmup_fraction), cfg.warmup_fraction
        elif cfg.warmup_steps:
            warm = min(1.0, (step + 1) / cfg.warmup_steps)
            if self.total_steps and cfg.time_budget_s is None:
                decay_from = min(1.0, cfg.warmup_steps / self.total_steps)
        if cfg.lr_schedule == "constant":
            return warm
        if cfg.lr_schedule == "wsd":
            q = min(1.0, max(0.0, (progress - (1.0 - cfg.decay_fraction)) / cfg.decay_fraction))
            return warm * (1.0 - (1.0 - cfg.min_lr_ratio) * q)
        q = min(1.0, max(0.0, (progress - decay_from) / max(1e-12, 1.0 - decay_from)))
        return warm * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * q)))

    def _set_learning_rates(self, step: int, progress: float | None = None) -> None:
        if self.cfg.lr_schedule == "constant" and self.cfg.warmup_steps == 0 and self.cfg.warmup_fraction is None:
            return  # leave the optimizers exactly as the family configured them
        factor = self.learning_rate_factor(step, progress)
        for managed in self.optimizers.values():
            for group in managed.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def ema_weights(self):
        """Context: the EMA weights in the model (the exported and evaluated ones); a no-op without EMA."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def evaluation_weights(self):
        """Context: eval mode and the EMA weights, back to the mode and weights before after."""
        with eval_mode(self.model), self.ema_weights():
            yield

    def preview_batch(self) -> dict:
        """The same first validation examples at every preview, so previews compare across steps."""
        idx = torch.arange(min(32, self.data.num_examples("val")))
        gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, _STREAM_EVAL, 10**6))
        return self._to_device(self.data.batch("val", idx, gen))

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
        states = {type(cb).__name__: state for cb in self.callbacks if (state := cb.state_dict()) is not None}
        meta = {"step": self.step, "world_size": self.dist.world_size, "seed": self.cfg.seed,
                "early_stopped": self.early_stopped, "callbacks": states,
                # the budget clock, so that a resumed budget run plans its next step as the first run would have
                "budget_used_s": self.budget_used(), "budget_step_s": self._step_seconds,
                "budget_side_work_s": dict(self._side_work_s)}
        optimizers = {n: m.optimizer for n, m in self.optimizers.items()}
        save_checkpoint(self.checkpoint_path, self.model, optimizers, self.ema.state_dict() if self.ema else None, meta)

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
        self.early_stopped = bool(meta.get("early_stopped", False))
        self._budget_used_before = float(meta.get("budget_used_s") or 0.0)
        self._step_seconds = float(meta.get("budget_step_s") or 0.0)
        # A checkpoint from before the side jobs were timed apart holds their reserve as one figure.
        saved = meta.get("budget_side_work_s") or {"side work": meta.get("budget_reserve_s") or 0.0}
        self._side_work_s = {job: float(seconds) for job, seconds in saved.items()}
        states = meta.get("callbacks", {})
        for cb in self.callbacks:  # a callback new to this run (none saved) starts fresh
            if type(cb).__name__ in states:
                cb.load_state_dict(states[type(cb).__name__])
        if self.dist.is_main:
            self._forget_history_after(self.step)

    def _forget_history_after(self, step: int) -> None:
        """Drop evaluations after `step` from history.jsonl: the resumed run redoes them."""
        history = self.run_dir / "history.jsonl"
        if not history.is_file():
            return
        kept = []
        for line in history.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line cut short by a kill
        atomic_write_text(history, "".join(line + "\n" for line in kept))

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
        with self.evaluation_weights(), self._autocast():
            for j, idx in enumerate(batches):
                torch.manual_seed(derived_seed(self.cfg.seed, _STREAM_EVAL, j, self.dist.rank))
                gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, _STREAM_EVAL, j, self.dist.rank, 1))
                out = self.model.validation_step(self._to_device(self.data.batch(split, idx, gen)))
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                count += len(idx)
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64, device=self.device)
        totals = all_reduce_sum_(totals, self.dist)
        return self.model.summarize_validation({k: (totals[i] / totals[-1]).item() for i, k in enumerate(keys)})

    def write_previews(self, directory: Path | None = None, tag_step: bool = True) -> dict[str, Path]:
        """Every callback's previews (the family's grids and texts, class shares, ...): name -> path."""
        if not self.dist.is_main:
            return {}
        written = {}
        for cb in self.callbacks:
            written.update(cb.on_previews(self, directory or self.run_dir / "samples", tag_step))
        return written

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> TrainResult:
        if resume:
            self.load_checkpoint()
            if self.early_stopped:
                self.log(f"the run stopped early at step {self.step}; nothing left to do")
            elif self._steps_done():
                self.log(f"checkpoint is at step {self.step}; nothing left to do (raise epochs= or steps= to train longer)")
            elif self.cfg.time_budget_s is not None and self._budget_used_before >= self.cfg.time_budget_s:
                self.log(f"the checkpoint used {self._budget_used_before:.0f} s of the {self.cfg.time_budget_s:.0f} s budget; "
                         "nothing left to do (raise train.time_budget_s to train longer)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model.train()  # a model may come in eval mode (evaluation_weights restores the mode it found)
        # Statistics a family takes from the whole training split (EASE's Gram matrix,
        # popularity's counts) rather than from batches; a no-op for the others.
        self.model.initialize_from_data(self.data, resumed=resume)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        start = self._start = self.clock()
        self._train_time, self._steps_run, self._last_val_metrics = 0.0, 0, {}
        with self._stop_on_signals(), self._progress_bar() as bar:
            try:
                status = self._loop(bar)
            except KeyboardInterrupt:
                # A second Ctrl-C may land mid-step: the weights in memory are then half-updated,
                # so keep the last checkpoint rather than saving them.
                status = "aborted"
        if status == "interrupted":
            self.save_checkpoint()
        self._check_ranks_in_sync()
        result = TrainResult(steps=self.step, status=status, val_metrics=self._last_val_metrics,
                             wall_time_s=self.clock() - start, train_time_s=self._train_time,
                             budget_used_s=self.budget_used() if self.cfg.time_budget_s is not None else None,
                             examples_per_s=self._steps_run * self._examples_per_step / max(self._train_time, 1e-9))
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _steps_done(self) -> bool:
        return self.total_steps is not None and self.step >= self.total_steps

    def _loop(self, bar) -> str:
        """Train until the end, the deadline, a stop request or a callback's stop; returns the status."""
        budget = self.cfg.time_budget_s
        while not self._steps_done() and not self.early_stopped:
            if self._stop_agreed():
                return "interrupted"
            last_by_time = False
            if budget is not None:
                # Plan this step: the progress it will end at, and whether another one would still fit.
                used, step_s, reserve_s = self._budget_clock()
                if used >= budget:  # an evaluation overran the plan (or a resumed run has no time left)
                    if self._steps_run > 0:
                        self.log(f"time budget of {budget:.0f} s used up at step {self.step}")
                        self._after_step(logs, last=True)
                    break
                last_by_time = used + 2 * step_s + reserve_s > budget
                # The last step runs at the floor of the schedule.
                self.progress = 1.0 if last_by_time else min(
                    1.0, max(self._step_progress(self.step + 1), (used + step_s + reserve_s) / budget))
            else:
                self.progress = self._step_progress(self.step + 1)
            logs = self._train_step(self.progress if budget is not None else None)
            self._show_progress(bar, logs)
            for cb in self.callbacks:
                cb.on_train_step(self, logs)
            if last_by_time:
                self.log(f"time budget of {budget:.0f} s: stopping at step {self.step} with "
                         f"{self.budget_used():.1f} s used (learning rate at its floor)")
            self._after_step(logs, last=self._steps_done() or last_by_time)
            if last_by_time:
                break
        return "early_stopped" if self.early_stopped else "finished"

    def _after_step(self, logs: dict, last: bool) -> None:
        """The periodic side work after a step: evaluation, previews, checkpoint (all of them after the last)."""
        if self._due(self.eval_every, "eval") or last:
            self._timed("eval", lambda: self._evaluate_and_report(logs))  # may set early_stopped
            self._plan_next("eval")
        if self._due(self.samples_every, "samples") or last or self.early_stopped:
            self._timed("previews", self.write_previews)
            self._plan_next("samples")
        if self.step % self.cfg.checkpoint_every == 0 or self.step % self.steps_per_epoch == 0 or last or self.early_stopped:
            self._timed("checkpoint", self.save_checkpoint)

    @property
    def _final_reserve_s(self) -> float:
        """What the final evaluation, previews and checkpoint may cost together: kept free at the end. Each job
        has its own cadence, so the length of one side work alone may miss the slowest of them."""
        return sum(self._side_work_s.values())

    def _timed(self, job: str, work) -> None:
        start = self.clock()
        work()
        self._side_work_s[job] = max(self._side_work_s.get(job, 0.0), self.clock() - start)

    def _step_progress(self, step: int) -> float:
        return min(1.0, step / self.total_steps) if self.total_steps else 0.0

    def _due(self, every: int | None, job: str) -> bool:
        """Whether a periodic job (evaluation, previews) is due after this step: every `every`
        steps, or without a step count once 1/EVALUATIONS_PER_RUN of the budget has passed since
        the job last ended (counted from its end: a job longer than that would otherwise run after every step)."""
        if every is not None:
            return self.step % every == 0
        if self.budget_used() + self._step_seconds + 2 * self._final_reserve_s > self.cfg.time_budget_s:
            return False  # the final evaluation is near: one now would push it past the deadline
        return self._progress_now() >= self._next_job_progress.get(job, 1.0 / EVALUATIONS_PER_RUN)

    def _plan_next(self, job: str) -> None:
        if self.cfg.time_budget_s is not None:
            self._next_job_progress[job] = self._progress_now() + 1.0 / EVALUATIONS_PER_RUN

    def _progress_now(self) -> float:
        """How far through the run it is now (the plan's progress runs a step and the final reserve ahead of it)."""
        return max(self._step_progress(self.step), self.budget_used() / self.cfg.time_budget_s)

    def budget_used(self) -> float:
        """Seconds of the time budget used so far, earlier sessions of a resumed run included."""
        return self._budget_used_before + (self.clock() - self._start if self._start is not None else 0.0)

    def _budget_clock(self) -> tuple[float, float, float]:
        """(budget used, seconds per step, final evaluation's reserve), the same on every rank:
        each rank's clock differs a little, and the ranks must agree on the learning rate and the last step."""
        values = (self.budget_used(), self._step_seconds, self._final_reserve_s)
        if not self.dist.enabled:
            return values
        mean = all_reduce_sum_(torch.tensor(values, dtype=torch.float64, device=self.device), self.dist) / self.dist.world_size
        used, step_s, reserve_s = mean.tolist()
        return used, step_s, reserve_s

    def _train_step(self, progress: float | None = None) -> dict[str, float]:
        t0 = self.clock()
        cfg = self.cfg
        torch.manual_seed(derived_seed(cfg.seed, _STREAM_MODEL, self.step, self.dist.rank))
        data_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, _STREAM_DATA, self.step, self.dist.rank))
        batch = self._to_device(self.data.batch("train", self._train_indices(self.step), data_gen))
        self._set_learning_rates(self.step, progress)
        try:
            with self._autocast():
                logs = self.model.training_step(batch, self.step, self.optimizers)
        except DivergenceError as e:
            kept = (f"the last good checkpoint {self.checkpoint_path} is intact; resume from it with --resume after changing settings"
                    if self.checkpoint_path.is_file() else "no checkpoint was written yet")
            raise DivergenceError(f"{e.message} at step {self.step}; {kept}", e.hint) from None
        if self.ema is not None and self.step >= self.model.sampling_starts_at():
            self.ema.update(self.step - self.model.sampling_starts_at())
        self.step += 1
        self._steps_run += 1
        seconds = self.clock() - t0
        self._train_time += seconds
        # A running mean of the last steps' length (the first step, slowed by warm-up of the
        # kernels and allocator, is soon forgotten): what the budget plans the next step with.
        self._step_seconds = seconds if self._steps_run == 1 else 0.8 * self._step_seconds + 0.2 * seconds
        return logs

    @property
    def _examples_per_step(self) -> int:
        return self.cfg.batch_size * self.dist.world_size

    def _show_progress(self, bar, logs: dict) -> None:
        bar.update(1)
        if self.dist.is_main and (self._steps_run % 10 == 0 or self.step == self.total_steps):
            rate = self._steps_run * self._examples_per_step / max(self._train_time, 1e-9)
            left = ({"left": f"{max(0.0, self.cfg.time_budget_s - self.budget_used()):.0f}s"}
                    if self.cfg.time_budget_s is not None else {})
            bar.set_postfix({**{k: f"{v:.4g}" for k, v in logs.items() if k == "loss"}, "ex/s": f"{rate:.0f}", **left},
                            refresh=False)

    def _evaluate_and_report(self, logs: dict) -> None:
        """Validate, write one log line and one history.jsonl line, and let callbacks see it."""
        val_metrics = self._last_val_metrics = self.evaluate("val", self.cfg.eval_batches)
        if self.dist.is_main:
            epoch = self.step / self.steps_per_epoch
            train_part = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
            val_part = "  ".join(f"{k} {v:.4g}" for k, v in val_metrics.items())
            of = f"/{self.total_steps}" if self.total_steps is not None else f" ({self.budget_used():.0f} s)"
            self.log(f"step {self.step}{of} (epoch {epoch:.2f})  train: {train_part}  |  val: {val_part}")
            with open(self.run_dir / "history.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "epoch": epoch, "train": logs, "val": val_metrics}) + "\n")
        # Every callback sees every evaluation (no short-circuit); the metrics, hence the
        # decision, are the same on every rank.
        stops = [cb.on_evaluation(self, val_metrics) for cb in self.callbacks]
        self.early_stopped = any(stops)

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """Ctrl-C / SIGTERM ask for a clean stop at the end of the step (see _request_stop)."""
        previous = {}
        with contextlib.suppress(ValueError):  # only the main thread may install handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._request_stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def _progress_bar(self):
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.cfg.progress and self.dist.is_main),
                   unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
        try:
            yield bar
        finally:
            bar.close()

    def _check_ranks_in_sync(self) -> None:
        if not self.dist.enabled:
            return
        if not ranks_in_sync(self.model, self.dist):
            raise GenlabError("distributed ranks ended with different weights", "this is a bug in genlab; please report it")
        if self.dist.is_main:
            self.log(f"weights identical on all {self.dist.world_size} ranks")

    def close(self) -> None:
        for cb in self.callbacks:
            cb.close()
