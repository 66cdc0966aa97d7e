"""The text data kind: a corpus as token windows (characters, bytes or BPE), evaluated by
held-out perplexity and sample diversity, sampled as printed texts."""

from __future__ import annotations

import sys
from pathlib import Path

from ..data.text import TEXT_DATASETS, TextDataSpec, load_text_data, load_tokenizer, text_dataset_status
from ..errors import GenlabError
from ..evaluation import evaluate_text
from ..fileio import atomic_write_text
from ..registry import Catalogue, DataKind, register_data_kind


def load(spec: TextDataSpec, resumed_run: Path | None):
    # A resumed run keeps the tokenizer it started with: its weights are tied to those ids.
    return load_text_data(spec, tokenizer=load_tokenizer(resumed_run) if resumed_run is not None else None)


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
    evaluate=evaluate_text,
    report=report,
    sample=sample,
    next_steps=lambda run_dir: (f'next: genlab generate {run_dir} --prompt "..." --max-new-tokens 300 --temperature 0.8'
                                f"   |   genlab eval {run_dir}"),
    endpoint="/v1/completions",
    tokens_per_example=lambda spec: spec.block_size,  # an example is one window of tokens
))
