"""The `genlab` command: a thin layer over the Python API (genlab.api)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import GenlabError
from .limits import (CLASS_OPTION, MAX_BEAMS, MAX_CLI_NEW_TOKENS, MAX_DIFFUSION_TIMESTEPS, MAX_GUIDANCE,
                     MAX_NO_REPEAT_NGRAM, MAX_SAMPLES, SEED_OPTION, bounded_float, bounded_int)

EXAMPLES = {
    "train": """examples:
  genlab train vae-digits                              # the quick start: a VAE on 8x8 digits, ~1 min
  genlab train vae-mnist epochs=5 model.latent_dim=32  # dotted keys set nested settings
  genlab train vae-digits steps=200 --out runs/mine    # steps= instead of epochs=
  genlab train --resume runs/mine epochs=50            # continue a run (after Ctrl-C or a crash)
  genlab train gpt-shakespeare-char --minutes 5        # the best model in 5 minutes (a deadline, not a step count)
  torchrun --nproc_per_node 2 -m genlab train vae-mnist  # data-parallel on 2 processes
  genlab train gpt-shakespeare-char --out runs/gpt     # a character-level GPT on Tiny Shakespeare
  genlab train gpt-pydoc-bpe data.vocab_size=2048      # a BPE GPT on Python's help texts (no network)
  genlab train gpt-shakespeare-char data.name=file:my_notes.txt  # ... on your own text
  genlab train lstm-shakespeare-char data.name=folder:my_texts/ data.tokenizer=byte""",
    "sample": """examples:
  genlab sample runs/vae-digits-... -n 64 --seed 0 -o grid.png
  genlab sample runs/cvae-mnist-... -n 10 --class 3 -o threes.png
  genlab sample runs/ddpm-digits-... -n 64 --sampler dpm++ --steps 20 -o grid.png   # diffusion models
  genlab sample runs/gpt-shakespeare-char-... -n 4             # text models: printed (or -o texts.txt)

