"""`genlab serve --models DIR`: the HTTP API and the studio under uvicorn."""

from __future__ import annotations

import ipaddress
import os
import socket

from ..errors import GenlabError, warn

LOOPBACK_NAMES = ("localhost",)


def default_torch_threads(workers: int, cpus: int | None = None) -> int:
    """Intra-op threads per worker so that all workers together use each core once:
    torch's default (one thread per core in *every* calling thread) would run workers x cores
    threads on the cores and make every request slower."""
    return max(1, (cpus or os.cpu_count() or 1) // workers)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(p) -> None:
    """The options of `genlab serve` (the main parser's sub-command)."""
    p.add_argument("--models", required=True, metavar="DIR", help="folder whose sub-folders are model directories")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=2, help="inference worker threads (default 2)")
    p.add_argument("--queue", type=int, default=16, help="jobs that may wait for a worker before 429 (default 16)")
    p.add_argument("--timeout", type=float, default=60.0, help="time limit per request in seconds (default 60)")
    p.add_argument("--max-loaded", type=int, default=4, help="models kept in memory, least recently used dropped (default 4)")
    p.add_argument("--torch-threads", type=int, help="intra-op threads per worker (default: CPU cores / workers)")


def serve(args) -> int:
    import torch
    import uvicorn

    from .api import create_app

    if not 0 < args.port < 65536:
        raise GenlabError(f"--port must be between 1 and 65535, got {args.port}")
    for flag, value, low in (("--workers", args.workers, 1), ("--queue", args.queue, 0), ("--max-loaded", args.max_loaded, 1)):
        if value < low:
            raise GenlabError(f"{flag} must be at least {low}, got {value}")
    if not args.timeout > 0:
        raise GenlabError(f"--timeout must be positive, got {args.timeout}")
    threads = args.torch_threads if args.torch_threads is not None else default_torch_threads(args.workers)
    if threads < 1:
        raise GenlabError(f"--torch-threads must be at least 1, got {threads}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = create_app(args.models, max_loaded_models=args.max_loaded, workers=args.workers, queue_size=args.queue,
                     request_timeout_s=args.timeout)
    listening = bind(args.host, args.port)
    if not is_loopback(args.host):
        warn(f"binding {args.host}: other machines can reach this server, which has no authentication")
    torch.set_num_threads(threads)  # process-wide: only once the server will surely run
    store = app.state.store
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}"
    print(f"serving {len(store.names())} models from {store.root} at {url}  (studio {url}/, API reference "
          f"{url}/docs; {args.workers} workers x {threads} torch threads, queue {args.queue}, "
          f"time limit {args.timeout:g} s)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[listening])
    return 0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a GenlabError saying why not (uvicorn would only log it)."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every small response waits ~40 ms for a delayed ACK (Nagle's algorithm).
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as e:
        listening.close()
        raise GenlabError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                          "pass another --port, or stop the program using this one") from None
    return listening
