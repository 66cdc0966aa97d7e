"""The search space: which settings a study varies, over which ranges, and the objective.

A parameter is a dotted setting (the keys `genlab train` takes as overrides: `model.latent_dim`,
`train.lr` or the bare `lr`) with a range, written as text on the command line and in a recipe:

    float:0:0.7          uniform on [0, 0.7]            float:0:0.7:0.1   ... on a 0.1 grid
    logfloat:1e-4:3e-3   log-uniform                    int:8:64          integers 8..64 (int:8:64:8 by 8)
    logint:16:512        integers, log-uniform          cat:lstm,gru      one of the listed values

A recipe's `search:` block holds the same (a YAML list is a categorical; a mapping
{type, low, high, step, choices} is the long form), and may name the objective:

    search:
      objective: val.nll_per_frame   # a validation metric; direction: auto (see HIGHER_IS_BETTER) | minimize | maximize
      params:
        train.lr: logfloat:1e-4:3e-3
        model.hidden_size: int:64:512:64
        model.cell: [lstm, gru]
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig, apply_overrides, from_dict, parse_override
from ..errors import GenlabError
from ..training.callbacks import HIGHER_IS_BETTER

KINDS = ("float", "logfloat", "int", "logint", "cat")
SECTIONS = ("data", "model", "train")
DIRECTIONS = ("auto", "minimize", "maximize")
SPEC_HINT = "write a range as float:LOW:HIGH, logfloat:LOW:HIGH, int:LOW:HIGH[:STEP], logint:LOW:HIGH or cat:A,B,C"


@dataclass(frozen=True)
class Param:
    key: str  # the dotted setting, with its section: train.lr
    kind: str  # one of KINDS
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple = ()
    # Optuna's categorical takes scalars only: a list choice (model.hidden: [[64], [128, 64]]) travels as JSON text.
    encoded: bool = False

    def suggest(self, trial) -> Any:
        """This parameter's value for an Optuna trial (the plain setting, decoded)."""
        if self.kind == "cat":
            value = trial.suggest_categorical(self.key, list(self.choices))
            return json.loads(value) if self.encoded else value
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.kind == "logint")
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.kind == "logfloat")

    def decode(self, value: Any) -> Any:
        """A stored trial parameter as the setting's value."""
        return json.loads(value) if self.encoded else value

    def text(self) -> str:
        """The range as it is written on the command line (round-trips through parse_param)."""
        if self.kind == "cat":
            return "cat:" + ",".join(c if self.encoded else _choice_text(c) for c in self.choices)
        return f"{self.kind}:{self.low}:{self.high}" + (f":{self.step}" if self.step is not None else "")

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, values: dict) -> Param:
        return cls(**{**values, "choices": tuple(values.get("choices") or ())})

    def probe_values(self) -> list:
        """Values every trial could be given that cover what can go wrong: both ends and, for a
        float range, a non-integer inside it (an integer setting refuses it); every choice."""
        if self.kind == "cat":
            return [self.decode(c) for c in self.choices]
        if self.kind in ("int", "logint"):
            return [self.low, self.high]
        middle = math.sqrt(self.low * self.high) if self.kind == "logfloat" else (self.low + self.high) / 2
        if float(middle).is_integer():
            middle += (self.high - self.low) / 7
        return [self.low, self.high, min(middle, self.high)]


def _choice_text(choice: Any) -> str:
    """A choice as written in cat:A,B (text plain when it reads back as the same text)."""
    if isinstance(choice, str) and "," not in choice and choice.strip() == choice and _scalar(choice) == choice:
        return choice
    return json.dumps(choice)


def override(key: str, value: Any) -> str:
    """`key=value` as `genlab train` reads it (JSON is YAML: numbers, quoted text, lists)."""
    return f"{key}={json.dumps(value)}"


def setting_key(name: str, where: str) -> str:
    """`lr` -> `train.lr`, `model.latent_dim` as it is; a section of its own or a deeper key is refused."""
    parts, _ = parse_override(f"{name}=0")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise GenlabError(f"{where}: {name!r} is not a setting",
                          "name a setting as data.KEY, model.KEY or train.KEY (or lr, epochs, steps, batch_size, ...)")
    return ".".join(parts)


def parse_param(key: str, spec: Any, where: str = "--search") -> Param:
    """A Param from its text (`int:8:64`), a YAML list (categorical) or mapping (long form)."""
    key = setting_key(key, where)
    context = f"{where} {key}"
    if isinstance(spec, list):
        return _categorical(key, spec, context)
    if isinstance(spec, dict):
        return _from_mapping(key, spec, context)
    if not isinstance(spec, str) or ":" not in spec:
        raise GenlabError(f"{context}: cannot read the range {spec!r}", SPEC_HINT)
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("cat", "categorical", "choice"):
        texts = [text.strip() for text in rest.split(",")]
        if not all(texts):
            raise GenlabError(f"{context}: an empty choice in {spec!r}", "e.g. cat:lstm,gru")
        return _categorical(key, [_scalar(text) for text in texts], context)
    fields = rest.split(":")
    if kind not in KINDS or len(fields) not in (2, 3):
        raise GenlabError(f"{context}: cannot read the range {spec!r}", SPEC_HINT)
    return _numeric(key, kind, *[_number(text, context, spec) for text in fields], context=context)