For text models, `genlab generate` has the prompt and the decoding controls.""",
    "generate": """examples:
  genlab generate runs/gpt-shakespeare-char-... --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-p 0.95
  genlab generate runs/gpt-pydoc-bpe-... --prompt "The with statement" --temperature 0   # greedy
  genlab generate MODEL --prompt "To be" -n 3 --top-k 40 --seed 1       # three samples
  genlab generate MODEL --prompt "KING" --num-beams 4 --max-new-tokens 40 # beam search
  genlab generate MODEL --prompt "ROMEO:" --stop "\\n\\n" --repetition-penalty 1.2
  genlab generate runs/gpt-styles-... --style pydoc --max-new-tokens 300  # a style model (data.styles)

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
    "translate": """examples:
  genlab train translate-zh-en --minutes 20 -o runs/zh-en    # a Chinese->English Transformer
  genlab translate runs/zh-en "我们走吧。"                        # beam search, 4 beams
  genlab translate runs/zh-en < chinese.txt > english.txt      # one translation per line
  genlab translate runs/zh-en --input chinese.txt --output english.txt
  genlab translate runs/zh-en "你好吗？" --n-best 3               # TSV: line, rank, score, translation
  genlab translate runs/zh-en "你好吗？" --temperature 0.8 --top-p 0.9 -n 3 --seed 1   # sampled

Blank input lines give blank output lines (no rows with --n-best). A text longer than the
model's source window is cut to it, and characters its vocabulary never saw are read as
bytes: each with a notice. `genlab eval MODEL` scores the model with sacreBLEU and chrF.""",
    "chat": """examples:
  genlab train chat-sgd --minutes 20 -o runs/chat              # a task-oriented assistant (Schema-Guided Dialogue)
  genlab chat runs/chat                                         # interactive: /reset forgets, /quit (or Ctrl-D) leaves
  genlab chat runs/chat --once "I need a bus to Fresno on March 3rd"
  genlab chat runs/chat --temperature 0.8 --top-p 0.9 --seed 1 # sampled replies

The model reads the last turns of the conversation it was trained with (data.context_turns),
each after its speaker tag; a conversation longer than its source window loses its oldest
turns, with a notice. Replies are streamed as they are decoded (greedy unless --temperature).""",
    "info": "examples:\n  genlab info runs/vae-digits-...\n  genlab info runs/vae-digits-... --json | jq .metrics.test",
    "recipes": "example:\n  genlab recipes",
    "datasets": "example:\n  genlab datasets",
    "serve": """examples:
  genlab serve --models runs/                     # http://127.0.0.1:8000: the studio at /, the API reference at /docs
  genlab serve --models runs/vae-digits-1/        # one model directory: that model alone
  genlab serve --models runs/ --port 9000 --workers 4 --timeout 120
  curl -s localhost:8000/v1/models
  GENLAB_API_KEY=$(openssl rand -hex 16) genlab serve --models runs/ --host 0.0.0.0 --allowed-host genlab.lan
  curl -s -H "Authorization: Bearer $GENLAB_API_KEY" http://genlab.lan:8000/v1/models
  genlab serve --models runs/ --cors-origin http://localhost:3000   # a web app on another port may call the API

Every sub-folder of --models that holds a model directory is served under its folder's name.
The server binds 127.0.0.1 (this machine only) unless --host says otherwise. It answers only
to the names it is known by in the Host header (localhost, 127.0.0.1, ::1, --host and each
--allowed-host) and refuses requests from other sites' web pages unless --cors-origin names
them. With --api-key KEY or GENLAB_API_KEY (preferred: a command line is visible to other
users), every /v1 and /metrics request needs `Authorization: Bearer KEY`; a --host other
machines can reach refuses to start without one (--insecure-no-auth overrides). A request
must arrive within --read-timeout seconds (30), idle connections close after 5 s, and past
--max-connections (64) new connections are answered 503. Replies never show the server's paths.""",
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
  genlab train translate-zh-en --minutes 20 -o runs/zh-en   # Chinese -> English
  genlab translate runs/zh-en "我们走吧。"
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
    p.add_argument("--minutes", type=float, metavar="M",
                   help="train for M minutes of wall-clock time (evaluations included): the recipe's settings for that "
                        "budget (see `genlab recipes`), the learning rate schedule spread over it, the model exported at the "
                        "deadline; with --resume, the run's new total budget")

    p = add("sample", "draw samples from a trained model into an image grid (or texts, for a text model)")
    p.add_argument("model", help="model directory")
    p.add_argument("-n", type=bounded_int("-n", 1, MAX_SAMPLES), help="number of samples (default 64 images, 4 texts)")
    p.add_argument("--seed", type=SEED_OPTION, default=0)
    p.add_argument("--class", dest="label", type=CLASS_OPTION, help="class label (conditional models)")
    p.add_argument("-o", "--output", help="PNG to write (default samples.png); for text models a .txt (default: print)")
    p.add_argument("--steps", type=bounded_int("--steps", 1, MAX_DIFFUSION_TIMESTEPS),
                   help="diffusion models: sampler steps, 1..the training timesteps (default: the model's)")
    p.add_argument("--sampler", help="diffusion models: ddpm | ddim | dpm++ (default: the model's)")
    p.add_argument("--guidance", type=bounded_float("--guidance", 0.0, MAX_GUIDANCE),
                   help="class-conditional diffusion models: classifier-free guidance scale "
                        "(0 unconditional, 1 conditional, >1 stronger; default: the model's)")

    p = add("generate", "continue a prompt with a text model, streaming the text as it is generated")
    p.add_argument("model", help="model directory of a text model (gpt, lstm)")
    p.add_argument("--prompt", "-p", default="", help="text to continue (default: start of a new line)")
    p.add_argument("--max-new-tokens", type=bounded_int("--max-new-tokens", 1, MAX_CLI_NEW_TOKENS), default=200,
                   help="tokens to generate (default 200)")
    p.add_argument("--temperature", "-t", type=float, default=1.0,
                   help="0 = greedy; below 1 safer, above 1 wilder (default 1)")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens only")
    p.add_argument("--top-p", type=float, help="sample from the smallest set of tokens holding this probability, in (0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages tokens already in the text (default 1: off)")
    p.add_argument("--no-repeat-ngram", type=bounded_int("--no-repeat-ngram", 0, MAX_NO_REPEAT_NGRAM), default=0,
                   metavar="N", help="never repeat an N-gram of tokens, prompt included (default 0: off)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the text before this string (repeatable; \\n is a newline)")
    p.add_argument("-n", "--num-return-sequences", type=int, default=1, help="number of texts (default 1)")
    p.add_argument("--num-beams", type=int, default=1, help="> 1: beam search, deterministic (default 1: sampling)")
    p.add_argument("--seed", type=SEED_OPTION, default=0)
    p.add_argument("--no-cache", action="store_true", help="re-read the whole context every step (same text, slower)")
    p.add_argument("--style", metavar="NAME",
                   help="models trained with styles (data.styles): write in this style (default: any of them)")

    p = add("translate", "translate text with a translation model (seq2seq, gru-attention): an argument, stdin or a file")
    p.add_argument("model", help="model directory of a translation model")
    p.add_argument("text", nargs="?", help="the text to translate (default: lines from --input, else from stdin)")
    p.add_argument("--input", "-i", metavar="FILE", help="translate each line of this UTF-8 file")
    p.add_argument("--output", "-o", metavar="FILE", help="write the translations here (default: stdout)")
    p.add_argument("--beams", type=bounded_int("--beams", 1, MAX_BEAMS),
                   help="beam search width (default 4; 1 with --temperature)")
    p.add_argument("--n-best", "-n", type=bounded_int("--n-best", 1, MAX_BEAMS), default=1,
                   help="hypotheses per text, best first, as TSV: line, rank, score, text (default 1)")
    p.add_argument("--max-new-tokens", type=bounded_int("--max-new-tokens", 1, MAX_CLI_NEW_TOKENS),
                   help="longest translation in tokens (default: the model's longest training target)")
    p.add_argument("--length-penalty", type=bounded_float("--length-penalty", 0.0, 10.0), default=0.6,
                   help="beam search: GNMT's alpha; higher favours longer translations, 0 turns it off (default 0.6)")
    p.add_argument("--no-repeat-ngram", type=bounded_int("--no-repeat-ngram", 0, MAX_NO_REPEAT_NGRAM), default=0,
                   metavar="N", help="never repeat an N-gram of tokens within a translation (default 0: off; 3 stops "
                                     "a looping output)")
    p.add_argument("--temperature", "-t", type=float, default=0.0,
                   help="> 0 samples instead of beam search (default 0)")
    p.add_argument("--top-p", type=float, help="sampling: keep the smallest set of tokens holding this probability")
    p.add_argument("--seed", type=SEED_OPTION, default=0, help="sampling: the random seed (default 0)")
    p.add_argument("--batch-size", type=bounded_int("--batch-size", 1, 4096), default=64,
                   help="texts decoded together (default 64)")

    p = add("chat", "talk with a dialogue model (seq2seq, gru-attention trained on conversations): interactive or --once")
    p.add_argument("model", help="model directory of a dialogue model")
    p.add_argument("--once", metavar="TEXT", help="answer this one user message and exit (for scripts)")
    p.add_argument("--max-new-tokens", type=bounded_int("--max-new-tokens", 1, MAX_CLI_NEW_TOKENS),
                   help="longest reply in tokens (default: the model's longest training target)")
    p.add_argument("--temperature", "-t", type=float, default=0.0, help="> 0 samples replies (default 0: greedy)")
    p.add_argument("--top-p", type=float, help="sampling: keep the smallest set of tokens holding this probability")
    p.add_argument("--seed", type=SEED_OPTION, default=0, help="sampling: the random seed (default 0)")

    p = add("eval", "measure a model: likelihood bounds and sample quality (FD, KD, precision/recall, ...)")
    p.add_argument("model", help="model directory")
    p.add_argument("--against", metavar="DATASET[:SPLIT]",
                   help="reference data, e.g. mnist:test or just val (default: the model's data set, test split)")
    p.add_argument("-n", type=bounded_int("-n", 1, 1_000_000),
                   help="examples/samples (default: the whole split for likelihood, up to 10,000 samples)")
    p.add_argument("--seed", type=SEED_OPTION, default=0)
    p.add_argument("--iwae-k", type=bounded_int("--iwae-k", 1, 100_000), default=1000, help="importance samples for the IWAE bound (default 1000; 5000 for papers)")
    p.add_argument("--features", help="feature network: lenet-mnist, lenet-digits or inception (default: by image shape)")
    p.add_argument("--metrics", help="comma-separated groups: likelihood,samples (default: all the model supports)")
    p.add_argument("--max-new-tokens", type=bounded_int("--max-new-tokens", 1, MAX_CLI_NEW_TOKENS), default=200,
                   help="text models: tokens per sample (default 200)")
    p.add_argument("--beams", type=bounded_int("--beams", 1, MAX_BEAMS),
                   help="translation/dialogue models: beam width of the outputs scored (default 4)")
    p.add_argument("--length-penalty", type=bounded_float("--length-penalty", 0.0, 10.0), metavar="ALPHA",
                   help="translation/dialogue models: GNMT length penalty of the beam (default 0.6; larger favours "
                        "longer outputs, 0 ranks by total log-probability)")
    p.add_argument("--no-repeat-ngram", type=bounded_int("--no-repeat-ngram", 0, MAX_NO_REPEAT_NGRAM), metavar="N",
                   help="translation/dialogue models: never repeat an N-gram of tokens within an output (default 0: off)")

    p = add("info", "a short summary of a model: family, size, data, what it can do, headline metrics")
    p.add_argument("model", help="model directory")
    p.add_argument("--json", action="store_true", help="print the whole config and metrics.json as JSON")

    add("recipes", "list the training recipes")
    add("datasets", "list the data sets and whether they are available offline")

    from .serve.cli import add_arguments as add_serve_arguments

    add_serve_arguments(add("serve", "serve the models in a folder over HTTP: the JSON API, /docs and the web studio"))
    from .tuning.cli import EXAMPLES as TUNE_EXAMPLES, add_arguments as add_tune_arguments

    EXAMPLES.setdefault("tune", TUNE_EXAMPLES)
    add_tune_arguments(add("tune", "search hyper-parameters with Optuna: each trial a training run, the best exported"))
    add_apply_commands(sub)
    return parser


