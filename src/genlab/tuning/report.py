"""What a study leaves in its folder when a run of it ends:

    summary.json            every trial: state, outcome, value, settings, steps, run directory
    best-model/             the best trial's model directory (genlab.load, sample, eval, serve)
    best-recipe.yaml        its settings as a recipe: `genlab train best-recipe.yaml` trains it again
                            (same seed, same device and thread count: the same validation score)
    history.png             optimisation history: each trial's value and the best so far
    importances.png         parameter importances (fANOVA)
    parallel_coordinate.png each finished trial's settings and value
    intermediate_values.png the validation curves, pruned trials' included (they end early)

Plots need at least two finished trials; importances, at least one parameter that varied.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
import warnings
from pathlib import Path

import yaml

from ..errors import GenlabError
from ..fileio import atomic_write_text
from .space import Space
from .storage import HOST, StudyStorage

BEST_MODEL = "best-model"
BEST_RECIPE = "best-recipe.yaml"
PLOTS = {"history.png": "plot_optimization_history", "importances.png": "plot_param_importances",
         "parallel_coordinate.png": "plot_parallel_coordinate", "intermediate_values.png": "plot_intermediate_values"}
# Files of a trial's run directory that the exported model leaves out (training state, not the model).
NOT_EXPORTED = ("checkpoint.safetensors", "best.safetensors", "tensorboard", "samples", "train.log")


def finish(study, space: Space, storage: StudyStorage, study_dir: Path, started: float, say, plots: bool = True) -> dict:
    """Summary, best model and recipe, plots; prints the report. Returns the summary."""
    summary = summarize(study, space, storage)
    summary["run_wall_s"] = round(time.time() - started, 1)
    study_dir.mkdir(parents=True, exist_ok=True)
    best = summary["best"]
    if best is not None:
        summary["best_recipe"] = str(write_best_recipe(space, study.study_name, best, study_dir / BEST_RECIPE))
        summary["best_model"] = export_best(best, study_dir / BEST_MODEL, say)
    summary["plots"] = write_plots(study, study_dir, space.objective, say) if plots else {}
    atomic_write_text(study_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    for line in report_lines(summary, study_dir):
        print(line, flush=True)
    return summary


def summarize(study, space: Space, storage: StudyStorage) -> dict:
    trials = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        trials.append({
            "number": t.number, "state": t.state.name.lower(), "outcome": attrs.get("outcome"),
            "value": t.value if t.value is not None and math.isfinite(t.value) else None,
            "params": {p.key: p.decode(t.params[p.key]) for p in space.params if p.key in t.params},
            "steps": attrs.get("steps") or (max(t.intermediate_values) if t.intermediate_values else None),
            "error": attrs.get("error"), "run_dir": attrs.get("run_dir"), "host": (attrs.get("worker") or {}).get("host"),
            "started": t.datetime_start.isoformat() if t.datetime_start else None,
            "seconds": round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
            if t.datetime_complete and t.datetime_start else None,
        })
    counts = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    pick = max if space.direction == "maximize" else min
    best = pick(complete, key=lambda t: t["value"]) if complete else None
    return {"study": study.study_name, "storage": storage.shown, "objective": space.objective, "direction": space.direction,
            "recipe": space.recipe.get("name"), "family": space.recipe["family"],
            "space": {p.key: p.text() for p in space.params}, "counts": counts, "best": best, "trials": trials}


def best_recipe(space: Space, study_name: str, best: dict) -> dict:
    """The best trial's settings as a recipe (what the trial trained, less the tuning's own progress switch)."""
    recipe = space.trial_recipe(best["params"])
    description = (f"{space.recipe.get('name', 'recipe')} tuned by genlab tune (study {study_name}, trial {best['number']}: "
                   f"{space.objective} {best['value']:.6g})")
    return {"description": description, "family": recipe["family"], "data": recipe["data"], "model": recipe["model"],
            "train": recipe["train"]}


def write_best_recipe(space: Space, study_name: str, best: dict, path: Path) -> Path:
    recipe = best_recipe(space, study_name, best)
    header = (f"# The best trial of genlab tune study {study_name}: trial {best['number']}, "
              f"{space.objective} = {best['value']!r} ({space.direction}).\n"
              f"# genlab train {path.name} trains it again; with the same seed, device and thread count it\n"
              f"# reaches the same validation score. Tuned: {', '.join(best['params'])}.\n")
    atomic_write_text(path, header + yaml.dump(recipe, Dumper=_RecipeDumper, sort_keys=False, width=100))
    return path


class _RecipeDumper(yaml.SafeDumper):
    """Sections as indented blocks, lists inline (hidden: [256, 128]), as the shipped recipes are written."""


_RecipeDumper.add_representer(list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value,
                                                                                   flow_style=True))


def export_best(best: dict, target: Path, say) -> str | None:
    """Copy the best trial's model directory to `target` (replacing an earlier best); None when the
    trial ran on another machine or its folder is gone."""
    source = Path(best["run_dir"] or "")
    if best.get("host") not in (None, HOST) or not (source / "model.safetensors").is_file():
        where = f"on {best.get('host')}" if best.get("host") not in (None, HOST) else "here"
        say(f"the best trial's model is not on this machine ({source} {where}); best-recipe.yaml trains it again")
        return None
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*NOT_EXPORTED))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return str(target)


def write_plots(study, study_dir: Path, objective: str, say) -> dict[str, str]:
    """The four plots as PNG (optuna.visualization.matplotlib); a plot the study cannot make yet is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(finished) < 2:
        say("plots need at least two complete trials; none written yet")
        return {}
    written = {}
    for name, function in PLOTS.items():
        extra = {} if name == "intermediate_values.png" else {"target_name": objective}
        if name == "importances.png":
            extra["evaluator"] = FanovaImportanceEvaluator(seed=0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(plots, function)(study, **extra)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            if name == "intermediate_values.png":
                axes.set_ylabel(objective)
                axes.set_xlabel("step (pruned trials end early)")
                if len(study.get_trials(deepcopy=False)) > 20 and axes.get_legend() is not None:  # a legend entry per trial outgrows it
                    axes.get_legend().remove()
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()
            figure.savefig(study_dir / name, dpi=100)
            plt.close(figure)
            written[name] = str(study_dir / name)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as e:
            say(f"{name} not written: {e}")
            plt.close("all")
    return written


def report_lines(summary: dict, study_dir: Path) -> list[str]:
    counts = summary["counts"]
    lines = [f"study {summary['study']}: {sum(counts.values())} trials ("
             + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + f"); this run {summary['run_wall_s']:.0f} s"]
    best = summary["best"]
    if best is None:
        lines.append("no trial has finished yet")
        return lines
    lines.append(f"best: trial {best['number']}  {summary['objective']} {best['value']:.6g}  "
                 + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()))
    if summary.get("best_model"):
        lines.append(f"model:  {summary['best_model']}")
    lines.append(f"recipe: {summary['best_recipe']}  (genlab train {summary['best_recipe']})")
    for path in summary.get("plots", {}).values():
        lines.append(f"plot:   {path}")
    lines.append(f"all trials: {study_dir / 'summary.json'}")
    return lines


# ----------------------------------------------------------------------------- optuna-dashboard


def check_dashboard() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        raise GenlabError("--dashboard needs the optuna-dashboard package, which is not installed",
                          "pip install optuna-dashboard, or run it yourself: optuna-dashboard STORAGE_URL")


class Dashboard:
    """optuna-dashboard's WSGI app on 127.0.0.1:PORT in a background thread while the study runs."""

    def __init__(self, storage, port: int):
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from optuna_dashboard import wsgi

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):  # one line per request would drown the trial lines
                pass

        try:
            self.server = make_server("127.0.0.1", port, wsgi(storage), handler_class=Quiet)
        except OSError as e:
            raise GenlabError(f"cannot start the dashboard on port {port}: {e.strerror or e}",
                              "choose another --dashboard-port") from None
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="optuna-dashboard")
        self.thread.start()

    def serve_until_interrupted(self, say) -> None:
        say(f"the dashboard stays at {self.url}; Ctrl-C to stop it")
        try:
            while self.thread.is_alive():
                self.thread.join(timeout=1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.server.shutdown()


def start_dashboard(storage, port: int, say) -> Dashboard:
    dashboard = Dashboard(storage, port)
    say(f"dashboard: {dashboard.url}")
    return dashboard
