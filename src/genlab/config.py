"""Dataclass configs that round-trip through JSON, recipes, and `key=value` overrides.

A recipe is a YAML file with four sections:

    description: one line shown by `genlab recipes`
    family: vae
    data:  {...}   # fields of the data spec (e.g. genlab.data.ImageDataSpec)
    model: {...}   # fields of the family's config dataclass
    train: {...}   # fields of TrainConfig
    search: {...}  # optional: `genlab tune`'s search space and objective (genlab/tuning; `genlab train` ignores it)
    budgets:       # optional: settings per time budget, chosen by `genlab train RECIPE --minutes M`
      2: {data: {...}, model: {...}, train: {...}}   # for budgets up to 2 minutes
      20: {...}                                      # up to 20 (and beyond: the last band)

Overrides use dotted keys (`model.latent_dim=32`); the common training keys (`epochs`,
`steps`, `batch_size`, `lr`, `seed`, `device`) may be given bare.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import GenlabError


LR_SCHEDULES = ("constant", "cosine", "wsd")
OPTIMIZERS = ("default", "muon")
MONITOR_MODES = ("auto", "min", "max")


@dataclass
class TrainConfig:
    """How the Trainer runs; independent of the model family."""

    epochs: int | None = 10  # train for this many passes over the data ...
    steps: int | None = None  # ... or for this many optimisation steps (wins if set)
    # A deadline in seconds of training (evaluations and checkpoints included): the schedule then
    # follows the fraction of the budget used and the run stops within one step of it. With
    # steps/epochs unset the run goes until the deadline; with them set, whichever comes first.
    time_budget_s: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    # constant | cosine (from lr down to min_lr_ratio * lr at the last step) | wsd (warm-up, stable, decay: lr held,
    # then a straight line down to min_lr_ratio * lr over the last decay_fraction of the run)
    lr_schedule: str = "constant"
    warmup_steps: int = 0  # the learning rate rises linearly from 0 over the first steps
    warmup_fraction: float | None = None  # ... or over this fraction of the run (of the budget, with time_budget_s)
    min_lr_ratio: float = 0.1  # cosine, wsd: the final learning rate as a fraction of lr
    decay_fraction: float = 0.2  # wsd: the last fraction of the run (of the budget, with time_budget_s) spent decaying
    weight_decay: float = 0.0
    # default: the family's own (Adam or AdamW); muon: Muon for the hidden weight matrices and AdamW for the
    # rest, one lr (genlab.models.optimizers.MuonWithAdamW; families with supports_muon: gpt)
    optimizer: str = "default"
    grad_clip: float | None = None  # max global grad norm; None disables clipping
    ema_decay: float | None = None  # e.g. 0.999; the artifact then holds the EMA weights
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # bf16 autocast on CUDA
    # bf16 autocast on a CPU too: its matmuls run several times faster than fp32 on a CPU with AMX tiles (Intel
    # Xeon since Sapphire Rapids); without them bf16 is ~100x slower, so there the run warns and stays in fp32
    cpu_amp: bool = False
    # steps between validation passes (one log line and one history.jsonl line each); None = about
    # 20 per run but at most one per epoch: max(steps per epoch, ceil(total steps / 20)). Always at the last step.
    eval_every: int | None = None
    eval_batches: int | None = None  # cap on validation batches per pass; None = whole split
    checkpoint_every: int = 500  # steps between atomic checkpoints (also at each epoch end)
    log_every: int = 50  # steps between TensorBoard scalar writes
    samples_every: int | None = None  # steps between previews (sample grids, texts); None = as eval_every's default
    tensorboard: bool = True
    progress: bool = True
    # Stop after this many evaluations in a row without a better `monitor` (None: never). Patience
    # counts evaluations, not epochs: with the default cadence (about 20 per run) set eval_every.
    early_stopping_patience: int | None = None
    monitor: str = "val.loss"  # the validation metric early stopping and keep_best follow: val.<key>
    monitor_mode: str = "auto"  # min | max | auto (max for elbo, psnr, accuracy, ndcg@k, recall@k; min otherwise)
    keep_best: bool = False  # export the best evaluated weights (run_dir/best.safetensors), not the last

    def __post_init__(self):
        def check(ok: bool, message: str, hint: str | None = None):
            if not ok:
                raise GenlabError(message, hint)

        for name in ("epochs", "steps", "eval_every", "eval_batches", "samples_every", "early_stopping_patience"):
            value = getattr(self, name)
            check(value is None or value >= 1, f"train.{name} must be at least 1 (or unset), got {value}")
        for name in ("batch_size", "checkpoint_every", "log_every"):
            check(getattr(self, name) >= 1, f"train.{name} must be at least 1, got {getattr(self, name)}")
        check(self.lr > 0, f"train.lr must be positive, got {self.lr}", "a typical value is 1e-3")
        check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        check(self.optimizer in OPTIMIZERS, f"unknown train.optimizer {self.optimizer!r}", f"use one of {', '.join(OPTIMIZERS)}")
        check(self.lr_schedule in LR_SCHEDULES, f"unknown train.lr_schedule {self.lr_schedule!r}",
              f"use one of {', '.join(LR_SCHEDULES)}")
        check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.warmup_fraction is None or 0.0 < self.warmup_fraction < 1.0,
              f"train.warmup_fraction must be in (0, 1), got {self.warmup_fraction}", "e.g. train.warmup_fraction=0.05")
        check(not (self.warmup_fraction is not None and self.warmup_steps > 0),
              "train.warmup_steps and train.warmup_fraction are both set", "keep one of them (warmup_steps=0 to drop it)")
        check(0.0 <= self.min_lr_ratio <= 1.0, f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(0.0 < self.decay_fraction <= 1.0, f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}",
              "e.g. train.decay_fraction=0.2: the learning rate falls over the last fifth of the run")
        check(self.grad_clip is None or self.grad_clip > 0, f"train.grad_clip must be positive (or unset), got {self.grad_clip}")
        check(self.time_budget_s is None or self.time_budget_s > 0, f"train.time_budget_s must be positive, got {self.time_budget_s}")
        check(0 <= self.seed <= 2**63 - 1, f"train.seed must be in 0..2^63-1, got {self.seed}")
        check(self.monitor.startswith("val.") and len(self.monitor) > 4,
              f"train.monitor must name a validation metric as val.<key>, got {self.monitor!r}", "e.g. train.monitor=val.loss")
        check(self.monitor_mode in MONITOR_MODES, f"unknown train.monitor_mode {self.monitor_mode!r}",
              f"use one of {', '.join(MONITOR_MODES)}")


SHORTHAND_TRAIN_KEYS = ("epochs", "steps", "batch_size", "lr", "seed", "device", "ema_decay", "grad_clip")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, values: dict | None, section: str):
    """Build dataclass `cls` from a plain dict, rejecting unknown keys with a helpful message."""
    if values is not None and not isinstance(values, dict):
        raise GenlabError(f"the {section} settings must be a mapping of key: value, got {values!r}",
                          f"set single settings with {section}.KEY=VALUE")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise GenlabError(
            f"unknown {section} setting(s): {', '.join(unknown)}",
            f"valid {section} settings: {', '.join(fields)}",
        )
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(values[name], hints[name], f"{section}.{name}") for name in values}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise GenlabError(f"invalid {section} settings: {e}") from None


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert JSON/YAML values to the annotated type (lists -> tuples, ints -> floats)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except GenlabError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GenlabError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, where) for v in value)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation in (int, float, bool, str):
        raise GenlabError(f"{where} must be {annotation.__name__}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- recipes


def _recipe_dir():
    return resources.files("genlab") / "recipes"


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line description."""
    out = {}
    for entry in sorted(_recipe_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text())
            out[entry.name[: -len(".yaml")]] = data.get("description", "")
    return out