def add_apply_commands(sub) -> None:
    """`genlab apply NAME MODEL ...`, one sub-command per registered application, and the
    `genlab compose` alias of `genlab apply compose`."""
    from .registry import applications

    apps = applications()
    apply = sub.add_parser(
        "apply", help="apply a trained model: " + ", ".join(apps),
        description="Apply a trained model; each application reports its number beside the obvious baseline.",
        epilog="applications:\n" + "\n".join(f"  {name:<12} {app.summary}" for name, app in apps.items())
        + "\n\nexamples:\n" + "\n".join(f"  {app.examples.splitlines()[1].strip()}" for app in apps.values())
        + "\n\nRun `genlab apply NAME --help` for an application's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = apply.add_subparsers(dest="task", metavar="NAME")
    for name, app in apps.items():
        _add_application(tasks, name, app)
    if "compose" in apps:
        _add_application(sub, "compose", apps["compose"])


def _add_application(sub, name: str, app) -> None:
    p = sub.add_parser(name, help=app.summary, description=app.summary, epilog=app.examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model directory")
    app.add_arguments(p)
    p.set_defaults(application=name)


def _cmd_train(args) -> None:
    from .api import train

    overrides = list(args.overrides)
    if args.resume:
        if args.recipe is not None:  # `train --resume DIR epochs=5`: argparse puts epochs=5 in recipe
            overrides.insert(0, args.recipe)
        run_dir = train(None, overrides, out=args.resume, resume=True, minutes=args.minutes)
    else:
        if args.recipe is None:
            raise GenlabError("which recipe?", "e.g. `genlab train vae-digits`; `genlab recipes` lists them")
        run_dir = train(args.recipe, overrides, out=args.out, minutes=args.minutes)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"model directory: {run_dir}")
    metrics_path = Path(run_dir) / "metrics.json"
    if (Path(run_dir) / "model.safetensors").is_file() and metrics_path.is_file():
        from .artifact import read_config, read_metrics
        from .registry import get_data_kind, get_family

        family = get_family(read_config(run_dir)["family"])
        if family.data_kind == "image" and "sample" in family.capabilities and "log_likelihood" not in family.capabilities:
            _print_sample_quality(run_dir)  # a GAN's losses say little about its samples
        else:
            metrics = read_metrics(run_dir)
            print("test metrics: " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.get("test", {}).items()))
        for name in ("samples.png", "reconstructions.png", "samples.txt", "metrics.json"):
            if (Path(run_dir) / name).is_file():
                print(f"  {Path(run_dir) / name}")
        print(get_data_kind(family.data_kind).next_steps(Path(run_dir)))
    return 0


