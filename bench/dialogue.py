"""Benchmark: task-oriented dialogue on Schema-Guided Dialogue (SGD), Transformer vs TF-IDF retrieval.

Trains the `chat-sgd` recipe (a Transformer encoder-decoder reading the last turns of the
conversation) for a wall-clock budget, then, on a seeded sample of the SGD test split's assistant
turns (the same sample for every system), compares its beam-4 responses (through `genlab eval`)
with an honest baseline: TF-IDF nearest-neighbour retrieval (scikit-learn; word 1-2-grams of the
context, cosine similarity) that answers with the training response whose context is most
similar. Each is scored against the reference responses with sacreBLEU (13a) and chrF, and
described by distinct-1/2 and mean length in words beside the references themselves; the model's
perplexity of the references (teacher-forced) is reported too (retrieval has no likelihood).

    GENLAB_DATA_DIR=../shared/data python bench/dialogue.py              # 20 minutes of training + eval
    python bench/dialogue.py --model runs/bench-dialogue/chat-sgd        # score an existing model
    python bench/dialogue.py --quick                                     # the plumbing, in ~2 minutes

Writes bench/results/dialogue.json.
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

import genlab  # noqa: E402
from common import RESULTS, fresh_run_dir, machine, write_result  # noqa: E402

QUICK = ["data.limit=400", "model.d_model=32", "model.n_head=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
         "model.d_ff=64", "data.vocab_size=1000", "data.max_source_len=64"]


def retrieval_responses(train_sources: list[str], train_targets: list[str], queries: list[str]) -> list[str]:
    """For each query context, the training response whose context has the highest TF-IDF cosine."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train = vectorizer.fit_transform(train_sources)  # rows L2-normalised: a dot product is the cosine
    query = vectorizer.transform(queries)
    best = []
    for start in range(0, query.shape[0], 256):
        similarity = (query[start : start + 256] @ train.T).toarray()
        best.extend(similarity.argmax(axis=1).tolist())
    return [train_targets[i] for i in best]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (default 20)")
    parser.add_argument("--model", type=Path, help="score this trained dialogue model instead of training one")
    parser.add_argument("-n", type=int, default=2000, help="test turns scored, a seeded sample (default 2000)")
    parser.add_argument("--quick", action="store_true", help="a tiny model for 0.3 minutes, 100 turns")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-dialogue" / "chat-sgd"))
    args = parser.parse_args()
    n = 100 if args.quick else args.n
    record: dict = {"benchmark": "dialogue", "recipe": "chat-sgd"}
    if args.model is None:
        out = fresh_run_dir(Path(args.out + ("-quick" if args.quick else "")))
        minutes = 0.3 if args.quick else args.minutes
        overrides = ["train.progress=false", *(QUICK if args.quick else [])]
        started = time.perf_counter()
        genlab.train("chat-sgd", overrides, out=out, minutes=minutes)
        metrics = json.loads((out / "metrics.json").read_text())
        record.update(minutes=minutes, overrides=overrides, train_wall_s=round(time.perf_counter() - started, 1),
                      steps=metrics["training"]["steps"], tokens_per_s=metrics["training"].get("tokens_per_s"))
    else:  # scoring again (e.g. after a change to decoding): keep what the training run measured
        out = args.model
        previous = RESULTS / ("dialogue-quick.json" if args.quick else "dialogue.json")
        old = json.loads(previous.read_text()) if previous.is_file() else {}
        if Path(old.get("run_dir", "")).resolve() == out.resolve():
            record.update({k: old[k] for k in ("minutes", "overrides", "train_wall_s", "steps", "tokens_per_s") if k in old})
            record["rescored"] = time.strftime("%Y-%m-%d %H:%M:%S")
    record["run_dir"] = str(out)

    t0 = time.perf_counter()
    result = genlab.evaluate(out, against="test", n=n, seed=0, progress=False)
    record["eval_wall_s"] = round(time.perf_counter() - t0, 1)

    # The baseline on exactly the same test turns (evaluate's seeded sample, in split order).
    from genlab.config import from_dict
    from genlab.data.pairs import PairDataSpec, load_pair_data
    from genlab.kinds.pairs import response_statistics, translation_scores

    model = genlab.load(out)
    data = load_pair_data(from_dict(PairDataSpec, model.artifact_config["data"], "data"), tokenizer=model.tokenizer)
    test, train = data.split("test"), data.split("train")
    indices = np.arange(len(test))
    if n < len(test):
        indices = np.sort(np.random.default_rng(0).choice(len(test), n, replace=False))
    references = [test.targets[i] for i in indices]
    t0 = time.perf_counter()
    retrieved = retrieval_responses(list(train.sources), list(train.targets), [test.sources[i] for i in indices])
    retrieval_wall = time.perf_counter() - t0
    baseline = translation_scores(retrieved, references, None)

    scores = result["scores"]
    record.update({
        "test_turns": int(len(indices)), "test_split_turns": len(test), "train_pairs": len(train),
        "context_turns": model.artifact_config["data"].get("context_turns"),
        "model": {"bleu": round(scores["bleu"], 2), "chrf": round(scores["chrf"], 2),
                  "perplexity": round(result["likelihood"]["perplexity"], 3),
                  "nats_per_token": round(result["likelihood"]["loss"], 4), **result["responses"]["model"],
                  "decoding": result["decoding"]},
        "retrieval": {"bleu": round(baseline["bleu"], 2), "chrf": round(baseline["chrf"], 2), "perplexity": None,
                      **response_statistics(retrieved), "wall_s": round(retrieval_wall, 1)},
        "references": result["responses"]["references"],
        "bleu_signature": scores["bleu_signature"], "chrf_signature": scores["chrf_signature"],
        "examples": [{**e, "retrieval": retrieved[k]} for k, e in enumerate(result["examples"])],
        "machine": machine("cpu"), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "genlab_version": genlab.__version__,
    })
    path = write_result(record, RESULTS / ("dialogue-quick.json" if args.quick else "dialogue.json"))

    print(f"\nSGD test, {record['test_turns']:,} of {record['test_split_turns']:,} assistant turns (seed 0)")
    print(f"{'system':<12}{'BLEU':>8}{'chrF':>8}{'perplexity':>12}{'distinct-1':>12}{'distinct-2':>12}{'words':>8}")
    for who in ("model", "retrieval", "references"):
        r = record[who]
        bleu = f"{r['bleu']:>8.2f}{r['chrf']:>8.2f}" if "bleu" in r else f"{'-':>8}{'-':>8}"
        ppl = f"{r['perplexity']:>12.2f}" if r.get("perplexity") else f"{'-':>12}"
        d1, d2 = (f"{r[k]:>12.4f}" if r.get(k) is not None else f"{'-':>12}" for k in ("distinct-1", "distinct-2"))
        print(f"{who:<12}{bleu}{ppl}{d1}{d2}{r['mean_words']:>8.1f}")
    if "steps" in record:
        print(f"training: {record['minutes']:g} min, {record['steps']} steps, {record['tokens_per_s']} tokens/s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
