"""`genlab tune`: a study of training runs on Optuna, on one or several worker processes.

Everything a person can get wrong is checked before the first trial: the search space (names,
ranges, and that every end of every range builds a valid config), the objective (one batch of
validation on the recipe's model says which metrics the family reports), the storage (connected),
and a study of the same name (it must have the same definition). Then N workers (processes on
this machine, threads split between them; or one, in this process) draw trials from the shared
study until --trials have started in this run or --budget-min has passed (a trial running then
finishes). The study folder holds the trial run directories, the study database (by default),
the best model, its recipe and the plots (genlab.tuning.report).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config import load_recipe
from ..errors import GenlabError, TrainingInterrupted
from ..registry import get_data_kind, get_family
from .space import Space, build_space, check_settings
from .storage import HOST, StudyStorage, fail_lost_trials, open_storage

SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "hyperband", "none")
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the space (Optuna's default of 10 is most of a small budget)
MEDIAN_STARTUP_TRIALS = 3  # trials that finish before the median pruner stops any
ATTR = "genlab"  # the study's user attribute holding its definition


@dataclass
class TuneOptions:
    """How this invocation runs; none of it is part of the study's definition."""

    trials: int | None = None  # trials to start in this run (over all its workers)
    budget_min: float | None = None  # start no trial after this many minutes
    sampler: str | None = None  # tpe | random | cmaes; default: a resumed study's own, else tpe
    pruner: str | None = None  # median | hyperband | none; default: a resumed study's own, else median
    seed: int = 0
    workers: int = 1
    study: str | None = None  # the study's name; an existing one is resumed
    storage: str | None = None  # URL; default: a SQLite file in the study folder
    out: str | Path | None = None  # the study folder; default runs/tune-STUDY
    dashboard: bool = False
    dashboard_port: int = 8080
    plots: bool = True  # write the four PNG plots when the run ends

    def check(self) -> None:
        if self.sampler not in (None, *SAMPLERS):
            raise GenlabError(f"unknown --sampler {self.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
        if self.pruner not in (None, *PRUNERS):
            raise GenlabError(f"unknown --pruner {self.pruner!r}", f"use one of {', '.join(PRUNERS)}")
        if self.trials is not None and self.trials < 1:
            raise GenlabError(f"--trials must be at least 1, got {self.trials}")
        if self.budget_min is not None and not (self.budget_min > 0 and math.isfinite(self.budget_min)):
            raise GenlabError(f"--budget-min must be a positive number of minutes, got {self.budget_min}")
        if self.workers < 1:
            raise GenlabError(f"--workers must be at least 1, got {self.workers}")
        if self.trials is None and self.budget_min is None and not self.dashboard:
            raise GenlabError("how long should the study run?", "give --trials N and/or --budget-min M")
        if self.cmaes_missing():
            raise GenlabError("--sampler cmaes needs the cmaes package", "pip install cmaes (or use --sampler tpe)")

    def cmaes_missing(self) -> bool:
        import importlib.util

        return self.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None


def tune(recipe: str | dict | None = None, overrides=(), *, search=(), objective: str | None = None,
         direction: str | None = None, options: TuneOptions | None = None, log=None) -> dict:
    """Run (or resume) a study; returns its summary (genlab.tuning.report.summarize) with the
    paths of the best model, its recipe and the plots."""
    options = options or TuneOptions()
    options.check()
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if options.dashboard:
        from .report import check_dashboard

        check_dashboard()
    loaded = (load_recipe(recipe) if isinstance(recipe, str) else dict(recipe)) if recipe is not None else None
    if loaded is None and options.study is None:
        raise GenlabError("which recipe?", "e.g. `genlab tune vae-digits --search lr=logfloat:1e-4:1e-2 --trials 20`; "
                          "resume a study with --study NAME")
    if loaded is None and (search or overrides or objective or direction):
        raise GenlabError("a resumed study keeps its definition: --search, --objective, --direction and settings need "
                          "the recipe", "give the recipe and the same settings, or none of them")
    name = options.study or f"{loaded.get('name', 'study')}-{time.strftime('%Y%m%d-%H%M%S')}"
    study_dir = Path(options.out) if options.out is not None else Path("runs") / f"tune-{name}"
    new_dir = not study_dir.exists()
    try:
        space = build_space(loaded, list(overrides), list(search), objective, direction) if loaded is not None else None
        if space is not None:
            _check_names(space)
        storage = open_storage(options.storage, study_dir)
        space, exists = _study_definition(storage, name, space)
        _probe(space)
        study = _create(storage, name, space, exists, options)
    except BaseException:
        if new_dir and study_dir.is_dir():  # this call made the folder and nothing was kept in it
            shutil.rmtree(study_dir, ignore_errors=True)
        raise
    say(f"study {name} ({'resumed' if exists else 'new'}; {len(study.trials)} trials so far) in {storage.shown}; "
        f"{space.objective} ({space.direction}) over {', '.join(p.key + '=' + p.text() for p in space.params)}; "
        f"sampler {options.sampler}, pruner {options.pruner}")
    from .report import finish, start_dashboard

    server = start_dashboard(storage.storage, options.dashboard_port, say) if options.dashboard else None
    interrupted = False
    started = time.time()
    try:
        if options.trials is not None or options.budget_min is not None:
            _run_workers(storage, name, space, study_dir, options, say)
    except KeyboardInterrupt:
        interrupted = True
    fail_lost_trials(study)
    summary = finish(study, space, storage, study_dir, started, say, plots=options.plots)
    if interrupted:
        raise TrainingInterrupted(f"tuning stopped; the study's {len(summary['trials'])} trials are kept in {storage.shown}",
                                  f"continue with: genlab tune --study {name}" + (f" --storage {storage.shown}" if options.storage else
                                                                                    f" --out {study_dir}" if options.out else ""))
    if server is not None:
        server.serve_until_interrupted(say)
    return summary


def _check_names(space: Space) -> None:
    family_cls = get_family(space.recipe["family"])
    check_settings(space, family_cls, get_data_kind(family_cls.data_kind))


def _study_definition(storage: StudyStorage, name: str, space: Space | None) -> tuple[Space, bool]:
    """The definition to run: the stored one of an existing study (which `space` must equal), or `space`."""
    try:
        study_id = storage.storage.get_study_id_from_name(name)
    except KeyError:
        if space is None:
            raise GenlabError(f"no study named {name!r} in {storage.shown}",
                              "start it with a recipe: genlab tune RECIPE --search ... --study " + name) from None
        return space, False
    stored = storage.storage.get_study_user_attrs(study_id).get(ATTR)
    for _ in range(20):  # a command on another machine may have created it a moment ago and be writing its definition
        if stored is not None:
            break
        time.sleep(0.25)
        stored = storage.storage.get_study_user_attrs(study_id).get(ATTR)
    if stored is None:
        raise GenlabError(f"study {name!r} in {storage.shown} was not made by genlab tune", "choose another --study name")
    stored_space = Space.from_json(stored["space"])
    if space is not None:
        differences = space.differences(stored_space)
        if differences:
            raise GenlabError(f"study {name!r} already exists in {storage.shown} with a different definition: "
                              + "; ".join(differences),
                              f"resume it with its own settings (genlab tune --study {name}), or name a new study with --study")
    return stored_space, True


def _probe(space: Space) -> None:
    """Build the recipe's data and model and run one validation batch: the objective must be one of
    the metrics it reports, and every value a trial may get must build a valid config."""
    from ..api import _model_config, _prepare

    family_cls = get_family(space.recipe["family"])
    with tempfile.TemporaryDirectory(prefix="genlab-tune-probe-") as scratch:
        trainer, _ = _prepare(space.recipe, Path(scratch) / "probe", resume=False, is_main=True, log=lambda message: None)
        try:
            check_settings(space, family_cls, get_data_kind(family_cls.data_kind), trainer.data, _model_config)
            reported = trainer.evaluate("val", max_batches=1)
        finally:
            trainer.close()
    if space.metric not in reported:
        raise GenlabError(f"--objective {space.objective} is not reported by {space.recipe['family']} models",
                          f"use one of {', '.join('val.' + k for k in reported)}")


def _create(storage: StudyStorage, name: str, space: Space, exists: bool, options: TuneOptions):
    """The study, created when new. Its sampler and pruner are stored with it: a resumed study keeps
    them unless --sampler / --pruner say otherwise (options are filled in)."""
    import optuna

    _quiet_optuna()
    study = optuna.create_study(storage=storage.storage, study_name=name, direction=space.direction, load_if_exists=True)
    stored = study.user_attrs.get(ATTR, {})
    options.sampler = options.sampler or stored.get("sampler") or "tpe"
    options.pruner = options.pruner or stored.get("pruner") or "median"
    if not exists:
        from .._version import __version__

        study.set_user_attr(ATTR, {"space": space.to_json(), "sampler": options.sampler, "pruner": options.pruner,
                                   "genlab_version": __version__})
    return study


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # genlab prints one line per trial itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ----------------------------------------------------------------------------- workers


def make_sampler(name: str, seed: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":  # categorical settings are drawn at random (CMA-ES models numbers only)
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True, constant_liar=True)


def make_pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    if name == "hyperband":  # resources are optimisation steps; the largest is the longest finished trial's
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def worker_seed(seed: int, index: int, trials_before: int, host: str | None) -> int:
    """The sampler's seed of one worker: its stream differs from every other worker's (the index; the
    host when machines share a database server) and from earlier runs of the study (the trials
    already in it), so no two draw the same points; with one worker a study replays exactly."""
    text = f"{seed}:{index}:{trials_before}:{host or ''}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _run_workers(storage: StudyStorage, name: str, space: Space, study_dir: Path, options: TuneOptions, say) -> None:
    deadline = time.time() + options.budget_min * 60 if options.budget_min is not None else None
    job = {"storage": storage.url, "study_dir": str(study_dir), "name": name, "space": space.to_json(),
           "sampler": options.sampler, "pruner": options.pruner, "seed": options.seed, "trials": options.trials,
           "deadline": deadline}
    if options.workers == 1:
        run_worker(job, 0, None, _LocalCounter())
        return
    import torch

    threads = max(1, torch.get_num_threads() // options.workers)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch thread pools
    counter = context.Value("i", 0)
    say(f"{options.workers} workers, {threads} thread(s) each")
    workers = [context.Process(target=run_worker, args=(job, index, threads, counter), name=f"genlab-tune-{index}")
               for index in range(options.workers)]
    for process in workers:
        process.start()
    try:
        for process in workers:
            process.join()
    except KeyboardInterrupt:  # the workers got the Ctrl-C too: each ends its trial and stops
        for process in workers:
            process.join(timeout=120)
            if process.is_alive():
                process.terminate()
        raise
    for index, process in enumerate(workers):
        if process.exitcode != 0:
            how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"exit code {process.exitcode}"
            say(f"worker {index} ended with {how}; its running trial is marked failed, finished trials are kept")


class _LocalCounter:
    """multiprocessing.Value's interface, for the one worker that runs in this process."""

    def __init__(self):
        self.value = 0

    def get_lock(self):
        return contextlib.nullcontext()


def _claim(counter, limit: int | None, deadline: float | None) -> bool:
    """Take one trial of this run's --trials (shared by its workers), unless none is left or time is up."""
    if deadline is not None and time.time() >= deadline:
        return False
    with counter.get_lock():
        if limit is not None and counter.value >= limit:
            return False
        counter.value += 1
    return True


def run_worker(job: dict, index: int, threads: int | None, counter) -> None:
    """One worker: draw and run trials of the study until the run's trials or time are used up.
    Runs in this process (one worker) or in a spawned one (several)."""
    import optuna

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_optuna()
    try:
        storage = open_storage(job["storage"], Path(job["study_dir"]))
        study = optuna.load_study(study_name=job["name"], storage=storage.storage)
        trials_before = len(study.get_trials(deepcopy=False))
        seed = worker_seed(job["seed"], index, trials_before, HOST if storage.networked else None)
        study.sampler, study.pruner = make_sampler(job["sampler"], seed), make_pruner(job["pruner"])
        space = Space.from_json(job["space"])
        from .trials import Objective

        objective = Objective(space, Path(job["study_dir"]) / "trials", label=f"[worker {index}] " if threads else "")
        while _claim(counter, job["trials"], job["deadline"]):
            fail_lost_trials(study)
            study.optimize(objective, n_trials=1, catch=(GenlabError,), gc_after_trial=False)
    except KeyboardInterrupt:
        if threads is None:
            raise
        sys.exit(130)  # a spawned worker: its trial is already marked; the parent reports
    except GenlabError as e:
        if threads is None:
            raise
        print(f"[worker {index}] error: {e.message}", file=sys.stderr)
        sys.exit(2)
