"""The `genlab` command: a thin layer over the Python API (genlab.api)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import GenlabError

EXAMPLES = {
    "train": """examples:
  genlab train vae-digits                              # the quick start: a VAE on 8x8 digits, ~1 min
  genlab train vae-mnist epochs=5 model.latent_dim=32  # dotted keys set nested settings
  genlab train vae-digits steps=200 --out runs/mine    # steps= instead of epochs=
  genlab train --resume runs/mine epochs=50            # continue a run (after Ctrl-C or a crash)
  torchrun --nproc_per_node 2 -m genlab train vae-mnist  # data-parallel on 2 processes
  genlab train gpt-shakespeare-char --out runs/gpt     # a character-level GPT on Tiny Shakespeare
  genlab train gpt-pydoc-bpe data.vocab_size=2048      # a BPE GPT on Python's help texts (no network)
  genlab train gpt-shakespeare-char data.name=file:my_notes.txt  # ... on your own text
  genlab train lstm-shakespeare-char data.name=folder:my_texts/ data.tokenizer=byte""",
    "sample": """examples:
  genlab sample runs/vae-digits-... -n 64 --seed 0 -o grid.png
  genlab sample runs/cvae-mnist-... -n 10 --class 3 -o threes.png
  genlab sample runs/gpt-shakespeare-char-... -n 4             # text models: printed (or -o texts.txt)

For text models, `genlab generate` has the prompt and the decoding controls.""",
    "generate": """examples:
  genlab generate runs/gpt-shakespeare-char-... --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-p 0.95
  genlab generate runs/gpt-pydoc-bpe-... --prompt "The with statement" --temperature 0   # greedy
  genlab generate MODEL --prompt "To be" -n 3 --top-k 40 --seed 1       # three samples
  genlab generate MODEL --prompt "KING" --num-beams 4 --max-new-tokens 40 # beam search
  genlab generate MODEL --prompt "ROMEO:" --stop "\\n\\n" --repetition-penalty 1.2

Output is the prompt followed by the continuation, streamed as it is generated (one
sequence) or printed when done (several, or beam search). Temperature 0 is greedy.
A prompt longer than the model's context window is not an error: generation reads only
its last 3/4 window of tokens, and a warning says so.""",
    "eval": """examples:
  genlab eval runs/vae-mnist-...                        # likelihood + sample quality vs the test split
  genlab eval runs/vae-mnist-... --against mnist:test -n 10000 --seed 0 --metrics samples
  genlab eval runs/vae-mnist-... --metrics likelihood --iwae-k 5000 -n 1000 --against val

  genlab eval runs/gpt-shakespeare-char-...            # text: val and test perplexity, bits/char, diversity
  genlab eval runs/gpt-shakespeare-char-... -n 50 --max-new-tokens 300 --against val

Sample-quality metrics are named with their feature space: fd[lenet-mnist] is the Frechet
distance in genlab's shipped MNIST LeNet features, not Inception's FID. Each is printed
beside its floor: the same metric between n real train images and the reference split.
For text models: perplexity and bits per character of the held-out text, and distinct-n and
self-BLEU of n samples (temperature 1) beside the same metrics of n real snippets.""",
    "info": "example:\n  genlab info runs/vae-digits-...",
    "recipes": "example:\n  genlab recipes",
    "datasets": "example:\n  genlab datasets",
    "compose": """examples:
  genlab train gpt-chorales --out runs/chorales          # an event GPT on the bundled Bach chorales, ~5 min
  genlab compose runs/chorales --bars 16 --seed 0 -o piece.mid        # writes piece.mid, piece.wav, piece.png
  genlab compose runs/chorales --key "D minor" --tempo 80 --temperature 0.9 --top-p 0.95 -o d.mid
  genlab compose runs/chorales --prompt opening.mid --bars 8 -o continued.mid   # continue your MIDI file
  genlab compose runs/lstm-jsb-... --bars 16 -o jsb.mid                # a piano-roll model works the same way

