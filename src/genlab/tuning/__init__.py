"""Hyper-parameter search on Optuna: `genlab tune` (docs/tune.md).

    space.py    the search space, the objective and the checks of both
    storage.py  the study database (SQLite, any SQLAlchemy URL, a journal file) and lost trials
    trials.py   one trial: a genlab training run with a pruning callback
    study.py    the study: checks before the first trial, workers, samplers and pruners
    report.py   summary.json, the best model and recipe, the plots, optuna-dashboard
    cli.py      the `genlab tune` command's options
"""

from .space import Param, Space, parse_param
from .study import TuneOptions, tune

__all__ = ["Param", "Space", "TuneOptions", "parse_param", "tune"]
