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
GET  /docs, /openapi.json          this reference as an offline HTML page, and the OpenAPI document

Uploaded images: PNG or JPEG, at most 4 MiB and 2048x2048 pixels each, converted and resized
to the model's shape (as `genlab apply` does). A request body is at most 16 MiB.

Errors are JSON, never a traceback: {"error": {"message", "hint", "type", "param", "code"}}.
    400  malformed JSON; a setting the model rejects (unknown class, a character outside a
         char model's alphabet, greedy with n > 1, ...); a model of the wrong kind; a bad model name ("../x")
    404  unknown model or endpoint                  405  wrong method
    413  body, file or image too large               415  wrong Content-Type, or an upload that is not an image
    422  a field missing, of the wrong type, out of its bounds, or unknown
    429  queue full (Retry-After header)             501  music composition not installed
    504  time limit exceeded                         500  a model directory that cannot be loaded
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import Body, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..errors import GenlabError
from . import jobs
from .docs import render_docs
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .runtime import APIError, InferencePool, JobTimeout, ModelStore
from .schemas import (
    MAX_ANOMALY_IMAGES, MAX_ANOMALY_SAMPLES, MAX_BODY_BYTES, MAX_INPAINT_STEPS, MAX_RESTARTS, MAX_SEED,
    MAX_UPLOAD_BYTES, CompletionRequest, CompositionRequest, ImageGenerationRequest,
)

log = logging.getLogger("genlab.serve")
STUDIO_DIR = Path(__file__).resolve().parent / "studio"
PREVIEW_FILES = {"samples.png": "image/png", "reconstructions.png": "image/png", "class_histogram.png": "image/png",
                 "samples.txt": "text/plain; charset=utf-8"}
JSON_BODIES = {"/v1/images/generations": ImageGenerationRequest, "/v1/completions": CompletionRequest,
               "/v1/music/compositions": CompositionRequest}
MULTIPART_BODIES = ("/v1/images/inpaint", "/v1/images/upscale", "/v1/images/denoise", "/v1/anomaly/scores")
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "method_not_allowed",
               413: "request_too_large", 415: "unsupported_media_type", 422: "invalid_request_error",
               429: "server_busy", 500: "server_error", 501: "not_implemented", 504: "timeout"}
MASK_SPEC_KINDS = ("box:", "half:", "random:")
API_REFERENCE = "Endpoints\n" + (__doc__ or "").partition("Endpoints\n")[2]  # shown at the top of /docs


