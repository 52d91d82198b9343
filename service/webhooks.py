"""Signed, retried webhook calls for jobs that reach a final state, to checked targets only.

When a job with a ``webhook_url`` ends (succeeded, failed or canceled), the job store
marks its webhook ``pending``. A :class:`WebhookDispatcher` in the API server process
takes due deliveries from the store and hands them to a bounded pool of threads, each of
which POSTs the public job object to the URL and records the outcome: delivered, retried
later with exponential backoff, or failed for good after ``max_attempts``. Delivery is at
least once; receivers deduplicate on the job id.

Calls are signed like Stripe's: the header ``TalkingFace-Signature: t=<unix time>,v1=<hex>``
carries an HMAC-SHA256, keyed with the shared secret, of ``f"{t}."`` followed by the raw
request body. A receiver checks it with :func:`verify`::

    ok = verify(request_body, request.headers["TalkingFace-Signature"], secret)

A webhook URL must not turn the server into a proxy into its own network (SSRF).
:class:`TargetRules` refuses URLs with credentials or odd characters, and targets whose
addresses are loopback, private, link-local (cloud metadata), multicast, reserved or the
service itself, unless an operator allows them (``TALKINGFACE_WEBHOOK_ALLOW``). URLs are
checked when a job is submitted and again at each delivery, and the call connects to the
very addresses that were checked (no second lookup a rebinding DNS server could answer
differently); redirects are never followed.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import queue
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable
from urllib.parse import SplitResult, urlsplit

import httpcore
import httpx

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "TalkingFace-Signature"
EVENT_HEADER = "TalkingFace-Event"
USER_AGENT = "talkingface-webhooks/1"
INVALID_URL = "invalid url"          # prefix of the error of a delivery that can never succeed
REFUSED_URL = "refused url"          # prefix of the error of a delivery to a target the rules refuse
MAX_BACKOFF_SECONDS = 300.0
MAX_URL_LENGTH = 2048

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``.

    Args:
        body (`bytes`): the exact bytes of the request body.
        secret (`str`): the shared HMAC key.
        timestamp (`int`): seconds since the epoch; signed too, so a captured call
            cannot be replayed later with a fresh timestamp.

    Returns:
        `str`: ``"t=<timestamp>,v1=<hex HMAC-SHA256>"``.
    """
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(body: bytes, header: str, secret: str, tolerance_seconds: float = 300,
           now: float | None = None) -> bool:
    """Whether ``header`` is a valid signature of ``body`` made within the tolerance.

    Args:
        body (`bytes`): the raw request body, before any JSON parsing.
        header (`str`): the value of the ``TalkingFace-Signature`` header.
        secret (`str`): the shared HMAC key; an empty secret verifies nothing.
        tolerance_seconds (`float`, defaults to 300): how far the signed timestamp may
            be from ``now``, either way.
        now (`float`, *optional*): the current time; ``time.time()`` when None.

    Returns:
        `bool`: True only for a fresh, matching signature. Malformed headers are False.
    """
    if not secret or not header:
        return False
    timestamp, candidates = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            # Several v1 entries are allowed so that a secret can be rotated.
            candidates.append(value)
    try:
        timestamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = sign(body, secret, timestamp).split("v1=", 1)[1]
    # compare_digest takes the same time wherever the strings differ: no timing oracle.
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates)


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...).

    2, 4, 8, ... seconds, capped at five minutes, plus up to 10% random jitter so that
    calls that failed together (a receiver outage) are not retried in lockstep.
    """
    delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(max(attempt, 1), 30))
    return delay * (1 + 0.1 * random.random())


# -- which targets may be called ----------------------------------------------------

class WebhookURLError(ValueError):
    """A webhook URL that is refused; the message says why and never repeats the URL."""


class UnresolvedHost(WebhookURLError):
    """The URL's host does not resolve (now: at delivery it may again later)."""


class RefusedTarget(WebhookURLError):
    """The URL's host resolves to an address webhooks may not call."""


HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
SERVICE = "the service itself"


