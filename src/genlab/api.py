"""The Python API that the CLI (and later the server) are thin layers over."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ._version import __version__
from .artifact import check_size, read_config, save, write_metrics
from .config import TrainConfig, apply_budget, apply_overrides, from_dict, load_recipe, to_dict
from .errors import GenlabError, TrainingInterrupted
from .limits import MAX_SEED, check_range
from .models.base import check_sample_count
from .registry import get_data_kind, get_family
from .training import ClassShareMonitor, Trainer


# Settings a resumed run may change: its length and its bookkeeping. Anything else (model,
# data, batch size, seed, learning rate) would not match the checkpoint or would silently
# break the bit-exact continuation.
RESUMABLE_OVERRIDES = ("epochs", "steps", "time_budget_s", "eval_every", "eval_batches", "checkpoint_every",
                       "log_every", "samples_every", "tensorboard", "progress", "device")


def default_run_dir(recipe_name: str) -> Path:
    # Under torchrun every rank must pick the same name: use the launcher's run id.
    stamp = os.environ.get("TORCHELASTIC_RUN_ID") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    return Path("runs") / f"{recipe_name}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".genlab-write-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise GenlabError(f"cannot write to {directory}: {e.strerror or e}", "choose a writable --out directory") from None


DATA_DECIDES = {  # how to change a model setting that the data dictates
    "block_size": "set data.block_size instead (the training windows are the model's context)",
    "vocab_size": "the tokenizer decides it (data.tokenizer; data.vocab_size for BPE)",
}


def _model_config(family_cls, model_values: dict, data) -> object:
    """The family's config: recipe values plus what the data dictates (shape, classes, range, vocabulary)."""
    names = {f.name for f in dataclasses.fields(family_cls.config_class)}
    values = dict(model_values)
    for key, value in data.model_fields().items():
        if key in names:
            value = list(value) if isinstance(value, tuple) else value
            given = values.get(key)
            if given is not None and (list(given) if isinstance(given, (list, tuple)) else given) != value:
                # Overwriting it silently would train a different model than the one asked for.
                raise GenlabError(f"model.{key}={given} conflicts with the data, which sets it to {value}",
                                  DATA_DECIDES.get(key, f"remove model.{key}: it follows the data"))
            values[key] = value
    return from_dict(family_cls.config_class, values, "model")


def train(recipe: str | dict, overrides: list[str] | tuple = (), out: str | Path | None = None, resume: bool = False, log=None,
          callbacks: list | tuple = (), minutes: float | None = None) -> Path:
    """Train a recipe (name, YAML path or dict) and write a model directory; returns its path.

    With resume=True, `out` is an existing run directory: its config.json and checkpoint are
    used, and overrides may change the training length (epochs=, steps=). Every setting is
    checked, and the model's size against this machine's memory, before anything is written: a
    run that cannot start leaves no folder behind (a new --out folder is removed again).
    callbacks: extra Trainer callbacks (genlab.training.Callback), e.g. genlab tune's trial pruning.
    minutes: train for this much wall-clock time (genlab.config.apply_budget): the recipe's budget
    band, no step count, the schedule over the budget; on resume, the run's new total budget.
    """
    if minutes is not None and resume:
        overrides = [f"train.time_budget_s={minutes * 60.0}", *overrides]
    elif minutes is not None:
        recipe = apply_budget(load_recipe(recipe) if isinstance(recipe, str) else recipe, minutes)
    resolved, run_dir = _resolve_run(recipe, overrides, out, resume)
    is_main = int(os.environ.get("RANK", "0")) == 0
    created = is_main and not run_dir.exists()
    try:
        trainer, config = _prepare(resolved, run_dir, resume, is_main, log, callbacks)
    except BaseException:
        if created and run_dir.is_dir():  # this call made the folder: nothing of anyone's is lost
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if is_main:  # config and tokenizer now: a resumed run needs them (its token ids are tied to the weights)
        save(trainer.model, run_dir, config, weights=False)
    try:
        return _fit_and_export(trainer, run_dir, resume)
    finally:
        trainer.close()
        from .training.distributed import shutdown

        shutdown(trainer.dist)