def error_response(status: int, message: str, hint: str | None = None, param: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "hint": hint, "type": ERROR_TYPES.get(status, "error"), "param": param,
                      "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


# ----------------------------------------------------------------------------- the app


def create_app(models_dir: str | Path, *, max_loaded_models: int = 4, workers: int = 2, queue_size: int = 16,
               request_timeout_s: float = 60.0, studio_dir: str | Path | None = STUDIO_DIR) -> FastAPI:
    """The FastAPI app serving the models in `models_dir` (see the module docstring).

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
    app.add_middleware(RequestGuard, metrics=metrics)
    _add_error_handlers(app)

    # -- service ------------------------------------------------------------------------
    @app.get("/healthz", summary="liveness and what the server holds")
    async def healthz():
        names = await run_in_threadpool(store.names)
        return {"status": "ok", "version": __version__, "models_dir": str(store.root), "models": len(names),
                "loaded": [name for name, _ in store.loaded()], "queue": pool.status()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus_metrics():
        return PlainTextResponse(metrics.render(store.loaded(), pool.status()), media_type=METRICS_CONTENT_TYPE)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(render_docs(app.openapi()))

    # -- models -------------------------------------------------------------------------
    @app.get("/v1/models", summary="list the models")
    async def list_models():
        def summaries():
            return [_model_summary(store, name) for name in store.names()]

        return {"object": "list", "data": await run_in_threadpool(summaries)}

    @app.get("/v1/models/{name}", summary="one model: config, metrics, sample grid")
    async def model_detail(name: str):
        return await run_in_threadpool(_model_summary, store, name, True)

    @app.get("/v1/models/{name}/previews/{file}", summary="a model's sample grid or samples text")
    async def model_preview(name: str, file: str):
        if file not in PREVIEW_FILES:
            raise APIError(404, f"no preview named {file!r}", f"previews are {', '.join(PREVIEW_FILES)}", param="file")
        path = store.path(name, "name") / file
        if not path.is_file():
            raise APIError(404, f"model {name!r} has no {file}", f"GET /v1/models/{name} lists its previews")
        return FileResponse(path, media_type=PREVIEW_FILES[file])

    # -- images -------------------------------------------------------------------------
    @app.post("/v1/images/generations", summary="sample images from an image model")
    async def image_generations(body: ImageGenerationRequest = Body()):
        store.path(body.model)  # an unknown model is a 404 before it takes a place in the queue
        images, value_range = await pool.run(
            lambda deadline: jobs.generate_images(store, body.model, body.n, body.seed, body.class_))
        if body.response_format == "png":
            return Response(await run_in_threadpool(jobs.grid_png_bytes, images, value_range), media_type="image/png")
        data = await run_in_threadpool(lambda: [{"b64_json": jobs.b64(jobs.png_bytes(x, value_range))} for x in images])
        return {"created": int(time.time()), "model": body.model, "data": data}

    @app.post("/v1/images/inpaint", summary="fill the masked pixels of an image (VAE or GAN)")
    async def image_inpaint(model: str = Form(), image: UploadFile = File(),
                            mask: UploadFile | None = File(None),
                            mask_spec: str | None = Form(None, max_length=64),
                            method: Literal["optimize", "resample"] = Form("optimize"),
                            steps: int = Form(100, ge=1, le=MAX_INPAINT_STEPS),
                            restarts: int = Form(4, ge=1, le=MAX_RESTARTS),
                            class_: int | None = Form(None, alias="class", ge=0),
                            seed: int = Form(0, ge=0, le=MAX_SEED),
                            response_format: Literal["b64_json", "png"] = Form("b64_json")):
        if (mask is None) == (mask_spec is None):
            raise APIError(422, "give exactly one of mask (an image file, white = missing) and mask_spec",
                           "e.g. -F mask=@mask.png, or -F mask_spec=box:2,2,4,4", param="mask")
        if mask_spec is not None and not mask_spec.startswith(MASK_SPEC_KINDS):
            raise APIError(400, f"cannot read mask_spec {mask_spec!r}", "write box:LEFT,TOP,WIDTH,HEIGHT, "
                           "half:top|bottom|left|right or random:FRACTION; upload a mask image as the mask file",
                           param="mask_spec")
        store.path(model)
        upload = await _read_upload(image, "image")
        mask_upload = await _read_upload(mask, "mask") if mask is not None else None
        result = await pool.run(lambda deadline: jobs.inpaint_image(
            store, model, upload, mask_upload, mask_spec, method=method, steps=steps, restarts=restarts,
            label=class_, seed=seed))
        return _image_reply(model, *result, response_format)

    @app.post("/v1/images/upscale", summary="x2 / x4 super-resolution (superres models)")
    async def image_upscale(model: str = Form(), image: UploadFile = File(),
                            response_format: Literal["b64_json", "png"] = Form("b64_json")):
        store.path(model)
        upload = await _read_upload(image, "image")
        result = await pool.run(lambda deadline: jobs.upscale_image(store, model, upload))
        return _image_reply(model, *result, response_format)

    @app.post("/v1/images/denoise", summary="remove noise (denoiser models)")
    async def image_denoise(model: str = Form(), image: UploadFile = File(), noise: str | None = Form(None, max_length=32),
                            seed: int = Form(0, ge=0, le=MAX_SEED),
                            response_format: Literal["b64_json", "png"] = Form("b64_json")):
        store.path(model)
        upload = await _read_upload(image, "image")
        result = await pool.run(lambda deadline: jobs.denoise_image(store, model, upload, noise, seed))
        return _image_reply(model, *result, response_format)

    @app.post("/v1/anomaly/scores", summary="anomaly scores of images (higher = more anomalous)")
    async def anomaly_scores(model: str = Form(), image: list[UploadFile] = File(),
                             method: Literal["elbo", "iwae", "recon"] = Form("elbo"),
                             samples: int = Form(8, ge=1, le=MAX_ANOMALY_SAMPLES), seed: int = Form(0, ge=0, le=MAX_SEED)):
        if len(image) > MAX_ANOMALY_IMAGES:
            raise APIError(413, f"{len(image)} images in one request, more than {MAX_ANOMALY_IMAGES}",
                           "split them over several requests", param="image")
        store.path(model)
        uploads = [await _read_upload(file, "image") for file in image]
        scores = await pool.run(lambda deadline: jobs.score_anomalies(store, model, uploads, method=method,
                                                                      samples=samples, seed=seed))
        return {"model": model, "method": method, "unit": "squared error" if method == "recon" else "nats",
                "scores": [{"index": i, "filename": u.filename, "score": s} for i, (u, s) in enumerate(zip(uploads, scores))]}

    # -- text ---------------------------------------------------------------------------
    @app.post("/v1/completions", summary="continue a prompt (OpenAI completions shape; stream: true for SSE)")
    async def completions(body: CompletionRequest = Body()):
        from ..sampling import GenerationConfig

        config = GenerationConfig(max_new_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k,
                                  top_p=body.top_p, repetition_penalty=body.repetition_penalty,
                                  num_return_sequences=body.n, stop=tuple(body.stop), seed=body.seed)
        store.path(body.model)
        reply = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                 "model": body.model}
        if body.stream:
            return await _stream_completion(store, pool, body, config, reply)
        result = await pool.run(lambda deadline: jobs.complete(jobs.text_model(store, body.model), body.prompt,
                                                               config, deadline))
        choices = [{"text": text, "index": i, "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(zip(result.texts, result.finish_reasons))]
        completion_tokens = sum(result.completion_tokens)
        return {**reply, "choices": choices, "usage": {"prompt_tokens": result.prompt_tokens,
                                                       "completion_tokens": completion_tokens,
                                                       "total_tokens": result.prompt_tokens + completion_tokens}}

    # -- music --------------------------------------------------------------------------
    @app.post("/v1/music/compositions", summary="compose music: MIDI, WAV and a piano-roll picture")
    async def music_compositions(body: CompositionRequest = Body()):
        store.path(body.model)
        composition = await pool.run(lambda deadline: jobs.compose_music(
            store, body.model, bars=body.bars, seed=body.seed, temperature=body.temperature, top_p=body.top_p,
            tempo=body.tempo, key=body.key, prompt_midi=body.prompt_midi))
        files = {"midi": (composition.midi, "audio/midi", "mid"), "wav": (composition.wav, "audio/wav", "wav"),
                 "png": (composition.piano_roll_png, "image/png", "png")}
        if body.response_format in files:
            content, media_type, suffix = files[body.response_format]
            return Response(content, media_type=media_type,
                            headers={"Content-Disposition": f'attachment; filename="{body.model}-seed{body.seed}.{suffix}"'})
        return {"id": f"music-{uuid.uuid4().hex[:24]}", "object": "music.composition", "created": int(time.time()),
                "model": body.model, "bars": body.bars, "seconds": composition.seconds, "notes": composition.notes,
                "midi_b64": jobs.b64(composition.midi), "wav_b64": jobs.b64(composition.wav),
                "piano_roll_png_b64": jobs.b64(composition.piano_roll_png)}

    # -- the studio (last: it answers every path the API does not) -----------------------
    studio = Path(studio_dir) if studio_dir is not None else None
    if studio is not None and (studio / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=studio, html=True), name="studio")
    else:
        @app.get("/", include_in_schema=False)
        async def home():
            return HTMLResponse("<!doctype html><title>genlab</title><h1>genlab server</h1><p>The studio page is "
                                "not installed. <a href='/docs'>API reference</a> · <a href='/v1/models'>models</a></p>")

    return app


# ----------------------------------------------------------------------------- helpers


def _model_summary(store: ModelStore, name: str, detail: bool = False) -> dict:
    """What GET /v1/models shows for a model, from its files (the model is not loaded)."""
    import json

    from ..artifact import read_config
    from ..registry import get_family

    path = store.path(name, "name")
    summary = {"id": name, "object": "model", "created": int((path / "config.json").stat().st_mtime)}
    try:
        config = read_config(path)
        family = get_family(config["family"])
    except GenlabError as e:  # listed with the reason, so the person sees why it cannot be used
        return {**summary, "error": e.message, "hint": e.hint}
    capabilities = set(family.capabilities)
    if "conditional" in capabilities and not config["model"].get("conditional", False):
        capabilities.discard("conditional")  # as the loaded model would say (families drop it when unconditional)
    summary.update({"family": config["family"], "data_kind": family.data_kind, "capabilities": sorted(capabilities),
                    "endpoints": jobs.endpoints_for(family.data_kind, capabilities),
                    "recipe": config.get("recipe"), "description": config.get("description", ""),
                    "classes": config.get("classes")})
    if detail:
        metrics = None
        if (path / "metrics.json").is_file():
            try:
                metrics = json.loads((path / "metrics.json").read_text())
            except (OSError, ValueError):
                metrics = {"error": "metrics.json is not readable JSON"}
        samples_text = (path / "samples.txt").read_text(errors="replace") if (path / "samples.txt").is_file() else None
        summary.update({"config": config, "metrics": metrics, "samples_text": samples_text,
                        "previews": {file: f"/v1/models/{name}/previews/{file}" for file in PREVIEW_FILES
                                     if (path / file).is_file()}})
    return summary


async def _read_upload(upload: UploadFile, param: str) -> jobs.Upload:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise APIError(413, f"{param} {upload.filename!r} is larger than {MAX_UPLOAD_BYTES >> 20} MiB",
                       "send a smaller image", param=param)
    if not data:
        raise APIError(422, f"{param} {upload.filename!r} is empty", "attach the file's contents, e.g. -F image=@digit.png",
                       param=param)
    return jobs.Upload(param, upload.filename or param, data)


def _image_reply(model: str, image, value_range, extra: dict, response_format: str):
    png = jobs.png_bytes(image, value_range)
    if response_format == "png":
        return Response(png, media_type="image/png")
    return {"created": int(time.time()), "model": model, "data": [{"b64_json": jobs.b64(png)}],
            "width": int(image.shape[-1]), "height": int(image.shape[-2]), **extra}


async def _stream_completion(store: ModelStore, pool: InferencePool, body: CompletionRequest, config, reply: dict):
    """Server-sent events as the worker produces text. Errors before the first piece of text
    (a bad prompt, a full queue, the time limit) are ordinary JSON error responses; after it, an
    `error` event followed by [DONE]."""
    import json

    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()  # set when the client goes away: the worker stops at the next token

    def put(item):
        loop.call_soon_threadsafe(events.put_nowait, item)

    def job(deadline):
        model = jobs.text_model(store, body.model)
        return jobs.complete(model, body.prompt, config, deadline, emit=lambda i, piece: put(("piece", i, piece)),
                             cancelled=cancelled)

    deadline = time.monotonic() + pool.timeout_s
    future = pool.submit(job, deadline)
    future.add_done_callback(lambda f: put(("done", f)))
    try:
        first = await asyncio.wait_for(events.get(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        cancelled.set()
        future.cancel()
        raise pool.timeout_error() from None
    if first[0] == "done":
        _raise_job_error(first[1], pool)

    def chunk(payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    async def sse():
        item = first
        try:
            while True:
                if item[0] == "piece":
                    _, index, text = item
                    yield chunk({**reply, "choices": [{"text": text, "index": index, "logprobs": None,
                                                       "finish_reason": None}]})
                else:
                    try:
                        result = _raise_job_error(item[1], pool)
                    except APIError as e:
                        yield chunk({"error": {"message": e.message, "hint": e.hint, "type": ERROR_TYPES.get(e.status),
                                               "code": e.status}})
                    except GenlabError as e:
                        yield chunk({"error": {"message": e.message, "hint": e.hint, "type": ERROR_TYPES[400],
                                               "code": 400}})
                    else:
                        for index, reason in enumerate(result.finish_reasons):
                            yield chunk({**reply, "choices": [{"text": "", "index": index, "logprobs": None,
                                                               "finish_reason": reason}]})
                    yield "data: [DONE]\n\n"
                    return
                item = await events.get()
        finally:
            cancelled.set()

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _raise_job_error(future, pool: InferencePool):
    """A finished job's result, or its error as APIError / GenlabError."""
    if future.cancelled():
        raise pool.timeout_error()
    error = future.exception()
    if isinstance(error, JobTimeout):
        raise pool.timeout_error()
    if error is not None:
        raise error
    return future.result()


# ----------------------------------------------------------------------------- errors


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request, e: APIError):
        return error_response(e.status, e.message, e.hint, e.param, e.headers)

    @app.exception_handler(GenlabError)
    async def genlab_error(_request, e: GenlabError):
        return error_response(400, e.message, e.hint)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return _validation_response(request, e.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        if e.status_code == 404:
            return error_response(404, f"no such endpoint: {request.method} {request.url.path}",
                                  "see /docs for the endpoints")
        if e.status_code == 405:
            return error_response(405, f"{request.url.path} does not take {request.method}",
                                  "see /docs for the methods each endpoint takes", headers=e.headers)
        return error_response(e.status_code, str(e.detail), headers=e.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(e).__name__}); the server log has the details",
                              "please report it with the request that caused it")


