"""What the server holds between requests: the model store (names -> directories -> a bounded
LRU cache of loaded models) and the inference pool (worker threads behind a bounded queue,
with a time limit per request).

Why threads: inference is torch code, which releases the GIL in its kernels, so a few worker
threads keep the event loop free to accept, validate and answer other requests (listing,
health, 429s) while models run. Each worker uses cpus // workers intra-op threads (set by
`genlab serve`), so the workers together do not oversubscribe the cores.

Why a bounded queue: a server that queues without limit answers every request eventually
and most of them too late. Past `workers + queue_size` jobs a request is refused at once
with 429 and a Retry-After estimated from recent job times, so clients back off instead of
piling up. A job's time limit counts from its arrival (queueing included); a job that runs
out of time is answered 504 and, when it has not started, dropped from the queue; text
generation also checks the deadline between tokens and stops early.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import GenlabError

# A model's name is its directory's name inside the models directory: one path component,
# no leading dot (hidden folders, "." and ".."), no separators.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # used with fullmatch: "$" would admit a final newline
CONFIG_NAME = "config.json"


class APIError(Exception):
    """An error answered as JSON with an HTTP status: what went wrong and what to do about it."""

    def __init__(self, status: int, message: str, hint: str | None = None, *, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.hint, self.param, self.headers = status, message, hint, param, headers or {}


class JobTimeout(Exception):
    """Raised inside a job that noticed its deadline has passed."""


# ----------------------------------------------------------------------------- models


class ModelStore:
    """Model directories by name, and a bounded LRU cache of loaded models.

    `models_dir` is a folder of model directories, or one model directory (it holds
    config.json): that model is then the only one, named after its folder."""

    def __init__(self, models_dir: str | Path, max_loaded: int = 4):
        given = Path(models_dir).expanduser()
        if not given.is_dir():
            raise GenlabError(f"no models directory at {given}",
                              "pass a folder whose sub-folders are model directories written by `genlab train`")
        if max_loaded < 1:
            raise GenlabError(f"the model cache must hold at least one model, got {max_loaded}")
        self.only: str | None = None  # the one model's name when models_dir is a model directory
        if (given / CONFIG_NAME).is_file():
            real = given.resolve()
            if not MODEL_NAME.fullmatch(real.name) or len(real.name) > 128 or real.parent == real:
                raise GenlabError(f"{given} is one model directory, and its folder's name {real.name!r} cannot be a "
                                  "model name", "rename the folder (letters, digits, '.', '_' and '-'), or pass the "
                                  "folder that holds it")
            self.only = real.name
            given = real.parent
        self.root = given.resolve()
        self.max_loaded = max_loaded
        # The forms of the models directory that error messages may contain (scrubbed before they go out).
        as_given = Path(models_dir).expanduser().absolute()
        as_given = as_given.parent if self.only is not None else as_given
        self.public_roots = tuple(dict.fromkeys((str(self.root), str(as_given))))
        self._cache: OrderedDict[str, tuple[tuple, object]] = OrderedDict()  # name -> (file stamps, model)
        self._checked: dict[str, tuple[tuple, GenlabError | None]] = {}  # name -> (file stamps, weights check)
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one load at a time per model

    @property
    def display_name(self) -> str:
        """What the server says it serves: the folder's name, never its path."""
        return self.only or self.root.name

    def names(self) -> list[str]:
        """The models in the directory: sub-folders holding a config.json (symlinks only within it)."""
        if self.only is not None:
            return [self.only] if (self.root / self.only / CONFIG_NAME).is_file() else []
        found = []
        for child in sorted(self.root.iterdir()):
            if MODEL_NAME.fullmatch(child.name) and self._inside(child) and (child / CONFIG_NAME).is_file():
                found.append(child.name)
        return found

    def _inside(self, path: Path) -> bool:
        real = path.resolve()
        return real != self.root and real.is_relative_to(self.root)

    def check(self, name: str, config: dict | None = None) -> GenlabError | None:
        """Why model `name` cannot be loaded, from its config and the safetensors header alone
        (genlab.artifact.check_weights: no weights read, nothing allocated), or None. Cached
        until its files change, with the capabilities the model will have (`capabilities`)."""
        from .. import artifact

        path = self.path(name)
        stamp = _stamp(path)
        with self._lock:
            checked = self._checked.get(name)
        if checked is not None and checked[0] == stamp:
            return checked[1]
        problem, capabilities = None, frozenset()
        try:
            config = config if config is not None else artifact.read_config(path)
            capabilities = frozenset(artifact.check_weights(path, config).capabilities)  # the meta-device model's
        except GenlabError as e:
            problem = e
        except Exception as e:  # a config.json edited into something no family can build
            logging.getLogger("genlab.serve").warning("model %r: %s: %s", name, type(e).__name__, e)
            problem = GenlabError(f"{CONFIG_NAME} of model {name!r} does not describe a model genlab can build "
                                  f"({type(e).__name__})", "restore the file or train the model again")
        with self._lock:
            self._checked[name] = (stamp, problem, capabilities)
        return problem

    def capabilities(self, name: str) -> frozenset:
        """What model `name` can do, as the loaded model would say (empty when it cannot be loaded)."""
        self.check(name)
        with self._lock:
            return self._checked[name][2]

    def path(self, name: str, param: str = "model") -> Path:
        """The directory of model `name`, which must lie inside the models directory."""
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or len(name) > 128:  # schemas.MAX_MODEL_NAME
            raise APIError(400, f"{name!r} is not a valid model name",
                           "a model name is the name of a folder in the models directory: letters, digits, "
                           "'.', '_' and '-', without '/' or '..'; GET /v1/models lists them", param=param)
        path = self.root / name
        if not path.exists() or (self.only is not None and name != self.only):
            known = self.names()
            listed = ", ".join(known[:8]) + (" ..." if len(known) > 8 else "")
            raise APIError(404, f"no model named {name!r}",
                           f"available models: {listed}" if known else "the models directory holds no models yet; "
                           "train one with `genlab train RECIPE --out MODELS_DIR/NAME`", param=param)
        if not self._inside(path):
            raise APIError(400, f"model {name!r} points outside the models directory",
                           "a model must live inside the directory the server was started with", param=param)
        if not (path / CONFIG_NAME).is_file():
            raise APIError(404, f"{name!r} is not a model directory (it has no {CONFIG_NAME})",
                           "GET /v1/models lists the models", param=param)
        return path

    def get(self, name: str):
        """The loaded model `name` (loaded on first use; reloaded when its files change)."""
        path = self.path(name)
        stamp = _stamp(path)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(name)
                return cached[1]
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # other requests for the same model wait for this load instead of repeating it
            with self._lock:
                cached = self._cache.get(name)
                if cached is not None and cached[0] == stamp:
                    self._cache.move_to_end(name)
                    return cached[1]
            from ..artifact import load

            try:
                problem = self.check(name)  # a damaged model is refused before anything is allocated
                if problem is not None:
                    raise problem
                model = load(path)
            except GenlabError as e:
                raise APIError(500, f"model {name!r} cannot be loaded: {e.message}", e.hint) from None
            with self._lock:
                self._cache[name] = (stamp, model)
                self._cache.move_to_end(name)
                while len(self._cache) > self.max_loaded:
                    self._cache.popitem(last=False)  # the least recently used
            return model

    def loaded(self) -> list[tuple[str, str]]:
        """(name, family) of the models in memory, least recently used first."""
        with self._lock:
            return [(name, model.family) for name, (_, model) in self._cache.items()]


