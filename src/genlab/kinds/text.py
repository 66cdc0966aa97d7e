"""The text data kind: a corpus as token windows (characters, bytes or BPE), evaluated by
held-out perplexity and sample diversity, sampled as printed texts.

Style models (data.styles) are evaluated for style too ("style" metric group): a classifier
of character 2-4-grams (TF-IDF, logistic regression; scikit-learn) learns the styles from
chunks of the real train text, is scored on chunks of the held-out text (val and test), and
then attributes passages generated in each style: the share attributed to the requested
style is the model's style accuracy, to be read beside the classifier's own accuracy on real
text (its ceiling) and chance (1 / styles). Chunks and passages have the same number of
tokens, so length tells the classifier nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import from_dict
from ..data.text import TEXT_DATASETS, TextDataSpec, load_text_data, load_tokenizer, text_dataset_status
from ..errors import GenlabError
from ..evaluation import evaluate_text
from ..fileio import atomic_write_text
from ..limits import MAX_TEXT_SAMPLES
from ..registry import Catalogue, DataKind, register_data_kind

STYLE_SAMPLES = 20  # default passages per style for the style metrics (genlab eval -n sets it)
STYLE_TRAIN_CHUNKS, STYLE_HELD_OUT_CHUNKS = 2000, 500  # at most this many real chunks per style


def load(spec: TextDataSpec, resumed_run: Path | None):
    # A resumed run keeps the tokenizer it started with: its weights are tied to those ids.
    return load_text_data(spec, tokenizer=load_tokenizer(resumed_run) if resumed_run is not None else None)


def evaluate(model, *, metrics: tuple[str, ...] | None, n: int | None, seed: int, max_new_tokens: int,
             progress: bool = True, **options) -> dict:
    """genlab.evaluation.evaluate_text, and the "style" group for a model trained with styles."""
    styles = list(getattr(model.tokenizer, "styles", None) or ())
    asked = metrics is not None and "style" in metrics
    if asked and not styles:
        raise GenlabError("the style metrics need a model trained with styles (data.styles)",
                          "use --metrics likelihood,samples for this model")
    others = None if metrics is None else tuple(group for group in metrics if group != "style")
    result = evaluate_text(model, metrics=others, n=n, seed=seed, max_new_tokens=max_new_tokens, progress=progress,
                           **options)
    if styles and (metrics is None or asked):
        result["style"] = style_attribution(model, n or STYLE_SAMPLES, seed, max_new_tokens, progress)
    return result


def real_chunks(tokens: torch.Tensor, length: int, most: int, seed: int) -> list[torch.Tensor]:
    """Up to `most` non-overlapping stretches of `length` tokens of a stream, a seeded random subset in stream order."""
    count = len(tokens) // length
    keep = np.sort(np.random.default_rng(seed).permutation(count)[:most]) if count > most else np.arange(count)
    return [tokens[i * length : (i + 1) * length] for i in keep.tolist()]


def style_classifier(texts: list[str], labels: list[int], seed: int):
    """A fitted character 2-4-gram TF-IDF + logistic regression pipeline (scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    classifier = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(2, 4), sublinear_tf=True, min_df=2, max_features=200_000),
        # balanced: a style with less text is not predicted less often for that reason
        LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed),
    )
    return classifier.fit(texts, labels)


def style_attribution(model, n: int, seed: int, max_new_tokens: int, progress: bool = True) -> dict:
    """The "style" metric group (module docstring): classifier accuracy on held-out real text, and
    the share of n passages per style (max_new_tokens each, temperature 1) attributed to their style."""
    from ..sampling import GenerationConfig, generate

    data = load_text_data(from_dict(TextDataSpec, model.artifact_config["data"], "data"), tokenizer=model.tokenizer)
    styles, decode = data.styles, data.tokenizer.decode
    train_texts, train_labels, held_texts, held_labels = [], [], [], []
    for k, style in enumerate(styles):
        chunks = real_chunks(data.style_split("train", style).tokens, max_new_tokens, STYLE_TRAIN_CHUNKS, seed)
        held_out = torch.cat([data.style_split(split, style).tokens for split in ("val", "test")])
        held = real_chunks(held_out, max_new_tokens, STYLE_HELD_OUT_CHUNKS, seed)
        if len(chunks) < 2 or not held:
            raise GenlabError(f"style {style!r} has too little text for chunks of {max_new_tokens} tokens "
                              f"({len(chunks)} train, {len(held)} held-out)", "use a smaller --max-new-tokens")
        train_texts += [decode(c) for c in chunks]
        train_labels += [k] * len(chunks)
        held_texts += [decode(c) for c in held]
        held_labels += [k] * len(held)
    classifier = style_classifier(train_texts, train_labels, seed)
    held_predicted = classifier.predict(held_texts)
    held_labels = np.asarray(held_labels)
    result = {
        "classifier": "character 2-4-gram TF-IDF + logistic regression (scikit-learn), balanced classes",
        "chunk_tokens": max_new_tokens, "n_per_style": n, "chance": 1.0 / len(styles), "seed": seed,
        "held_out_accuracy": float((held_predicted == held_labels).mean()),
        "styles": {},
    }
    for k, style in enumerate(tqdm(styles, disable=not progress, unit="style", desc="style passages")):
        generator = torch.Generator(model.device).manual_seed(seed + k)
        passages = []
        while len(passages) < n:
            config = GenerationConfig(max_new_tokens=max_new_tokens, num_return_sequences=min(n - len(passages),
                                      MAX_TEXT_SAMPLES, 100), style=style, seed=seed)
            passages += generate(model, "", config, generator=generator)
        predicted = classifier.predict(passages)
        mine = held_labels == k
        result["styles"][style] = {
            "attributed": float((predicted == k).mean()),
            "attributed_to": {other: int((predicted == j).sum()) for j, other in enumerate(styles)},
            "train_chunks": train_labels.count(k), "held_out_chunks": int(mine.sum()),
            "held_out_accuracy": float((held_predicted[mine] == k).mean()),
            "examples": passages[:2],
        }
    result["attributed"] = float(np.mean([row["attributed"] for row in result["styles"].values()]))
    return result