--bars counts the new 4/4 bars (after the prompt). --key transposes the finished piece (prompt
included) by the smallest shift that makes its best-fitting key of that mode the one asked for;
out-of-key notes are kept. The WAV uses FluidSynth with a General-MIDI soundfont when both are
installed (apt install fluidsynth fluid-soundfont-gm), else the built-in additive synthesiser.""",
    "serve": """examples:
  genlab serve --models runs/                     # http://127.0.0.1:8000: the studio at /, the API reference at /docs
  genlab serve --models runs/ --port 9000 --workers 4 --timeout 120
  curl -s localhost:8000/v1/models

Every sub-folder of --models that holds a model directory is served under its folder's name.
The server binds 127.0.0.1 (this machine only) unless --host says otherwise; it has no
authentication, so put a reverse proxy with authentication in front before exposing it.""",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlab",
        description="genlab: train, measure, apply and serve generative models.",
        epilog="""examples:
  genlab train vae-digits                    # quick start: train a VAE on the embedded 8x8 digits
  genlab sample runs/vae-digits-... -n 64 -o grid.png
  genlab eval runs/vae-digits-...
  genlab train gpt-shakespeare-char          # a character-level GPT on Tiny Shakespeare
  genlab generate runs/gpt-shakespeare-char-... --prompt "ROMEO:" --temperature 0.8
  genlab recipes | genlab datasets