def _resolve_run(recipe, overrides, out, resume: bool) -> tuple[dict, Path]:
    """The recipe with its overrides applied, and the run directory (a resumed run's saved settings)."""
    if not resume:
        resolved = apply_overrides(load_recipe(recipe) if isinstance(recipe, str) else recipe, list(overrides))
        run_dir = Path(out) if out is not None else default_run_dir(resolved.get("name", "run"))
        if (run_dir / "checkpoint.safetensors").exists():
            raise GenlabError(f"{run_dir} already holds a training run", "continue it with --resume, or choose another --out")
        return resolved, run_dir
    if out is None:
        raise GenlabError("--resume needs the run directory", "genlab train --resume runs/vae-digits-...")
    run_dir = Path(out)
    saved = read_config(run_dir)
    from .config import parse_override

    for text in overrides:
        parts, _ = parse_override(text)
        if parts[0] != "train" or len(parts) != 2 or parts[1] not in RESUMABLE_OVERRIDES:
            raise GenlabError(
                f"{text!r} cannot change when resuming: it would not match the checkpoint",
                f"a resumed run may change only {', '.join(RESUMABLE_OVERRIDES)}; start a new run for other settings",
            )
    resolved = apply_overrides({k: saved[k] for k in ("family", "data", "model", "train")}, list(overrides))
    resolved["name"] = saved.get("recipe", run_dir.name)
    resolved["description"] = saved.get("description", "")
    return resolved, run_dir


