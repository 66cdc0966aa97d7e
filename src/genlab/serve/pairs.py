"""Text-pair models over HTTP: POST /v1/translations (translation models: genlab.translate) and
POST /v1/chat/completions (dialogue models: genlab.chat, OpenAI's chat shape, with server-sent
events when stream is true). A model answers one of the two, by what it was trained on
(GET /v1/models lists it under `endpoints`); the other refuses it naming the right one."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Body, Request

from . import jobs
from .jobs import CHAT_COMPLETIONS, TRANSLATIONS
from .runtime import InferencePool, ModelStore
from .sampling import _event_stream
from .schemas import ChatCompletionRequest, TranslationRequest


def _is_pair_model(kind: str, caps: frozenset) -> bool:
    return kind == "pairs" and "translate" in caps


# path -> which models it serves (data kind, capabilities, the data section of config.json)
PAIR_ROUTES = {
    TRANSLATIONS: lambda kind, caps, data: _is_pair_model(kind, caps) and jobs.pair_endpoint(data) == TRANSLATIONS,
    CHAT_COMPLETIONS: lambda kind, caps, data: _is_pair_model(kind, caps) and jobs.pair_endpoint(data) == CHAT_COMPLETIONS,
}
JSON_BODIES = {TRANSLATIONS: TranslationRequest, CHAT_COMPLETIONS: ChatCompletionRequest}

TRANSLATIONS_DESCRIPTION = """JSON {model, text: a string or a list of up to 32 strings (<= 2000 characters each),
num_beams: 1..16 (default 4, or 1 with a temperature), n_best: 1..16 = 1, max_tokens: 1..256 (default: the model's
longest target), temperature: 0..2 = 0 (> 0 samples), top_p: (0, 1], seed, length_penalty: 0..10 = 0.6,
no_repeat_ngram_size: 0..64 = 0 (n > 0: no n-gram of tokens twice in a translation)}
-> {"object": "translation", "model", "translations": [...]}: one entry per text, in order; a string when n_best is 1,
else the text's n_best hypotheses best first as {text, score, log_prob, finished} (score: log_prob over beam search's
length penalty; finished: it ended before max_tokens). The same as genlab.translate(model, text, ...) with these
settings. A dialogue model is refused (400) naming POST /v1/chat/completions."""

CHAT_DESCRIPTION = """OpenAI's chat shape: JSON {model, messages: [{role: user | assistant | system, content}] (up to 64
messages of <= 4000 characters; the last one the user's; system messages are set aside), max_tokens: 1..256
(default: the model's longest target), temperature: 0..2 = 0 (greedy), top_p: (0, 1], seed, stream: bool}
-> {id, "object": "chat.completion", created, model, choices: [{index: 0, message: {role: "assistant", content},
finish_reason: "stop" | "length"}], usage: {prompt_tokens, completion_tokens, total_tokens}}: the reply
genlab.chat(model, messages, ...) gives. The model reads the last turns it was trained with (data.context_turns).

`stream: true` answers text/event-stream: `data: {id, "object": "chat.completion.chunk", created, model, choices:
[{index: 0, delta: {role: "assistant", content: ""}, finish_reason: null}]}`, then one chunk per piece of text
(delta: {content}), a last chunk with delta {} and the finish_reason, and `data: [DONE]`. The contents joined are
the reply without stream. Errors before the first chunk are JSON errors; after it, an event {"error": {...}}."""


def pairs_router() -> APIRouter:
    router = APIRouter(tags=["translation and chat"])

    @router.post(TRANSLATIONS, summary="translate texts with a translation model (beam search, n-best, sampling)",
                 description=TRANSLATIONS_DESCRIPTION)
    async def translations(request: Request, body: TranslationRequest = Body()):
        store, pool = request.app.state.store, request.app.state.pool
        store.path(body.model)  # an unknown model is a 404 before it takes a place in the queue
        result = await pool.run(lambda deadline: jobs.translation(jobs.pair_model(store, body.model, dialogue=False),
                                                                  body))
        return {"object": "translation", "model": body.model, "translations": result}

    @router.post(CHAT_COMPLETIONS, summary="the next turn of a conversation with a dialogue model (OpenAI chat "
                 "shape; stream: true for SSE)", description=CHAT_DESCRIPTION)
    async def chat_completions(request: Request, body: ChatCompletionRequest = Body()):
        store, pool = request.app.state.store, request.app.state.pool
        store.path(body.model)
        reply = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
        if body.stream:
            return await _stream_chat(store, pool, body, reply)
        result = await pool.run(lambda deadline: jobs.chat_reply(jobs.pair_model(store, body.model, dialogue=True),
                                                                 body, deadline))
        return {"id": reply["id"], "object": "chat.completion", "created": reply["created"], "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": result.finish_reason}],
                "usage": _usage(result)}

    return router


def _usage(result: jobs.ChatReply) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


async def _stream_chat(store: ModelStore, pool: InferencePool, body: ChatCompletionRequest, reply: dict):
    """Chunks as the worker decodes the reply: the role first, then the text's pieces, then the finish_reason."""
    head = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"], "model": body.model}

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    def job(deadline, put, cancelled):
        def piece(text: str | None):
            put(("event", chunk({"role": "assistant", "content": ""} if text is None else {"content": text})))

        model = jobs.pair_model(store, body.model, dialogue=True)
        return jobs.chat_reply(model, body, deadline, emit=piece, cancelled=cancelled)

    def finished(result: jobs.ChatReply):
        return [chunk({}, result.finish_reason)]

    return await _event_stream(store, pool, job, finished, "a chat reply")
