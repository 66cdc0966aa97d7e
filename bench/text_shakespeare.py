"""Benchmark: gpt-shakespeare-char under a wall-clock budget, and KV-cache generation speed.

Trains the `gpt-shakespeare-char` recipe (character-level GPT on Tiny Shakespeare) with
train.time_budget_s as a cap, then reports:

  - the loss in nats per character on the whole val split (chars [90%, 95%) of the text;
    every character scored once but the first and a last piece shorter than a window) and
    on the last 10% of the text (val + test), which is exactly nanoGPT's shakespeare_char
    validation split, so the number compares with nanoGPT's (1.88 for its CPU "baby GPT",
    1.47 for the GPU one); every character of it but the first scored once (common.nats_per_token,
    the scoring bench/race_nanogpt.py gives both models), each from the characters before it
    in its 128-character window
  - training tokens/s (inside training steps; evaluation and checkpoints excluded)
  - generation tokens/s with and without the KV cache: 500 new tokens, greedy, one
    sequence, after a prompt of 64 and of 512 characters of the val text. The trained model's
    window is 128 characters, so a 512-character context does not fit it: the speed is
    measured on the same network (same layers, width and heads, fp32; the trained weights,
    with its 128 position embeddings repeated to cover 1,024 positions) with a window of
    1,024, so that prompt and continuation fit and nothing restarts. Without the cache every
    step re-reads the whole sequence (the prompt and all tokens so far); with it every step
    reads one token. Both must produce the same tokens, which is checked. The trained model
    at its own 128-character window (prompt 64) is timed too.

Writes bench/results/text_shakespeare.json and prints a table.

    GENLAB_DATA_DIR=../shared/data python bench/text_shakespeare.py           # the full run (~20 min)
    python bench/text_shakespeare.py --budget-min 2 steps=300                # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import genlab  # noqa: E402
from common import fresh_run_dir, nanogpt_val_text, nats_per_token  # noqa: E402
from genlab.data import TextDataSpec, load_text_data  # noqa: E402
from genlab.data.download import data_root  # noqa: E402
from genlab.data.text import load_corpus  # noqa: E402
from genlab.evaluation import text_likelihood  # noqa: E402
from genlab.models.transformer import GPT  # noqa: E402
from genlab.sampling import GenerationConfig, generate, generate_tokens  # noqa: E402

RECIPE = "gpt-shakespeare-char"
NEW_TOKENS = 500
CONTEXTS = (64, 512)
TIMING_WINDOW = 1024


def widened(model: GPT, window: int) -> GPT:
    """The same network with a longer window: trained weights, position embeddings repeated."""
    wide = GPT(dataclasses.replace(model.config, block_size=window, dropout=0.0))
    state = model.state_dict()
    trained_positions = state["transformer.position_embedding.weight"]
    repeats = -(-window // len(trained_positions))
    state["transformer.position_embedding.weight"] = trained_positions.repeat(repeats, 1)[:window]
    wide.load_state_dict(state)
    return wide.eval()


def time_generation(model, prompt: torch.Tensor, use_cache: bool) -> tuple[float, list[int]]:
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=0, use_cache=use_cache)
    start = time.perf_counter()
    tokens = [int(t) for t in generate_tokens(model, prompt, config)]
    return NEW_TOKENS / (time.perf_counter() - start), tokens


def cache_speedup(model, prompt: torch.Tensor) -> dict:
    """Generation speed with and without the KV cache, and whether both gave the same tokens."""
    cached_rate, cached_tokens = time_generation(model, prompt, use_cache=True)
    uncached_rate, uncached_tokens = time_generation(model, prompt, use_cache=False)
    return {
        "cached_tokens_per_s": round(cached_rate, 1),
        "uncached_tokens_per_s": round(uncached_rate, 1),
        "speedup": round(cached_rate / uncached_rate, 2),
        "identical_tokens": cached_tokens == uncached_tokens,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=19.0, help="training wall-clock cap in minutes")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-gpt-shakespeare-char"))
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. steps=3000 model.n_embd=256")
    args = parser.parse_args()

    out = Path(args.out)
    fresh_run_dir(out)
    overrides = [f"train.time_budget_s={args.budget_min * 60}", *args.overrides]
    t0 = time.perf_counter()
    genlab.train(RECIPE, overrides, out=out)
    train_wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    model = genlab.load(out)
    n_params = sum(p.numel() for p in model.parameters())

    # Held-out loss over every character of val and of test (nats per character: one token each).
    data = load_text_data(TextDataSpec(**config["data"]), tokenizer=model.tokenizer)
    val = text_likelihood(model, data, "val", progress=False)
    test = text_likelihood(model, data, "test", progress=False)
    last_10_percent_ids = model.tokenizer.encode(nanogpt_val_text(load_corpus(config["data"]["name"], data_root())))
    last_10_percent, _ = nats_per_token(lambda x: model.token_log_likelihoods(x.to(model.device)),
                                        last_10_percent_ids, config["data"]["block_size"])

    # Generation speed. One warm-up call first, so no timing includes one-off allocations.
    torch.manual_seed(0)
    val_text = data.val.tokens.long()
    timing_model = widened(model, TIMING_WINDOW)
    time_generation(timing_model, val_text[:8], use_cache=True)
    generation = {f"context_{context}": cache_speedup(timing_model, val_text[:context]) for context in CONTEXTS}
    generation["trained_window_128_context_64"] = cache_speedup(model, val_text[:64])
    sample = generate(model, "ROMEO:", GenerationConfig(max_new_tokens=300, temperature=0.8, top_p=0.95, seed=0))[0]

    speedup_512 = generation["context_512"]["speedup"]
    record = {
        "benchmark": "text_shakespeare",
        "recipe": RECIPE,
        "overrides": overrides,
        "model": config["model"],
        "parameters": n_params,
        "val_loss_nats_per_char": round(val["loss"], 4),
        "test_loss_nats_per_char": round(test["loss"], 4),
        "last_10_percent_loss_nats_per_char": round(last_10_percent, 4),
        "val_bits_per_char": round(val["bits_per_char"], 4),
        "val_perplexity": round(val["perplexity"], 3),
        "train_steps": metrics["training"]["steps"],
        "train_tokens": metrics["training"]["steps"] * config["train"]["batch_size"] * config["data"]["block_size"],
        "train_wall_s": round(train_wall, 1),
        "train_tokens_per_s": metrics["training"]["tokens_per_s"],
        "generation": generation,
        "generation_setup": f"{NEW_TOKENS} new tokens, greedy, batch 1, fp32; contexts {CONTEXTS} measured on the "
                            f"trained network widened to a {TIMING_WINDOW}-token window",
        "sample_romeo_t0.8_top_p0.95": sample,
        "target_val_loss": 1.60,
        "meets_loss_target": val["loss"] <= 1.60,
        "target_speedup_at_512": 4.0,
        "meets_speed_target": speedup_512 >= 4.0,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "device": metrics["training"]["device"]},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genlab_version": genlab.__version__,
    }
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "text_shakespeare.json").write_text(json.dumps(record, indent=2) + "\n")

    rows = [
        ("val loss (nats/char)", f"{record['val_loss_nats_per_char']:.4f}", "target <= 1.60; every val character"),
        ("last-10% loss (nats/char)", f"{record['last_10_percent_loss_nats_per_char']:.4f}", "nanoGPT's val split"),
        ("val bits/char", f"{record['val_bits_per_char']:.4f}", ""),
        ("training", f"{record['train_wall_s']:.0f} s",
         f"{record['train_steps']} steps, {record['train_tokens'] / 1e6:.1f}M tokens, {n_params / 1e6:.2f}M parameters"),
        ("training tokens/s", f"{record['train_tokens_per_s']:.0f}", record["machine"]["device"]),
    ]
    for key, row in generation.items():
        label = key.replace("_", " ")
        rows.append((f"gen tok/s {label}", f"{row['cached_tokens_per_s']:.0f} / {row['uncached_tokens_per_s']:.0f}",
                     f"cached / uncached = {row['speedup']:.1f}x; identical tokens: {row['identical_tokens']}"))
    print(f"\n{'metric':<38}{'value':>14}  note")
    for name, value, note in rows:
        print(f"{name:<38}{value:>14}  {note}")
    print(f"\nsample (prompt ROMEO:, temperature 0.8, top-p 0.95):\nROMEO:{sample}\n")
    print(f"written to {results / 'text_shakespeare.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