def _print_sample_quality(run_dir) -> None:
    """The end-of-training line of a model without a likelihood: sample quality of up to 1,000
    samples in the shipped features, each beside its floor (recorded in metrics.json too)."""
    from .api import evaluate
    from .errors import InputTooLarge

    try:
        result = evaluate(run_dir, metrics=("samples",), n=1000, progress=False)
    except InputTooLarge:  # a test split smaller than 1,000 images: all of it
        result = evaluate(run_dir, metrics=("samples",), progress=False)
    sq = result["samples"]
    shown = [key for key in sq["metrics"] if key.split("[")[0] in ("fd", "kd", "precision", "recall")]
    print(f"sample quality (n={sq['n']}, floor in brackets): "
          + "  ".join(f"{key} {sq['metrics'][key]:.4g} ({sq['floor'][key]:.4g})" for key in shown))


def _cmd_sample(args) -> None:
    from .api import check_sampling_options
    from .artifact import load
    from .models.base import check_sample_count
    from .registry import get_data_kind

    if args.n is not None:
        check_sample_count(args.n)  # before loading, so a bad -n fails fast
    if args.sampler is not None:
        from .sampling.diffusion import check_sampler

        check_sampler(args.sampler)  # before loading, so a bad --sampler fails fast
    check_outputs(args)
    model = load(args.model)
    sampling = {"steps": args.steps, "sampler": args.sampler, "guidance_scale": args.guidance}
    check_sampling_options(model, {key: value for key, value in sampling.items() if value is not None})
    get_data_kind(model.data_kind).sample(model, {"model_dir": args.model, "n": args.n, "seed": args.seed,
                                                  "label": args.label, "output": args.output,
                                                  "steps": args.steps, "sampler": args.sampler,
                                                  "guidance_scale": args.guidance})


