"""GET /v1/models, /v1/models/{name} and the previews: what the server holds, read from the
model directories' files (listing a model does not load it)."""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from ..errors import GenlabError
from .errors import scrub, scrub_value
from ..registry import serves
from .runtime import APIError, ModelStore

MAX_SAMPLES_TEXT = 1 << 20  # characters of samples.txt shown in a model's detail
MAX_METRICS_BYTES = 4 << 20
PREVIEW_FILES = {"samples.png": "image/png", "reconstructions.png": "image/png", "class_histogram.png": "image/png",
                 "samples.txt": "text/plain; charset=utf-8"}


def endpoints_for(data_kind: str, capabilities, data: dict | None = None) -> list[str]:
    """The inference endpoints a model of this kind with these capabilities can serve: the
    sampling routes, the text-pair routes (which of the two, by `data`: the data section of its
    config.json), then the applications' routes, in registration order."""
    from .applications import application_routes
    from .pairs import PAIR_ROUTES
    from .sampling import SAMPLING_ROUTES

    caps = frozenset(capabilities)
    endpoints = [path for path, serves in SAMPLING_ROUTES.items() if serves(data_kind, caps)]
    endpoints += [path for path, serves in PAIR_ROUTES.items() if serves(data_kind, caps, data)]
    endpoints += [route.path for app, route in application_routes() if serves(app, data_kind, caps)]
    return list(dict.fromkeys(endpoints))


def models_router() -> APIRouter:
    router = APIRouter(tags=["models"])

    @router.get("/v1/models", summary="list the models")
    async def list_models(request: Request):
        store: ModelStore = request.app.state.store

        def summaries():
            return [model_summary(store, name) for name in store.names()]

        return {"object": "list", "data": await run_in_threadpool(summaries)}

    @router.get("/v1/models/{name}", summary="one model: config, metrics, sample grid")
    async def model_detail(request: Request, name: str):
        return await run_in_threadpool(model_summary, request.app.state.store, name, True)

    @router.get("/v1/models/{name}/previews/{file}", summary="a model's sample grid or samples text")
    async def model_preview(request: Request, name: str, file: str):
        if file not in PREVIEW_FILES:
            raise APIError(404, f"no preview named {file!r}", f"previews are {', '.join(PREVIEW_FILES)}", param="file")
        store = request.app.state.store
        path = store.path(name, "name") / file
        if not _inside_file(store, path):
            raise APIError(404, f"model {name!r} has no {file}", f"GET /v1/models/{name} lists its previews")
        return FileResponse(path, media_type=PREVIEW_FILES[file])

    return router


def model_summary(store: ModelStore, name: str, detail: bool = False) -> dict:
    """What GET /v1/models shows for a model, from its files (the model is not loaded): a model
    whose config or weights are damaged is listed with the reason (`error`, `hint`) instead."""
    from ..artifact import read_config
    from ..registry import get_family

    path = store.path(name, "name")
    roots = store.public_roots
    summary = {"id": name, "object": "model", "created": int((path / "config.json").stat().st_mtime)}
    try:
        config = read_config(path)
        family = get_family(config["family"])
        problem = store.check(name, config)
        if problem is not None:
            raise problem
    except GenlabError as e:  # listed with the reason, so the person sees why it cannot be used
        return {**summary, "error": scrub(e.message, roots), "hint": scrub(e.hint, roots)}
    capabilities = store.capabilities(name)  # from the meta-device model check_weights built: as loaded
    summary.update({"family": config["family"], "data_kind": family.data_kind, "capabilities": sorted(capabilities),
                    "endpoints": endpoints_for(family.data_kind, capabilities, config.get("data")),
                    "recipe": scrub_value(config.get("recipe"), roots),
                    "description": describe(config, family.data_kind),
                    "classes": scrub_value(config.get("classes"), roots)})
    if detail:
        summary.update(_detail(store, path, name, public_config(config, roots), roots))
    return summary


# Data names that are a local path after their prefix ("file:/home/me/notes.txt"): shown by file name only.
PATH_DATA_PREFIXES = ("file:", "folder:", "labeled:", "idx:", "npz:", "midi:", "csv:", "movielens:", "pairs:", "dialogue:")


def public_data_name(name):
    """A data spec as it may be shown: "file:/home/me/notes.txt" -> "file:notes.txt", "/x/y.npz" -> "y.npz"."""
    if not isinstance(name, str):
        return name
    if name.startswith("styles:"):  # several corpora, each maybe a path
        return "styles:" + "+".join(public_data_name(part) for part in name[len("styles:"):].split("+"))
    prefix = next((p for p in PATH_DATA_PREFIXES if name.startswith(p)), "")
    path = name[len(prefix):]
    if prefix or path.startswith(("/", "~", "\\")) or re.match(r"[A-Za-z]:[\\/]", path):
        path = re.split(r"[/\\]", path.rstrip("/\\"))[-1] or path
    return prefix + path


def describe(config: dict, data_kind: str) -> str:
    """A model's description from its own config (not its recipe's text, which describes the
    recipe's data set): "conditional vae on mnist", "gpt on file:notes.txt (char tokens)"."""
    model, data = config.get("model") or {}, config.get("data") or {}
    text = f"{'conditional ' if model.get('conditional') is True else ''}{config.get('family')}"
    name = public_data_name(data.get("name"))
    text += f" on {name}" if isinstance(name, str) and name else f" on {data_kind} data"
    if isinstance(data.get("direction"), str) and data["direction"]:  # a translation pair: "tatoeba-cmn zh-en"
        text += f" {data['direction']}"
    if isinstance(data.get("tokenizer"), str):
        text += f" ({data['tokenizer']} tokens)"
    return text


def public_config(config: dict, roots) -> dict:
    """config.json as it is shown: data paths by file name, no absolute path anywhere."""
    shown = dict(config)
    if isinstance(shown.get("data"), dict) and "name" in shown["data"]:
        shown["data"] = {**shown["data"], "name": public_data_name(shown["data"].get("name"))}
    return scrub_value(shown, roots)


def _inside_file(store: ModelStore, path) -> bool:
    """A regular file inside the models directory (a symlink out of it is not served)."""
    return path.is_file() and path.resolve().is_relative_to(store.root)


def _detail(store: ModelStore, path, name: str, config: dict, roots) -> dict:
    metrics = None
    if _inside_file(store, path / "metrics.json"):
        try:
            if (path / "metrics.json").stat().st_size > MAX_METRICS_BYTES:
                raise ValueError("too large")
            metrics = scrub_value(json.loads((path / "metrics.json").read_text()), roots)
        except (OSError, ValueError):
            metrics = {"error": "metrics.json is not readable JSON"}
    samples = path / "samples.txt"
    samples_text = None
    if _inside_file(store, samples):
        with samples.open(encoding="utf-8", errors="replace") as f:
            samples_text = f.read(MAX_SAMPLES_TEXT)  # a replaced or runaway file is cut, not read whole
    return {"config": config, "metrics": metrics, "samples_text": samples_text,
            "previews": {file: f"/v1/models/{name}/previews/{file}" for file in PREVIEW_FILES
                         if _inside_file(store, path / file)}}
