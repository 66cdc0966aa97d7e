"""One trial: a normal genlab training run, reported to Optuna evaluation by evaluation.

The pruning is a Trainer callback (TrialPruning): after each validation pass it reports the
objective to the trial at the current step and asks the pruner; a trial to prune stops there
(its run directory keeps its history and checkpoint) and is recorded as PRUNED. A run that
diverges (a non-finite loss, gradient, weight or validation score) is recorded as FAIL with
outcome "diverged"; a setting the run refuses (GenlabError) as FAIL with outcome "error". The
study goes on after each.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from ..api import train
from ..artifact import read_metrics
from ..errors import DivergenceError, GenlabError, TrainingInterrupted
from ..training import Callback
from .space import Space
from .storage import worker_identity

TRIAL_OVERRIDES = ["train.progress=false"]  # many trials, maybe in parallel: one line each instead of bars


class TrialPruning(Callback):
    """Reports each evaluation's objective to the Optuna trial and stops the run when the pruner says so."""

    def __init__(self, trial, metric: str):
        self.trial = trial
        self.metric = metric

    def on_evaluation(self, trainer, val_metrics):
        import optuna

        if self.metric not in val_metrics:
            raise GenlabError(f"the objective val.{self.metric} is not a validation metric of this model",
                              f"use one of {', '.join('val.' + k for k in val_metrics)}")
        value = float(val_metrics[self.metric])
        if not math.isfinite(value):
            raise DivergenceError(f"validation {self.metric} is {value} at step {trainer.step}",
                                  "the range reaches settings that diverge: narrow it (e.g. a lower lr)")
        self.trial.report(value, trainer.step)
        if trainer.progress < 1.0 and self.trial.should_prune():  # never prune a finished run
            self.trial.set_user_attr("outcome", "pruned")
            self.trial.set_user_attr("steps", trainer.step)
            raise optuna.TrialPruned(f"pruned at step {trainer.step}, {trainer.progress:.0%} of the run ({self.metric} {value:.4g})")
        return False


class Objective:
    """Optuna's objective: sample the settings, train them in trials/trial-NNNN, return val.METRIC."""

    def __init__(self, space: Space, trials_dir: Path, label: str = ""):
        self.space = space
        self.trials_dir = Path(trials_dir)
        self.label = label  # "[worker 2] " when several share the terminal

    def __call__(self, trial) -> float:
        import optuna

        trial.set_user_attr("worker", worker_identity())
        values = {param.key: param.suggest(trial) for param in self.space.params}
        run_dir = (self.trials_dir / f"trial-{trial.number:04d}").resolve()
        trial.set_user_attr("run_dir", str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        settings = "  ".join(f"{k}={_short(v)}" for k, v in values.items())
        try:
            train(self.space.trial_recipe(values), TRIAL_OVERRIDES, out=run_dir, log=_file_log(run_dir / "train.log"),
                  callbacks=[TrialPruning(trial, self.space.metric)])
        except optuna.TrialPruned as e:
            self._say(f"trial {trial.number} {e}  {settings}", started)
            raise
        except TrainingInterrupted:
            trial.set_user_attr("outcome", "interrupted")
            raise KeyboardInterrupt from None  # Ctrl-C / SIGTERM: the trial fails, the study stops
        except DivergenceError as e:
            return self._diverged(trial, e.message, settings, started)
        except GenlabError as e:  # a setting this run refuses: the trial fails, the study goes on
            trial.set_user_attr("outcome", "error")
            trial.set_user_attr("error", e.message)
            self._say(f"trial {trial.number} failed: {e.message}  {settings}", started)
            raise
        metrics = read_metrics(run_dir)
        value = float(metrics.get("val", {}).get(self.space.metric, math.nan))
        if not math.isfinite(value):
            return self._diverged(trial, f"validation {self.space.metric} is {value}", settings, started)
        trial.set_user_attr("outcome", "complete")
        trial.set_user_attr("steps", metrics.get("training", {}).get("steps"))
        trial.set_user_attr("val", metrics.get("val", {}))
        self._say(f"trial {trial.number} complete: {self.space.objective} {value:.6g}  {settings}", started)
        return value

    def _diverged(self, trial, message: str, settings: str, started: float) -> float:
        trial.set_user_attr("outcome", "diverged")
        trial.set_user_attr("error", message)
        self._say(f"trial {trial.number} diverged: {message}  {settings}", started)
        return math.nan  # Optuna records a NaN objective as a failed trial

    def _say(self, line: str, started: float) -> None:
        print(f"{self.label}{line}  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _file_log(path: Path):
    def log(message: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(message + "\n")

    return log