def report(result: dict) -> list[str]:
    lines = []
    if "likelihood" in result:
        lines.append(f"held-out text of {result['data']} (every token scored once, in windows of the model's context)")
        lines.append(f"  {'split':<8}{'tokens':>10}{'nats/token':>12}{'perplexity':>12}{'bits/char':>11}")
        lines += [f"  {split:<8}{row['tokens']:>10,}{row['loss']:>12.4f}{row['perplexity']:>12.3f}"
                  f"{row['bits_per_char']:>11.4f}" for split, row in result["likelihood"].items()]
    if "samples" in result:
        samples = result["samples"]
        lines.append(f"diversity of {samples['n']} samples ({samples['max_new_tokens']} new tokens each, temperature 1, "
                     f"seed {result['seed']}) beside {samples['n']} real snippets of the same length")
        lines.append(f"  {'metric':<14}{'samples':>10}{'real text':>11}")
        for key, value in samples["metrics"].items():
            shown = [f"{v:>10.4f}" if v is not None else f"{'n/a':>10}" for v in (value, samples["reference"][key])]
            lines.append(f"  {key:<14}{shown[0]} {shown[1]}")
        lines.append("  distinct-n: unique n-grams / all n-grams (higher = more varied); "
                     "self-BLEU: 0-100 (higher = more alike)")
    if "style" in result:
        style = result["style"]
        lines.append(f"style: {style['n_per_style']} passages per style ({style['chunk_tokens']} new tokens, temperature 1) "
                     f"attributed by a {style['classifier']}, trained on real train-split chunks of as many tokens")
        lines.append(f"  {'style':<20}{'attributed':>11}{'classifier on held-out real text':>34}")
        for name, row in style["styles"].items():
            lines.append(f"  {name:<20}{row['attributed']:>11.3f}{row['held_out_accuracy']:>22.3f} "
                         f"({row['held_out_chunks']} chunks)")
        lines.append(f"  {'all':<20}{style['attributed']:>11.3f}{style['held_out_accuracy']:>22.3f}")
        lines.append("  attributed: share of a style's passages the classifier assigns to that style "
                     f"(chance {style['chance']:.3f})")
    return lines


def sample(model, options: dict) -> None:
    from ..api import sample as draw

    model_dir, output = options["model_dir"], options["output"]
    if options["label"] is not None:
        raise GenlabError("a text model has no classes",
                          f'continue a prompt instead: genlab generate {model_dir} --prompt "..."')
    if output is not None and not output.endswith(".txt"):
        raise GenlabError(f"{model_dir} is a text model: it writes texts, not {output}",
                          "use -o samples.txt, or leave -o out to print them")
    n, seed = options["n"] or 4, options["seed"]
    texts = draw(model, n, seed=seed)
    report = "".join(f"--- sample {i + 1} (seed {seed}, temperature 1) ---\n{text}\n\n" for i, text in enumerate(texts))
    if output is None:
        print(report, end="")
        print(f'for a prompt and decoding controls: genlab generate {model_dir} --prompt "..." --temperature 0.8',
              file=sys.stderr)
        return
    try:
        atomic_write_text(Path(output), report)
    except OSError as e:
        raise GenlabError(f"cannot write {output}: {e.strerror or e}", "choose a writable output path") from None
    print(f"wrote {n} samples to {output}")


TEXT = register_data_kind(DataKind(
    name="text",
    spec_class=TextDataSpec,
    load=load,
    catalogue=Catalogue("text (gpt, lstm; data.tokenizer=char|byte|bpe)", TEXT_DATASETS, text_dataset_status),
    evaluate=evaluate,
    report=report,
    sample=sample,
    next_steps=lambda run_dir: (f'next: genlab generate {run_dir} --prompt "..." --max-new-tokens 300 --temperature 0.8'
                                f"   |   genlab eval {run_dir}"),
    endpoint="/v1/completions",
    tokens_per_example=lambda spec: spec.block_size,  # an example is one window of tokens
))
