"""Benchmark: what one training step of a GPT costs on this machine, and where the time goes.

Times the forward and backward pass and the optimizer step of a character GPT (default: the
20-minute band of gpt-shakespeare-char, 6 layers x 320, context 128) on random tokens, for
dropout off, dropout on the residual branches only (model.attention_dropout=0), and dropout on
the attention weights too, with AdamW and with Muon, at batch 16 and 32. A budget run's steps are
these steps, so the ratios say what a regulariser or an optimizer costs in steps per minute.

    python bench/gpt_step_cost.py                      # ~1 minute on 2 cores
    python bench/gpt_step_cost.py --n-layer 4 --n-embd 192 --n-head 4
    python bench/gpt_step_cost.py --architecture       # the band's shape (residual dropout 0.1, Muon,
                                                       # batch 24) with learned or rotary positions, GELU or ReLU²,
                                                       # and without dropout or with model.dropout_mask=sequence,
                                                       # or with torch's own nn.Dropout instead of genlab's
                                                       # ElementDropout (its mask drawn 16 bits at a time),
                                                       # and in bf16 autocast with genlab's written-out
                                                       # attention or torch's fused kernel

Writes bench/results/gpt_step_cost.json (--architecture: gpt_step_cost_architecture.json); the runs that
file held before move into its "history" list, so a figure quoted from an earlier run keeps its source.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from types import SimpleNamespace
from unittest import mock

import torch
import torch.nn.functional as F

import genlab.models.transformer as transformer
from common import machine, matmul_gflops, write_result
from genlab.models.transformer import GPT, ElementDropout, GPTConfig
from genlab.training.distributed import cpu_has_fast_bf16

VOCAB = 65  # Tiny Shakespeare's characters


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def time_steps(config: GPTConfig, optimizer: str, batch_size: int, steps: int, warmup: int = 3,
               torch_dropout: bool = False, bf16: bool = False, fused_bf16_attention: bool = False) -> dict:
    """Mean milliseconds of forward+backward and of the optimizer step, after `warmup` untimed steps."""
    # fused_bf16_attention: what bf16 training cost before genlab wrote its CPU attention out
    with (mock.patch.object(transformer, "causal_attention_explicit", fused_attention) if fused_bf16_attention
          else contextlib.nullcontext()):
        torch.manual_seed(0)
        model = GPT(config).train()
        if torch_dropout:  # what the step cost before genlab drew its own dropout masks
            for module in list(model.modules()):
                for name, child in module.named_children():
                    if isinstance(child, ElementDropout):
                        setattr(module, name, torch.nn.Dropout(child.p))
        opt = model.configure_optimizers(SimpleNamespace(optimizer=optimizer, lr=0.002, weight_decay=0.1))["main"]
        tokens = torch.randint(VOCAB, (batch_size, config.block_size + 1))
        passes, updates = 0.0, 0.0
        for step in range(warmup + steps):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(tokens[:, :-1])
            F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)).backward()
            middle = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            end = time.perf_counter()
            if step >= warmup:
                passes, updates = passes + middle - start, updates + end - middle
        return {"forward_backward_ms": round(1000 * passes / steps, 1), "optimizer_ms": round(1000 * updates / steps, 1),
                "tokens_per_s": round(batch_size * config.block_size * steps / (passes + updates))}


def cpu_bf16_matmul() -> dict:
    """What this CPU offers bf16: AMX tiles make a bf16 matmul several times faster than fp32; without them
    (AVX2 only) it is far slower. GFLOP/s of a 1024 x 1024 matmul in each type."""
    return {"amx": cpu_has_fast_bf16(),
            "gflops": {"float32": matmul_gflops(1.0), "bfloat16": matmul_gflops(1.0, dtype=torch.bfloat16)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=320)
    parser.add_argument("--n-head", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting (default 10)")
    parser.add_argument("--architecture", action="store_true",
                        help="time positions (learned, rotary) x activation (gelu, relu2), dropout kernels and "
                             "QK-norm at the band's settings instead")
    args = parser.parse_args()

    # (dropout label, model settings, optimizer, batch size)
    if args.architecture:
        settings = [(f"{positions} + {activation}", dict(dropout=0.1, attention_dropout=0.0, positions=positions,
                                                         activation=activation), "muon", 24)
                    for positions in ("learned", "rotary") for activation in ("gelu", "relu2")]
        settings += [(f"learned + gelu, {label}", dict(dropout=dropout, attention_dropout=0.0, dropout_mask=mask),
                      "muon", 24) for label, mask, dropout in (("no dropout", "element", 0.0),
                                                              ("sequence dropout", "sequence", 0.1))]
        settings += [("learned + gelu, nn.Dropout", dict(dropout=0.1, attention_dropout=0.0, torch_dropout=True), "muon",
                      24), ("learned + gelu, qk-norm", dict(dropout=0.1, attention_dropout=0.0, qk_norm=True), "muon", 24)]
    else:
        settings = [(label, dict(dropout=dropout, attention_dropout=attention_dropout), optimizer, batch_size)
                    for label, dropout, attention_dropout in (("no dropout", 0.0, None), ("dropout 0.2, residual only", 0.2, 0.0),
                                                              ("dropout 0.2, attention too", 0.2, None))
                    for optimizer in ("adamw", "muon") for batch_size in (16, 32)]
    rows = []
    print(f"{'setting':<28}{'optim':>7}{'batch':>6}{'fwd+bwd':>10}{'optim':>10}{'tokens/s':>10}  (ms per step)")
    if args.architecture:
        settings += [("learned + gelu, bf16 autocast", dict(dropout=0.1, attention_dropout=0.0, bf16=True), "muon", 24),
                     ("bf16, fused attention", dict(dropout=0.1, attention_dropout=0.0, bf16=True,
                                                    fused_bf16_attention=True), "muon", 24)]
    for label, model_settings, optimizer, batch_size in settings:
        torch_dropout = model_settings.pop("torch_dropout", False)
        bf16 = model_settings.pop("bf16", False)
        fused_bf16_attention = model_settings.pop("fused_bf16_attention", False)
        config = GPTConfig(vocab_size=VOCAB, block_size=args.block_size, n_layer=args.n_layer,
                           n_head=args.n_head, n_embd=args.n_embd, **model_settings)
        row = {"architecture" if args.architecture else "dropout": label, "optimizer": optimizer,
               "batch_size": batch_size, **time_steps(config, optimizer, batch_size, args.steps, torch_dropout=torch_dropout,
                                                          bf16=bf16, fused_bf16_attention=fused_bf16_attention)}
        rows.append(row)
        print(f"{label:<28}{optimizer:>7}{batch_size:>6}{row['forward_backward_ms']:>10}{row['optimizer_ms']:>10}"
              f"{row['tokens_per_s']:>10}", flush=True)
    record = {"benchmark": "gpt_step_cost", "cpu_bf16_matmul": cpu_bf16_matmul(), "model": {"n_layer": args.n_layer, "n_embd": args.n_embd,
              "n_head": args.n_head, "block_size": args.block_size, "vocab_size": VOCAB},
              "steps": args.steps, "rows": rows, "machine": machine("cpu"), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = write_result(record, name="gpt_step_cost_architecture" if args.architecture else "gpt_step_cost",
                        keep_history=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
