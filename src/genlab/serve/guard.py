"""ASGI middleware in front of every route: body-size and content-type refusals, and metrics."""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException as StarletteHTTPException

from ..limits import MAX_BODY_BYTES
from .errors import error_response
from .metrics import Metrics


class RequestGuard:
    """ASGI middleware: refuses oversized bodies (413) and wrong content types (415) before any
    parsing, and records every request's endpoint, status and duration in the metrics."""

    def __init__(self, app, metrics: Metrics, json_bodies: set[str], multipart_bodies: set[str]):
        self.app = app
        self.metrics = metrics
        self.json_bodies, self.multipart_bodies = json_bodies, multipart_bodies

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

    def _refusal(self, scope):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return error_response(413, f"the request body is {int(length):,} bytes, more than {MAX_BODY_BYTES >> 20} MiB",
                                  "send smaller images or fewer of them")
        if scope["method"] != "POST":
            return None
        path = scope["path"]
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if path in self.json_bodies and content_type != "application/json":
            return error_response(415, f"{path} takes a JSON body, but the Content-Type is {content_type or 'missing'!r}",
                                  "send -H 'Content-Type: application/json' with a JSON object")
        if path in self.multipart_bodies and content_type != "multipart/form-data":
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
