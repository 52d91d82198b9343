"""Signed, retried webhook calls for jobs that reach a final state.

When a job with a ``webhook_url`` ends (succeeded, failed or canceled), the job store
marks its webhook ``pending``. A :class:`WebhookDispatcher` thread in the API server
process takes due deliveries from the store, POSTs the public job object to the URL and
records the outcome: delivered, retried later with exponential backoff, or failed for
good after ``max_attempts``. Delivery is at least once; receivers deduplicate on the job
id.

Calls are signed like Stripe's: the header ``TalkingFace-Signature: t=<unix time>,v1=<hex>``
carries an HMAC-SHA256, keyed with the shared secret, of ``f"{t}."`` followed by the raw
request body. A receiver checks it with :func:`verify`::

    ok = verify(request_body, request.headers["TalkingFace-Signature"], secret)
"""

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "TalkingFace-Signature"
EVENT_HEADER = "TalkingFace-Event"
USER_AGENT = "talkingface-webhooks/1"
INVALID_URL = "invalid url"          # prefix of the error of a delivery that can never succeed
MAX_BACKOFF_SECONDS = 300.0


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


def deliver_once(client: httpx.Client, job_row: dict, body: dict, secret: str,
                 timeout: float) -> tuple[bool, str | None]:
    """POST ``body`` to the job's webhook URL once.

    Args:
        client (`httpx.Client`): the HTTP client; redirects are not followed.
        job_row (`dict`): the job row; ``webhook_url`` and ``status`` are read.
        body (`dict`): the public job object to send as JSON.
        secret (`str`): HMAC key; when empty the call goes out unsigned.
        timeout (`float`): seconds for each of connect, write and read.

    Returns:
        `tuple[bool, str | None]`: ``(True, None)`` on a 2xx answer, else ``(False, error)``.
        An error starting with ``"invalid url"`` means no request was made and none
        ever will succeed.
    """
    url = job_row.get("webhook_url") or ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, f"{INVALID_URL}: only http and https URLs are called"
    # Serialised once: the signature covers exactly the bytes that are sent.
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               EVENT_HEADER: f"job.{job_row.get('status')}"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(data, secret, int(time.time()))
    try:
        response = client.post(url, content=data, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        return False, f"timeout after {timeout:g} s ({type(exc).__name__})"
    except httpx.InvalidURL as exc:
        return False, f"{INVALID_URL}: {exc}"[:200]
    except httpx.HTTPError as exc:
        return False, f"connection error: {type(exc).__name__}: {exc}"[:200]
    if 200 <= response.status_code < 300:
        return True, None
    return False, f"HTTP {response.status_code} {response.reason_phrase}".strip()


class WebhookDispatcher:
    """Delivers pending webhooks from the job store, in a background thread.

    Runs in the API server process with its own ``httpx.Client``; job workers never wait
    on a receiver. Several dispatchers (several API processes) may share one store: a
    delivery taken by one is held from the others while it is in flight.

    Args:
        store (`JobStore`): the job store.
        job_body (`Callable[[dict], dict]`): turns a job row into the public JSON job object.
        secret (`str`): HMAC key for the signature; empty sends unsigned calls.
        max_attempts (`int`): attempts before a delivery is marked failed.
        timeout (`float`): seconds for each of connect, write and read of one call.
        poll_seconds (`float`, defaults to 0.5): pause between looks at an idle store.
    """

    batch = 20     # deliveries per run_once, so stop() is honoured between batches

    def __init__(self, store, job_body: Callable[[dict], dict], secret: str, max_attempts: int,
                 timeout: float, poll_seconds: float = 0.5):
        self.store = store
        self.job_body = job_body
        self.secret = secret
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.client = httpx.Client(follow_redirects=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Deliver the deliveries due now. Returns how many were attempted."""
        done = 0
        while done < self.batch and not self._stop.is_set():
            # One at a time: each is held for twice the timeout from the moment it is
            # taken, which a batch taken at once would outlive while earlier calls run.
            rows = self.store.take_due_webhooks(hold_seconds=self.timeout * 2, limit=1)
            if not rows:
                break
            for row in rows:
                if row is not None:
                    self._deliver(row)
                    done += 1
        return done

    def _deliver(self, row: dict) -> None:
        try:
            ok, error = deliver_once(self.client, row, self.job_body(row), self.secret, self.timeout)
        except Exception as exc:
            # A bug in building the body must not stop other deliveries; it counts as a
            # failed attempt so that it ends after max_attempts instead of looping.
            logger.exception("webhook for job %s could not be sent", row["id"])
            ok, error = False, f"internal error: {type(exc).__name__}: {exc}"[:200]
        attempt = row["webhook_attempts"] + 1
        if ok:
            self.store.record_webhook(row["id"], True)
        elif error.startswith(INVALID_URL) or attempt >= self.max_attempts:
            logger.warning("webhook for job %s failed for good after %d attempts: %s", row["id"], attempt, error)
            self.store.record_webhook(row["id"], False, error=error)
        else:
            logger.info("webhook for job %s failed (attempt %d): %s", row["id"], attempt, error)
            self.store.record_webhook(row["id"], False, error=error, retry_at=time.time() + backoff(attempt))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                # The store may be briefly unavailable (locked, restarting); a held
                # delivery is taken again once its hold runs out, so nothing is lost.
                logger.exception("webhook dispatcher: run failed; trying again")
                busy = False
            if not busy:
                self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        """Start delivering in a daemon thread (idempotent while running)."""
        if self._thread and self._thread.is_alive():
            return
        if self.client.is_closed:
            self.client = httpx.Client(follow_redirects=False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread, waiting for a call in flight to end, and close the client."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        self.client.close()