def _unescape(text: str) -> str:
    # Shells pass "\n" as a backslash and an n; a stop string almost always means a newline.
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _cmd_generate(args) -> None:
    from .artifact import load
    from .sampling import GenerationConfig, generate, stream

    config = GenerationConfig(  # validated before loading, so a bad setting fails fast
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram,
        num_return_sequences=args.num_return_sequences, num_beams=args.num_beams, stop=tuple(_unescape(s) for s in args.stop), seed=args.seed,
        use_cache=not args.no_cache, style=args.style,
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


def _translation_input(args) -> tuple[list[str], bool]:
    """The texts to translate (the argument, the lines of --input or of stdin), and whether they are lines."""
    if args.text is not None and args.input is not None:
        raise GenlabError("give the text as an argument or --input FILE, not both")
    if args.text is not None:
        return [args.text], False
    if args.input is not None:
        path = Path(args.input)
        if not path.is_file():
            raise GenlabError(f"--input {args.input}: no such file", "give a UTF-8 text file, one text per line")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise GenlabError(f"--input {args.input} is not UTF-8 text (invalid byte at offset {e.start})",
                              "save the file as UTF-8") from None
        return text.splitlines(), True
    if sys.stdin is None or sys.stdin.isatty():
        raise GenlabError("what should be translated?", 'genlab translate MODEL "text", --input FILE, or lines on stdin')
    return sys.stdin.read().splitlines(), True


def _cmd_translate(args) -> None:
    from .tasks.textpairs import translate

    check_outputs(args)
    texts, lines = _translation_input(args)
    if lines and not any(t.strip() for t in texts):
        raise GenlabError(f"there is no text to translate in {args.input or 'stdin'}", "give one text per line")
    results = translate(args.model, texts, num_beams=args.beams, n_best=args.n_best, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_p=args.top_p, seed=args.seed, length_penalty=args.length_penalty,
                        no_repeat_ngram_size=args.no_repeat_ngram, batch_size=args.batch_size, keep_empty=lines, progress=len(texts) > 1)

    def flat(text: str) -> str:  # one line per translation, whatever it holds
        return " ".join(text.splitlines())

    if args.n_best == 1:
        out = "".join(flat(text) + "\n" for text in results)
    else:
        out = "".join(f"{i}\t{rank}\t{h['score']:.4f}\t{flat(h['text'])}\n"
                      for i, hypotheses in enumerate(results, start=1) for rank, h in enumerate(hypotheses, start=1))
    if args.output is None:
        sys.stdout.write(out)
        sys.stdout.flush()
        return
    from .fileio import atomic_write_text

    try:
        atomic_write_text(Path(args.output), out)
    except OSError as e:
        raise GenlabError(f"cannot write {args.output}: {e.strerror or e}", "choose a writable output path") from None
    print(f"wrote {len(results)} translation{'s' if len(results) != 1 else ''} to {args.output}")


CHAT_HELP = "type a message and press Enter; /reset forgets the conversation, /quit (or Ctrl-D) leaves"


def _cmd_chat(args) -> None:
    from .tasks.textpairs import chat_stream, pair_model

    model = pair_model(args.model, dialogue=True)
    settings = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
                "seed": args.seed}

    def reply(history: list) -> str:
        pieces = []
        for piece in chat_stream(model, history, **settings):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        return "".join(pieces)

    if args.once is not None:
        reply([("user", args.once)])
        return
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        print(CHAT_HELP, file=sys.stderr)
    history: list = []
    while True:
        if interactive:
            sys.stderr.write("you> ")
            sys.stderr.flush()
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if not line:  # end of input
            break
        text = line.strip()
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            history = []
            print("(conversation forgotten)", file=sys.stderr)
            continue
        if text.startswith("/"):
            print(f"genlab: unknown command {text.split()[0]}; {CHAT_HELP}", file=sys.stderr)
            continue
        if not text:
            continue
        if interactive:
            sys.stdout.write("assistant> ")
        history.append(("user", text))
        try:
            history.append(("assistant", reply(history)))
        except GenlabError as e:  # a message the model cannot take: say so and keep the session
            history.pop()
            print(f"genlab: {e}", file=sys.stderr)


