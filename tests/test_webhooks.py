"""Webhooks: the signature scheme, and delivery from a real job store to a local receiver."""

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service import webhooks
from service.jobs.store import JobStore
from service.webhooks import SIGNATURE_HEADER, TargetRules, WebhookDispatcher, backoff, deliver_once, sign, verify

SECRET = "whsec_test"
# The receivers here listen on loopback, which webhooks call only when an operator allows it.
LOOPBACK = TargetRules(allow=["127.0.0.1"])


def job_body(row):
    return {"id": row["id"], "object": "job", "status": row["status"], "model": row["model"]}


class Receiver:
    """A local HTTP server that records each POST and answers from a list of statuses."""

    def __init__(self, statuses=(), default=200):
        self.requests = []
        self.statuses = list(statuses)
        self.default = default
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(), default=200):
        made.append(Receiver(statuses, default))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def store(tmp_path):
    store = JobStore("sqlite:///" + str(tmp_path / "jobs.db"))
    store.register_worker("worker-1", "cpu", ["atvgnet"])
    yield store
    store.dispose()


@pytest.fixture
def dispatchers():
    made = []

    def make(store, body=job_body, max_attempts=5, timeout=2.0, **options):
        options.setdefault("rules", LOOPBACK)
        made.append(WebhookDispatcher(store, body, SECRET, max_attempts, timeout, poll_seconds=0.02, **options))
        return made[-1]

    yield make
    for d in made:
        d.stop(timeout=5)


def queued_job(store, url):
    _, (job,) = store.create_jobs([{"task": "talking-face", "model": "atvgnet", "inputs": {"image": "file_1"},
                                    "webhook_url": url}], max_attempts=3)
    return job


def finished_job(store, url, status="succeeded"):
    job = queued_job(store, url)
    assert store.claim("worker-1", ["atvgnet"], lease_seconds=30)["id"] == job["id"]
    assert store.finish(job["id"], "worker-1", status)
    return store.get_job(job["id"])


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- signature ---------------------------------------------------------------------

def test_signature_is_stripe_style_hmac_sha256():
    body = b'{"id":"job_1","status":"succeeded"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET, 1700000000) == f"t=1700000000,v1={expected}"


def test_verify_accepts_only_fresh_untampered_signatures():
    body = b'{"id":"job_1","status":"succeeded"}'
    now = 1700000000
    header = sign(body, SECRET, now)
    assert verify(body, header, SECRET, now=now + 10)
    assert not verify(body.replace(b"succeeded", b"failed"), header, SECRET, now=now)
    assert not verify(body, header, "whsec_other", now=now)
    assert not verify(body, header, SECRET, now=now + 301)
    assert not verify(body, header, SECRET, now=now - 301)
    assert not verify(body, "t=nope,v1=abc", SECRET, now=now)
    assert not verify(body, "", SECRET, now=now)
    assert not verify(body, header, "", now=now)
    # A rotated secret: any one of several v1 entries may match.
    assert verify(body, header + ",v1=" + "0" * 64, SECRET, now=now)


def test_backoff_grows_and_is_capped():
    assert 2 <= backoff(1) <= 2.2
    assert 8 <= backoff(3) <= 8.8
    assert backoff(2) < backoff(4)
    assert 300 <= backoff(50) <= 330


# -- one call --------------------------------------------------------------------

def test_deliver_once_refuses_non_http_urls_without_a_request(receiver):
    hook = receiver()
    port = hook.server.server_address[1]
    for url in ("file:///etc/passwd", f"ftp://127.0.0.1:{port}/x", "not a url", None,
                f"http://user:pw@127.0.0.1:{port}/hook"):
        ok, error = deliver_once({"webhook_url": url, "status": "succeeded"}, {}, SECRET, LOOPBACK, 1.0)
        assert not ok and error.startswith("invalid url")
        assert "pw" not in error
    assert hook.requests == []


def test_deliver_once_reports_a_timeout():
    # A listening socket that never accepts: the request is never answered.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        ok, error = deliver_once({"webhook_url": url, "status": "failed"}, {}, SECRET, LOOPBACK, 0.5)
    assert not ok and error.startswith("timeout")


# -- the dispatcher against a real store and receiver -------------------------------

def test_finished_job_is_delivered_once_and_signed(store, receiver, dispatchers):
    hook = receiver()
    job = finished_job(store, hook.url)
    assert job["webhook_state"] == "pending"

    dispatcher = dispatchers(store)
    assert dispatcher.run_once() == 1
    assert dispatcher.run_once() == 0

    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    assert verify(body, headers[SIGNATURE_HEADER], SECRET)
    assert not verify(body, headers[SIGNATURE_HEADER], "whsec_other")
    assert json.loads(body) == job_body(store.get_job(job["id"]))
    assert json.loads(body)["status"] == "succeeded"
    assert headers["TalkingFace-Event"] == "job.succeeded"
    assert headers["User-Agent"] == "talkingface-webhooks/1"
    assert headers["Content-Type"] == "application/json"
    row = store.get_job(job["id"])
    assert row["webhook_state"] == "delivered"
    assert row["webhook_attempts"] == 1
    assert row["webhook_last_error"] is None