class _no_random_init(torch.overrides.TorchFunctionMode):
    """Skip the random initialisation of tensors (in-place normal_, uniform_, ...) while a model is
    built on the meta device to be measured: the first random draw on meta tensors costs torch
    about a second of one-off set-up, and the size check needs shapes only."""

    SKIPPED = {"normal_", "uniform_", "trunc_normal_", "orthogonal_", "kaiming_uniform_", "kaiming_normal_",
               "xavier_uniform_", "xavier_normal_", "bernoulli_", "exponential_", "random_"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.SKIPPED:
            tensor = args[0] if args else kwargs.get("self", next(iter(kwargs.values()), None))
            if getattr(tensor, "is_meta", False):
                return tensor
        return func(*args, **kwargs)


def _prepare(resolved: dict, run_dir: Path, resume: bool, is_main: bool, log, callbacks=()):
    """Data, model (checked for size on the meta device first) and Trainer; the config to save."""
    family_cls = get_family(resolved["family"])
    train_cfg = from_dict(TrainConfig, resolved["train"], "train")
    kind = get_data_kind(family_cls.data_kind)
    data_spec = from_dict(kind.spec_class, resolved["data"], "data")
    if is_main:  # after the settings are known to be valid: no empty run folders for typos
        _check_writable(run_dir)
    data = kind.load(data_spec, run_dir if resume else None)
    model_cfg = _model_config(family_cls, resolved["model"], data)
    with torch.device("meta"), _no_random_init():  # shapes only: a model too big for this machine is refused before it is built
        check_size(family_cls(model_cfg), "training it (weights, gradients, two optimiser moments"
                   + (", EMA)" if train_cfg.ema_decay else ")"), copies=5 if train_cfg.ema_decay else 4)
    torch.manual_seed(train_cfg.seed)  # the initial weights are a function of the seed
    model = family_cls(model_cfg)
    model.tokenizer = getattr(data, "tokenizer", None)  # token data carries one; the previews decode with it
    config = {"family": resolved["family"], "recipe": resolved.get("name"), "description": resolved.get("description", ""),
              "model": to_dict(model_cfg), "data": to_dict(data_spec), "train": to_dict(train_cfg),
              "classes": data.classes,
              **({"budget_band": resolved["budget_band"]} if resolved.get("budget_band") is not None else {})}
    trainer = Trainer(model, data, train_cfg, run_dir, log=log,
                      callbacks=[*_training_callbacks(model, data_spec, is_main), *callbacks])
    return trainer, config


def _fit_and_export(trainer, run_dir: Path, resume: bool) -> Path:
    """Train, then write the weights (EMA or best), previews and metrics.json."""
    result = trainer.fit(resume=resume)
    if result.status not in ("finished", "early_stopped"):  # early_stopped: complete, with the best weights if keep_best
        saved = "checkpoint saved" if result.status == "interrupted" else "the last checkpoint is kept"
        raise TrainingInterrupted(f"training stopped at step {result.steps}; {saved} in {run_dir}",
                                  f"continue with: genlab train --resume {run_dir}")
    # Every rank evaluates its shard; a text corpus may have no test split (data.test_fraction=0).
    test_metrics = trainer.evaluate("test") if trainer.data.num_examples("test") else {}
    if not trainer.dist.is_main:
        return run_dir
    with trainer.ema_weights():
        save(trainer.model, run_dir)
    for path in trainer.write_previews(run_dir, tag_step=False).values():
        trainer.log(f"wrote {path}")
    kind, spec, cfg = get_data_kind(trainer.model.data_kind), trainer.data.spec, trainer.cfg
    training = {"steps": result.steps, "wall_time_s": round(result.wall_time_s, 2),
                "train_time_s": round(result.train_time_s, 2), "examples_per_s": round(result.examples_per_s, 1),
                **({"tokens_per_s": round(result.examples_per_s * kind.tokens_per_example(spec), 1)}
                   if kind.tokens_per_example is not None else {}),
                "device": str(trainer.device), "world_size": trainer.dist.world_size,
                **({"time_budget_s": cfg.time_budget_s, "budget_used_s": round(result.budget_used_s, 2)}
                   if result.budget_used_s is not None else {}),
                **({"stopped_early": result.status == "early_stopped", "monitor": cfg.monitor,
                    "best_step": result.best_step, "best_metric": result.best_metric}
                   if result.best_step is not None else {})}  # early stopping / keep_best
    write_metrics(run_dir, {"genlab_version": __version__, "training": training, "val": result.val_metrics,
                            "test": test_metrics, "data": spec.name, "seed": cfg.seed})
    return run_dir


def _training_callbacks(model, data_spec, is_main: bool) -> list:
    """Side work the Trainer cannot set up itself: the class-share monitor needs the shipped
    classifier for the data set, which lives in genlab.metrics (training/ never imports it)."""
    if not is_main or "sample" not in model.capabilities:  # previews are written by the main rank only
        return []
    from .metrics.features import classifier_for_dataset

    classifier = classifier_for_dataset(data_spec.name)
    return [ClassShareMonitor(classifier)] if classifier is not None else []


def sample(model, n: int, *, seed: int = 0, condition=None, **sampling) -> torch.Tensor | list[str]:
    """n samples, reproducible from the seed: images in the data's value range, or texts
    (for a text model, `condition` is an optional prompt; see `generate` for decoding controls).

    sampling: options of the model's sampler, for the families whose `sample` takes them
    (diffusion: steps, sampler, guidance_scale, eta):

        images = genlab.sample(model, 64, seed=0, sampler="dpm++", steps=20)
    """
    check_sample_count(n)
    check_range("seed", seed, 0, MAX_SEED)
    check_sampling_options(model, sampling)
    generator = torch.Generator(model.device).manual_seed(seed)
    return model.sample(n, condition=condition, generator=generator, **sampling)


# The sampler options `genlab sample` and POST /v1/images/generations pass on when given.
SAMPLER_OPTIONS = ("steps", "sampler", "guidance_scale")


def samples_in_steps(model) -> bool:
    """Whether the model samples in steps that a callback(i, x_t) can watch (diffusion models)."""
    import inspect

    return "callback" in inspect.signature(model.sample).parameters


def check_sampling_options(model, sampling: dict) -> None:
    """Refuse sampler options (steps, sampler, guidance_scale, ...) that `model.sample` does not take."""
    if not sampling:
        return
    import inspect

    accepted = inspect.signature(model.sample).parameters
    refused = [name for name in sampling if name not in accepted or name in ("n", "condition", "generator")]
    if refused:
        flags = ", ".join("--guidance" if name == "guidance_scale" else f"--{name}" for name in refused)
        raise GenlabError(f"{model.family} models take no {flags} (sampler options of diffusion models)",
                          f"drop {flags}", param=refused[0])


def generate(model, prompt: str = "", **options) -> list[str]:
    """Continuations of `prompt` from a text model (the prompt itself is not included).

    options are genlab.sampling.GenerationConfig fields: max_new_tokens=200, temperature=1.0
    (0 = greedy), top_k, top_p, repetition_penalty=1.0, no_repeat_ngram_size=0 (n > 0: no n-gram of
    tokens twice), num_return_sequences=1, num_beams=1
    (beam search), stop (a string or strings the text ends before), seed=0, use_cache=True,
    style (a model trained with styles, data.styles: write in that style; the model's styles
    are model.tokenizer.styles; an unknown one is an error listing them).

        texts = genlab.generate(model, "ROMEO:", max_new_tokens=300, temperature=0.8, top_p=0.95)
        texts = genlab.generate(style_model, "", style="pydoc", max_new_tokens=300)
    """
    from .sampling import GenerationConfig
    from .sampling import generate as generate_text

    model.require("generate", "prompted text generation")
    return generate_text(model, prompt, from_dict(GenerationConfig, options, "generation"))


def evaluate(model_dir, **options) -> dict:
    """Evaluate a model directory (see genlab.evaluation.evaluate for the options)."""
    # Imported here so that importing genlab does not load the metric modules (and
    # `python -m genlab.metrics.features` does not import itself twice).
    from .evaluation import evaluate as evaluate_model

    return evaluate_model(model_dir, **options)