Run `genlab COMMAND --help` for a command's options and examples.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("train", "train a recipe and write a model directory")
    p.add_argument("recipe", nargs="?", help="recipe name (see `genlab recipes`) or a path to a .yaml recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings to change, e.g. epochs=5 model.latent_dim=32")
    p.add_argument("--out", "-o", help="run/model directory (default: runs/RECIPE-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")

    p = add("sample", "draw samples from a trained model into an image grid (or texts, for a text model)")
    p.add_argument("model", help="model directory")
    p.add_argument("-n", type=int, help="number of samples (default 64 images, 4 texts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="label", type=int, help="class label (conditional models)")
    p.add_argument("-o", "--output", help="PNG to write (default samples.png); for text models a .txt (default: print)")

    p = add("generate", "continue a prompt with a text model, streaming the text as it is generated")
    p.add_argument("model", help="model directory of a text model (gpt, lstm)")
    p.add_argument("--prompt", "-p", default="", help="text to continue (default: start of a new line)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", "-t", type=float, default=1.0,
                   help="0 = greedy; below 1 safer, above 1 wilder (default 1)")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens only")
    p.add_argument("--top-p", type=float, help="sample from the smallest set of tokens holding this probability, in (0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages tokens already in the text (default 1: off)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the text before this string (repeatable; \\n is a newline)")
    p.add_argument("-n", "--num-return-sequences", type=int, default=1, help="number of texts (default 1)")
    p.add_argument("--num-beams", type=int, default=1, help="> 1: beam search, deterministic (default 1: sampling)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="re-read the whole context every step (same text, slower)")

    p = add("eval", "measure a model: likelihood bounds and sample quality (FD, KD, precision/recall, ...)")
    p.add_argument("model", help="model directory")
    p.add_argument("--against", metavar="DATASET[:SPLIT]",
                   help="reference data, e.g. mnist:test or just val (default: the model's data set, test split)")
    p.add_argument("-n", type=int, help="examples/samples (default: the whole split for likelihood, up to 10,000 samples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iwae-k", type=int, default=1000, help="importance samples for the IWAE bound (default 1000; 5000 for papers)")
    p.add_argument("--features", help="feature network: lenet-mnist, lenet-digits or inception (default: by image shape)")
    p.add_argument("--metrics", help="comma-separated groups: likelihood,samples (default: all the model supports)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="text models: tokens per sample (default 200)")

    p = add("info", "show a model's family, settings, size and metrics")
    p.add_argument("model", help="model directory")

    add("recipes", "list the training recipes")
    add("datasets", "list the data sets and whether they are available offline")

    p = add("compose", "compose a piece with a music model: a MIDI file, a WAV beside it and a piano-roll PNG")
    p.add_argument("model", help="model directory of a music model (gpt-music, lstm-music, or a piano-roll model)")
    p.add_argument("--bars", type=int, default=16, help="new 4/4 bars to compose (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", "-t", type=float, default=1.0, help="0 = greedy; below 1 safer, above 1 wilder (default 1)")
    p.add_argument("--top-p", type=float, help="event models: sample from the smallest set of events holding this probability")
    p.add_argument("--tempo", type=float, help="quarter notes per minute (default 120)")
    p.add_argument("--key", help='transpose the piece into this key, e.g. "D minor", "Bb", "F# major"')
    p.add_argument("--prompt", metavar="MIDI", help="a MIDI file to continue")
    p.add_argument("--renderer", choices=("auto", "fluidsynth", "additive"), default="auto",
                   help="how the WAV is made (default auto: FluidSynth if installed, else the built-in synthesiser)")
    p.add_argument("-o", "--output", default="composition.mid", help="MIDI file to write; .wav and .png go beside it")

    p = add("serve", "serve the models in a folder over HTTP: the JSON API, /docs and the web studio")
    p.add_argument("--models", required=True, metavar="DIR", help="folder whose sub-folders are model directories")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=2, help="inference worker threads (default 2)")
    p.add_argument("--queue", type=int, default=16, help="jobs that may wait for a worker before 429 (default 16)")
    p.add_argument("--timeout", type=float, default=60.0, help="time limit per request in seconds (default 60)")
    p.add_argument("--max-loaded", type=int, default=4, help="models kept in memory, least recently used dropped (default 4)")
    p.add_argument("--torch-threads", type=int, help="intra-op threads per worker (default: CPU cores / workers)")
    from .tasks.cli import add_apply_command  # `genlab apply TASK ...`: the image applications

    add_apply_command(sub)
    return parser


def _cmd_train(args) -> None:
    from .api import train

    overrides = list(args.overrides)
    if args.resume:
        if args.recipe is not None:  # `train --resume DIR epochs=5`: argparse puts epochs=5 in recipe
            overrides.insert(0, args.recipe)
        run_dir = train(None, overrides, out=args.resume, resume=True)
    else:
        if args.recipe is None:
            raise GenlabError("which recipe?", "e.g. `genlab train vae-digits`; `genlab recipes` lists them")
        run_dir = train(args.recipe, overrides, out=args.out)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"model directory: {run_dir}")
    metrics_path = Path(run_dir) / "metrics.json"
    if (Path(run_dir) / "model.safetensors").is_file() and metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        test = "  ".join(f"{k} {v:.4g}" for k, v in metrics.get("test", {}).items())
        print(f"test metrics: {test}")
        for name in ("samples.png", "reconstructions.png", "samples.txt", "metrics.json"):
            if (Path(run_dir) / name).is_file():
                print(f"  {Path(run_dir) / name}")
        family = json.loads((Path(run_dir) / "config.json").read_text()).get("family")
        from .registry import get_family

        family_cls = get_family(family)
        if family_cls.data_kind in ("music", "pianoroll"):
            print(f"next: genlab compose {run_dir} --bars 16 --seed 0 -o piece.mid")
        elif "upscale" in family_cls.capabilities:
            print(f"next: genlab apply superres {run_dir} --against {_data_name(run_dir)}:test   |   "
                  f"genlab apply superres {run_dir} small.png -o big.png")
        elif "denoise" in family_cls.capabilities:
            print(f"next: genlab apply denoise {run_dir} --against {_data_name(run_dir)}:test --noise gaussian:0.3   |   "
                  f"genlab apply denoise {run_dir} noisy.png -o clean.png")
        elif (Path(run_dir) / "tokenizer.json").is_file():
            print(f'next: genlab generate {run_dir} --prompt "..." --max-new-tokens 300 --temperature 0.8   |   '
                  f"genlab eval {run_dir}")
        else:
            print(f"next: genlab sample {run_dir} -n 64 -o grid.png   |   tensorboard --logdir {run_dir}/tensorboard")
    return 0


def _data_name(run_dir) -> str:
    return json.loads((Path(run_dir) / "config.json").read_text())["data"]["name"]


def _cmd_sample(args) -> None:
    from .api import sample, save_samples
    from .artifact import load
    from .models.base import check_sample_count

    if args.n is not None:
        check_sample_count(args.n)  # before loading, so a bad -n fails fast
    model = load(args.model)
    if model.data_kind == "text":
        return _sample_texts(model, args)
    if model.data_kind in ("music", "pianoroll"):
        raise GenlabError(f"{args.model} is a music model: it composes pieces rather than image grids",
                          f"genlab compose {args.model} --bars 16 -o piece.mid")
    n = args.n or 64
    images = sample(model, n, seed=args.seed, condition=args.label)
    path = save_samples(model, images, args.output or "samples.png")
    print(f"wrote {n} samples to {path}")


def _sample_texts(model, args) -> None:
    from .api import sample
    from .fileio import atomic_write_text

    if args.label is not None:
        raise GenlabError("a text model has no classes",
                          f'continue a prompt instead: genlab generate {args.model} --prompt "..."')
    if args.output is not None and not args.output.endswith(".txt"):
        raise GenlabError(f"{args.model} is a text model: it writes texts, not {args.output}",
                          "use -o samples.txt, or leave -o out to print them")
    n = args.n or 4
    texts = sample(model, n, seed=args.seed)
    report = "".join(f"--- sample {i + 1} (seed {args.seed}, temperature 1) ---\n{text}\n\n" for i, text in enumerate(texts))
    if args.output is None:
        print(report, end="")
        print(f'for a prompt and decoding controls: genlab generate {args.model} --prompt "..." --temperature 0.8',
              file=sys.stderr)
    else:
        try:
            atomic_write_text(Path(args.output), report)
        except OSError as e:
            raise GenlabError(f"cannot write {args.output}: {e.strerror or e}", "choose a writable output path") from None
        print(f"wrote {n} samples to {args.output}")


def _unescape(text: str) -> str:
    # Shells pass "\n" as a backslash and an n; a stop string almost always means a newline.
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _cmd_generate(args) -> None:
    from .artifact import load
    from .sampling import GenerationConfig, generate, stream

    config = GenerationConfig(  # validated before loading, so a bad setting fails fast
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, num_return_sequences=args.num_return_sequences,
        num_beams=args.num_beams, stop=tuple(_unescape(s) for s in args.stop), seed=args.seed,
        use_cache=not args.no_cache,
    )
    model = load(args.model)
    model.require("generate", "genlab generate")
    if config.num_return_sequences == 1 and config.num_beams == 1:
        pieces = stream(model, args.prompt, config)
        first = next(pieces, "")  # encodes the prompt: a bad one fails before anything is printed
        print(args.prompt + first, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
        return
    for i, text in enumerate(generate(model, args.prompt, config)):
        label = f"beam {i + 1}" if config.num_beams > 1 else f"sample {i + 1}"
        print(f"--- {label} ---\n{args.prompt}{text}\n")


def _cmd_eval(args) -> None:
    from .api import evaluate

    groups = tuple(g.strip() for g in args.metrics.split(",") if g.strip()) if args.metrics else None
    result = evaluate(args.model, against=args.against, n=args.n, seed=args.seed, iwae_k=args.iwae_k,
                      features=args.features, metrics=groups, max_new_tokens=args.max_new_tokens)
    if result.get("kind") == "text":
        return _print_text_eval(args.model, result)
    if result.get("kind") == "pianoroll":
        row = result["frame_nll"]
        print(f"frame-level NLL on {result['data']} ({row['pieces']} pieces, {row['frames']} frames; nats per frame)")
        print(f"  every frame {row['nll_per_frame']:.4f}   without each piece's first {row['nll_per_frame_after_first']:.4f}")
    if result.get("kind") == "music":
        return _print_music_eval(args.model, result)
    if "likelihood" in result:
        lik = result["likelihood"]
        print(f"likelihood on {result['data']} (n={lik['n']}, IWAE k={lik['iwae_k']}, seed {result['seed']}; nats per image)")
        for key in ("elbo", "iwae_nll", "iwae_bits_per_dim", "recon_mse"):
            print(f"  {key:<28}{lik[key]:>12.4f}")
    if "samples" in result:
        sq = result["samples"]
        accuracy = f", test accuracy {sq['feature_test_accuracy']:.2%}" if sq["feature_test_accuracy"] else ""
        print(f"sample quality vs {result['data']} (n={sq['n']}, seed {result['seed']}; features {sq['feature_space']} "
              f"sha256 {sq['feature_weights_sha256'][:12]}{accuracy})")
        print(f"  {'metric':<36}{'model':>12}{'floor':>12}")
        for key, value in sq["metrics"].items():
            print(f"  {key:<36}{value:>12.4f}{sq['floor'][key]:>12.4f}")
        print(f"  floor: {sq['floor_definition']}")
    print(f"written to {Path(args.model) / 'metrics.json'} in {result['seconds']:.1f} s")


def _print_text_eval(model_dir, result: dict) -> None:
    if "likelihood" in result:
        print(f"held-out text of {result['data']} (every token scored once, in windows of the model's context)")
        print(f"  {'split':<8}{'tokens':>10}{'nats/token':>12}{'perplexity':>12}{'bits/char':>11}")
        for split, row in result["likelihood"].items():
            print(f"  {split:<8}{row['tokens']:>10,}{row['loss']:>12.4f}{row['perplexity']:>12.3f}"
                  f"{row['bits_per_char']:>11.4f}")
    if "samples" in result:
        samples = result["samples"]
        print(f"diversity of {samples['n']} samples ({samples['max_new_tokens']} new tokens each, temperature 1, "
              f"seed {result['seed']}) beside {samples['n']} real snippets of the same length")
        print(f"  {'metric':<14}{'samples':>10}{'real text':>11}")
        for key, value in samples["metrics"].items():
            reference = samples["reference"][key]
            shown = [f"{v:>10.4f}" if v is not None else f"{'n/a':>10}" for v in (value, reference)]
            print(f"  {key:<14}{shown[0]}{' ' + shown[1]}")
        print("  distinct-n: unique n-grams / all n-grams (higher = more varied); self-BLEU: 0-100 (higher = more alike)")
    print(f"written to {Path(model_dir) / 'metrics.json'} in {result['seconds']:.1f} s")


def _print_music_eval(model_dir, result: dict) -> None:
    if "likelihood" in result:
        print(f"held-out pieces of {result['data']} (every event scored once, in windows of the model's context)")
        print(f"  {'split':<8}{'events':>10}{'nats/event':>12}{'perplexity':>12}")
        for split, row in result["likelihood"].items():
            print(f"  {split:<8}{row['events']:>10,}{row['loss']:>12.4f}{row['perplexity']:>12.3f}")
    if "samples" in result:
        samples = result["samples"]
        print(f"{samples['n']} samples of {samples['bars']} bars (temperature 1, seed {result['seed']}) beside the "
              f"{samples['reference_split']} pieces")
        print(f"  {'statistic':<38}{'samples':>10}{'data':>10}")
        for key in ("notes_per_bar", "polyphony", "in_key_ratio", "mean_note_quarters"):
            print(f"  {key:<38}{samples['statistics'][key]:>10.3f}{samples['reference'][key]:>10.3f}")
        print(f"  {'distance to the data':<38}{'samples':>10}{'floor':>10}")
        for key in ("pitch_class_distance", "pitch_class_distance_key_normalized", "note_length_distance"):
            print(f"  {key:<38}{samples['distances'][key]:>10.3f}{samples['floor'][key]:>10.3f}")
        print("  distances: total variation, 0 = same distribution; floor: the train pieces against the same pieces")
    print(f"written to {Path(model_dir) / 'metrics.json'} in {result['seconds']:.1f} s")


def _cmd_info(args) -> None:
    from .artifact import load, read_config

    config = read_config(args.model)
    model = load(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model      {args.model}")
    print(f"family     {config['family']}   recipe {config.get('recipe')}   genlab {config.get('genlab_version')}")
    print(f"parameters {n_params:,}")
    if getattr(model, "tokenizer", None) is not None:
        print(f"tokenizer  {model.tokenizer.kind}, {model.tokenizer.vocab_size:,} tokens; context "
              f"{model.context_window or 'unlimited'} tokens")
    print(f"data       {json.dumps(config['data'])}")
    print(f"model      {json.dumps(config['model'])}")
    print(f"train      {json.dumps(config['train'])}")
    metrics_path = Path(args.model) / "metrics.json"
    if metrics_path.is_file():
        print(f"metrics    {metrics_path.read_text().strip()}")


def _cmd_recipes(args) -> None:
    from .config import list_recipes

    for name, description in list_recipes().items():
        print(f"{name:<22} {description}")


def _cmd_datasets(args) -> None:
    from .data import data_root
    from .data.images import DATASETS, dataset_status
    from .data.text import TEXT_DATASETS, text_dataset_status

    root = data_root()
    print(f"data directory: {root}  (set GENLAB_DATA_DIR to change)")
    print("images (vae, gan):")
    for name, description in DATASETS.items():
        status = dataset_status(name, root)
        print(f"  {name:<16} {status:<9} {description}")
    print("text (gpt, lstm; data.tokenizer=char|byte|bpe):")
    for name, description in TEXT_DATASETS.items():
        print(f"  {name:<16} {text_dataset_status(name, root):<9} {description}")
    from .data.music import MUSIC_DATASETS, music_dataset_status

    print("music events (gpt-music, lstm-music; genlab compose):")
    for name, description in MUSIC_DATASETS.items():
        print(f"  {name:<16} {music_dataset_status(name, root):<9} {description}")
    from .data.jsb import PIANOROLL_DATASETS, pianoroll_dataset_status

    print("piano-roll frames (pianoroll: lstm-jsb, rnn-nade-jsb):")
    for name, description in PIANOROLL_DATASETS.items():
        print(f"  {name:<16} {pianoroll_dataset_status(name, root):<9} {description}")


def _cmd_compose(args) -> None:
    from .artifact import load
    from .tasks.compose import compose

    if not args.output.lower().endswith((".mid", ".midi")):  # before the model runs
        raise GenlabError(f"-o {args.output} is not a MIDI file name", "name it NAME.mid; NAME.wav and NAME.png go beside it")
    model = load(args.model)
    composition = compose(model, bars=args.bars, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                          tempo=args.tempo, key=args.key, prompt_midi=args.prompt, renderer=args.renderer)
    midi, wav, png = composition.save(args.output)
    prompt = f" after {composition.prompt_bars:.1f} bars of prompt" if args.prompt else ""
    key = f", moved {composition.transposed_by:+d} semitones into {composition.key}" if composition.key else ""
    print(f"composed {composition.bars} bars{prompt}: {composition.notes} notes, {composition.seconds:.1f} s at "
          f"{composition.tempo:g} bpm (seed {args.seed}{key})")
    print(f"wrote {midi}")
    print(f"wrote {wav}  ({'FluidSynth' if composition.renderer == 'fluidsynth' else 'built-in additive synthesiser'})")
    print(f"wrote {png}")


def _cmd_serve(args) -> int:
    from .serve.cli import serve

    return serve(args)


def _cmd_apply(args) -> int:
    from .tasks.cli import run_apply

    return run_apply(args)


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "generate": _cmd_generate, "eval": _cmd_eval,
            "info": _cmd_info, "recipes": _cmd_recipes, "datasets": _cmd_datasets, "apply": _cmd_apply,
            "serve": _cmd_serve, "compose": _cmd_compose}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args) or 0
    except GenlabError as e:
        from .errors import TrainingInterrupted

        print(f"{'stopped' if isinstance(e, TrainingInterrupted) else 'error'}: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 130 if isinstance(e, TrainingInterrupted) else 2
    except OSError as e:  # a file-system problem no GenlabError anticipated: still one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
