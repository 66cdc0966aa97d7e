"""The applications' HTTP routes, built from their declarations (genlab.registry.HttpRoute).

For each registered application with an `http` route this makes one POST endpoint: a JSON
body, or a multipart form whose fields are the declared pydantic form and whose files are the
declared file fields. The endpoint checks the model's name (404 before it takes a place in
the queue), reads the uploads with their size limits, then runs the application's handler on
the inference pool with the loaded model; the handler's dict is the JSON reply and a
FileReply is sent as that file. GET /v1/applications lists them for the studio.
"""

from __future__ import annotations

import inspect
from typing import Annotated

from fastapi import APIRouter, Body, File, Form, Request, UploadFile
from fastapi.responses import Response

from ..errors import GenlabError, InputTooLarge, InvalidInput
from ..limits import MAX_UPLOAD_BYTES
from ..registry import Application, FileReply, applications
from .runtime import ModelStore

FILE_PARAMETERS = {  # how a declared file field is taken: "one" required, "optional", "many" (repeat the field)
    "one": (UploadFile, lambda: File()),
    "optional": (UploadFile | None, lambda: File(None)),
    "many": (list[UploadFile], lambda: File()),
}


def application_routes() -> list[tuple[Application, object]]:
    """(application, route declaration) for every application that has an HTTP route."""
    return [(app, app.http) for app in applications().values() if app.http is not None]


def applications_router() -> APIRouter:
    router = APIRouter()
    for app, route in application_routes():
        router.add_api_route(route.path, _endpoint(app), methods=["POST"], summary=route.summary,
                             description=app.summary, tags=["applications"])

    @router.get("/v1/applications", summary="the applications: name, endpoint, studio entry", tags=["applications"])
    async def list_applications():
        return {"object": "list", "data": [
            {"name": app.name, "summary": app.summary, "kinds": list(app.kinds), "capability": app.capability,
             "endpoint": route.path if route else None, "body": route.body if route else None,
             "files": dict(route.files) if route else {}, "studio": app.studio}
            for app, route in ((a, a.http) for a in applications().values())]}

    return router


def _endpoint(app: Application):
    """An async FastAPI endpoint for the application's route, with a signature FastAPI reads its
    parameters from: the request, the form (or JSON body) model, and one parameter per file field."""
    route = app.http

    async def endpoint(request: Request, form, **uploads):
        store: ModelStore = request.app.state.store
        store.path(form.model)  # an unknown model is a 404 before it takes a place in the queue
        files = {name: await _read_files(value, name, route.max_files) for name, value in uploads.items()}
        result = await request.app.state.pool.run(lambda deadline: _run(store, app, form, files))
        if isinstance(result, FileReply):
            headers = {"Content-Disposition": f'attachment; filename="{result.filename}"'} if result.filename else None
            return Response(result.content, media_type=result.media_type, headers=headers)
        return result

    body = Annotated[route.form, Body()] if route.body == "json" else Annotated[route.form, Form()]
    parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
                  inspect.Parameter("form", inspect.Parameter.KEYWORD_ONLY, annotation=body)]
    for name, how in route.files.items():
        annotation, default = FILE_PARAMETERS[how]
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                            default=default()))
    endpoint.__signature__ = inspect.Signature(parameters)
    endpoint.__name__ = f"apply_{app.name}"
    return endpoint


def _run(store: ModelStore, app: Application, form, files: dict):
    """On a worker thread: load the model, check it is of a kind the application takes, run the handler."""
    model = store.get(form.model)
    if model.data_kind not in app.kinds:
        raise GenlabError(f"{app.name} needs a model of kind {' or '.join(app.kinds)}; model {form.model!r} is a "
                          f"{model.family} model of kind {model.data_kind!r}",
                          "pick a model whose endpoints (GET /v1/models) list this route", param="model")
    return app.http.handler(model, form, files)


async def _read_files(value, param: str, max_files: int):
    from ..apps.common import Upload

    if value is None:
        return None
    if isinstance(value, list):
        if len(value) > max_files:
            raise InputTooLarge(f"{len(value)} files in {param}, more than {max_files}",
                                "split them over several requests", param=param)
        return [await _read_file(v, param, Upload) for v in value]
    return await _read_file(value, param, Upload)


async def _read_file(upload: UploadFile, param: str, upload_class):
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputTooLarge(f"{param} {upload.filename!r} is larger than {MAX_UPLOAD_BYTES >> 20} MiB",
                            "send a smaller file", param=param)
    if not data:
        raise InvalidInput(f"{param} {upload.filename!r} is empty", "attach the file's contents, e.g. -F image=@digit.png",
                           param=param)
    return upload_class(param, upload.filename or param, data)
