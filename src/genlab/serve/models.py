"""GET /v1/models, /v1/models/{name} and the previews: what the server holds, read from the
model directories' files (listing a model does not load it)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from ..errors import GenlabError
from .runtime import APIError, ModelStore

PREVIEW_FILES = {"samples.png": "image/png", "reconstructions.png": "image/png", "class_histogram.png": "image/png",
                 "samples.txt": "text/plain; charset=utf-8"}


def endpoints_for(data_kind: str, capabilities) -> list[str]:
    """The inference endpoints a model of this kind with these capabilities can serve: the
    sampling routes, then the applications' routes, in registration order."""
    from .applications import application_routes
    from .sampling import SAMPLING_ROUTES

    caps = frozenset(capabilities)
    endpoints = [path for path, serves in SAMPLING_ROUTES.items() if serves(data_kind, caps)]
    endpoints += [route.path for _, route in application_routes() if route.serves(data_kind, caps)]
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
        path = request.app.state.store.path(name, "name") / file
        if not path.is_file():
            raise APIError(404, f"model {name!r} has no {file}", f"GET /v1/models/{name} lists its previews")
        return FileResponse(path, media_type=PREVIEW_FILES[file])

    return router


def model_summary(store: ModelStore, name: str, detail: bool = False) -> dict:
    """What GET /v1/models shows for a model, from its files (the model is not loaded)."""
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
                    "endpoints": endpoints_for(family.data_kind, capabilities),
                    "recipe": config.get("recipe"), "description": config.get("description", ""),
                    "classes": config.get("classes")})
    if detail:
        summary.update(_detail(path, name, config))
    return summary


def _detail(path, name: str, config: dict) -> dict:
    metrics = None
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = {"error": "metrics.json is not readable JSON"}
    samples_text = (path / "samples.txt").read_text(errors="replace") if (path / "samples.txt").is_file() else None
    return {"config": config, "metrics": metrics, "samples_text": samples_text,
            "previews": {file: f"/v1/models/{name}/previews/{file}" for file in PREVIEW_FILES if (path / file).is_file()}}