def load_recipe(name_or_path: str) -> dict:
    """A recipe by name (`vae-digits`) or a path to a YAML file with the same sections."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) and path.is_file():
        source = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise GenlabError(f"recipe {source} is not UTF-8 text (byte {e.start})", "save the file as UTF-8") from None
        except OSError as e:
            raise GenlabError(f"cannot read recipe {source}: {e.strerror or e}") from None
    else:
        entry = _recipe_dir() / f"{name_or_path}.yaml"
        if not entry.is_file():
            raise GenlabError(
                f"unknown recipe {name_or_path!r}",
                f"known recipes: {', '.join(list_recipes())} (or a path to a .yaml recipe file)",
            )
        source, text = name_or_path, entry.read_text()
    recipe = _parse_recipe(text, source)
    recipe.setdefault("description", "")
    recipe["name"] = path.stem if path.suffix in (".yaml", ".yml") else name_or_path
    return recipe


def _parse_recipe(text: str, source: str) -> dict:
    """The recipe's sections, checked: a mapping with a family name and data/model/train mappings."""
    try:
        recipe = _plain_yaml(text)  # safe_load: a !!python tag is refused, never executed
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise GenlabError(f"recipe {source} is not valid YAML{where}: {problem}",
                          "recipes are plain YAML mappings: family, data, model, train") from None
    except YAML_FAILURES as e:
        raise GenlabError(f"recipe {source} is not valid YAML or holds a value that is not plain data "
                          f"({type(e).__name__}: {e})", "recipes hold numbers, text, lists and mappings: quote dates "
                          "and tagged values, e.g. name: '2020-01-01'") from None
    if not isinstance(recipe, dict):
        raise GenlabError(f"recipe {source} must be a YAML mapping with family, data, model and train, "
                          f"got {type(recipe).__name__}")
    for section in ("family", "data", "model", "train"):
        if section not in recipe:
            raise GenlabError(f"recipe {source} has no {section!r} section")
    if not isinstance(recipe["family"], str):
        raise GenlabError(f"recipe {source}: family must be a name such as vae, got {recipe['family']!r}")
    if recipe.get("search") is not None and not isinstance(recipe["search"], dict):
        raise GenlabError(f"recipe {source}: search must be a mapping (genlab tune's search space), got {recipe['search']!r}",
                          "write it as search: {objective: val.loss, params: {train.lr: 'logfloat:1e-4:1e-2'}}")
    for section in ("data", "model", "train"):
        if recipe[section] is None:
            recipe[section] = {}
        if not isinstance(recipe[section], dict):
            raise GenlabError(f"recipe {source}: {section} must be a mapping of settings, got {recipe[section]!r}",
                              f"write it as {section}: {{key: value, ...}} (or an indented block of key: value lines)")
    _check_budget_bands(recipe.get("budgets"), source)
    return recipe


