"""Evaluating a model directory: likelihood bounds and sample quality, each beside a floor.

Likelihood (models with the `log_likelihood` capability): the ELBO, the importance-weighted
bound IWAE_k (nats per example, and bits per dimension) and the reconstruction error, on
a split of the model's own data set.

Sample quality (models with the `sample` capability): n samples and n real images go
through a feature network shipped with genlab (or Inception when the user has it); from
the features come the Fréchet distance, the kernel distance (KID), precision/recall,
density/coverage, the classifier ("Inception-style") score and the histogram of predicted
classes. Every number carries its feature space (`fd[lenet-mnist]`, never a bare "FID",
which readers take to mean Inception features) and is printed beside its floor: the same
metric between n real *training* images and the n real images of the reference split, the
best a model can be expected to do with that n.

Text models (gpt, lstm): the negative log-likelihood of the held-out text (val and test, every
token scored once, in consecutive windows of the model's context), as nats per token,
perplexity and bits per character; and the diversity of n samples drawn at temperature 1
(distinct-1/2/3, self-BLEU), each beside the same metric of n real snippets of the held-out
text with as many tokens, which is what "as varied as the real text" looks like.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from ._version import __version__
from .artifact import load, write_evaluation
from .data.splits import parse_against
from .config import from_dict
from .data import ImageDataSpec, TextDataSpec, load_image_data, load_text_data
from .errors import GenlabError, InputTooLarge
from .metrics import image as image_metrics
from .metrics.features import FeatureExtractor, default_extractor_for, load_feature_extractor
from .metrics.likelihood import bits_per_dim
from .metrics.text import bits_per_char, distinct_n, perplexity, self_bleu

METRIC_GROUPS = ("likelihood", "samples")
SAMPLE_BATCH = 1000


@torch.no_grad()
def likelihood_metrics(model, data, split: str, n: int, seed: int, iwae_k: int, batch_size: int = 100,
                       progress: bool = True) -> dict[str, float]:
    """Mean ELBO, IWAE_k NLL (nats and bits/dim) and reconstruction MSE over the first n images."""
    model.require("log_likelihood", "the likelihood metrics (ELBO, IWAE NLL)")
    model.require("encode", "the reconstruction error")
    if iwae_k < 1:
        raise GenlabError(f"--iwae-k must be >= 1, got {iwae_k}")
    data_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(model.device).manual_seed(seed + 1)
    sums = {"elbo": 0.0, "iwae_nll": 0.0, "recon_mse": 0.0}
    for i in tqdm(range(0, n, batch_size), disable=not progress, unit="batch", desc=f"likelihood ({split})"):
        idx = torch.arange(i, min(i + batch_size, n))
        batch = data.batch(split, idx, data_gen)
        x, y = batch["x"].to(model.device), batch["y"].to(model.device)
        sums["elbo"] += model.elbo(x, y, generator=noise_gen)["elbo"].sum().item()
        sums["iwae_nll"] += -model.log_likelihood(x, y, k=iwae_k, generator=noise_gen).sum().item()
        sums["recon_mse"] += (model.reconstruct(x, y) - x).pow(2).flatten(1).sum(1).sum().item()
    result = {k: v / n for k, v in sums.items()}
    result["iwae_bits_per_dim"] = bits_per_dim(result["iwae_nll"], data.split(split).images[0].numel())
    return result


@torch.no_grad()
def draw_samples(model, n: int, seed: int) -> torch.Tensor:
    """n samples in [0, 1] on the CPU, drawn in batches from one seeded generator."""
    model.require("sample", "the sample-quality metrics")
    generator = torch.Generator(model.device).manual_seed(seed)
    low, high = model.data_range
    parts = []
    for start in range(0, n, SAMPLE_BATCH):
        images = model.sample(min(SAMPLE_BATCH, n - start), generator=generator)
        parts.append(((images.float() - low) / (high - low)).clamp(0.0, 1.0).cpu())
    return torch.cat(parts)


def sample_quality_metrics(real_features: torch.Tensor, fake_features: torch.Tensor, fake_probabilities: torch.Tensor,
                           seed: int) -> dict[str, float]:
    """All feature-space metrics of one (real, generated) pair; names without the feature space."""
    kid_mean, kid_std = image_metrics.kid(real_features, fake_features, seed=seed)
    is_mean, is_std = image_metrics.inception_score(fake_probabilities, splits=10)
    histogram = image_metrics.class_histogram(fake_probabilities.argmax(1), fake_probabilities.shape[1])
    return {
        "fd": image_metrics.fid(real_features, fake_features),
        "kd": kid_mean,
        "kd_std": kid_std,
        **image_metrics.precision_recall(real_features, fake_features, k=3),
        **image_metrics.density_coverage(real_features, fake_features, k=5),
        "classifier_score": is_mean,
        "classifier_score_std": is_std,
        # mode collapse shows as classes far from an even share
        "class_share_min": float(histogram.min()),
        "class_share_max": float(histogram.max()),
    }


def real_images(data, split: str, n: int, seed: int) -> torch.Tensor:
    """n real images of a split in [0, 1] (grey levels, no binarisation), a seeded random subset."""
    images = data.split(split).images
    if n > len(images):
        raise InputTooLarge(
            f"n={n} is larger than the {split} split of {data.spec.name} ({len(images)} images)",
            f"use -n {len(images)} or fewer",
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[order].float().div_(255.0)


def evaluate(model_dir: str | Path, *, against: str | None = None, n: int | None = None, seed: int = 0,
             iwae_k: int = 1000, features: str | None = None, metrics: tuple[str, ...] | None = None,
             max_new_tokens: int = 200, num_beams: int | None = None, length_penalty: float | None = None,
             no_repeat_ngram_size: int | None = None, progress: bool = True, write: bool = True) -> dict:
    """Evaluate a model directory with its data kind's evaluation; the result is written into
    its metrics.json under "eval".

    metrics: which groups to compute ("likelihood", "samples"); None = every group the model
    supports. Asking for a group the model lacks the capability for is an error. Text
    models: n is the number of samples (default 20) of max_new_tokens each. Text-pair models:
    num_beams, length_penalty and no_repeat_ngram_size set the beam search (default 4, 0.6 and
    0). write=False leaves metrics.json alone (the CLI prints the result first, then writes it: artifact.write_evaluation).
    """
    from .registry import get_data_kind

    if n is not None and (not isinstance(n, int) or n <= 0):
        raise GenlabError(f"-n must be a positive integer, got {n}")
    model = load(model_dir)
    kind = get_data_kind(model.data_kind)
    decoding = {k: v for k, v in (("num_beams", num_beams), ("length_penalty", length_penalty),
                                  ("no_repeat_ngram_size", no_repeat_ngram_size)) if v is not None}
    if decoding and "translate" not in model.capabilities:
        raise GenlabError(f"--beams, --length-penalty and --no-repeat-ngram set the beam search of text-pair models; "
                          f"{model_dir} is a {model.data_kind} model", "leave them out")
    start = time.perf_counter()
    result = kind.evaluate(model, against=against, n=n, seed=seed, iwae_k=iwae_k, features=features,
                           metrics=metrics, max_new_tokens=max_new_tokens, progress=progress, **decoding)
    result = {"kind": kind.name, **result, "seconds": round(time.perf_counter() - start, 2), "genlab_version": __version__}
    if write:
        write_evaluation(model_dir, result)
    return result


def evaluate_images(model, *, against: str | None, n: int | None, seed: int, iwae_k: int, features: str | None,
                    metrics: tuple[str, ...] | None, progress: bool = True, **_) -> dict:
    """Image models: likelihood bounds and sample quality on a split (default: the model's own test split)."""
    config = model.artifact_config
    data_name, split = parse_against(against, config["data"]["name"])
    data = load_image_data(from_dict(ImageDataSpec, {**config["data"], "name": data_name}, "data"))
    if data.num_examples(split) == 0:
        raise GenlabError(f"the {split} split of {data_name} is empty", "evaluate against another split")
    wanted = _metric_groups(model, metrics)
    result: dict = {"data": f"{data_name}:{split}", "seed": seed}
    if "likelihood" in wanted:
        if tuple(data.shape) != tuple(model.config.input_shape):
            raise GenlabError(f"the model takes {tuple(model.config.input_shape)} images but {data_name} has {data.shape}")
        n_lik = min(n or data.num_examples(split), data.num_examples(split))
        result["likelihood"] = {**likelihood_metrics(model, data, split, n_lik, seed, iwae_k, progress=progress),
                                "iwae_k": iwae_k, "n": n_lik}
    if "samples" in wanted:
        result["samples"] = _sample_quality(model, data, split, n, seed, features, progress)
    return result


def _metric_groups(model, metrics: tuple[str, ...] | None) -> tuple[str, ...]:
    needs = {"likelihood": "log_likelihood", "samples": "sample"}
    if metrics is None:
        groups = tuple(g for g in METRIC_GROUPS if needs[g] in model.capabilities)
        if not groups:
            model.require("sample", "genlab eval")
        return groups
    for group in metrics:
        if group not in needs:
            raise GenlabError(f"unknown metric group {group!r}", f"use {', '.join(METRIC_GROUPS)}")
        model.require(needs[group], f"the {group} metrics")
    return tuple(metrics)


def _sample_quality(model, data, split: str, n: int | None, seed: int, features: str | None, progress: bool) -> dict:
    n = n if n is not None else min(10_000, data.num_examples(split))
    extractor: FeatureExtractor = load_feature_extractor(features or default_extractor_for(tuple(data.shape)))
    space = extractor.name
    timings = {}
    t = time.perf_counter()
    fake = draw_samples(model, n, seed)
    real = real_images(data, split, n, seed)
    reference = real_images(data, "train", n, seed + 1)  # the floor: real train vs the real reference split
    timings["sampling_s"] = time.perf_counter() - t
    t = time.perf_counter()
    real_f, fake_f, ref_f = (extractor.features(x) for x in tqdm([real, fake, reference], disable=not progress, desc="features"))
    fake_p, ref_p = extractor.probabilities(fake), extractor.probabilities(reference)
    timings["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    values = sample_quality_metrics(real_f, fake_f, fake_p, seed)
    timings["metrics_s"] = time.perf_counter() - t
    floor = sample_quality_metrics(real_f, ref_f, ref_p, seed)
    histogram = image_metrics.class_histogram(fake_p.argmax(1), fake_p.shape[1])
    return {
        "feature_space": space,
        "feature_weights_sha256": extractor.weights_sha256,
        "feature_test_accuracy": extractor.test_accuracy,
        "n": n,
        "metrics": {f"{k}[{space}]": v for k, v in values.items()},
        "floor": {f"{k}[{space}]": v for k, v in floor.items()},
        "class_histogram": [round(float(share), 4) for share in histogram],  # predicted-class shares of the samples
        "floor_definition": f"the same metrics between {n} real {data.spec.name}:train images and the {n} reference images",
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


# ----------------------------------------------------------------------------- text models

TEXT_SAMPLES = 20  # default number of samples for the diversity metrics


@torch.no_grad()
def window_nats(model, data, split: str, batch_size: int = 32, progress: bool = True) -> tuple[float, int]:
    """(total nats, tokens) with every token of a split scored once: consecutive windows of the
    model's context, each token predicted from the tokens before it in its window. Text and
    music events alike (data.TokenWindows)."""
    n_windows = data.num_examples(split)
    total_nats, tokens = 0.0, 0
    for start in tqdm(range(0, n_windows, batch_size), disable=not progress, unit="batch", desc=f"likelihood ({split})"):
        batch = data.batch(split, torch.arange(start, min(start + batch_size, n_windows)))
        log_p = model.token_log_likelihoods(batch["x"].to(model.device))
        total_nats -= log_p.double().sum().item()
        tokens += log_p.numel()
    return total_nats, tokens


@torch.no_grad()
def text_likelihood(model, data, split: str, batch_size: int = 32, progress: bool = True) -> dict:
    """Nats per token, perplexity and bits per character of a split (window_nats)."""
    total_nats, tokens = window_nats(model, data, split, batch_size, progress)
    loss = total_nats / tokens
    characters = tokens / data.split(split).tokens_per_char
    return {"tokens": tokens, "loss": loss, "perplexity": perplexity(loss),
            "bits_per_char": bits_per_char(total_nats, characters)}


def held_out_splits(data, split: str, against: str | None) -> tuple[str, ...]:
    """The split asked for, or by default both held-out parts (val and test), keeping those
    with at least one window to score (text and music event data)."""
    return tuple(s for s in ((split,) if against is not None else ("val", "test")) if data.num_examples(s) > 0)


def text_diversity(texts: list[str], seed: int = 0) -> dict[str, float | None]:
    """distinct-1/2/3 and self-BLEU; None where a metric is undefined (e.g. texts without words)."""
    metrics = {f"distinct-{k}": (lambda k=k: distinct_n(texts, k)) for k in (1, 2, 3)}
    metrics["self-bleu"] = lambda: self_bleu(texts, seed=seed)
    values: dict[str, float | None] = {}
    for name, compute in metrics.items():
        try:
            values[name] = compute()
        except GenlabError:  # e.g. no text with n words
            values[name] = None
    return values


def real_snippets(data, split: str, n: int, tokens: int, seed: int) -> list[str]:
    """n stretches of a split's text, `tokens` tokens each, at seeded random places."""
    stream = data.split(split).tokens
    tokens = min(tokens, len(stream))
    starts = torch.randint(len(stream) - tokens + 1, (n,), generator=torch.Generator().manual_seed(seed))
    return [data.tokenizer.decode(stream[s : s + tokens]) for s in starts.tolist()]


def evaluate_text(model, *, against: str | None, n: int | None, seed: int, features: str | None,
                  metrics: tuple[str, ...] | None, max_new_tokens: int, progress: bool = True, **_) -> dict:
    if features is not None:
        raise GenlabError("--features applies to image models; text models have no feature network")
    if max_new_tokens < 1:
        raise GenlabError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    config = model.artifact_config
    data_name, split = parse_against(against, config["data"]["name"])
    spec_values, tokenizer = {**config["data"], "name": data_name}, model.tokenizer
    if data_name != config["data"]["name"]:
        # Another corpus is plain text (a labeled:FILE's columns are its defaults). A style model reads
        # it without style tokens, as one in ten training windows was, in its base tokenizer's ids.
        drop = ("styles", "text_column", "label_column")
        spec_values = {**{k: v for k, v in spec_values.items() if k not in drop}, "styles": False}
        tokenizer = tokenizer.base if hasattr(tokenizer, "styles") else tokenizer
    data = load_text_data(from_dict(TextDataSpec, spec_values, "data"), tokenizer=tokenizer)
    splits = held_out_splits(data, split, against)
    if not splits:
        raise GenlabError(f"the {split} split of {data_name} is empty", "evaluate against another split")
    wanted = _metric_groups(model, metrics)
    result: dict = {"data": f"{data_name}:{'+'.join(splits)}", "seed": seed}
    if "likelihood" in wanted:
        result["likelihood"] = {s: text_likelihood(model, data, s, progress=progress) for s in splits}
    if "samples" in wanted:
        n_samples = n or TEXT_SAMPLES
        generator = torch.Generator(model.device).manual_seed(seed)
        texts = model.sample(n_samples, generator=generator, max_new_tokens=max_new_tokens)
        result["samples"] = {
            "n": n_samples,
            "max_new_tokens": max_new_tokens,
            "metrics": text_diversity(texts, seed),
            "reference": text_diversity(real_snippets(data, splits[0], n_samples, max_new_tokens, seed), seed),
            "reference_definition": f"{n_samples} real snippets of {max_new_tokens} tokens from {data_name}:{splits[0]}",
            "examples": texts[:3],
        }
    return result


MUSIC_SAMPLES, MUSIC_SAMPLE_BARS = 20, 8


@torch.no_grad()
def event_likelihood(model, data, split: str, batch_size: int = 32, progress: bool = True) -> dict:
    """Nats per event and perplexity of a music split (window_nats)."""
    total_nats, events = window_nats(model, data, split, batch_size, progress)
    return {"events": events, "loss": total_nats / events, "perplexity": perplexity(total_nats / events)}


def evaluate_music(model, *, against: str | None, n: int | None, seed: int, metrics: tuple[str, ...] | None,
                   progress: bool = True, **_) -> dict:
    """Event models: nats per held-out event; musical statistics of n samples beside a split's pieces
    (genlab.metrics.music), with the floor: the same distances between the train pieces and that split."""
    from .data.music import MusicDataSpec, load_music_data
    from .metrics.music import compare_statistics, music_statistics
    from .models.events import sample_pieces

    config = model.artifact_config
    data_name, split = parse_against(against, config["data"]["name"])
    data = load_music_data(from_dict(MusicDataSpec, {**config["data"], "name": data_name}, "data"))
    splits = held_out_splits(data, split, against)
    wanted = _metric_groups(model, metrics)
    result: dict = {"data": f"{data_name}:{'+'.join(splits) or split}", "seed": seed}
    if "likelihood" in wanted:
        result["likelihood"] = {s: event_likelihood(model, data, s, progress=progress) for s in splits}
    if "samples" in wanted:
        n_samples = n or MUSIC_SAMPLES
        reference_split = splits[0] if splits else split
        pieces = sample_pieces(model, n_samples, bars=MUSIC_SAMPLE_BARS, seed=seed,
                               generator=torch.Generator(model.device).manual_seed(seed))
        samples, reference = music_statistics(pieces), music_statistics(data.split(reference_split).pieces)
        result["samples"] = {
            "n": n_samples, "bars": MUSIC_SAMPLE_BARS, "reference_split": reference_split,
            "statistics": samples, "reference": reference,
            "distances": compare_statistics(samples, reference),
            "floor": compare_statistics(music_statistics(data.train.pieces), reference),
        }
    return result


# ----------------------------------------------------------------------------- piano-roll models


def evaluate_pianoroll(model, *, against: str | None = None, **_) -> dict:
    """Piano-roll models: frame-level NLL on a split of their own data (default test)."""
    from .data.jsb import PianoRollDataSpec, load_pianoroll_data
    from .metrics.pianoroll import pianoroll_likelihood

    own_data = model.artifact_config["data"]["name"]
    data_name, split = parse_against(against, own_data)  # "test", "jsb" or "jsb:test"
    if data_name != own_data:
        raise GenlabError(f"--against {against!r}: a piano-roll model is scored on a split of its own data",
                          f"use --against train, val or test (or {own_data}:SPLIT)")
    spec = from_dict(PianoRollDataSpec, {**model.artifact_config["data"], "transpose": 0}, "data")
    data = load_pianoroll_data(spec)
    return {"data": f"{spec.name}:{spec.resolution}:{split}", "frame_nll": pianoroll_likelihood(model, data, split)}