def _from_mapping(key: str, spec: dict, context: str) -> Param:
    known = {"type", "low", "high", "step", "log", "choices"}
    if set(spec) - known or "type" not in spec and "choices" not in spec:
        raise GenlabError(f"{context}: cannot read the range {spec!r}",
                          "the long form is {type: float|int|cat, low: L, high: H, step: S, log: true} or {choices: [...]}")
    kind = str(spec.get("type", "cat")).lower()
    if kind in ("cat", "categorical"):
        return _categorical(key, spec.get("choices"), context)
    if spec.get("log"):
        kind = {"float": "logfloat", "int": "logint"}.get(kind, kind)
    if kind not in KINDS[:-1]:
        raise GenlabError(f"{context}: unknown range type {spec.get('type')!r}", "use float, int or cat (log: true for log scale)")
    values = [spec.get("low"), spec.get("high"), spec.get("step")]
    numbers = [None if v is None else _number(v, context, spec) for v in values]
    if numbers[0] is None or numbers[1] is None:
        raise GenlabError(f"{context}: a {kind} range needs low and high", SPEC_HINT)
    return _numeric(key, kind, *numbers, context=context)


def _number(text: Any, context: str, spec: Any) -> float | int:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    try:
        value = float(str(text).strip())
    except ValueError:
        raise GenlabError(f"{context}: {text!r} in {spec!r} is not a number", SPEC_HINT) from None
    if not math.isfinite(value):
        raise GenlabError(f"{context}: {text!r} in {spec!r} is not a finite number", SPEC_HINT)
    return int(value) if value.is_integer() and "." not in str(text) and "e" not in str(text).lower() else value


def _numeric(key: str, kind: str, low, high, step=None, *, context: str) -> Param:
    if kind in ("int", "logint"):
        if not all(v is None or float(v).is_integer() for v in (low, high, step)):
            raise GenlabError(f"{context}: an {kind} range takes whole numbers, got {low}:{high}" + (f":{step}" if step else ""),
                              "use float: or logfloat: for a continuous range")
        low, high, step = (None if v is None else int(v) for v in (low, high, step))
    else:
        low, high, step = (None if v is None else float(v) for v in (low, high, step))
    if not low < high:
        raise GenlabError(f"{context}: the range's low end ({low}) must be below its high end ({high})", SPEC_HINT)
    if kind.startswith("log") and low <= 0:
        raise GenlabError(f"{context}: a log range must be positive, got low end {low}", "e.g. logfloat:1e-4:1e-2")
    if step is not None:
        if step <= 0:
            raise GenlabError(f"{context}: the step must be positive, got {step}", SPEC_HINT)
        if kind.startswith("log"):
            raise GenlabError(f"{context}: a log range takes no step", "drop the step, or use int:/float: with a step")
    return Param(key, kind, low, high, step)


def _scalar(text: str) -> Any:
    """A choice as `genlab train` reads a value: 0.01 a number, true a bool, lstm text."""
    return parse_override(f"choice={text}")[1]


def _categorical(key: str, choices: Any, context: str) -> Param:
    if not isinstance(choices, (list, tuple)) or not choices:
        raise GenlabError(f"{context}: a categorical range needs at least one choice", "e.g. cat:lstm,gru or [lstm, gru]")
    encoded = any(isinstance(c, (list, dict)) for c in choices)
    values = tuple(json.dumps(c) for c in choices) if encoded else tuple(choices)
    if len(set(values)) != len(values):
        raise GenlabError(f"{context}: a choice is listed twice in {list(choices)}")
    return Param(key, "cat", choices=values, encoded=encoded)


# ----------------------------------------------------------------------------- the study's definition


@dataclass
class Space:
    """What defines a study: the base recipe (fixed settings applied), the parameters and the objective.
    A study resumed under the same name must have the same (genlab refuses to mix two)."""

    recipe: dict  # family, data, model, train (+ name, description); no search block
    params: list[Param]
    objective: str  # val.KEY
    direction: str  # minimize | maximize

    @property
    def metric(self) -> str:
        return self.objective.removeprefix("val.")

    def to_json(self) -> dict:
        return {"recipe": self.recipe, "params": [p.to_json() for p in self.params], "objective": self.objective,
                "direction": self.direction}

    @classmethod
    def from_json(cls, values: dict) -> Space:
        return cls(values["recipe"], [Param.from_json(p) for p in values["params"]], values["objective"], values["direction"])

    def trial_recipe(self, values: dict) -> dict:
        """The base recipe with the parameters' values applied: what one trial trains."""
        return apply_overrides(self.recipe, [override(key, value) for key, value in values.items()])

    def differences(self, other: Space) -> list[str]:
        """What differs from another study's definition, in words (empty: the same study)."""
        out = []
        mine, theirs = {p.key: p.text() for p in self.params}, {p.key: p.text() for p in other.params}
        if mine != theirs:
            out.append(f"search space {_space_text(theirs)} vs {_space_text(mine)}")
        if (self.objective, self.direction) != (other.objective, other.direction):
            out.append(f"objective {other.objective} ({other.direction}) vs {self.objective} ({self.direction})")
        for section in ("family", "data", "model", "train"):
            if json.dumps(self.recipe.get(section), sort_keys=True) != json.dumps(other.recipe.get(section), sort_keys=True):
                out.append(f"the recipe's {section} settings")
        return out


