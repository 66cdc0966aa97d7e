"""Drawing from a model: POST /v1/images/generations (image models) and POST /v1/completions
(text models, OpenAI's completions shape, with server-sent events when stream is true)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import GenlabError
from ..apps.common import frame_items
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


def sampling_router() -> APIRouter:
    router = APIRouter(tags=["sampling"])

    @router.post("/v1/images/generations", summary="sample images from an image model")
    async def image_generations(request: Request, body: ImageGenerationRequest = Body()):
        store, pool = request.app.state.store, request.app.state.pool
        store.path(body.model)  # an unknown model is a 404 before it takes a place in the queue
        images, value_range = await pool.run(
            lambda deadline: jobs.generate_images(store, body.model, body.n, body.seed, body.class_))
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

    return router


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
                    except (APIError, GenlabError) as e:
                        yield chunk(error_body(e.status, e.message, e.hint, e.param, store.public_roots))
                    except Exception as e:  # the details go to the log, as for any 500
                        log.exception("unexpected error while streaming a completion")
                        yield chunk(error_body(500, f"internal error ({type(e).__name__}); the server log has the "
                                               "details", "please report it with the request that caused it"))
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