def _stamp(path: Path) -> tuple:
    """Modification times of the files a model is built from: a retrained model is reloaded."""
    stamps = []
    for name in (CONFIG_NAME, "model.safetensors", "tokenizer.json"):
        try:
            stamps.append((path / name).stat().st_mtime_ns)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


# ----------------------------------------------------------------------------- inference


class InferencePool:
    """Worker threads behind a bounded queue; `run` awaits a job with a time limit."""

    def __init__(self, workers: int = 2, queue_size: int = 16, timeout_s: float = 60.0):
        if workers < 1 or queue_size < 0 or not timeout_s > 0:
            raise GenlabError(f"need workers >= 1, queue size >= 0 and a positive time limit; got {workers}, "
                              f"{queue_size}, {timeout_s}")
        self.workers, self.queue_size, self.timeout_s = workers, queue_size, float(timeout_s)
        self.capacity = workers + queue_size
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genlab-inference")
        self._lock = threading.Lock()
        self.jobs = 0  # running or waiting
        self.rejected = 0
        self._durations: deque[float] = deque(maxlen=64)  # recent job times, for Retry-After

    def submit(self, job, deadline: float) -> Future:
        """Queue job(deadline) on a worker, or raise a 429 APIError when the queue is full."""
        with self._lock:
            if self.jobs >= self.capacity:
                self.rejected += 1
                wait = self.retry_after()
                raise APIError(429, f"the server is busy: {self.jobs} jobs are running or waiting "
                               f"({self.workers} workers, queue of {self.queue_size})",
                               f"retry in {wait} s", headers={"Retry-After": str(wait)})
            self.jobs += 1
        future = self.executor.submit(self._timed, job, deadline)
        future.add_done_callback(self._release)  # also after a 504: the slot frees when the work really ends
        return future

    def _timed(self, job, deadline: float):
        start = time.monotonic()
        if start > deadline:  # waited out its time in the queue: do not start it
            raise JobTimeout()
        try:
            return job(deadline)
        finally:
            with self._lock:
                self._durations.append(time.monotonic() - start)

    def _release(self, _future: Future) -> None:
        with self._lock:
            self.jobs -= 1

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean recent job time times the queue ahead, per worker."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return int(min(60, max(1, math.ceil(mean * max(1, self.jobs - self.workers + 1) / self.workers))))

    def deadline(self) -> float:
        return time.monotonic() + self.timeout_s

    async def run(self, job):
        """job(deadline) on a worker; its result, or a 429 / 504 APIError."""
        deadline = self.deadline()
        future = self.submit(job, deadline)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except (asyncio.TimeoutError, JobTimeout):
            future.cancel()
            raise self.timeout_error() from None

    def timeout_error(self) -> APIError:
        return APIError(504, f"the request did not finish within the server's {self.timeout_s:g} s time limit",
                        "ask for less work (a smaller n, max_tokens, bars or steps), retry when the server is "
                        "less busy, or start it with a larger --timeout")

    def status(self) -> dict:
        with self._lock:
            return {"jobs": self.jobs, "capacity": self.capacity, "workers": self.workers,
                    "queue_size": self.queue_size, "rejected": self.rejected, "timeout_s": self.timeout_s}

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
