"""Every error the server answers is JSON in one shape, never a traceback:
{"error": {"message", "hint", "type", "param", "code"}}.

Nothing that goes out names the server's files: `scrub` rewrites every message and hint
(paths under the models directory become model-relative, any other absolute path its last
component, and object reprs such as `<_io.BytesIO object at 0x...>` lose their address), and
error_response applies it to every error, whichever handler or middleware makes it.
"""

from __future__ import annotations

import logging
import ntpath
import re
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GenlabError
from .runtime import APIError

log = logging.getLogger("genlab.serve")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "method_not_allowed", 408: "request_timeout", 413: "request_too_large",
               415: "unsupported_media_type", 421: "misdirected_request", 422: "invalid_request_error",
               429: "server_busy", 500: "server_error", 501: "not_implemented", 503: "server_busy", 504: "timeout"}

OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")
# An absolute POSIX path: a "/" that does not continue a word, a relative path or a URL's "//".
POSIX_PATH = re.compile(r"(?<![\w/.~\\-])/(?!/)[^\s'\"`<>|,;:()\[\]{}]+")
WINDOWS_PATH = re.compile(r"(?<![\w])[A-Za-z]:\\[^\s'\"`<>|,;()\[\]{}]+")
API_PREFIXES = ("v1", "docs", "healthz", "metrics", "openapi.json")  # "/v1/models" in a hint is no file


def scrub(text, roots: Iterable[str] = ()) -> str:
    """`text` without the server's paths or memory addresses: a path under one of `roots` (the
    models directory) becomes relative to it (`vae/config.json`), the root itself its folder's
    name, any other absolute path its last component, `<_io.BytesIO object at 0x7f..>` `<_io.BytesIO object>`."""
    if not isinstance(text, str) or not text:
        return text
    text = OBJECT_REPR.sub(lambda m: f"<{m.group(1)} object>", text)
    for root in sorted({str(r).rstrip("/\\") for r in roots if r}, key=len, reverse=True):
        if not root:
            continue
        for sep in ("/", "\\"):
            text = text.replace(root + sep, "")
        name = re.split(r"[/\\]", root)[-1] or "the models directory"
        text = re.sub(re.escape(root) + r"(?![\w.-])", lambda _m: name, text)
    text = POSIX_PATH.sub(_posix_basename, text)
    return WINDOWS_PATH.sub(lambda m: _trailing(m.group(0), ntpath.basename(m.group(0).rstrip(".\\"))), text)


def _posix_basename(match: re.Match) -> str:
    path = match.group(0)
    parts = [p for p in path.rstrip(".").split("/") if p]
    if not parts or parts[0] in API_PREFIXES or len(parts) < 2:  # an API route, "/", or one component: nothing to hide
        return path
    return _trailing(path, parts[-1])


def _trailing(path: str, name: str) -> str:
    """name, plus the sentence's full stops the path pattern swallowed."""
    return name + path[len(path.rstrip(".")):]


def scrub_value(value, roots: Iterable[str] = ()):
    """scrub applied to every string inside a JSON-like value (dicts, lists)."""
    roots = tuple(roots)
    if isinstance(value, str):
        return scrub(value, roots)
    if isinstance(value, dict):
        return {k: scrub_value(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v, roots) for v in value]
    return value


def error_body(status: int, message: str, hint: str | None = None, param: str | None = None,
               roots: Iterable[str] = ()) -> dict:
    roots = tuple(roots)
    return {"error": {"message": scrub(message, roots), "hint": scrub(hint, roots),
                      "type": ERROR_TYPES.get(status, "error"), "param": scrub(param, roots), "code": status}}


def error_response(status: int, message: str, hint: str | None = None, param: str | None = None,
                   headers: dict | None = None, *, roots: Iterable[str] = ()) -> JSONResponse:
    """The JSON error, scrubbed (see `scrub`; `roots`: the models directory's paths)."""
    return JSONResponse(error_body(status, message, hint, param, roots), status_code=status, headers=headers)


def store_roots(request: Request) -> tuple[str, ...]:
    store = getattr(request.app.state, "store", None)
    return tuple(getattr(store, "public_roots", ()))


def add_error_handlers(app: FastAPI, json_bodies: dict) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error_response(e.status, e.message, e.hint, e.param, e.headers, roots=store_roots(request))

    @app.exception_handler(GenlabError)
    async def genlab_error(request: Request, e: GenlabError):
        return error_response(e.status, e.message, e.hint, e.param, roots=store_roots(request))

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
        return error_response(e.status_code, str(e.detail), headers=e.headers, roots=store_roots(request))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        # The details (message, traceback, paths) go to the server log only; the reply names the type.
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
