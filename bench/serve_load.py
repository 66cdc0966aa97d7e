"""Benchmark: the HTTP API under concurrent load — throughput and p50/p99 latency per endpoint.

Starts `genlab serve` in a subprocess on 127.0.0.1 (a free port), warms every model up with one
request each, then sends --requests requests from --concurrency concurrent clients, drawn in a
seeded random order from a weighted --mix of endpoints, and measures each request from send
to the last byte of the response (for streamed completions also the time to the first text).
The clients are asyncio + httpx in this process; the server is a separate process, as in use.

Models: --models DIR, or by default runs/bench-serve-models/, where MNIST-sized models with the
recipes' own architectures are trained briefly if missing (speed depends on the architecture,
not on how well a model is trained): vae-mnist, gpt-shakespeare-char (1.8M parameters),
sr-mnist-x2 and denoise-mnist.

Writes bench/results/serve_load.json and prints a table.

    GENLAB_DATA_DIR=../shared/data python bench/serve_load.py
    python bench/serve_load.py --requests 2000 --concurrency 32 --workers 2 --queue 64
    python bench/serve_load.py --mix generations=1,completions=1 --requests 200   # some endpoints only
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "bench"))

from common import machine, write_result  # noqa: E402

DEFAULT_MODELS = REPO / "runs" / "bench-serve-models"
QUIET = ["train.progress=false", "train.tensorboard=false", "train.eval_batches=2", "train.samples_every=1000000",
         "train.checkpoint_every=1000000"]
TRAIN = {  # name -> (recipe, overrides)
    "vae": ("vae-mnist", ["steps=100"]),
    "gpt": ("gpt-shakespeare-char", ["steps=30"]),
    "sr": ("sr-mnist-x2", ["steps=30"]),
    "denoiser": ("denoise-mnist", ["steps=30"]),
}
DEFAULT_MIX = "models=1,healthz=1,generations=3,completions=3,stream=2,inpaint=1,upscale=2,denoise=2,anomaly=1"


def ensure_models(root: Path) -> Path:
    import genlab

    root.mkdir(parents=True, exist_ok=True)
    for name, (recipe, overrides) in TRAIN.items():
        if not (root / name / "model.safetensors").is_file():
            print(f"training {recipe} -> {root / name} (brief: serving speed depends on the architecture only)")
            genlab.train(recipe, [*overrides, *QUIET], out=root / name)
    return root


def sample_pngs(models: Path, n: int) -> list[bytes]:
    """n 28x28 input images: samples of the VAE (no data set needed)."""
    import genlab
    from genlab.imageio import to_uint8
    from PIL import Image

    images = to_uint8(genlab.sample(genlab.load(models / "vae"), n, seed=0))[:, 0].numpy()
    encoded = []
    for array in images:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def request_kinds(pngs: list[bytes]) -> dict:
    """name -> (method, path, httpx keyword arguments)."""
    from PIL import Image

    small = io.BytesIO()
    Image.open(io.BytesIO(pngs[0])).resize((14, 14)).save(small, format="PNG")
    image = ("digit.png", pngs[0], "image/png")
    return {
        "models": ("GET", "/v1/models", {}),
        "healthz": ("GET", "/healthz", {}),
        "generations": ("POST", "/v1/images/generations", {"json": {"model": "vae", "n": 16}}),
        "completions": ("POST", "/v1/completions", {"json": {"model": "gpt", "prompt": "ROMEO:", "max_tokens": 64,
                                                             "temperature": 0.8}}),
        "stream": ("POST", "/v1/completions", {"json": {"model": "gpt", "prompt": "JULIET:", "max_tokens": 64,
                                                        "temperature": 0.8, "stream": True}}),
        "inpaint": ("POST", "/v1/images/inpaint", {"data": {"model": "vae", "mask_spec": "half:bottom", "steps": "50",
                                                            "restarts": "2"}, "files": {"image": image}}),
        "upscale": ("POST", "/v1/images/upscale", {"data": {"model": "sr"},
                                                   "files": {"image": ("small.png", small.getvalue(), "image/png")}}),
        "denoise": ("POST", "/v1/images/denoise", {"data": {"model": "denoiser"}, "files": {"image": image}}),
        "anomaly": ("POST", "/v1/anomaly/scores", {"data": {"model": "vae", "samples": "8"},
                                                   "files": [("image", (f"{i}.png", p, "image/png"))
                                                             for i, p in enumerate(pngs[:4])]}),
    }


def parse_mix(text: str, kinds: dict) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in kinds:
            raise SystemExit(f"unknown endpoint {name!r} in --mix; choose from {', '.join(kinds)}")
        mix[name.strip()] = float(weight or 1)
    return mix


async def run_load(url: str, plan: list[str], kinds: dict, concurrency: int) -> list[dict]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        async def one(name: str) -> dict:
            method, path, kwargs = kinds[name]
            async with gate:
                start = time.perf_counter()
                first = None
                async with http.stream(method, path, **kwargs) as response:
                    async for _ in response.aiter_bytes():
                        first = first or time.perf_counter() - start
                return {"name": name, "status": response.status_code, "seconds": time.perf_counter() - start,
                        "first_byte_s": first}

        return await asyncio.gather(*(one(name) for name in plan))


def percentile_ms(seconds: list[float], q: float) -> float | None:
    """The q-th percentile in milliseconds (numpy's linear interpolation); None when nothing succeeded,
    so the JSON holds null rather than NaN."""
    return 1000 * float(np.percentile(seconds, q)) if seconds else None


def shown_ms(value: float | None) -> str:
    return f"{value:>10.1f}" if value is not None else f"{'-':>10}"


def summarize(results: list[dict], wall_s: float) -> dict:
    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    rows = {}
    for name, group in sorted(by_name.items()):
        ok = [r["seconds"] for r in group if r["status"] < 400]
        codes: dict[str, int] = {}
        for r in group:
            codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
        rows[name] = {"requests": len(group), "ok": len(ok), "status_codes": codes,
                      "p50_ms": percentile_ms(ok, 50), "p99_ms": percentile_ms(ok, 99),
                      "mean_ms": 1000 * sum(ok) / max(1, len(ok)), "throughput_rps": len(group) / wall_s}
        if name == "stream":
            rows[name]["first_byte_p50_ms"] = percentile_ms([r["first_byte_s"] for r in group if r["first_byte_s"]], 50)
    everything = [r["seconds"] for r in results if r["status"] < 400]
    return {"endpoints": rows, "all": {"requests": len(results), "ok": len(everything), "wall_s": wall_s,
                                       "throughput_rps": len(results) / wall_s,
                                       "p50_ms": percentile_ms(everything, 50),
                                       "p99_ms": percentile_ms(everything, 99),
                                       "server_errors": sum(r["status"] >= 500 for r in results),
                                       "rejected_429": sum(r["status"] == 429 for r in results)}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(models: Path, port: int, args) -> subprocess.Popen:
    command = [sys.executable, "-m", "genlab", "serve", "--models", str(models), "--port", str(port),
               "--workers", str(args.workers), "--queue", str(args.queue), "--timeout", str(args.timeout)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"the server exited:\n{server.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not answer /healthz within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help=f"models directory (default: {DEFAULT_MODELS}, trained if missing)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"endpoint=weight,... (default {DEFAULT_MIX})")
    parser.add_argument("--workers", type=int, default=2, help="server inference workers (default 2)")
    parser.add_argument("--queue", type=int, default=32, help="server queue size (default 32)")
    parser.add_argument("--timeout", type=float, default=120.0, help="server time limit per request (default 120 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="output path (default bench/results/serve_load.json)")
    args = parser.parse_args()

    models = args.models or ensure_models(DEFAULT_MODELS)
    kinds = request_kinds(sample_pngs(models, 4))
    mix = parse_mix(args.mix, kinds)
    names, weights = list(mix), list(mix.values())
    plan = random.Random(args.seed).choices(names, weights=weights, k=args.requests)

    port = free_port()
    server = start_server(models, port, args)
    url = f"http://127.0.0.1:{port}"
    try:
        warmup = asyncio.run(run_load(url, names, kinds, 1))  # loads every model once
        failed = [r for r in warmup if r["status"] >= 400]
        if failed:
            raise SystemExit(f"warm-up requests failed: {failed}")
        start = time.perf_counter()
        results = asyncio.run(run_load(url, plan, kinds, args.concurrency))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    summary = summarize(results, wall)
    from genlab.serve.cli import default_torch_threads

    workers_threads = default_torch_threads(args.workers)  # what `genlab serve` sets in the server process
    record = {"benchmark": "serve_load", "machine": machine("cpu"),
              "settings": {"requests": args.requests, "concurrency": args.concurrency, "mix": mix,
                           "workers": args.workers, "torch_threads_per_worker": workers_threads, "queue": args.queue,
                           "timeout_s": args.timeout, "models": str(models), "seed": args.seed},
              **summary}
    path = write_result(record, args.json, "serve_load")
    print(f"\n{args.requests} requests, {args.concurrency} concurrent, server with {args.workers} workers x "
          f"{workers_threads} torch threads on {os.cpu_count()} cores; {wall:.1f} s")
    print(f"{'endpoint':<13}{'requests':>9}{'ok':>6}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}  status codes")
    for name, row in summary["endpoints"].items():
        extra = f"  (first text p50 {row['first_byte_p50_ms']:.0f} ms)" if row.get("first_byte_p50_ms") is not None else ""
        print(f"{name:<13}{row['requests']:>9}{row['ok']:>6}{row['throughput_rps']:>8.2f}{shown_ms(row['p50_ms'])}"
              f"{shown_ms(row['p99_ms'])}  {row['status_codes']}{extra}")
    total = summary["all"]
    print(f"{'all':<13}{total['requests']:>9}{total['ok']:>6}{total['throughput_rps']:>8.2f}{shown_ms(total['p50_ms'])}"
          f"{shown_ms(total['p99_ms'])}  5xx: {total['server_errors']}, 429: {total['rejected_429']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
