"""Every error the server answers is JSON in one shape, never a traceback:
{"error": {"message", "hint", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GenlabError
from .runtime import APIError

log = logging.getLogger("genlab.serve")
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "method_not_allowed",
               413: "request_too_large", 415: "unsupported_media_type", 422: "invalid_request_error",
               429: "server_busy", 500: "server_error", 501: "not_implemented", 504: "timeout"}


def error_response(status: int, message: str, hint: str | None = None, param: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "hint": hint, "type": ERROR_TYPES.get(status, "error"), "param": param,
                      "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI, json_bodies: dict) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request, e: APIError):
        return error_response(e.status, e.message, e.hint, e.param, e.headers)

    @app.exception_handler(GenlabError)
    async def genlab_error(_request, e: GenlabError):
        return error_response(e.status, e.message, e.hint, e.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return _validation_response(request, e.errors(), json_bodies)

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


def _validation_response(request: Request, errors, json_bodies: dict) -> JSONResponse:
    """422 naming the first bad field, its bound and the value sent (400 for a body that is not JSON)."""
    error = dict(errors[0]) if errors else {"msg": "invalid request", "loc": ()}
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "form")]
    param = ".".join(loc) or None
    kind = error.get("type", "")
    schema = json_bodies.get(request.url.path)
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
