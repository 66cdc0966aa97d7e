"""Drawing from a model: POST /v1/images/generations (image models; diffusion models take
sampler options and stream a preview per step when stream is true) and POST /v1/completions
(text models, OpenAI's completions shape, with server-sent events when stream is true)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..apps.common import b64, frame_items
from ..errors import GenlabError
from ..imageio import grid_picture, png_bytes
from . import jobs
from .errors import error_body, log
from .runtime import APIError, InferencePool, JobTimeout, ModelStore
from .schemas import CompletionRequest, ImageGenerationRequest

# path -> which models it serves (data kind, capabilities)
SAMPLING_ROUTES = {
    "/v1/images/generations": lambda kind, caps: kind == "image" and "sample" in caps,
    "/v1/completions": lambda kind, caps: kind == "text" and "generate" in caps,
}
JSON_BODIES = {"/v1/images/generations": ImageGenerationRequest, "/v1/completions": CompletionRequest}
MAX_PREVIEWS = 50  # preview events of one stream: every step up to 50 steps, then 50 evenly spaced (the last included)

IMAGES_DESCRIPTION = """JSON {model, n: 1..64 = 16, seed, class, response_format: b64_json | png} -> {created, model,
data: [{b64_json}]} (one PNG per image, native size), or with png one grid of them.