# ----------------------------------------------------------------------------- time budgets


def _check_budget_bands(bands, source: str) -> None:
    if bands is None:
        return
    example = "budgets: {2: {model: {n_embd: 128}, train: {lr: 0.002}}, 20: {...}}"
    if not isinstance(bands, dict) or not bands:
        raise GenlabError(f"recipe {source}: budgets must map minutes to settings, got {bands!r}", f"write it as {example}")
    for minutes, band in bands.items():
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
            raise GenlabError(f"recipe {source}: budget band {minutes!r} is not a positive number of minutes",
                              f"write it as {example}")
        if not isinstance(band, dict) or set(band) - {"data", "model", "train"} \
                or not all(isinstance(v, dict) for v in band.values()):
            raise GenlabError(f"recipe {source}: budget band {minutes} must hold data/model/train mappings, got {band!r}",
                              f"write it as {example}")


def _bands(recipe: dict) -> dict[float, dict]:
    """The recipe's budget bands by their length in minutes (a JSON copy has them as strings)."""
    return {float(minutes): band for minutes, band in (recipe.get("budgets") or {}).items()}


def budget_band(recipe: dict, minutes: float) -> float | None:
    """The recipe's band for a budget of `minutes`: the shortest band at least that long (the
    longest band beyond them all); None when the recipe declares no bands."""
    bands = sorted(_bands(recipe))
    if not bands:
        return None
    return next((band for band in bands if band >= minutes), bands[-1])


