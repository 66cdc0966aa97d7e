"""Benchmark: an event model on the bundled Bach chorales, and the statistics of what it composes.

Trains the `gpt-chorales` recipe (or --recipe lstm-chorales) under a wall-clock budget, then:

  - scores the held-out chorales: nats per event on every event of the val and test splits
    (consecutive windows of the model's context, each event from the events before it in its
    window), beside the uniform model's log(vocabulary size)
  - composes --samples pieces of --bars 4/4 bars (temperature 1, seed 0) and computes their
    musical statistics (genlab.metrics.music) next to the data's: the train chorales, the test
    chorales (whose distances to train are the floor: what two sets of real chorales differ
    by) and the same network untrained (what noise looks like)
  - composes one piece with genlab.tasks.compose into the run folder (piece.mid, .wav, .png)
    and checks that music21 and pretty_midi both read the MIDI back and that the WAV lasts
    exactly as long as the piece

Writes bench/results/music_chorales.json (music_chorales-RECIPE.json for another recipe) and prints a table.

    python bench/music_chorales.py                       # ~7 min on 2 cores (the recipe's 800 steps)
    python bench/music_chorales.py --recipe lstm-chorales --budget-min 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import wave
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import genlab  # noqa: E402
from common import fresh_run_dir, machine, write_result  # noqa: E402
from genlab.artifact import build_model  # noqa: E402
from genlab.data.music import MusicDataSpec, load_music_data  # noqa: E402
from genlab.evaluation import event_likelihood  # noqa: E402
from genlab.metrics.music import compare_statistics, music_statistics  # noqa: E402
from genlab.tasks.compose import compose, sample_pieces  # noqa: E402


def held_out_nats_per_event(model, data, split: str) -> dict:
    """genlab eval's event likelihood (every event of the split scored once), under the bench's key names."""
    scored = event_likelihood(model, data, split, progress=False)
    return {"events": scored["events"], "nats_per_event": scored["loss"], "perplexity": scored["perplexity"]}


def rounded(value, digits: int = 4):
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return round(value, digits) if isinstance(value, float) else value


def check_files(composition, folder: Path) -> dict:
    import pretty_midi
    from music21 import converter

    midi, wav, png = composition.save(folder / "piece.mid")
    with wave.open(str(wav)) as f:
        wav_seconds = f.getnframes() / f.getframerate()
    return {
        "files": [str(p) for p in (midi, wav, png)],
        "notes": composition.notes,
        "seconds": composition.seconds,
        "pretty_midi_notes": sum(len(i.notes) for i in pretty_midi.PrettyMIDI(str(midi)).instruments),
        # music21 reads notes that start together as one chord (count their pitches) and splits
        # notes at bar lines, so its count is higher than the file's; what matters is that it reads it.
        "music21_notes": sum(len(n.pitches) for n in converter.parse(str(midi)).flatten().notes),
        "wav_seconds": wav_seconds,
        "wav_renderer": composition.renderer,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="gpt-chorales")
    parser.add_argument("--budget-min", type=float, default=8.0, help="training wall-clock cap in minutes")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--bars", type=int, default=16)
    parser.add_argument("--out", help="run directory (default runs/bench-RECIPE)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. steps=3000 model.n_embd=192")
    args = parser.parse_args()

    out = Path(args.out or REPO / "runs" / f"bench-{args.recipe}")
    fresh_run_dir(out)
    overrides = [f"train.time_budget_s={args.budget_min * 60}", "train.progress=false", *args.overrides]
    t0 = time.perf_counter()
    genlab.train(args.recipe, overrides, out=out)
    train_wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    model = genlab.load(out)
    data = load_music_data(MusicDataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["data"].items()}))

    likelihood = {split: held_out_nats_per_event(model, data, split) for split in ("val", "test")}
    t = time.perf_counter()
    samples = sample_pieces(model, args.samples, bars=args.bars, seed=0,
                            generator=torch.Generator(model.device).manual_seed(0))
    sampling_s = time.perf_counter() - t
    torch.manual_seed(config["train"]["seed"])  # the initial weights of the run
    untrained = build_model(config).eval()
    noise = sample_pieces(untrained, args.samples, bars=args.bars, seed=0,
                          generator=torch.Generator().manual_seed(0))

    statistics = {"data_train": music_statistics(data.train.pieces), "data_test": music_statistics(data.test.pieces),
                  "samples": music_statistics(samples), "untrained": music_statistics(noise)}
    distances = {name: compare_statistics(statistics[name], statistics["data_train"])
                 for name in ("data_test", "samples", "untrained")}
    files = check_files(compose(model, bars=args.bars, seed=0), out)

    n_params = sum(p.numel() for p in model.parameters())
    record = {
        "benchmark": "music_chorales",
        "recipe": args.recipe,
        "overrides": overrides,
        "model": config["model"],
        "data": config["data"],
        "parameters": n_params,
        "pieces": {s: len(data.split(s).pieces) for s in ("train", "val", "test")},
        "train_steps": metrics["training"]["steps"],
        "train_wall_s": round(train_wall, 1),
        "held_out": rounded(likelihood),
        "uniform_nats_per_event": round(math.log(model.config.vocab_size), 4),
        "samples": {"n": args.samples, "bars": args.bars, "temperature": 1.0, "seed": 0,
                    "seconds": round(sampling_s, 1)},
        "statistics": rounded(statistics),
        "distances_to_train_data": rounded(distances),
        "composition_check": rounded(files),
        "machine": machine(metrics["training"]["device"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genlab_version": genlab.__version__,
    }
    path = write_result(record, name="music_chorales" if args.recipe == "gpt-chorales" else f"music_chorales-{args.recipe}")

    print(f"\n{args.recipe}: {n_params / 1e6:.2f}M parameters, {record['train_steps']} steps in {train_wall:.0f} s; "
          f"held-out nats/event val {likelihood['val']['nats_per_event']:.3f}, test "
          f"{likelihood['test']['nats_per_event']:.3f} (uniform: {record['uniform_nats_per_event']:.3f})")
    print(f"{args.samples} samples of {args.bars} bars in {sampling_s:.1f} s\n")
    columns = ("data_train", "data_test", "samples", "untrained")
    print(f"{'statistic':<34}" + "".join(f"{c:>12}" for c in columns))
    for key in ("notes_per_bar", "polyphony", "in_key_ratio", "mean_note_quarters"):
        print(f"{key:<34}" + "".join(f"{statistics[c][key]:>12.3f}" for c in columns))
    for key in ("pitch_class_distance", "pitch_class_distance_key_normalized", "note_length_distance"):
        print(f"{key + ' (to train)':<34}{'0':>12}" + "".join(f"{distances[c][key]:>12.3f}" for c in columns[1:]))
    print("\nnote lengths (share of notes):")
    for length in statistics["data_train"]["note_length_histogram"]:
        print(f"  {length:<32}" + "".join(f"{statistics[c]['note_length_histogram'][length]:>12.3f}" for c in columns))
    print("\ndistances are total variation (0 = same distribution, 1 = disjoint); data_test is the floor")
    print(f"composition check: {files['notes']} notes, pretty_midi reads {files['pretty_midi_notes']}, music21 reads "
          f"{files['music21_notes']} (split at bar lines); WAV {files['wav_seconds']:.3f} s for a {files['seconds']:.3f} s piece "
          f"({files['wav_renderer']}); {files['files'][0]}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