Diffusion models also take `steps` (1..the model's training timesteps), `sampler` (ddpm | ddim | dpm++) and
`guidance_scale` (0..100, class-conditional models only); each defaults to the model's own. Another model given
one of them is a 400 that names the fix; out-of-bound values are a 422 (steps above the model's timesteps: 400).

`stream: true` answers text/event-stream, one `data: {json}` event per line pair:

    {"type": "image_generation.partial_image", "created", "model", "step": 1..steps, "steps",
     "partial_image_index": 0.., "b64_json": a PNG grid of the current x_t (native size, [-1, 1] shown as black..white)}
    ... after every sampler step (at most 50 of them, evenly spaced, the last step always included)
    {"type": "image_generation.completed", "created", "model", "data": [{b64_json}]}  (the same images the
     reply without stream holds for the same request)
    [DONE]

A model that samples in one pass (VAE, GAN) sends only the completed event. Errors found before the first
event (a bad model, option or class; a full queue; the time limit) are ordinary JSON errors with their status;
after it, an event {"error": {...}} and then [DONE]. The stream runs on the inference pool under the same
time limit; a client that disconnects stops the sampling at the next step."""


def sampling_router() -> APIRouter:
    router = APIRouter(tags=["sampling"])

    @router.post("/v1/images/generations", summary="sample images from an image model (diffusion: steps, sampler, "
                 "guidance_scale; stream: true for a preview per step as SSE)", description=IMAGES_DESCRIPTION)
    async def image_generations(request: Request, body: ImageGenerationRequest = Body()):
        store, pool = request.app.state.store, request.app.state.pool
        store.path(body.model)  # an unknown model is a 404 before it takes a place in the queue
        if body.stream:
            return await _stream_images(store, pool, body)
        images, value_range = await pool.run(
            lambda deadline: jobs.generate_images(store, body.model, body.n, body.seed, body.class_,
                                                  _sampling(body), callback=_until(deadline)))
        if body.response_format == "png":
            return Response(await run_in_threadpool(jobs.grid_png_bytes, images, value_range), media_type="image/png")
        data = await run_in_threadpool(frame_items, images, value_range)
        return {"created": int(time.time()), "model": body.model, "data": data}

    @router.post("/v1/completions", summary="continue a prompt (OpenAI completions shape; stream: true for SSE)")
    async def completions(request: Request, body: CompletionRequest = Body()):
        from ..sampling import GenerationConfig

        store, pool = request.app.state.store, request.app.state.pool
        config = GenerationConfig(max_new_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k,
                                  top_p=body.top_p, repetition_penalty=body.repetition_penalty,
                                  no_repeat_ngram_size=body.no_repeat_ngram_size, num_return_sequences=body.n, stop=tuple(body.stop), seed=body.seed,
                                  style=body.style)
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

    return router


def _sampling(body: ImageGenerationRequest) -> dict:
    from ..api import SAMPLER_OPTIONS

    return {field: getattr(body, field) for field in SAMPLER_OPTIONS if getattr(body, field) is not None}


def _until(deadline: float, cancelled: threading.Event | None = None):
    """A sampler-step callback that stops the work at `deadline` (JobTimeout) or once `cancelled` is set."""

    def check(i, x_t):
        if time.monotonic() > deadline:
            raise JobTimeout()
        if cancelled is not None and cancelled.is_set():
            raise _ClientGone()

    return check


class _ClientGone(Exception):
    """Raised inside a streaming job whose client has disconnected: nobody reads the rest."""


def _previewed(step: int, steps: int | None) -> bool:
    """Whether step (0-based) of `steps` gets a preview event: all of them up to MAX_PREVIEWS, else
    MAX_PREVIEWS evenly spaced ones ending with the last."""
    if steps is None or steps <= MAX_PREVIEWS:
        return True
    return (step + 1) * MAX_PREVIEWS // steps > step * MAX_PREVIEWS // steps


def _preview_png(x_t) -> str:
    """x_t [n, C, H, W] (the diffusion space, [-1, 1] shown black..white) as a base64 PNG grid at native size."""
    return b64(png_bytes(grid_picture(x_t.detach().float().cpu().clamp(-1, 1), (-1.0, 1.0))))


async def _stream_images(store: ModelStore, pool: InferencePool, body: ImageGenerationRequest):
    """Server-sent events as a diffusion model samples: a preview grid after each step, then the
    images (see IMAGES_DESCRIPTION). Previews and images are encoded on the worker, so the event
    loop only forwards them."""
    reply = {"created": int(time.time()), "model": body.model}

    def job(deadline, put, cancelled):
        model = store.get(body.model)  # cached: generate_images gets the same object
        steps = body.steps or getattr(getattr(model, "config", None), "sample_steps", None)  # the model's default
        check = _until(deadline, cancelled)
        picture = getattr(model, "preview_image", lambda x_t: x_t)  # a latent model's x_t is decoded to an image
        sent = 0

        def preview(i, x_t):
            nonlocal sent
            check(i, x_t)
            if _previewed(i, steps):
                put(("event", {"type": "image_generation.partial_image", **reply, "step": i + 1, "steps": steps,
                               "partial_image_index": sent, "b64_json": _preview_png(picture(x_t))}))
                sent += 1

        images, value_range = jobs.generate_images(store, body.model, body.n, body.seed, body.class_, _sampling(body),
                                                   callback=preview)
        return frame_items(images, value_range)

    def completed(data):
        return [{"type": "image_generation.completed", **reply, "data": data}]

    return await _event_stream(store, pool, job, completed, "images")


async def _stream_completion(store: ModelStore, pool: InferencePool, body: CompletionRequest, config, reply: dict):
    """Server-sent events as the worker produces text, then a last chunk per choice with its finish_reason."""

    def job(deadline, put, cancelled):
        def piece(index, text):
            put(("event", {**reply, "choices": [{"text": text, "index": index, "logprobs": None,
                                                 "finish_reason": None}]}))

        model = jobs.text_model(store, body.model)
        return jobs.complete(model, body.prompt, config, deadline, emit=piece, cancelled=cancelled)

    def finished(result):
        return [{**reply, "choices": [{"text": "", "index": index, "logprobs": None, "finish_reason": reason}]}
                for index, reason in enumerate(result.finish_reasons)]

    return await _event_stream(store, pool, job, finished, "a completion")


async def _event_stream(store: ModelStore, pool: InferencePool, job, last_events, what: str) -> StreamingResponse:
    """job(deadline, put, cancelled) on the inference pool, its put(("event", payload)) calls sent
    as server-sent events, then last_events(its result), then [DONE]. Errors before the first
    event (a bad request, a full queue, the time limit) are ordinary JSON error responses; after
    it, an error event followed by [DONE]. `cancelled` (a threading.Event) is set when the client
    goes away: the job stops at its next step or token."""
    import json

    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def put(item):
        loop.call_soon_threadsafe(events.put_nowait, item)

    deadline = time.monotonic() + pool.timeout_s
    future = pool.submit(lambda deadline: job(deadline, put, cancelled), deadline)
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
            while item[0] == "event":
                yield chunk(item[1])
                item = await events.get()
            try:
                result = _raise_job_error(item[1], pool)
            except (APIError, GenlabError) as e:
                yield chunk(error_body(e.status, e.message, e.hint, e.param, store.public_roots))
            except Exception as e:  # the details go to the log, as for any 500
                log.exception("unexpected error while streaming %s", what)
                yield chunk(error_body(500, f"internal error ({type(e).__name__}); the server log has the details",
                                       "please report it with the request that caused it"))
            else:
                for payload in last_events(result):
                    yield chunk(payload)
            yield "data: [DONE]\n\n"
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
