"""ASGI middleware in front of every route: who may ask (the Host allow-list, cross-origin
refusal, the API key), body-size and content-type refusals, a deadline for reading the body,
and metrics.

Why a Host allow-list: a web page on attacker.example can make the browser resolve its own name
to 127.0.0.1 (DNS rebinding) and then talk to this server as if it were the page's own origin;
the Host header still says attacker.example, so only the names this server is known by are
served. Why refuse cross-origin requests: a page on any site can POST a form (multipart, no CORS
preflight) to http://127.0.0.1:8000; the browser sends an Origin header that is not the server's
own, so such requests are refused (403) unless --cors-origin names that origin.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import time
from collections.abc import Iterable

from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GenlabError
from ..limits import MAX_BODY_BYTES
from .errors import error_response
from .metrics import Metrics

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.]*\]|[^/:?#\[\]@]*)(?::(\d{1,5}))?/?")
DEFAULT_PORTS = {"http": "80", "https": "443"}
CLOSE = {"Connection": "close"}  # a refusal sent before the body was read: the connection is not reused


def host_name(value: str) -> str | None:
    """The host of a Host header ("127.0.0.1:8000", "[::1]:8000", "Localhost.") lower-cased,
    without port, brackets or a final dot; None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
        if not port.isdigit():
            return None
    else:
        host = value
    host = host.rstrip(".")
    return host if host and re.fullmatch(r"[a-z0-9._:~%-]+", host) else None


def normal_origin(value: str) -> str:
    """An origin as scheme://host[:port], lower-cased, without a default port or a final "/"."""
    value = value.strip().lower()
    match = ORIGIN.fullmatch(value)
    if not match:
        return value
    scheme, host, port = match.groups()
    host = host.rstrip(".")
    return f"{scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS.get(scheme) else "")


def valid_origin(value: str) -> bool:
    """What --cors-origin takes: scheme://host[:port] (no path) or "*"."""
    return value == "*" or ORIGIN.fullmatch(value.strip().lower()) is not None


def needs_key(method: str, path: str) -> bool:
    """Everything needs the API key but liveness (GET /healthz), the API reference and the
    studio's static files, which hold no data."""
    if method not in ("GET", "HEAD"):
        return True
    return path == "/metrics" or path == "/v1" or path.startswith("/v1/")


class AccessPolicy:
    """Who may use the server: the names in the Host header, the cross-origin pages, the API key."""

    def __init__(self, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = (),
                 api_key: str | None = None):
        hosts = set(LOOPBACK_HOSTS)
        self.any_host = self.any_ip = False
        for entry in allowed_hosts:
            if entry.strip() == "*":
                self.any_host = True
                continue
            name = host_name(entry)
            if name is None:
                raise GenlabError(f"{entry!r} is not a host name", "give --allowed-host a name or an address, e.g. "
                                  "--allowed-host genlab.lan", param="allowed-host")
            if name in ("0.0.0.0", "::"):  # bound to every address: any address literal names this server
                self.any_ip = True
            hosts.add(name)
        self.hosts = frozenset(hosts)
        cors_origins = list(cors_origins)
        for origin in cors_origins:
            if not valid_origin(origin):
                raise GenlabError(f"{origin!r} is not an origin", "give --cors-origin the scheme, host and port of the "
                                  "page's site, e.g. --cors-origin http://localhost:3000", param="cors-origin")
        self.cors_origins = frozenset("*" if o == "*" else normal_origin(o) for o in cors_origins)
        self.api_key = api_key or None

    def host_allowed(self, host: str | None) -> bool:
        if host is None:
            return False
        if self.any_host or host in self.hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address.is_loopback or self.any_ip

    def cross_origin_allowed(self, origin: str) -> bool:
        return "*" in self.cors_origins or normal_origin(origin) in self.cors_origins

    def refusal(self, scope, headers: dict[str, str]):
        """421 for a Host this server is not known by, 403 for a page of another origin; or None."""
        raw_host = headers.get("host")
        if not self.host_allowed(host_name(raw_host) if raw_host is not None else None):
            shown = (raw_host or "")[:100]
            return error_response(421, f"this server does not answer to the host name {shown!r}" if raw_host
                                  else "the request has no Host header",
                                  "use http://127.0.0.1:PORT or http://localhost:PORT, or start the server with "
                                  "--allowed-host NAME for each name it is reached by", headers=CLOSE)
        origin = headers.get("origin")
        if origin is None:
            return None
        own = normal_origin(f"{scope.get('scheme', 'http')}://{raw_host}")
        if normal_origin(origin) == own or self.cross_origin_allowed(origin):
            return None
        return error_response(403, f"cross-origin requests from {origin[:100]!r} are refused",
                              "a web page of another site cannot use this server; start it with --cors-origin "
                              "ORIGIN for each site that may", headers=CLOSE)

    def key_refusal(self, scope, headers: dict[str, str]):
        """401 unless the request carries Authorization: Bearer KEY (when the server has a key)."""
        if self.api_key is None or not needs_key(scope["method"], scope["path"]):
            return None
        scheme, _, given = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
            return None
        return error_response(401, "this server needs an API key" if not given else "the API key is not valid",
                              "send the header Authorization: Bearer KEY, with the key the server was started with "
                              "(--api-key or GENLAB_API_KEY)", headers={"WWW-Authenticate": "Bearer", **CLOSE})