def parse_allow_list(value) -> list[str]:
    """The entries of ``TALKINGFACE_WEBHOOK_ALLOW``: host names (lower case) and networks (CIDR).

    Args:
        value (`str | list[str]`): comma-separated, or already a list.

    Returns:
        `list[str]`: each entry normalised; a bare address becomes its one-address network.

    Raises:
        ValueError: an entry that is neither a host name nor an IP network.
    """
    entries = [e.strip() for e in value.split(",")] if isinstance(value, str) else list(value or [])
    parsed = []
    for entry in filter(None, entries):
        try:
            parsed.append(str(ipaddress.ip_network(entry.strip("[]"), strict=False)))
        except ValueError:
            if not HOST_NAME.fullmatch(entry):
                raise ValueError(f"webhook_allow: {entry!r} is neither a host name nor an IP network") from None
            parsed.append(entry.lower().rstrip("."))
    return parsed


def address_problem(address: Address) -> str | None:
    """Why a webhook may not call ``address`` (``"loopback"``, ``"private"``, ...), or None if public.

    IPv6 forms that carry an IPv4 address (``::ffff:127.0.0.1``, 6to4, NAT64) are judged by it.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("shared (CGNAT)", address in CGNAT), ("reserved", address.is_reserved),
              ("private", address.is_private),
              ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
              ("not globally routable", not address.is_global))
    return next((name for name, hit in checks if hit), None)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as strings (a DNS lookup; tests replace it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked webhook target: where to connect, and what to say in ``Host`` and TLS SNI."""

    scheme: str
    host: str                       # as in the URL, lower case, without brackets
    port: int
    target: str                     # path and query, the request line's target
    addresses: tuple[str, ...]      # checked; the call connects to these and no others

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def check_webhook_syntax(url) -> SplitResult:
    """The parts of ``url`` if it is a well-formed http(s) URL a webhook may have.

    Refused: other schemes, credentials (``user:password@``), control characters, spaces,
    backslashes and other non-printable or non-ASCII characters, a missing or odd host, a bad
    port, more than ``MAX_URL_LENGTH`` characters. Nothing is resolved here.

    Raises:
        WebhookURLError: saying which rule the URL breaks, without repeating it.
    """
    if not isinstance(url, str) or not url:
        raise WebhookURLError("must be an http(s) URL")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookURLError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(not 0x21 <= ord(c) < 0x7F for c in url) or "\\" in url:
        raise WebhookURLError("must not contain spaces, control characters (CR, LF, tab), backslashes or "
                              "non-ASCII characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookURLError("is not a valid URL (host or port)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise WebhookURLError("must be an http(s) URL")
    if "@" in parts.netloc:
        raise WebhookURLError("must not carry credentials (user:password@); receivers check the "
                              "TalkingFace-Signature header instead")
    host = parts.hostname or ""
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise WebhookURLError("has an invalid IPv6 address") from None
    elif not HOST_NAME.fullmatch(host) or len(host) > 253:
        raise WebhookURLError("must name a host (letters, digits, dots and hyphens; IDNA names in xn-- form)")
    if port == 0:
        raise WebhookURLError("has an invalid port")
    return parts


class TargetRules:
    """Which webhook targets may be called: public addresses, and those an operator allows.

    Args:
        allow (`list[str]`): host names and networks (``parse_allow_list``) that may be
            called even when their addresses are not public.
        service_host (`str`, defaults to ``"127.0.0.1"``): the address the service listens on.
        service_port (`int`, defaults to 8000): its port. Calls to it (on loopback, on a
            wildcard address, on this machine's addresses) are refused even when allowed,
            so that a webhook cannot drive the API.
    """

    def __init__(self, allow=(), service_host: str = "127.0.0.1", service_port: int = 8000):
        allow = parse_allow_list(allow)
        self.allowed_networks = [ipaddress.ip_network(e) for e in allow if "/" in e]
        self.allowed_hosts = {e for e in allow if "/" not in e}
        self.service_host = service_host
        self.service_port = service_port

    @classmethod
    def from_settings(cls, settings) -> "TargetRules":
        return cls(settings.webhook_allow, settings.host, settings.port)

    @property
    def own_addresses(self) -> set[Address]:
        """The addresses of this machine that a name or the service's host resolve to."""
        return _own_addresses(self.service_host)

    def check(self, url) -> Target:
        """The checked :class:`Target` of ``url``, resolved now.

        Raises:
            WebhookURLError: the URL is malformed, does not resolve, or one of its addresses
                is refused (any one is enough: a resolver may answer any of them).
        """
        parts = check_webhook_syntax(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            found = resolve(host, port)
        except (OSError, UnicodeError):
            raise UnresolvedHost(f"host {host!r} does not resolve") from None
        if not found:
            raise UnresolvedHost(f"host {host!r} does not resolve")
        named = host in self.allowed_hosts
        for text in found:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            problem = self._problem(address, port, named)
            shown = host if host == str(address) else f"{host} ({address})"
            if problem == SERVICE:
                raise RefusedTarget(f"{shown} port {port} is {SERVICE}: webhooks never call the service's own API")
            if problem:
                raise RefusedTarget(f"{shown} is {problem}; webhooks call public addresses only "
                                    "(an operator can allow internal targets: TALKINGFACE_WEBHOOK_ALLOW)")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(scheme, host, port, target, tuple(found))

    def _problem(self, address: Address, port: int, named: bool) -> str | None:
        own = address.is_loopback or address.is_unspecified or address in self.own_addresses
        if own and port == self.service_port:
            return SERVICE
        if named or any(address in network for network in self.allowed_networks):
            return None
        return address_problem(address) or ("this machine" if own else None)


@lru_cache(maxsize=8)
def _own_addresses(service_host: str) -> set[Address]:
    # The system's resolver, not ``resolve``: this is about the machine, not a target's DNS.
    names = [socket.gethostname()] + ([] if service_host in WILDCARD_HOSTS else [service_host])
    found = set()
    for name in names:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            found.update(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos)
        except (OSError, UnicodeError, ValueError):
            pass
    return found


def check_webhook_url(url, settings) -> Target:
    """``url`` checked against the service's rules (:class:`TargetRules` from ``settings``).

    Raises:
        WebhookURLError: why the URL is refused, in words a client can act on.
    """
    return TargetRules.from_settings(settings).check(url)


# -- one call, to the checked addresses, within a deadline ----------------------------

class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until the call's deadline.

    A per-read timeout alone lets a receiver that trickles one byte at a time hold a call
    for ever; clipping each wait to what is left of the deadline bounds the whole call.
    """

    def __init__(self, stream: httpcore.NetworkStream, deadline: float):
        self.stream, self.deadline = stream, deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("the call's deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        left = self._left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, left), self.deadline)

    def get_extra_info(self, info: str):
        return self.stream.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked addresses, whatever host the URL names: no second DNS lookup."""

    def __init__(self, addresses: tuple[str, ...], deadline: float):
        self.addresses, self.deadline = addresses, deadline
        self.sync = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        error = None
        for address in self.addresses:
            left = self.deadline - time.monotonic()
            if left <= 0:
                break
            try:
                stream = self.sync.connect_tcp(address, port, left if timeout is None else min(timeout, left),
                                               local_address, socket_options)
                return _DeadlineStream(stream, self.deadline)
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectTimeout("the call's deadline passed")


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Certificates are checked against the URL's host name (sent as SNI), not the address.
    return httpx.create_ssl_context()


def post(target: Target, data: bytes, headers: dict, timeout: float, deadline_seconds: float) -> tuple[int, str]:
    """POST ``data`` to ``target``; ``(status, reason)``. Redirects are answers, never followed.

    Args:
        target (`Target`): checked; the connection goes to its ``addresses`` only.
        data (`bytes`): the body.
        headers (`dict`): request headers; ``Host`` is set from the target.
        timeout (`float`): seconds for each of connect, write and read.
        deadline_seconds (`float`): seconds for the whole call, answer included.

    Raises:
        httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError: no answer.
    """
    deadline = time.monotonic() + deadline_seconds
    url = httpcore.URL(scheme=target.scheme.encode(), host=target.host.encode(), port=target.port,
                       target=target.target.encode())
    headers = {"Host": target.host_header, **headers}
    timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    # One pool per call: nothing is kept between calls to hosts whose addresses may change.
    with httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=_PinnedBackend(target.addresses, deadline),
                                 max_connections=1, retries=0) as pool:
        # The answer's body is never read: the status is all a webhook needs.
        with pool.stream("POST", url, headers=list(headers.items()), content=data,
                         extensions={"timeout": timeouts}) as response:
            reason = response.extensions.get("reason_phrase", b"").decode("latin-1")
            return response.status, reason


def deliver_once(job_row: dict, body: dict, secret: str, rules: TargetRules, timeout: float,
                 deadline_seconds: float | None = None) -> tuple[bool, str | None]:
    """Check the job's webhook URL again and POST ``body`` to it once.

    Args:
        job_row (`dict`): the job row; ``webhook_url`` and ``status`` are read.
        body (`dict`): the public job object to send as JSON.
        secret (`str`): HMAC key; when empty the call goes out unsigned.
        rules (`TargetRules`): which targets may be called; checked now (the DNS answer may
            have changed since submission).
        timeout (`float`): seconds for each of connect, write and read.
        deadline_seconds (`float`, *optional*): seconds for the whole call; ``2 * timeout``
            when None.

    Returns:
        `tuple[bool, str | None]`: ``(True, None)`` on a 2xx answer, else ``(False, error)``.
        An error starting with ``"invalid url"`` or ``"refused url"`` means no request was
        made and none ever will succeed.
    """
    deadline_seconds = deadline_seconds or 2 * timeout
    try:
        target = rules.check(job_row.get("webhook_url"))
    except UnresolvedHost as exc:
        return False, f"dns error: {exc}"[:200]          # may resolve again later: retried
    except RefusedTarget as exc:
        return False, f"{REFUSED_URL}: {exc}"[:200]
    except WebhookURLError as exc:
        return False, f"{INVALID_URL}: {exc}"[:200]
    # Serialised once: the signature covers exactly the bytes that are sent.
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               EVENT_HEADER: f"job.{job_row.get('status')}"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(data, secret, int(time.time()))
    try:
        status, reason = post(target, data, headers, timeout, deadline_seconds)
    except httpcore.TimeoutException as exc:
        return False, f"timeout: no answer within {timeout:g} s a step, {deadline_seconds:g} s in all " \
                      f"({type(exc).__name__})"
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
        return False, f"connection error: {type(exc).__name__}: {exc}"[:200]
    if 200 <= status < 300:
        return True, None
    followed = " (redirects are not followed)" if 300 <= status < 400 else ""
    return False, f"HTTP {status} {reason}".strip() + followed


# -- the dispatcher -------------------------------------------------------------------

class WebhookDispatcher:
    """Delivers pending webhooks from the job store, on a bounded pool of threads.

    Runs in the API server process; job workers never wait on a receiver. A feeder thread
    takes a due delivery from the store only when one of ``threads`` senders is free, so
    a delivery is never held while it waits behind a slow receiver, and one receiver that
    trickles its answer takes one sender for at most ``deadline`` seconds. Several
    dispatchers (several API processes) may share one store: a delivery taken by one is
    held from the others while it is in flight.

    Args:
        store (`JobStore`): the job store.
        job_body (`Callable[[dict], dict]`): turns a job row into the public JSON job object.
        secret (`str`): HMAC key for the signature; empty sends unsigned calls.
        max_attempts (`int`): attempts before a delivery is marked failed.
        timeout (`float`): seconds for each of connect, write and read of one call.
        poll_seconds (`float`, defaults to 0.5): pause between looks at an idle store.
        rules (`TargetRules`, *optional*): which targets may be called; public ones only when None.
        threads (`int`, defaults to 4): calls in flight at once.
        deadline (`float`, *optional*): seconds for one whole call; ``2 * timeout`` when None.
        shutdown_seconds (`float`, defaults to 5): how long :meth:`stop` waits for calls in flight.
    """

    batch = 20     # deliveries per run_once

    def __init__(self, store, job_body: Callable[[dict], dict], secret: str, max_attempts: int,
                 timeout: float, poll_seconds: float = 0.5, rules: TargetRules | None = None, threads: int = 4,
                 deadline: float | None = None, shutdown_seconds: float = 5.0):
        self.store = store
        self.job_body = job_body
        self.secret = secret
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.rules = rules or TargetRules()
        self.threads = max(1, threads)
        self.deadline = deadline or 2 * timeout
        self.shutdown_seconds = shutdown_seconds
        self._stop = threading.Event()
        self._pool: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, store, job_body: Callable[[dict], dict], settings) -> "WebhookDispatcher":
        """A dispatcher with the service's ``TALKINGFACE_WEBHOOK_*`` settings."""
        return cls(store, job_body, settings.webhook_secret, settings.webhook_max_attempts,
                   settings.webhook_timeout_seconds, rules=TargetRules.from_settings(settings),
                   threads=settings.webhook_threads, deadline=settings.webhook_deadline_seconds,
                   shutdown_seconds=settings.webhook_shutdown_seconds)

    @property
    def hold_seconds(self) -> float:
        # Longer than a call can last (the deadline, plus a DNS lookup): no one else takes it meanwhile.
        return 2 * self.deadline + self.timeout

    def _take(self) -> dict | None:
        rows = self.store.take_due_webhooks(hold_seconds=self.hold_seconds, limit=1)
        return rows[0] if rows else None

    def run_once(self) -> int:
        """Deliver the deliveries due now, one after another in this thread. Returns how many."""
        done = 0
        while done < self.batch and not self._stop.is_set():
            row = self._take()
            if row is None:
                break
            self._deliver(row)
            done += 1
        return done

    def _deliver(self, row: dict) -> None:
        try:
            ok, error = deliver_once(row, self.job_body(row), self.secret, self.rules, self.timeout, self.deadline)
        except Exception as exc:
            # A bug in building the body must not stop other deliveries; it counts as a
            # failed attempt so that it ends after max_attempts instead of looping.
            logger.exception("webhook for job %s could not be sent", row["id"])
            ok, error = False, f"internal error: {type(exc).__name__}: {exc}"[:200]
        attempt = row["webhook_attempts"] + 1
        if ok:
            self.store.record_webhook(row["id"], True)
        elif error.startswith((INVALID_URL, REFUSED_URL)) or attempt >= self.max_attempts:
            logger.warning("webhook for job %s failed for good after %d attempts: %s", row["id"], attempt, error)
            self.store.record_webhook(row["id"], False, error=error)
        else:
            logger.info("webhook for job %s failed (attempt %d): %s", row["id"], attempt, error)
            self.store.record_webhook(row["id"], False, error=error, retry_at=time.time() + backoff(attempt))

    def _feed(self, rows: queue.Queue, free: threading.Semaphore, stop: threading.Event) -> None:
        while not stop.is_set():
            if not free.acquire(timeout=self.poll_seconds):
                continue
            try:
                row = self._take()
            except Exception:
                # The store may be briefly unavailable (locked, restarting); a held
                # delivery is taken again once its hold runs out, so nothing is lost.
                logger.exception("webhook dispatcher: taking deliveries failed; trying again")
                row = None
            if row is None:
                free.release()
                stop.wait(self.poll_seconds)
                continue
            rows.put(row)
        for _ in range(self.threads):
            rows.put(None)

    def _send(self, rows: queue.Queue, free: threading.Semaphore) -> None:
        while (row := rows.get()) is not None:
            try:
                self._deliver(row)
            except Exception:
                logger.exception("webhook for job %s: recording the outcome failed; sent again later", row["id"])
            finally:
                free.release()

    @property
    def alive(self) -> bool:
        """Whether the feeder and every sender are running."""
        return bool(self._pool) and all(t.is_alive() for t in self._pool)

    def start(self) -> None:
        """Start the feeder and the senders, daemon threads (idempotent while running)."""
        if any(t.is_alive() for t in self._pool):
            return
        # New queue and slots each start: senders of an earlier run may still be finishing a call.
        rows, free = queue.Queue(), threading.Semaphore(self.threads)
        # Each run has its own stop event: a feeder of an earlier run must not wake up again.
        self._stop = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(rows, free, self._stop), name="webhook-feeder", daemon=True)
        senders = [threading.Thread(target=self._send, args=(rows, free), name=f"webhook-sender-{i}", daemon=True)
                   for i in range(self.threads)]
        self._pool = [feeder, *senders]
        for thread in self._pool:
            thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking deliveries and wait up to ``timeout`` (``shutdown_seconds`` when None) for calls
        in flight. Calls still running after that finish in the background or, if the process ends,
        are sent again after the next start (their hold runs out): at least once either way.

        Returns:
            `bool`: True if every thread ended in time.
        """
        self._stop.set()
        end = time.monotonic() + (self.shutdown_seconds if timeout is None else timeout)
        for thread in self._pool:
            thread.join(max(0.0, end - time.monotonic()))
        left = sum(t.is_alive() for t in self._pool)
        if left:
            logger.warning("webhook dispatcher: stopped with calls still in flight (%d threads); what they do "
                           "not deliver is sent again after the next start", left)
        return not left
