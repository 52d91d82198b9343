"""Running the app under uvicorn the way ``talkingface serve`` does: safe on a network.

- Without API keys the server binds to loopback only, unless told it may
  (``--insecure`` / ``TALKINGFACE_INSECURE=1``): ``check_bind``.
- uvicorn has no timeout on request headers (its keep-alive timer is cancelled by the first
  byte of a request), so a client that connects and sends nothing, or headers a byte at a
  time, would hold its connection forever; and httptools sets no bound on the size of
  headers. ``header_timeout_protocol`` closes a connection whose request headers are not
  complete within ``header_timeout_seconds``, and answers 431 to headers over 64 KiB;
  idle keep-alive connections close after ``timeout_keep_alive``; bodies are timed and
  counted by ``service.api.guard``. (``limit_concurrency`` is left unset: it counts event
  streams as it counts uploads and answers in plain text; the guard caps uploads instead.)
- At SIGTERM/SIGINT ``app.state.stopping`` is set before uvicorn waits for open
  connections, so endless responses (the SSE event stream) end cleanly instead of being
  cut when the graceful-shutdown timeout runs out.
"""

import ipaddress
import json

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from models.errors import TalkingFaceError

KEEP_ALIVE_SECONDS = 5
GRACEFUL_SHUTDOWN_SECONDS = 10
MAX_HEADER_BYTES = 64 * 1024
_TOO_LARGE = json.dumps({"error": {"code": "headers_too_large",
                                   "message": f"the request headers are over {MAX_HEADER_BYTES} bytes"}}).encode()
HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_TOO_LARGE)) + _TOO_LARGE


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``: addresses other machines cannot reach."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings) -> None:
    """TalkingFaceError unless the address is loopback, the service has API keys, or it was told ``insecure``."""
    if settings.api_keys or settings.insecure or is_loopback(settings.host):
        return
    raise TalkingFaceError(
        f"refusing to serve on {settings.host} without API keys: anyone who reaches it could use and read every "
        "job. Set TALKINGFACE_API_KEYS (`talkingface keys create` makes one), bind to 127.0.0.1, or pass "
        "--insecure (TALKINGFACE_INSECURE=1) to serve without keys anyway")


def header_timeout_protocol(seconds: float):
    """uvicorn's httptools protocol, closing connections whose request headers take over ``seconds``
    (or ``MAX_HEADER_BYTES``).

    The clock starts when the connection opens (or, on a kept-alive one, at the first byte
    of the next request) and stops when the headers are complete.
    """

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer = None
        _header_bytes = 0

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def data_received(self, data):
            super().data_received(data)
            if self._header_timer is not None:          # a request's headers are still not complete
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                    self._disarm()
                    self.transport.write(HEADERS_TOO_LARGE)
                    self.transport.close()

        def on_message_begin(self):
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self):
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            if self._header_timer is None:
                self._header_bytes = 0
                self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self):
            self._header_timer = None
            if not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took over %g s", seconds)
                self.transport.close()

    return HeaderTimeoutProtocol


class Server(uvicorn.Server):
    """uvicorn's server, telling the app (``app.state.stopping``) as soon as it is asked to stop."""

    def __init__(self, config, stopping):
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig, frame):
        self.stopping.set()
        super().handle_exit(sig, frame)


def config(app, settings, **overrides) -> uvicorn.Config:
    """The uvicorn configuration of ``talkingface serve`` for ``app``."""
    options = dict(host=settings.host, port=settings.port, log_level="info",
                   # No access log: one line per request costs more than the request at high rates.
                   access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                   timeout_keep_alive=KEEP_ALIVE_SECONDS,
                   http=header_timeout_protocol(settings.header_timeout_seconds))
    return uvicorn.Config(app, **(options | overrides))


def run(app, settings) -> None:
    """Serve ``app`` until SIGTERM/SIGINT."""
    Server(config(app, settings), app.state.stopping).run()
