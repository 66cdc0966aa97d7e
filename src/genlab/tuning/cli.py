"""The `genlab tune` command's options and its run (genlab.cli adds the sub-command)."""

from __future__ import annotations

from ..limits import SEED_OPTION, bounded_float, bounded_int

EXAMPLES = """examples:
  genlab tune vae-digits steps=300 --search lr=logfloat:1e-4:1e-2 --search model.latent_dim=int:2:32 --trials 20
  genlab tune lstm-jsb epochs=15 --search model.hidden_size=int:64:512:64 --search model.dropout=float:0:0.7 \\
      --objective val.nll_per_frame --budget-min 30 --workers 2 --study jsb
  genlab tune --study jsb --trials 10                       # resume it: 10 more trials, the same space
  genlab tune my-recipe.yaml --trials 50 --sampler random --pruner none   # the recipe's search: block
  genlab tune vae-mnist --search lr=logfloat:1e-4:1e-2 --trials 40 --study mnist \\
      --storage postgresql://genlab@db.lan/optuna            # the same command on each machine shares the study
  genlab train runs/tune-jsb/best-recipe.yaml               # train the best settings again

Ranges: float:LOW:HIGH[:STEP]  logfloat:LOW:HIGH  int:LOW:HIGH[:STEP]  logint:LOW:HIGH  cat:A,B,C.
key=value settings after the recipe are fixed for every trial (e.g. fewer epochs than the recipe's).
Each trial is a run directory in STUDY_DIR/trials; the best is copied to STUDY_DIR/best-model, its
settings written to STUDY_DIR/best-recipe.yaml, and the plots beside them (docs/tune.md)."""


def add_arguments(p) -> None:
    p.add_argument("recipe", nargs="?", help="recipe name or .yaml path (optional when --study resumes a study)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings fixed for every trial, e.g. epochs=10")
    p.add_argument("--search", action="append", default=[], metavar="KEY=RANGE",
                   help="a setting to search, e.g. model.latent_dim=int:8:64 or lr=logfloat:1e-4:3e-3 (repeatable)")
    p.add_argument("--objective", help="the validation metric to optimise, e.g. val.loss (default: the recipe's "
                                       "search.objective, else val.loss)")
    p.add_argument("--direction", choices=("auto", "minimize", "maximize"),
                   help="default auto: maximise elbo, psnr, accuracy, ndcg@k, recall@k; minimise the rest")
    p.add_argument("--trials", type=bounded_int("--trials", 1, 1_000_000), help="trials to run now (over all workers)")
    p.add_argument("--budget-min", type=bounded_float("--budget-min", 0.01, 1e6),
                   help="start no trial after this many minutes (running trials finish)")
    p.add_argument("--sampler", choices=("tpe", "random", "cmaes"), help="default tpe (a resumed study: its own)")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), help="default median (a resumed study: its own)")
    p.add_argument("--seed", type=SEED_OPTION, default=0, help="the sampler's seed (the trials' own is train.seed)")
    p.add_argument("--workers", type=bounded_int("--workers", 1, 256), default=1,
                   help="worker processes on this machine; torch threads are split between them (default 1)")
    p.add_argument("--study", help="the study's name; an existing study of that name is resumed (default RECIPE-TIMESTAMP)")
    p.add_argument("--storage", metavar="URL", help="sqlite:///x.db, postgresql://user@host/db or journal:PATH "
                                                    "(default: STUDY_DIR/study.db)")
    p.add_argument("--out", "-o", help="the study folder (default runs/tune-STUDY)")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="write no PNG plots when the run ends (summary, best model and recipe still)")
    p.add_argument("--dashboard", action="store_true", help="serve optuna-dashboard on the study (needs the package)")
    p.add_argument("--dashboard-port", type=bounded_int("--dashboard-port", 1, 65535), default=8080)


def run(args) -> int:
    from .study import TuneOptions, tune

    options = TuneOptions(trials=args.trials, budget_min=args.budget_min, sampler=args.sampler, pruner=args.pruner,
                          seed=args.seed, workers=args.workers, study=args.study, storage=args.storage, out=args.out,
                          dashboard=args.dashboard, dashboard_port=args.dashboard_port, plots=args.plots)
    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
        overrides.insert(0, recipe)  # `genlab tune --study NAME epochs=5`: no recipe, argparse took the first setting
        recipe = None
    tune(recipe, overrides, search=args.search, objective=args.objective, direction=args.direction, options=options)
    return 0