def _space_text(params: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + "}"


def objective_name(text: str) -> str:
    text = text.strip()
    if not text.startswith("val."):
        if "." in text.split("@")[0]:
            raise GenlabError(f"--objective {text}: the objective is a validation metric, val.KEY",
                              "e.g. --objective val.loss, val.iwae_nll or val.ndcg@100")
        text = f"val.{text}"
    if len(text) <= 4:
        raise GenlabError("--objective names no metric", "e.g. --objective val.loss")
    return text


def resolve_direction(objective: str, direction: str) -> str:
    if direction not in DIRECTIONS:
        raise GenlabError(f"unknown direction {direction!r}", f"use one of {', '.join(DIRECTIONS)}")
    if direction != "auto":
        return direction
    return "maximize" if objective.removeprefix("val.").split("@")[0] in HIGHER_IS_BETTER else "minimize"


def build_space(recipe: dict, overrides: list[str], searches: list[str], objective: str | None, direction: str | None) -> Space:
    """The study's definition from a loaded recipe (with its optional search block), the fixed
    overrides and the command line's --search KEY=RANGE, --objective and --direction."""
    recipe = dict(recipe)
    block = recipe.pop("search", None) or {}
    unknown = set(block) - {"objective", "direction", "params"}
    if unknown:
        raise GenlabError(f"the recipe's search block has unknown key(s) {', '.join(sorted(unknown))}",
                          "search: {objective: val.KEY, direction: auto|minimize|maximize, params: {KEY: RANGE}}")
    params: dict[str, Param] = {}
    listed = block.get("params") or {}
    if not isinstance(listed, dict):
        raise GenlabError(f"the recipe's search.params must be a mapping of setting: range, got {listed!r}")
    for key, spec in listed.items():
        param = parse_param(str(key), spec, where="search.params")
        params[param.key] = param
    for text in searches:
        key, sep, spec = text.partition("=")
        if not sep or not key.strip():
            raise GenlabError(f"--search {text!r}: write it as KEY=RANGE", f"e.g. --search model.latent_dim=int:8:64; {SPEC_HINT}")
        param = parse_param(key.strip(), _plain_spec(spec.strip()))
        params[param.key] = param  # the command line wins over the recipe
    if not params:
        raise GenlabError("nothing to search: no --search and no search block in the recipe",
                          "e.g. --search lr=logfloat:1e-4:3e-3 --search model.latent_dim=int:8:64")
    base = apply_overrides(recipe, overrides)
    for param in params.values():
        fixed = [text for text in overrides if ".".join(parse_override(text)[0]) == param.key]
        if fixed:
            raise GenlabError(f"{param.key} is both searched and fixed ({fixed[0]})", "drop one of the two")
    name = objective_name(objective or block.get("objective") or "val.loss")
    return Space(base, list(params.values()), name, resolve_direction(name, direction or block.get("direction") or "auto"))


def _plain_spec(text: str) -> Any:
    """A command-line range: text, or a YAML list for categorical choices that are lists (`[[64], [128, 64]]`)."""
    if text.startswith("["):
        value = parse_override(f"choice={text}")[1]
        return value if isinstance(value, list) else text
    return text


def check_settings(space: Space, family_cls, kind, data=None, model_config=None) -> None:
    """Every parameter names a real setting, and every value a trial may get builds that section's
    config (the type, the section's own checks): both ends and a value inside each range, every
    choice. With `data` (and `model_config`, genlab.api._model_config), model values are checked
    against what the data dictates too; without it, names only."""
    classes = {"data": kind.spec_class, "model": family_cls.config_class, "train": TrainConfig}
    for param in space.params:
        section, name = param.key.split(".", 1)
        names = [f.name for f in dataclasses.fields(classes[section])]
        if name not in names:
            raise GenlabError(f"--search {param.key}: unknown {section} setting for {space.recipe['family']} "
                              f"({space.recipe.get('name', 'the recipe')})", f"valid {section} settings: {', '.join(names)}")
        if data is None:
            continue
        for value in param.probe_values():
            values = space.trial_recipe({param.key: value})[section]
            try:
                if section == "model":
                    model_config(family_cls, values, data)
                else:
                    from_dict(classes[section], values, section)
            except GenlabError as e:
                raise GenlabError(f"--search {param.key}={param.text()}: a trial with {param.key}={value!r} could not "
                                  f"run: {e.message}", e.hint or SPEC_HINT) from None
