"""The genlab HTTP API: every trained model in a folder, served over FastAPI.

    genlab serve --models runs/          # http://127.0.0.1:8000 (the studio at /, this reference at /docs)

A model's name is its folder's name inside the models directory. Models load on first use
into a bounded LRU cache (--max-loaded); inference runs on worker threads (--workers) behind
a bounded queue (--queue); each request has a time limit (--timeout). Bounds are the
constants in genlab.serve.schemas.

Endpoints
---------
GET  /healthz                      {"status": "ok", models, loaded models, queue}
GET  /metrics                      Prometheus text: genlab_requests_total{endpoint,method,code},
                                   genlab_request_duration_seconds (histogram by endpoint),
                                   genlab_errors_total{code}, genlab_models_loaded, genlab_model_loaded{model,family},
                                   genlab_inference_jobs / _capacity / _rejected_total
GET  /v1/models                    {"object": "list", "data": [{id, object: "model", created, family, data_kind,
                                   capabilities, endpoints, recipe, description}]}
GET  /v1/models/{name}             the same plus config (config.json), metrics (metrics.json or null),
                                   previews {file: url}, samples_text (text models' samples.txt or null)
GET  /v1/models/{name}/previews/{file}   samples.png | reconstructions.png | class_histogram.png | samples.txt
POST /v1/images/generations        JSON {model, n: 1..64 = 16, seed: 0..2^32-1 = 0, class: int >= 0 | null,
                                   response_format: "b64_json" | "png"}
                                   -> {created, model, data: [{b64_json}]} (one PNG per image, native size)
                                   or image/png: one grid (tiles enlarged as in `genlab sample`)
POST /v1/completions               JSON, OpenAI shape: {model, prompt (<= 8000 chars) = "", max_tokens: 1..1024 = 64,
                                   temperature: 0..2 = 1 (0 greedy), top_p: (0, 1], n: 1..8 = 1,
                                   stop: string | up to 4 strings (1..64 chars), seed, stream: bool,
                                   top_k >= 1 and repetition_penalty (0, 10] (genlab extensions)}
                                   -> {id, object: "text_completion", created, model,
                                       choices: [{text, index, logprobs: null, finish_reason: "stop" | "length"}],
                                       usage: {prompt_tokens, completion_tokens, total_tokens}}
                                   stream: true -> text/event-stream of `data: {...same shape, one piece...}`
                                   lines, a last chunk per choice with its finish_reason, then `data: [DONE]`
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
    404  unknown model or endpoint                  405  wrong method
    413  body, file or image too large               415  wrong Content-Type, or an upload that is not an image
    422  a field missing, of the wrong type, out of its bounds, or unknown
    429  queue full (Retry-After header)             504  time limit exceeded
    500  a model directory that cannot be loaded
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from .applications import application_routes, applications_router
from .docs import render_docs
from .errors import add_error_handlers
from .guard import RequestGuard
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .models import models_router
from .runtime import InferencePool, ModelStore
from .sampling import JSON_BODIES, sampling_router

STUDIO_DIR = Path(__file__).resolve().parent / "studio"
API_REFERENCE = "Endpoints\n" + (__doc__ or "").partition("Endpoints\n")[2]  # shown at the top of /docs


def create_app(models_dir: str | Path, *, max_loaded_models: int = 4, workers: int = 2, queue_size: int = 16,
               request_timeout_s: float = 60.0, studio_dir: str | Path | None = STUDIO_DIR) -> FastAPI:
    """The FastAPI app serving the models in `models_dir` (see the module docstring): routers by
    area (service, models, sampling, the registered applications), then the studio.

    Torch's thread count is the caller's business (`genlab serve` sets cpus // workers)."""
    store = ModelStore(models_dir, max_loaded_models)
    pool = InferencePool(workers, queue_size, request_timeout_s)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown()

    # docs_url=None: FastAPI's /docs loads Swagger UI from a CDN; ours (docs.py) works offline.
    app = FastAPI(title="genlab", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description=API_REFERENCE)
    app.state.store, app.state.pool, app.state.metrics = store, pool, metrics
    routes = application_routes()
    json_bodies = {**JSON_BODIES, **{r.path: r.form for _, r in routes if r.body == "json"}}
    app.add_middleware(RequestGuard, metrics=metrics, json_bodies=set(json_bodies),
                       multipart_bodies={r.path for _, r in routes if r.body == "multipart"})
    add_error_handlers(app, json_bodies)
    _add_service_routes(app, store, pool, metrics)
    for router in (models_router(), sampling_router(), applications_router()):
        app.include_router(router)
    _mount_studio(app, studio_dir)
    return app


def _add_service_routes(app: FastAPI, store: ModelStore, pool: InferencePool, metrics: Metrics) -> None:
    @app.get("/healthz", summary="liveness and what the server holds", tags=["service"])
    async def healthz():
        names = await run_in_threadpool(store.names)
        return {"status": "ok", "version": __version__, "models_dir": str(store.root), "models": len(names),
                "loaded": [name for name, _ in store.loaded()], "queue": pool.status()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, tags=["service"])
    async def prometheus_metrics():
        return PlainTextResponse(metrics.render(store.loaded(), pool.status()), media_type=METRICS_CONTENT_TYPE)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(render_docs(app.openapi()))


def _mount_studio(app: FastAPI, studio_dir: str | Path | None) -> None:
    """The studio last: it answers every path the API does not."""
    studio = Path(studio_dir) if studio_dir is not None else None
    if studio is not None and (studio / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=studio, html=True), name="studio")
        return

    @app.get("/", include_in_schema=False)
    async def home():
        return HTMLResponse("<!doctype html><title>genlab</title><h1>genlab server</h1><p>The studio page is "
                            "not installed. <a href='/docs'>API reference</a> · <a href='/v1/models'>models</a></p>")