class RequestGuard:
    """ASGI middleware: refuses a Host the server is not known by (421), a page of another
    origin (403), a request without the API key (401), oversized bodies (413) and wrong content
    types (415) before any parsing; gives up on a body that has not arrived within
    `read_timeout_s` (408); and records every request's endpoint, status and duration in the
    metrics. With `access.cors_origins`, Starlette's CORSMiddleware answers preflights and adds
    the CORS headers for those origins (before the key check: preflights carry no key)."""

    def __init__(self, app, metrics: Metrics, json_bodies: set[str], multipart_bodies: set[str],
                 access: AccessPolicy | None = None, read_timeout_s: float = 30.0):
        self.app = app
        self.metrics = metrics
        self.json_bodies, self.multipart_bodies = json_bodies, multipart_bodies
        self.access = access or AccessPolicy()
        self.read_timeout_s = float(read_timeout_s)
        self.inner = self._checked
        if self.access.cors_origins:
            from starlette.middleware.cors import CORSMiddleware

            self.inner = CORSMiddleware(self._checked, allow_origins=sorted(self.access.cors_origins),
                                        allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                                        max_age=600)

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
            headers = _headers(scope)
            refusal = self.access.refusal(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send_recording)
                return
            await self.inner(scope, receive, send_recording)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None)
            endpoint = "/ (studio)" if endpoint == "" else (endpoint or "unmatched")
            self.metrics.observe(endpoint, scope["method"], status["code"], time.perf_counter() - start)

    async def _checked(self, scope, receive, send):
        headers = _headers(scope)
        refusal = self.access.key_refusal(scope, headers) or self._body_refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _body_refusal(self, scope, headers: dict[str, str]):
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return error_response(413, f"the request body is {int(length):,} bytes, more than {MAX_BODY_BYTES >> 20} MiB",
                                  "send smaller images or fewer of them", headers=CLOSE)
        if scope["method"] != "POST":
            return None
        path = scope["path"]
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if path in self.json_bodies and content_type != "application/json":
            return error_response(415, f"{path} takes a JSON body, but the Content-Type is {content_type or 'missing'!r}",
                                  "send -H 'Content-Type: application/json' with a JSON object", headers=CLOSE)
        if path in self.multipart_bodies and content_type != "multipart/form-data":
            return error_response(415, f"{path} takes multipart/form-data, but the Content-Type is "
                                  f"{content_type or 'missing'!r}", "send the fields as a form with files, "
                                  "e.g. curl -F model=NAME -F image=@digit.png", headers=CLOSE)
        return None

    def _limited(self, receive):
        """receive, raising 413 once a body without (or with a false) Content-Length passes the
        limit, and 408 when the body has not arrived in full within the read timeout (counted
        from the request's start). Once the body is complete, receive is passed through
        unbounded (a streaming response waits on it for the client's disconnect)."""
        seen = {"bytes": 0, "done": False}
        timeout = self.read_timeout_s
        deadline = time.monotonic() + timeout

        async def limited():
            if seen["done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                seen["done"] = True
                # An HTTPException, which FastAPI passes on while it reads the body (other errors become 400s).
                raise StarletteHTTPException(408, f"the request body did not arrive within the server's {timeout:g} s "
                                             "read timeout", headers=CLOSE) from None
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > MAX_BODY_BYTES:
                    seen["done"] = True
                    raise StarletteHTTPException(413, f"the request body is more than {MAX_BODY_BYTES >> 20} MiB",
                                                 headers=CLOSE)
                seen["done"] = not message.get("more_body", False)
            else:
                seen["done"] = True
            return message

        return limited


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
