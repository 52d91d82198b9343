"""``RequestGuard``: what is checked on a request's headers before the app reads a byte of its body.

A pure ASGI middleware (a ``BaseHTTPMiddleware`` would read bodies through a stream of its
own). Before the app runs:

- the API key, when the service has keys: on ``/v1`` routes and the docs (``/docs``,
  ``/redoc``, ``/openapi.json``; a browser may give it as ``?key=``) any valid key, on
  ``/metrics`` one with the ``metrics`` or ``admin`` scope: 401 (403 without the scope);
  a WebSocket (``/v1/live``, the key as a header or ``?key=``) without a valid key is
  closed with code 4401 before the app sees it;
- the declared ``Content-Length`` against the limit (multipart: two uploads and their
  fields; any other body: ``max_json_bytes``): 413;
- uploads being received (a multipart body, or one that is large or of unknown length)
  against ``max_uploads_in_flight``: 503 with ``Retry-After``, at once, never a queue.

While the body streams in, its size is counted (a chunked body declares none: 413) and a
body that stops arriving for ``body_timeout_seconds`` is answered 408.

A refusal is the project's JSON error with ``Connection: close`` when a body was announced,
so the server drops the connection instead of reading what the client goes on sending.
Once it has answered, the app is told the client left and what it sends is dropped.
"""

import asyncio
import json
import logging
from urllib.parse import parse_qs

from starlette.routing import get_route_path

from service.api.deps import PRINCIPAL_SCOPE_KEY, KeyRing, unauthorized

log = logging.getLogger("talkingface.api")

DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
METRICS_PATH = "/metrics"
LARGE_BODY = 1 << 20            # a non-multipart body above this counts as an upload
DISCONNECT = {"type": "http.disconnect"}


