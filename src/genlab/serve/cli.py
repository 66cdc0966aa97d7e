"""`genlab serve --models DIR`: the HTTP API and the studio under uvicorn."""

from __future__ import annotations

import ipaddress
import json
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
    p.add_argument("--models", required=True, metavar="DIR",
                   help="folder whose sub-folders are model directories (or one model directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=2, help="inference worker threads (default 2)")
    p.add_argument("--queue", type=int, default=16, help="jobs that may wait for a worker before 429 (default 16)")
    p.add_argument("--timeout", type=float, default=60.0, help="time limit per request in seconds (default 60)")
    p.add_argument("--max-loaded", type=int, default=4, help="models kept in memory, least recently used dropped (default 4)")
    p.add_argument("--torch-threads", type=int, help="intra-op threads per worker (default: CPU cores / workers)")
    p.add_argument("--api-key", metavar="KEY", default=None,
                   help=f"every /v1 and /metrics request must send Authorization: Bearer KEY (default: ${API_KEY_ENV}; "
                   "prefer the variable: a command line is visible to other users of the machine)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name the server is reached by, accepted in the Host header besides localhost, "
                   "127.0.0.1, ::1 and --host (repeatable; '*' accepts any)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web site (scheme://host:port) whose pages may call the API; requests from other "
                   "sites' pages are refused (repeatable)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow a --host other machines can reach without an API key")
    p.add_argument("--max-connections", type=int, default=64,
                   help="open connections at most; more are answered 503 and closed (default 64)")
    p.add_argument("--read-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="time a client has to send a request's headers and body (default 30)")


API_KEY_ENV = "GENLAB_API_KEY"
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this long
MAX_HEADER_BYTES = 32 * 1024  # a request's line and headers (h11's incomplete-event limit)


def serve(args) -> int:
    import torch
    import uvicorn

    from .api import create_app

    if not 0 < args.port < 65536:
        raise GenlabError(f"--port must be between 1 and 65535, got {args.port}")
    for flag, value, low in (("--workers", args.workers, 1), ("--queue", args.queue, 0), ("--max-loaded", args.max_loaded, 1),
                             ("--max-connections", args.max_connections, 1)):
        if value < low:
            raise GenlabError(f"{flag} must be at least {low}, got {value}")
    for flag, value in (("--timeout", args.timeout), ("--read-timeout", args.read_timeout)):
        if not value > 0:
            raise GenlabError(f"{flag} must be positive, got {value}")
    threads = args.torch_threads if args.torch_threads is not None else default_torch_threads(args.workers)
    if threads < 1:
        raise GenlabError(f"--torch-threads must be at least 1, got {threads}")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and (not api_key or not api_key.isprintable() or any(c.isspace() for c in api_key)
                                or not api_key.isascii()):
        raise GenlabError("the API key must be printable ASCII without spaces",
                          f"pass another --api-key or {API_KEY_ENV}", param="api-key")
    if not is_loopback(args.host) and api_key is None:
        if not args.insecure_no_auth:  # one line, before anything binds
            raise GenlabError(f"--host {args.host} lets other machines reach the server, which then needs an API "
                              f"key: pass --api-key KEY or set {API_KEY_ENV} (or --insecure-no-auth to serve without one)")
        warn(f"binding {args.host} without an API key (--insecure-no-auth): anyone who can reach this machine "
             "can use the server")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = create_app(args.models, max_loaded_models=args.max_loaded, workers=args.workers, queue_size=args.queue,
                     request_timeout_s=args.timeout, allowed_hosts=[args.host, *args.allowed_host],
                     cors_origins=args.cors_origin, api_key=api_key, read_timeout_s=args.read_timeout)
    listening = bind(args.host, args.port)
    torch.set_num_threads(threads)  # process-wide: only once the server will surely run
    store = app.state.store
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}"
    served = f"the model {store.root / store.only}" if store.only else f"{len(store.names())} models from {store.root}"
    print(f"serving {served} at {url}  (studio {url}/, API reference {url}/docs; {args.workers} workers x {threads} "
          f"torch threads, queue {args.queue}, time limit {args.timeout:g} s; "
          f"{'API key required' if api_key else 'no API key'})", flush=True)
    if args.host in ("0.0.0.0", "::") and not args.allowed_host:
        print("note: clients reaching the server by a name (not an address) need --allowed-host NAME", flush=True)
    server = uvicorn.Server(server_config(app, args.host, args.port, read_timeout_s=args.read_timeout,
                                          max_connections=args.max_connections))
    server.run(sockets=[listening])
    return 0


def server_config(app, host: str = "127.0.0.1", port: int = 8000, *, read_timeout_s: float = 30.0,
                  max_connections: int = 64, log_level: str = "info"):
    """uvicorn's configuration with the bounds a server facing slow or many clients needs:
    a deadline for each request's headers (the protocol below), idle keep-alive connections
    closed after KEEP_ALIVE_S, headers of at most MAX_HEADER_BYTES, and at most
    `max_connections` open connections. (The body's deadline is the app's: guard.py.)"""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                          http=deadline_protocol(read_timeout_s, max_connections), timeout_keep_alive=KEEP_ALIVE_S,
                          limit_concurrency=max_connections + 1, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          ws="none")  # no WebSocket routes: an Upgrade is an ordinary request


def deadline_protocol(read_timeout_s: float, max_connections: int):
    """uvicorn's h11 protocol with what it lacks against slow clients: a connection that has
    not sent a complete request head within `read_timeout_s` (from its opening, or from the
    end of the previous response) is closed, however slowly it trickles bytes in (uvicorn's
    keep-alive timer restarts on every byte); and a connection past `max_connections` is
    answered 503 at once and closed."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from .errors import error_body

    busy = json.dumps(error_body(503, f"the server has {max_connections} open connections, its limit",
                                 "retry in a few seconds")).encode()
    busy_reply = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\n"
                  b"connection: close\r\ncontent-length: " + str(len(busy)).encode() + b"\r\n\r\n" + busy)

    class DeadlineH11Protocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(busy_reply)
                transport.close()
                return
            self._update_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._update_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._update_deadline()

        def connection_lost(self, exc) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def _waiting_for_request(self) -> bool:
            """No request is being answered: the connection owes us a request head (or the rest
            of a body the app did not read)."""
            return self.cycle is None or self.cycle.response_complete or self.conn.their_state is h11.IDLE

        def _update_deadline(self) -> None:
            if self.transport is None or self.transport.is_closing():
                self._cancel_deadline()
            elif not self._waiting_for_request():
                self._cancel_deadline()  # the app answers it (guard.py bounds the body's arrival)
            elif self._deadline is None:  # started once per wait: trickled bytes do not extend it
                self._deadline = self.loop.call_later(read_timeout_s, self._deadline_passed)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _deadline_passed(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and self._waiting_for_request():
                self.transport.close()

    return DeadlineH11Protocol


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