def _cmd_eval(args) -> None:
    from .api import evaluate
    from .artifact import write_evaluation
    from .registry import get_data_kind

    groups = tuple(g.strip() for g in args.metrics.split(",") if g.strip()) if args.metrics else None
    result = evaluate(args.model, against=args.against, n=args.n, seed=args.seed, iwae_k=args.iwae_k,
                      features=args.features, metrics=groups, max_new_tokens=args.max_new_tokens,
                      num_beams=args.beams, length_penalty=args.length_penalty,
                      no_repeat_ngram_size=args.no_repeat_ngram, write=False)
    for line in get_data_kind(result["kind"]).report(result):  # printed first: a failed write loses nothing
        print(line, flush=True)
    print(f"written to {write_evaluation(args.model, result)} in {result['seconds']:.1f} s")


def _cmd_info(args) -> None:
    """A short summary read from the files (the weights' header, not the weights): what the model
    is, what it can do and its headline numbers; --json prints everything."""
    from .artifact import check_weights, read_config, read_metrics
    from .registry import applications_for, get_family

    config = read_config(args.model)
    shapes = check_weights(args.model, config)  # meta-device model: shapes only
    n_params = sum(p.numel() for p in shapes.parameters())
    metrics = read_metrics(args.model)
    if args.json:
        print(json.dumps({"model": str(args.model), "parameters": n_params, "config": config, "metrics": metrics},
                         indent=2))
        return
    family = get_family(config["family"])
    capabilities = sorted(shapes.capabilities)
    commands = (["sample"] if "sample" in capabilities else []) + (["translate"] if "translate" in capabilities else []) \
        + ["eval"] + \
        [f"apply {name}" for name in applications_for(family.data_kind, capabilities)]
    data = config["data"]
    print(f"model       {args.model}: {config['family']}{' (conditional)' if config['model'].get('conditional') else ''}"
          f", {n_params:,} parameters, recipe {config.get('recipe')}, genlab {config.get('genlab_version')}")
    print(f"data        {family.data_kind}: {data.get('name')}" + (f", {len(config['classes'])} classes"
                                                                   if config.get("classes") else ""))
    if (Path(args.model) / "tokenizer.json").is_file():
        from .data.tokenizer_files import load_tokenizer

        tokenizer = load_tokenizer(Path(args.model))
        model_cfg = config["model"]
        window = (f"sources up to {model_cfg['max_source_len']} tokens, targets up to {model_cfg['max_target_len']}"
                  if "max_source_len" in model_cfg else f"context {model_cfg.get('block_size') or 'unlimited'} tokens")
        print(f"tokenizer   {tokenizer.kind}, {tokenizer.vocab_size:,} tokens; {window}")
    print(f"can         {', '.join(capabilities)}  ->  genlab {' | genlab '.join(commands)}")
    for section in ("test", "val"):
        if metrics.get(section):
            print(f"{section:<12}" + "  ".join(f"{k} {v:.4g}" for k, v in metrics[section].items()
                                                          if isinstance(v, (int, float))))
            break
    for data_split, result in (metrics.get("evals") or {}).items():
        print(f"{'evaluated':<12}against {data_split} in {result.get('seconds', 0):.0f} s (genlab info --json for the figures)")
    training = metrics.get("training", {})
    if training:
        print(f"{'trained':<12}{training.get('steps', '?')} steps in {training.get('wall_time_s', 0):.0f} s on "
              f"{training.get('device', '?')}")
    print("details     genlab info --json  (config, every metric)")