def _validation_response(request: Request, errors) -> JSONResponse:
    """422 naming the first bad field, its bound and the value sent (400 for a body that is not JSON)."""
    error = dict(errors[0]) if errors else {"msg": "invalid request", "loc": ()}
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "form")]
    param = ".".join(loc) or None
    kind = error.get("type", "")
    schema = JSON_BODIES.get(request.url.path)
    fields = ", ".join(f.alias or name for name, f in schema.model_fields.items()) if schema else None
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return error_response(400, f"the request body is not valid JSON ({reason})",
                              "send one JSON object, e.g. {\"model\": \"NAME\"}, with Content-Type: application/json")
    if kind == "missing" and not loc:
        return error_response(422, "the request body is missing", f"send a JSON object with the fields {fields}"
                              if fields else "see /docs")
    if kind in ("model_attributes_type", "dict_type") and not loc:
        return error_response(422, "the request body must be a JSON object", f"fields: {fields}" if fields else None)
    if kind == "extra_forbidden":
        return error_response(422, f"unknown field {param!r}", f"this endpoint takes {fields}" if fields else "see /docs",
                              param)
    if kind == "missing":
        return error_response(422, f"{param} is required", "see /docs for this endpoint's fields", param)
    sent = error.get("input")
    shown = f" (got {sent!r})" if sent is not None and not isinstance(sent, (dict, list)) and len(repr(sent)) < 80 else ""
    message = error.get("msg", "invalid value")
    message = message.removeprefix("Value error, ")
    return error_response(422, f"{param or 'request'}: {message}{shown}", "see /docs for the bounds of each field",
                          param)


