"""Benchmark: English<->Chinese translation on Tatoeba (the fixed split), Transformer vs GRU baseline.

For each direction (zh-en, en-zh) and model (seq2seq: recipe translate-DIR; gru: the GRU
encoder-decoder with attention, recipe translate-zh-en-gru with data.direction=DIR), trains for the
same wall-clock budget (`genlab train RECIPE --minutes M`, the schedule over the budget), then
decodes the whole fixed test split (2,402 pairs) with beam 4 and scores it with sacreBLEU (BLEU
with the zh tokenizer into Chinese, 13a into English) and chrF, through `genlab eval` itself.
Reported beside them: training tokens/s (source + target tokens, padding excluded), steps, and
a curve of BLEU against training minutes: at each of the run's validation passes, a callback
decodes the first 200 validation pairs greedily (the time it takes counts against the budget).

Decoding settings (--length-penalties A,B,... and --no-repeat-ngrams N,M,...): each model's GNMT
alpha and no_repeat_ngram_size are chosen together on the validation split (beam 4, all 2,402 dev
pairs, every combination), then the test split is decoded once with the best; the grid is
recorded. Without the options every model decodes with genlab's defaults (alpha 0.6, n-grams may repeat).

Decoding speed (--speed, on the zh-en Transformer): tokens/s of greedy decoding with and without
the decoder's KV and cross-attention caches, exactly 64 new tokens per source (EOS suppressed),
at batch 1 and batch 64; the tokens must be identical.

    GENLAB_DATA_DIR=../shared/data python bench/translate.py                 # 4 runs of 20 minutes + eval
    python bench/translate.py --runs zh-en/seq2seq --minutes 20 --speed      # one run, then decoding speed
    python bench/translate.py --rescore --length-penalties 0.6,1,1.5,2 --no-repeat-ngrams 0,3   # chosen on val
    python bench/translate.py --quick                                        # the plumbing, in ~2 minutes
    python bench/translate.py --plot-only                                    # redraw translate_curve.png
    python bench/translate.py --runs en-zh/seq2seq --set train.ema_decay=0.999 --results translate_enzh_ema

Results accumulate in bench/results/translate.json (one entry per direction/model; newest wins);
an experiment with --set overrides names its own file with --results.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import genlab  # noqa: E402
from common import RESULTS, fresh_run_dir, machine, write_result  # noqa: E402
from genlab.training import Callback  # noqa: E402

RUNS = ("zh-en/seq2seq", "zh-en/gru", "en-zh/seq2seq", "en-zh/gru")
CURVE_PAIRS = 200
QUICK = {"seq2seq": ["model.d_model=32", "model.n_head=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
                     "model.d_ff=64"],
         "gru": ["model.embedding_dim=32", "model.hidden=32"]}
QUICK_DATA = ["data.limit=300", "data.vocab_size=1000"]


def recipe_of(direction: str, model: str) -> tuple[str, list[str]]:
    if model == "seq2seq":
        return f"translate-{direction}", []
    return "translate-zh-en-gru", [f"data.direction={direction}"]


class BleuCurve(Callback):
    """At every validation pass: greedy BLEU on the first CURVE_PAIRS validation pairs, against
    the minutes since training began."""

    def __init__(self, started: float):
        self.started, self.points = started, []

    def on_evaluation(self, trainer, val_metrics) -> bool:
        from genlab.kinds.pairs import translation_scores
        from genlab.sampling.seq2seq import Seq2SeqGenerationConfig
        from genlab.tasks.textpairs import decode_sources
        from genlab.tensors import eval_mode

        model, data = trainer.model, trainer.data
        part = data.split("val")
        count = min(CURVE_PAIRS, len(part))
        sources = [part.src[i, : part.src_len[i]].tolist() for i in range(count)]
        config = Seq2SeqGenerationConfig(max_new_tokens=model.config.max_target_len)
        with eval_mode(model):
            outputs = [model.target_text(h[0].tokens) for h in decode_sources(model, sources, config)]
        bleu = translation_scores(outputs, list(part.targets[:count]), data.target_language)["bleu"]
        self.points.append({"minutes": round((time.perf_counter() - self.started) / 60, 2), "step": trainer.step,
                            "val_loss": round(float(val_metrics.get("loss", float("nan"))), 4),
                            "greedy_bleu_val200": round(bleu, 2)})
        print(f"  {self.points[-1]}", flush=True)
        return False


def train_and_score(name: str, minutes: float, out_root: Path, quick: bool, grid: list[tuple[float, int]],
                    extra: list[str]) -> dict:
    direction, model_name = name.split("/")
    recipe, overrides = recipe_of(direction, model_name)
    overrides = [*overrides, "train.progress=false", *((QUICK_DATA + QUICK[model_name]) if quick else []), *extra]
    out = fresh_run_dir(out_root / f"{direction}-{model_name}")
    started = time.perf_counter()
    curve = BleuCurve(started)
    genlab.train(recipe, overrides, out=out, minutes=minutes, callbacks=[curve])
    train_wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {"direction": direction, "model": model_name, "recipe": recipe, "overrides": overrides, "minutes": minutes,
            "run_dir": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
            "parameters": sum(t.numel() for t in genlab.load(out).parameters()),
            "steps": metrics["training"]["steps"], "train_wall_s": round(train_wall, 1),
            "tokens_per_s": metrics["training"].get("tokens_per_s"), "curve": curve.points,
            **score(out, quick, grid)}


def score(out: Path, quick: bool, grid: list[tuple[float, int]]) -> dict:
    """genlab eval of a trained model on the whole test split: beam 4, sacreBLEU and chrF; with
    several (length penalty, no-repeat n-gram size) settings, the one with the best BLEU on the
    validation split."""
    t0 = time.perf_counter()
    n = 100 if quick else None
    tuning = {}
    if len(grid) > 1:
        val_bleu = {(a, k): round(genlab.evaluate(out, against="val", metrics=("bleu",), length_penalty=a,
                                                  no_repeat_ngram_size=k, n=n, progress=False, write=False)
                                  ["scores"]["bleu"], 2) for a, k in grid}
        best = max(grid, key=val_bleu.get)
        sweep = {f"alpha={a:g} no_repeat={k}": bleu for (a, k), bleu in val_bleu.items()}
        tuning = {"decoding_val_bleu": sweep}
        print(f"  {out.name}: validation BLEU {sweep} -> {best}", flush=True)
    else:
        best = grid[0]
    result = genlab.evaluate(out, against="test", progress=False, n=n, length_penalty=best[0],
                             no_repeat_ngram_size=best[1])
    scores = result["scores"]
    return {"test_sentences": result["sentences"], "beams": result["decoding"]["num_beams"],
            "length_penalty": result["decoding"]["length_penalty"],
            "no_repeat_ngram_size": result["decoding"]["no_repeat_ngram_size"], **tuning,
            "bleu": round(scores["bleu"], 2), "chrf": round(scores["chrf"], 2), "bleu_details": scores["bleu_details"],
            "bleu_signature": scores["bleu_signature"], "chrf_signature": scores["chrf_signature"],
            "test_nats_per_token": round(result["likelihood"]["loss"], 4),
            "eval_wall_s": round(time.perf_counter() - t0, 1), "examples": result["examples"]}


@torch.no_grad()
def decoding_speed(run_dir: Path, quick: bool) -> dict:
    """Greedy decoding tokens/s with and without the caches: 64 new tokens per source, EOS suppressed."""
    from genlab.data.pairs import PairDataSpec, load_pair_data
    from genlab.config import from_dict
    from genlab.sampling.seq2seq import Seq2SeqGenerationConfig, seq2seq_generate
    from genlab.tensors import eval_mode

    model = genlab.load(run_dir)
    data = load_pair_data(from_dict(PairDataSpec, model.artifact_config["data"], "data"), tokenizer=model.tokenizer)
    part = data.split("test")
    record = {"new_tokens": 64}
    for batch in (1, 64):
        count = batch * (2 if quick else (8 if batch == 1 else 2))
        sources = [part.src[i, : part.src_len[i]].tolist() for i in range(count)]
        outputs = {}
        for use_cache in (True, False):
            config = Seq2SeqGenerationConfig(max_new_tokens=64, use_cache=use_cache, suppress_tokens=(model.config.eos_id,))
            with eval_mode(model):
                t0 = time.perf_counter()
                tokens = [h[0].tokens for start in range(0, count, batch)
                          for h in seq2seq_generate(model, sources[start : start + batch], config)]
                wall = time.perf_counter() - t0
            outputs[use_cache] = tokens
            record[f"batch{batch}_{'cached' if use_cache else 'uncached'}_tokens_per_s"] = \
                round(sum(map(len, tokens)) / wall, 1)
        record[f"batch{batch}_identical"] = outputs[True] == outputs[False]
        record[f"batch{batch}_speedup"] = round(record[f"batch{batch}_cached_tokens_per_s"]
                                                / record[f"batch{batch}_uncached_tokens_per_s"], 2)
    return record


def plot_curves(record: dict, path: Path) -> None:
    """Greedy BLEU on 200 validation pairs against training minutes, one panel per direction,
    one line per model: the curve the issue asks for when a target is out of reach."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, direction in zip(axes, ("zh-en", "en-zh")):
        for model_name, label in (("seq2seq", "Transformer"), ("gru", "GRU + attention")):
            run = record["runs"].get(f"{direction}/{model_name}")
            if not run or not run.get("curve"):
                continue
            minutes = [p["minutes"] for p in run["curve"]]
            bleu = [p["greedy_bleu_val200"] for p in run["curve"]]
            ax.plot(minutes, bleu, marker="o", markersize=3,
                    label=f"{label}: test BLEU {run['bleu']:.2f} (beam 4)")
        budget = record["runs"].get(f"{direction}/seq2seq", {}).get("minutes")
        ax.set_title(f"{direction}, {budget:g} minutes of training per model" if budget else direction)
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("greedy BLEU, 200 validation pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"direction/model pairs (default {','.join(RUNS)})")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per model (default 20)")
    parser.add_argument("--speed", action="store_true", help="also measure decoding speed on the zh-en Transformer")
    parser.add_argument("--speed-only", action="store_true", help="only the decoding speed (of an existing run)")
    parser.add_argument("--rescore", action="store_true",
                        help="score the runs already trained under --out again (after a change to decoding)")
    parser.add_argument("--length-penalties", default="0.6", metavar="A,B,...",
                        help="beam length penalties to choose from on the validation split (default 0.6: no choice)")
    parser.add_argument("--no-repeat-ngrams", default="0", metavar="N,M,...",
                        help="no_repeat_ngram_size values to choose from on the validation split (default 0: off)")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw bench/results/NAME_curve.png from the JSON (no training)")
    parser.add_argument("--quick", action="store_true", help="tiny models, 0.3 minutes: check the plumbing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run's recipe, as on genlab train's command line (repeatable)")
    parser.add_argument("--results", default="translate", metavar="NAME",
                        help="write bench/results/NAME.json (default translate; name an experiment's own file)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-translate"))
    args = parser.parse_args()
    if any("=" not in item for item in args.set):
        parser.error("--set takes KEY=VALUE, e.g. --set train.ema_decay=0.999")
    try:
        alphas = [float(a) for a in args.length_penalties.split(",") if a.strip()]
        sizes = [int(k) for k in args.no_repeat_ngrams.split(",") if k.strip()]
    except ValueError:
        parser.error("--length-penalties and --no-repeat-ngrams take numbers separated by commas")
    if not alphas or not sizes:
        parser.error("--length-penalties and --no-repeat-ngrams need at least one number each")
    grid = [(a, k) for a in alphas for k in sizes]
    minutes = 0.3 if args.quick else args.minutes
    out_root = Path(args.out + ("-quick" if args.quick else ""))
    results_path = RESULTS / (f"{args.results}-quick.json" if args.quick else f"{args.results}.json")
    record = json.loads(results_path.read_text()) if results_path.is_file() else {"benchmark": "translate", "runs": {}}
    names = [] if args.speed_only or args.plot_only else [n.strip() for n in args.runs.split(",") if n.strip()]
    for name in names:
        if name not in RUNS:
            parser.error(f"unknown run {name!r}; use some of {', '.join(RUNS)}")
        if args.rescore:
            direction, model_name = name.split("/")
            for key in ("length_penalty_val_bleu", "decoding_val_bleu"):  # this scoring's choice, or none
                record["runs"][name].pop(key, None)
            record["runs"][name].update(score(out_root / f"{direction}-{model_name}", args.quick, grid),
                                        rescored=time.strftime("%Y-%m-%d %H:%M:%S"))
        else:
            print(f"{name}: training for {minutes:g} minutes", flush=True)
            record["runs"][name] = train_and_score(name, minutes, out_root, args.quick, grid, args.set)
        record.update(machine=machine("cpu"), date=time.strftime("%Y-%m-%d %H:%M:%S"), genlab_version=genlab.__version__)
        write_result(record, results_path)  # after every run: a long benchmark keeps what it measured
        r = record["runs"][name]
        print(f"{name}: BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}  ({r['steps']} steps, {r['tokens_per_s']} tokens/s)",
              flush=True)
    if args.speed or args.speed_only:
        record["decoding_speed"] = decoding_speed(out_root / "zh-en-seq2seq", args.quick)
        write_result(record, results_path)

    plot_path = results_path.with_name(results_path.stem + "_curve.png")
    plot_curves(record, plot_path)
    print(f"\n{'run':<16}{'minutes':>8}{'steps':>7}{'tokens/s':>10}{'alpha':>7}{'no-rep':>7}{'BLEU':>8}{'chrF':>8}"
          "  test nats/token")
    for name, r in record["runs"].items():
        print(f"{name:<16}{r['minutes']:>8g}{r['steps']:>7}{r['tokens_per_s'] or 0:>10.0f}{r.get('length_penalty', 0.6):>7g}"
              f"{r.get('no_repeat_ngram_size', 0):>7}{r['bleu']:>8.2f}{r['chrf']:>8.2f}  {r['test_nats_per_token']}")
    for direction in ("zh-en", "en-zh"):
        a, b = record["runs"].get(f"{direction}/seq2seq"), record["runs"].get(f"{direction}/gru")
        if a and b:
            print(f"{direction}: Transformer - GRU = {a['bleu'] - b['bleu']:+.2f} BLEU")
    if "decoding_speed" in record:
        print("decoding speed (64 new tokens):", json.dumps(record["decoding_speed"]))
    print(f"drew {plot_path}" if args.plot_only else f"wrote {results_path} and {plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