def apply_budget(recipe: dict, minutes: float) -> dict:
    """A copy of `recipe` set up to train for `minutes` of wall-clock time: its budget band's
    settings applied, the step and epoch counts lifted (the deadline ends the run) and
    train.time_budget_s set. Command-line overrides go on top, so steps= there still caps it."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise GenlabError(f"--minutes must be a positive number, got {minutes!r}", "e.g. --minutes 5")
    band = budget_band(recipe, minutes)
    band_settings = _bands(recipe)[band] if band is not None else {}
    recipe = json.loads(json.dumps(recipe))
    for section, settings in json.loads(json.dumps(band_settings)).items():
        recipe[section].update(settings)
    recipe["train"].update(steps=None, epochs=None, time_budget_s=round(minutes * 60.0, 3))
    recipe["budget_band"] = band
    return recipe


def describe_budget_bands(recipe: dict) -> list[str]:
    """One line per band for `genlab recipes`: its upper end and its settings."""
    by_length = _bands(recipe)
    lines, bands = [], sorted(by_length)
    for band in bands:
        settings = "  ".join(f"{section}.{key}={value}" for section, values in by_length[band].items()
                             for key, value in values.items()) or "the recipe's own settings"  # an empty band
        lines.append(f"--minutes <= {band:g}{' (and longer)' if band == bands[-1] else ''}: {settings}")
    return lines


# What yaml.safe_load raises besides YAMLError: ValueError, KeyError, IndexError, AttributeError for
# malformed tagged scalars (`!!int x`, `!!bool x`, `!!timestamp x`, a date such as 2020-13-45) and
# RecursionError for runaway nesting; and what _plain_yaml's check raises (TypeError, ValueError).
YAML_FAILURES = (yaml.YAMLError, ValueError, LookupError, AttributeError, TypeError, RecursionError)


def _plain_yaml(text: str) -> Any:
    """yaml.safe_load(text), checked to be plain data, as config.json holds it: a date, a set,
    binary data or an alias that contains itself (`&a [*a]`) is refused. Raises one of YAML_FAILURES."""
    value = yaml.safe_load(text)
    json.dumps(value)  # TypeError: not JSON data; ValueError: a self-reference
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise GenlabError(f"cannot read override {text!r}", "write overrides as key=value, e.g. epochs=5 or model.latent_dim=32")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise GenlabError(f"override {text!r} has an empty key")
    try:
        value = _plain_yaml(raw) if raw.strip() else ""
    except YAML_FAILURES:
        value = raw  # not plain YAML data: the text itself (the setting's type check names it if it must be a number)
    parts = key.split(".")
    if len(parts) == 1 and parts[0] in SHORTHAND_TRAIN_KEYS:
        parts = ["train", parts[0]]
    return parts, value


def apply_overrides(recipe: dict, overrides: list[str]) -> dict:
    """Return a copy of `recipe` with `key=value` overrides applied (validated later by from_dict)."""
    recipe = json.loads(json.dumps(recipe))
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] in ("data", "model", "train") and len(parts) < 2:
            raise GenlabError(f"override {text!r} names a whole section", f"set one setting at a time: {parts[0]}.KEY=VALUE")
        if parts[0] not in ("data", "model", "train"):
            raise GenlabError(
                f"override {text!r}: unknown section {parts[0]!r}",
                f"use data.<key>, model.<key>, train.<key> or one of {', '.join(SHORTHAND_TRAIN_KEYS)}",
            )
        node = recipe
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
        if parts == ["train", "steps"] and value is not None:
            recipe["train"]["epochs"] = None  # steps= replaces the recipe's epoch count
        if parts == ["train", "epochs"] and value is not None:
            recipe["train"]["steps"] = None
    return recipe