async def respond(send, status, code, message, headers=(), close=False):
    """Send the JSON error ``{"error": {"code", "message"}}`` as the whole response."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(name.encode(), value.encode()) for name, value in headers]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope, name: bytes) -> bytes | None:
    """The value of a header sent exactly once; None when absent or repeated."""
    values = [value for key, value in scope["headers"] if key == name]
    return values[0] if len(values) == 1 else None


def _has(scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope["headers"])


class RequestGuard:
    """See the module's docstring. ``settings`` is read at each request (tests change limits live)."""

    def __init__(self, app, settings, keys: KeyRing):
        self.app, self.settings, self.keys = app, settings, keys
        self.uploads = 0            # bodies being received; the event loop is one thread

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            refusal, upload = self._check(scope)
        except Exception:           # never a 500 from the guard itself
            log.exception("request guard failed on %s", scope.get("path"))
            refusal, upload = (400, "invalid_input", "malformed request headers", ()), False
        chunked = _has(scope, b"transfer-encoding")
        length = _header(scope, b"content-length")
        has_body = chunked or (length is not None and length.strip() not in (b"", b"0"))
        if refusal:
            status, code, message, headers = refusal
            return await respond(send, status, code, message, headers, close=has_body)
        if upload:
            self.uploads += 1
        exchange = _Exchange(receive, send, self._limit(scope), self.settings.body_timeout_seconds,
                             has_body, self._release if upload else None)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            exchange.end_body()

    async def _websocket(self, scope, receive, send):
        """A WebSocket (``/v1/live``) passes with a valid key, as a header or ``?key=``; without one it
        is accepted and closed at once with code 4401 and the reason, so a browser can show why."""
        path = get_route_path(scope)
        if path == "/v1" or path.startswith("/v1/"):
            try:
                refusal = self._authenticate(scope, path, query_key=True)
            except Exception:       # never a 500 from the guard itself
                log.exception("request guard failed on %s", scope.get("path"))
                refusal = (400, "invalid_input", "malformed request headers", ())
            if refusal:
                message = await receive()
                if message["type"] == "websocket.connect":
                    await send({"type": "websocket.accept"})
                    await send({"type": "websocket.close", "code": 4400 + refusal[0] % 100,
                                "reason": refusal[2][:123]})
                return
        return await self.app(scope, receive, send)

    def _release(self):
        self.uploads -= 1

    def _limit(self, scope) -> int:
        return self.settings.max_request_bytes if _multipart(scope) else self.settings.max_json_bytes

    def _check(self, scope):
        """``(refusal or None, whether the request takes an upload slot)``; a refusal is
        ``(status, code, message, headers)``."""
        path = get_route_path(scope)
        if path == "/v1" or path.startswith("/v1/") or path in DOCS_PATHS or path == METRICS_PATH:
            refusal = self._authenticate(scope, path)
            if refusal:
                return refusal, False
        length = _header(scope, b"content-length")
        if length is None and _has(scope, b"content-length"):
            return (400, "invalid_input", "Content-Length is sent more than once", ()), False
        if length is not None and not length.strip().isdigit():
            return (400, "invalid_input", "Content-Length is not a number", ()), False
        declared = int(length) if length is not None else None
        limit = self._limit(scope)
        if declared is not None and declared > limit:
            return (413, "payload_too_large", f"the request body is {declared} bytes; the limit is {limit}",
                    ()), False
        has_body = bool(declared) or _has(scope, b"transfer-encoding")
        upload = has_body and path.startswith("/v1/") and (
            _multipart(scope) or declared is None or declared > LARGE_BODY)
        if upload and self.uploads >= self.settings.max_uploads_in_flight:
            return (503, "too_many_uploads", f"{self.uploads} uploads are being received, the most this server "
                                             "takes at once; retry in a moment", (("retry-after", "2"),)), False
        return None, upload

    def _authenticate(self, scope, path, query_key=False):
        """None, having left the caller in the scope, or the refusal. ``query_key``: ``?key=`` counts
        on any path (a browser's WebSocket cannot send a header)."""
        authorization = _header(scope, b"authorization")
        if authorization is None and (query_key or path in DOCS_PATHS):
            # A browser opening /docs cannot send a header; the page passes ?key= on to the schema.
            key = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key")
            authorization = f"Bearer {key[0]}".encode() if key else None
        principal = self.keys.authenticate(authorization)
        if principal is None:
            error = unauthorized()
            return error.status, error.code, error.message, tuple(error.headers.items())
        if path == METRICS_PATH and self.keys and not principal.scopes & {"metrics", "admin"}:
            return 403, "forbidden", "/metrics needs a key with the metrics or admin scope", ()
        scope[PRINCIPAL_SCOPE_KEY] = principal
        return None


def _multipart(scope) -> bool:
    return (_header(scope, b"content-type") or b"").lower().startswith(b"multipart/form-data")


class _Exchange:
    """One request's receive and send, as the guard watches them."""

    def __init__(self, receive, send, limit, timeout, has_body, on_body_end):
        self._receive, self._send = receive, send
        self.limit, self.timeout = limit, timeout
        self.reading = has_body             # the body has not all arrived yet
        self.on_body_end = on_body_end
        self.received = 0
        self.started = self.answered = self.cut = False

    def end_body(self):
        self.reading = False
        if self.on_body_end:
            self.on_body_end()
            self.on_body_end = None

    async def receive(self):
        if self.cut:
            return DISCONNECT
        if not self.reading:
            return await self._receive()
        try:
            async with asyncio.timeout(self.timeout):
                message = await self._receive()
        except TimeoutError:
            await self._refuse(408, "request_timeout", f"the request body stopped arriving for {self.timeout:g} s")
            return DISCONNECT
        if message["type"] != "http.request":
            self.end_body()
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            await self._refuse(413, "payload_too_large", f"the request body is over the limit of {self.limit} bytes")
            return DISCONNECT
        if not message.get("more_body", False):
            self.end_body()
        return message

    async def send(self, message):
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _refuse(self, status, code, message):
        self.end_body()
        self.cut = True                     # the app is told the client left
        if not self.started:
            self.answered = True            # and whatever it answers then is dropped
            await respond(self._send, status, code, message, close=True)
