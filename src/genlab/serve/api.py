"""The genlab HTTP API: every trained model in a folder, served over FastAPI.

    genlab serve --models runs/          # http://127.0.0.1:8000 (the studio at /, this reference at /docs)

A model's name is its folder's name inside the models directory (--models may also be one
model directory: that model alone is served). Models load on first use into a bounded LRU
cache (--max-loaded); inference runs on worker threads (--workers) behind a bounded queue
(--queue); each request has a time limit (--timeout). Bounds are the constants in
genlab.limits and genlab.serve.schemas.

Access
------
Host header    only the names this server is known by: localhost, 127.0.0.1, ::1 and --host,
               plus each --allowed-host NAME ('*': any); others get 421 (this stops DNS rebinding).
               Bound to 0.0.0.0 or ::, any IP address in Host is accepted (names need --allowed-host).
Origin         a request from a web page of another site (an Origin header other than the server's
               own scheme://host:port) gets 403, unless --cors-origin ORIGIN names that site; those
               get CORS headers and preflight answers.
API key        with --api-key KEY or GENLAB_API_KEY, every /v1 and /metrics request (and any method
               but GET/HEAD) needs `Authorization: Bearer KEY` (401 with WWW-Authenticate: Bearer
               otherwise). GET /healthz, /docs, /openapi.json and the studio's static files are open.
               `genlab serve --host` with an address other machines reach refuses to start without
               a key, unless --insecure-no-auth.
Connections    a request's head and body must arrive within --read-timeout seconds (30; the body:
               408 and the connection closed); an idle kept-alive connection closes after 5 s;
               past --max-connections (64) open connections, a new one is answered 503 and closed;
               request heads are at most 32 KiB.
Nothing a reply says names the server's files: paths in messages and in config.json are shown
relative to the models directory or by file name, and a 500 names only the exception's type.

Endpoints
---------
GET  /healthz                      {"status": "ok", version, models_dir (its folder's name), models, loaded, queue}
GET  /metrics                      Prometheus text: genlab_requests_total{endpoint,method,code},
                                   genlab_request_duration_seconds (histogram by endpoint),
                                   genlab_errors_total{code}, genlab_models_loaded, genlab_model_loaded{model,family},
                                   genlab_inference_jobs / _capacity / _rejected_total
GET  /v1/models                    {"object": "list", "data": [{id, object: "model", created, family, data_kind,
                                   capabilities, endpoints (the routes that serve it: a text-pair model lists
                                   /v1/translations or /v1/chat/completions), recipe, classes, description: from its own
                                   config, e.g. "conditional vae on mnist", "gpt on file:notes.txt (char tokens)"}]};
                                   a model that cannot be loaded (damaged config.json, weights that do not match
                                   it) is listed as {id, object, created, error, hint}
GET  /v1/models/{name}             the same plus config (config.json; data files by name only), metrics (or null),
                                   previews {file: url}, samples_text (text models' samples.txt or null)
GET  /v1/models/{name}/previews/{file}   samples.png | reconstructions.png | class_histogram.png | samples.txt
POST /v1/images/generations        JSON {model, n: 1..64 = 16, seed: 0..2^63-1 = 0, class: 0..10^6 | null,
                                   response_format: "b64_json" | "png", stream: bool; diffusion models only:
                                   steps: 1..T (the model's timesteps), sampler: "ddpm" | "ddim" | "dpm++",
                                   guidance_scale: 0..100 (class-conditional); each defaults to the model's}
                                   -> {created, model, data: [{b64_json}]} (one PNG per image, native size)
                                   or image/png: one grid (tiles enlarged as in `genlab sample`)
                                   stream: true -> text/event-stream of `data: {type: "image_generation.partial_image",
                                   created, model, step, steps, partial_image_index, b64_json: PNG grid of x_t}`
                                   after each sampler step (at most 50), then `data: {type:
                                   "image_generation.completed", created, model, data: [{b64_json}]}`, `data: [DONE]`
POST /v1/completions               JSON, OpenAI shape: {model, prompt (<= 8000 chars) = "", max_tokens: 1..1024 = 64,
                                   temperature: 0..2 = 1 (0 greedy), top_p: (0, 1], n: 1..8 = 1,
                                   stop: string | up to 4 strings (1..64 chars), seed, stream: bool,
                                   top_k >= 1, repetition_penalty (0, 10] and no_repeat_ngram_size 0..64
                                   (genlab extensions)}
                                   -> {id, object: "text_completion", created, model,
                                       choices: [{text, index, logprobs: null, finish_reason: "stop" | "length"}],
                                       usage: {prompt_tokens, completion_tokens, total_tokens}}
                                   stream: true -> text/event-stream of `data: {...same shape, one piece...}`
                                   lines, a last chunk per choice with its finish_reason, then `data: [DONE]`
POST /v1/translations              JSON {model, text: string | up to 32 strings (<= 2000 chars each), num_beams: 1..16
                                   (default 4; 1 with a temperature), n_best: 1..16 = 1, max_tokens: 1..256 (default:
                                   the model's longest target), temperature: 0..2 = 0 (> 0 samples), top_p: (0, 1],
                                   seed, length_penalty: 0..10 = 0.6, no_repeat_ngram_size: 0..64 = 0}
                                   (translation models: genlab.translate)
                                   -> {object: "translation", model, translations: [one per text: a string, or with
                                       n_best > 1 its hypotheses best first: {text, score, log_prob, finished}]}
POST /v1/chat/completions          JSON, OpenAI chat shape: {model, messages: [{role: user | assistant | system, content
                                   (<= 4000 chars)}] (<= 64, the last the user's; system messages are set aside),
                                   max_tokens: 1..256, temperature: 0..2 = 0 (greedy), top_p: (0, 1], seed, stream: bool}
                                   (dialogue models: genlab.chat)
                                   -> {id, object: "chat.completion", created, model, choices: [{index: 0, message:
                                       {role: "assistant", content}, finish_reason: "stop" | "length"}], usage}
                                   stream: true -> text/event-stream of `data: {id, object: "chat.completion.chunk",
                                   created, model, choices: [{index: 0, delta: {content}, finish_reason: null}]}` (the
                                   first delta {role: "assistant", content: ""}), a last chunk with delta {} and its
                                   finish_reason, then `data: [DONE]`
POST /v1/music/compositions        JSON {model, bars: 1..64 = 16, seed, temperature: 0..2 = 1, top_p: (0, 1],
                                   tempo: 20..300 bpm, key: "C major" ..., prompt_midi: base64 MIDI (<= 1 MiB),
                                   response_format: "json" | "midi" | "wav" | "png"}
                                   -> {id, object: "music.composition", created, model, bars, seconds, notes,
                                       midi_b64, wav_b64, piano_roll_png_b64} or the one file asked for
POST /v1/images/inpaint            multipart: model, image (file), mask (file: white = missing, the image's size)
                                   or mask_spec (box:LEFT,TOP,WIDTH,HEIGHT | half:top|bottom|left|right |
                                   random:FRACTION), method: optimize | resample, steps: 1..1000 = 100,
                                   restarts: 1..8 = 4, class, seed, response_format: b64_json | png
POST /v1/images/upscale            multipart: model (a superres model), image (the low-resolution input), response_format
POST /v1/images/denoise            multipart: model (a denoiser), image, noise (optional: gaussian:SIGMA |
                                   salt-pepper:SHARE; the image is then taken as clean, noised first, and the
                                   reply adds noisy_b64_json, psnr_db and psnr_noisy_db), seed, response_format
                                   image replies: {created, model, data: [{b64_json}], width, height, ...}
POST /v1/anomaly/scores            multipart: model (a VAE), image (1..16 files, repeat the field),
                                   method: elbo | iwae | recon, samples: 1..64 = 8, seed
                                   -> {model, method, unit, scores: [{index, filename, score}]} (higher = more anomalous)
GET  /v1/applications              the applications with an HTTP route (from genlab.registry): name, summary,
                                   endpoint, body (json | multipart), files, studio
GET  /docs, /openapi.json          this reference as an offline HTML page, and the OpenAPI document

Uploaded images: PNG or JPEG, at most 4 MiB and 2048x2048 pixels each, converted and resized
to the model's shape (as `genlab apply` does). A request body is at most 16 MiB.

Errors are JSON, never a traceback: {"error": {"message", "hint", "type", "param", "code"}}.
    400  malformed JSON; a setting the model rejects (unknown class, a character outside a
         char model's alphabet, greedy with n > 1, ...); a model of the wrong kind; a bad model name ("../x")
    401  no or a wrong API key                       403  a request from another site's page
    404  unknown model or endpoint                  405  wrong method (the Allow header lists the right ones)
    408  the body did not arrive within --read-timeout
    413  body, file or image too large               415  wrong Content-Type, or an upload that is not an image
    421  a Host header the server does not answer to
    422  a field missing, of the wrong type, out of its bounds, or unknown
    429  queue full (Retry-After header)             503  too many open connections
    504  time limit exceeded
    500  a model directory that cannot be loaded (damaged, or its weights do not match its config.json);
         an unexpected failure (the reply names its type; the server log has the details)
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..errors import GenlabError
from .applications import application_routes, applications_router
from .docs import render_docs
from .errors import add_error_handlers
from .guard import AccessPolicy, RequestGuard
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .models import models_router
from .pairs import JSON_BODIES as PAIR_BODIES
from .pairs import pairs_router
from .runtime import InferencePool, ModelStore
from .sampling import JSON_BODIES, sampling_router
from .schemas import ErrorResponse

STUDIO_DIR = Path(__file__).resolve().parent / "studio"
ERRORS = "an error, as JSON: 4xx for the request (400, 404, 413, 415, 422, 429, ...), 5xx for the server (500, 504)"
API_REFERENCE = "Access\n" + (__doc__ or "").partition("Access\n")[2]  # shown at the top of /docs


def create_app(models_dir: str | Path, *, max_loaded_models: int = 4, workers: int = 2, queue_size: int = 16,
               request_timeout_s: float = 60.0, studio_dir: str | Path | None = STUDIO_DIR,
               allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = (), api_key: str | None = None,
               read_timeout_s: float = 30.0) -> FastAPI:
    """The FastAPI app serving the models in `models_dir` (see the module docstring): routers by
    area (service, models, sampling, the registered applications), then the studio.

    Access (guard.py): the Host header must be a loopback name or address, or one of
    `allowed_hosts` ("*": any; "0.0.0.0" or "::": any address literal); a request with an Origin
    other than the server's own is refused unless it is one of `cors_origins` (those get CORS
    headers); with `api_key`, every /v1 and /metrics request needs Authorization: Bearer KEY.
    A request body must arrive within `read_timeout_s`. (Test clients: TestClient(app,
    base_url="http://127.0.0.1").)

    Torch's thread count is the caller's business (`genlab serve` sets cpus // workers)."""
    if not read_timeout_s > 0:
        raise GenlabError(f"the read timeout must be positive, got {read_timeout_s}")
    access = AccessPolicy(allowed_hosts, cors_origins, api_key)
    store = ModelStore(models_dir, max_loaded_models)
    pool = InferencePool(workers, queue_size, request_timeout_s)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown()

    # docs_url=None: FastAPI's /docs loads Swagger UI from a CDN; ours (docs.py) works offline.
    # responses: every error is {"error": {...}} (errors.py); documented so, in place of FastAPI's 422 {"detail": [...]}.
    app = FastAPI(title="genlab", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description=API_REFERENCE, responses={"default": {"model": ErrorResponse, "description": ERRORS}})
    app.state.store, app.state.pool, app.state.metrics, app.state.access = store, pool, metrics, access
    routes = application_routes()
    json_bodies = {**JSON_BODIES, **PAIR_BODIES, **{r.path: r.form for _, r in routes if r.body == "json"}}
    app.add_middleware(RequestGuard, metrics=metrics, json_bodies=set(json_bodies),
                       multipart_bodies={r.path for _, r in routes if r.body == "multipart"}, access=access,
                       read_timeout_s=read_timeout_s)
    add_error_handlers(app, json_bodies)
    _add_service_routes(app, store, pool, metrics)
    routers = (models_router(), sampling_router(), pairs_router(), applications_router())
    for router in routers:
        app.include_router(router)
    api_routes = [r for r in app.routes if getattr(r, "methods", None)] + [r for router in routers for r in router.routes]
    _mount_studio(app, studio_dir, api_routes)
    return app


def _add_service_routes(app: FastAPI, store: ModelStore, pool: InferencePool, metrics: Metrics) -> None:
    @app.get("/healthz", summary="liveness and what the server holds", tags=["service"])
    async def healthz():
        names = await run_in_threadpool(store.names)
        return {"status": "ok", "version": __version__, "models_dir": store.display_name, "models": len(names),
                "loaded": [name for name, _ in store.loaded()], "queue": pool.status()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, tags=["service"])
    async def prometheus_metrics():
        return PlainTextResponse(metrics.render(store.loaded(), pool.status()), media_type=METRICS_CONTENT_TYPE)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(render_docs(app.openapi()))


def _mount_studio(app: FastAPI, studio_dir: str | Path | None, api_routes: list) -> None:
    """The studio last: it answers every path the API does not. A request for an API path
    with a method the API does not take reaches the mount too; it is answered 405 with the
    methods that path does take (not the studio's GET, HEAD)."""
    studio = Path(studio_dir) if studio_dir is not None else None
    if studio is not None and (studio / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        files = StaticFiles(directory=studio, html=True)

        async def studio_files(scope, receive, send):
            if scope["type"] == "http":
                methods = sorted({m for route in api_routes if route.path_regex.match(scope["path"])
                                  for m in route.methods})
                if methods:
                    raise StarletteHTTPException(405, headers={"Allow": ", ".join(methods)})
            await files(scope, receive, send)

        app.mount("/", studio_files, name="studio")
        return

    @app.get("/", include_in_schema=False)
    async def home():
        return HTMLResponse("<!doctype html><title>genlab</title><h1>genlab server</h1><p>The studio page is "
                            "not installed. <a href='/docs'>API reference</a> · <a href='/v1/models'>models</a></p>")