# ----------------------------------------------------------------------------- middleware


class RequestGuard:
    """ASGI middleware: refuses oversized bodies (413) and wrong content types (415) before any
    parsing, and records every request's endpoint, status and duration in the metrics."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_recording)
                return
            await self.app(scope, self._limited(receive), send_recording)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None)
            endpoint = "/ (studio)" if endpoint == "" else (endpoint or "unmatched")
            self.metrics.observe(endpoint, scope["method"], status["code"], time.perf_counter() - start)

    @staticmethod
    def _refusal(scope):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return error_response(413, f"the request body is {int(length):,} bytes, more than {MAX_BODY_BYTES >> 20} MiB",
                                  "send smaller images or fewer of them")
        if scope["method"] != "POST":
            return None
        path = scope["path"]
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if path in JSON_BODIES and content_type != "application/json":
            return error_response(415, f"{path} takes a JSON body, but the Content-Type is {content_type or 'missing'!r}",
                                  "send -H 'Content-Type: application/json' with a JSON object")
        if path in MULTIPART_BODIES and content_type != "multipart/form-data":
            return error_response(415, f"{path} takes multipart/form-data, but the Content-Type is "
                                  f"{content_type or 'missing'!r}", "send the fields as a form with files, "
                                  "e.g. curl -F model=NAME -F image=@digit.png")
        return None

    @staticmethod
    def _limited(receive):
        """receive, raising 413 once a body without (or with a false) Content-Length passes the limit."""
        seen = {"bytes": 0}

        async def limited():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > MAX_BODY_BYTES:
                    # An HTTPException, which FastAPI passes on while it reads the body (other errors become 400s).
                    raise StarletteHTTPException(413, f"the request body is more than {MAX_BODY_BYTES >> 20} MiB")
            return message

        return limited