def test_failures_are_retried_until_delivered(store, receiver, dispatchers, monkeypatch):
    monkeypatch.setattr(webhooks, "backoff", lambda attempt: 0.05)
    hook = receiver(statuses=[500, 500, 200])
    job = finished_job(store, hook.url)

    dispatcher = dispatchers(store)
    dispatcher.start()
    assert wait_for(lambda: store.get_job(job["id"])["webhook_state"] == "delivered")

    row = store.get_job(job["id"])
    assert row["webhook_attempts"] == 3
    assert len(hook.requests) == 3
    dispatcher.stop()
    assert not dispatcher.alive


def test_gives_up_after_max_attempts(store, receiver, dispatchers, monkeypatch):
    monkeypatch.setattr(webhooks, "backoff", lambda attempt: 0.05)
    hook = receiver(default=500)
    job = finished_job(store, hook.url, status="failed")

    dispatchers(store, max_attempts=2).start()
    assert wait_for(lambda: store.get_job(job["id"])["webhook_state"] == "failed")

    row = store.get_job(job["id"])
    assert row["webhook_attempts"] == 2
    assert "500" in row["webhook_last_error"]
    time.sleep(0.2)
    assert len(hook.requests) == 2
    assert hook.requests[0][0]["TalkingFace-Event"] == "job.failed"


def test_canceled_queued_job_gets_its_webhook(store, receiver, dispatchers):
    hook = receiver()
    job = queued_job(store, hook.url)
    assert store.cancel(job["id"])["status"] == "canceled"

    assert dispatchers(store).run_once() == 1
    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    assert headers["TalkingFace-Event"] == "job.canceled"
    assert json.loads(body)["status"] == "canceled"
    assert store.get_job(job["id"])["webhook_state"] == "delivered"


def test_job_without_webhook_is_not_called(store, receiver, dispatchers):
    hook = receiver()
    job = finished_job(store, None)
    assert store.get_job(job["id"])["webhook_state"] is None
    assert dispatchers(store).run_once() == 0
    assert hook.requests == []


def test_unreachable_receiver_is_retried_later(store, dispatchers):
    job = finished_job(store, f"http://127.0.0.1:{closed_port()}/hook")
    before = time.time()

    assert dispatchers(store).run_once() == 1

    row = store.get_job(job["id"])
    assert row["webhook_state"] == "pending"
    assert row["webhook_attempts"] == 1
    assert row["webhook_last_error"].startswith("connection error")
    assert row["webhook_next_at"] >= before + 2


def test_invalid_url_fails_at_once(store, dispatchers):
    job = finished_job(store, "gopher://127.0.0.1/hook")
    assert dispatchers(store, max_attempts=5).run_once() == 1
    row = store.get_job(job["id"])
    assert row["webhook_state"] == "failed"
    assert row["webhook_attempts"] == 1
    assert row["webhook_last_error"].startswith("invalid url")


def test_dispatcher_thread_survives_a_failing_job_body(store, receiver, dispatchers, monkeypatch):
    monkeypatch.setattr(webhooks, "backoff", lambda attempt: 0.05)
    hook = receiver()
    job = finished_job(store, hook.url)
    calls = []

    def flaky_body(row):
        calls.append(row["id"])
        if len(calls) == 1:
            raise RuntimeError("serializer bug")
        return job_body(row)

    dispatcher = dispatchers(store, body=flaky_body)
    dispatcher.start()
    assert wait_for(lambda: store.get_job(job["id"])["webhook_state"] == "delivered")
    assert dispatcher.alive
    row = store.get_job(job["id"])
    assert row["webhook_attempts"] == 2
    assert len(hook.requests) == 1


def test_dispatcher_thread_survives_a_failing_store(store, receiver, dispatchers, monkeypatch):
    hook = receiver()
    job = finished_job(store, hook.url)
    real_take = store.take_due_webhooks
    calls = []

    def flaky_take(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real_take(**kwargs)

    monkeypatch.setattr(store, "take_due_webhooks", flaky_take)
    dispatcher = dispatchers(store)
    dispatcher.start()
    assert wait_for(lambda: store.get_job(job["id"])["webhook_state"] == "delivered")
    assert dispatcher.alive
    assert len(hook.requests) == 1