def _cmd_recipes(args) -> None:
    from .config import describe_budget_bands, list_recipes, load_recipe

    for name, description in list_recipes().items():
        print(f"{name:<22} {description}")
        for line in describe_budget_bands(load_recipe(name)):
            print(f"{'':<24}{line}")


def _cmd_datasets(args) -> None:
    from .data import data_root
    from .registry import data_kinds

    root = data_root()
    print(f"data directory: {root}  (set GENLAB_DATA_DIR to change)")
    for kind in data_kinds().values():
        catalogue = kind.catalogue
        print(f"{catalogue.heading}:")
        for name, description in catalogue.datasets.items():
            print(f"  {name:<16} {catalogue.status(name, root):<9} {description}")


def _cmd_serve(args) -> int:
    from .serve.cli import serve

    return serve(args)


def _cmd_tune(args) -> int:
    from .tuning.cli import run

    return run(args)


# The files a model directory is made of: no command's output may overwrite them.
MODEL_FILES = frozenset({"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "checkpoint.safetensors",
                         "best.safetensors", "history.jsonl"})
OUTPUT_OPTIONS = ("output", "gif", "decoded")  # the attributes that name files a command writes


def check_outputs(args) -> None:
    """Before any work: every output file may be written, and none is one of the model directory's own files."""
    model_dir = Path(args.model).resolve()
    for option in OUTPUT_OPTIONS:
        value = getattr(args, option, None)
        if not value:
            continue
        path = Path(value).resolve()
        if path.parent == model_dir and path.name in MODEL_FILES:
            raise GenlabError(f"-o {value} would overwrite the model's own {path.name}",
                              "write outputs outside the model directory, or under another name")
        folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if folder is None or not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise GenlabError(f"cannot write {value}: {'the file' if path.exists() else 'its folder'} is not writable",
                              "choose an output path in a writable directory")


def _cmd_apply(args) -> None:
    """`genlab apply NAME MODEL ...` (and `genlab compose MODEL ...`): load the model, check its
    kind, run the application's command."""
    from .artifact import load
    from .registry import get_application

    if getattr(args, "application", None) is None:
        raise GenlabError("which application?", "genlab apply NAME MODEL ...; `genlab apply --help` lists them")
    app = get_application(args.application)
    if app.check_arguments is not None:
        app.check_arguments(args)
    check_outputs(args)
    model = load(args.model)
    if model.data_kind not in app.kinds:
        raise GenlabError(f"genlab apply {app.name} works on {' or '.join(app.kinds)} models; {args.model} is a "
                          f"{model.data_kind} model", "`genlab apply --help` lists the applications")
    app.run(model, args)


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "generate": _cmd_generate, "translate": _cmd_translate,
            "chat": _cmd_chat, "eval": _cmd_eval,
            "info": _cmd_info, "recipes": _cmd_recipes, "datasets": _cmd_datasets, "apply": _cmd_apply,
            "serve": _cmd_serve, "compose": _cmd_apply, "tune": _cmd_tune}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)  # inside: a bounded option's type raises GenlabError
        # key=value settings after an option (`genlab train R --minutes 5 lr=0.003`): argparse
        # leaves them over, as it takes a positional list only in one piece.
        if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            parser.parse_args(argv)  # argparse's own message and exit code for what is really unknown
        if args.command is None:
            parser.print_help()
            return 0
        return COMMANDS[args.command](args) or 0
    except GenlabError as e:
        from .errors import TrainingInterrupted

        print(f"{'stopped' if isinstance(e, TrainingInterrupted) else 'error'}: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 130 if isinstance(e, TrainingInterrupted) else 2
    except BrokenPipeError:  # `genlab generate ... | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:  # a file-system problem no GenlabError anticipated: still one line, no traceback
        print(f"error: {e.strerror or e}{f' ({Path(e.filename).name})' if e.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line here, the traceback in a log file
        log = _log_traceback()
        print(f"error: unexpected {type(e).__name__} (details in {log}); please report it", file=sys.stderr)
        return 1


def _log_traceback() -> Path:
    """Append the current exception's traceback to genlab's error log; returns the log's path."""
    import tempfile
    import time
    import traceback

    log = Path(os.environ.get("GENLAB_ERROR_LOG", Path(tempfile.gettempdir()) / "genlab-errors.log"))
    try:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} genlab {' '.join(sys.argv[1:])}\n")
            f.write(traceback.format_exc())
    except OSError:
        pass
    return log


if __name__ == "__main__":
    sys.exit(main())
