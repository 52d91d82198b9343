"""Webhook targets: SSRF forms refused at submission and at delivery, no redirects, a bounded pool.

The receivers are sockets on loopback, which a webhook may call only when an operator allows it
(``webhook_allow``); where a test needs a host name, its DNS answers are the test's own
(``service.webhooks.resolve`` replaced). Nothing leaves the machine.
"""

import datetime
import json
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service import webhooks
from service.app import create_app
from service.jobs.store import JobStore
from service.settings import Settings
from service.webhooks import SIGNATURE_HEADER, TargetRules, WebhookDispatcher, deliver_once, verify
from tests.test_api import assert_error
from tests.test_webhooks import finished_job, job_body

SECRET = "whsec_test"
PUBLIC = "93.184.215.14"                  # a public address; never connected to here
JOB = {"task": "image-generation", "model": "dcgan", "inputs": {}}   # a job that needs no upload
LOOPBACK = TargetRules(allow=["127.0.0.1"])


class Receiver:
    """A webhook receiver on loopback that answers as ``mode`` says, read at each request:
    ``ok`` (200), ``redirect`` (302 to ``location``), ``trickle`` (a 200 whose headers come one
    byte every 0.2 s, for minutes), ``hang`` (no answer until closed). Counts the connections;
    with ``tls`` (a server ``SSLContext``) it speaks HTTPS."""

    def __init__(self, mode="ok", location=None, tls=None):
        self.mode, self.location, self.tls = mode, location, tls
        self.connections, self.requests, self.in_flight, self.most_in_flight = 0, [], 0, 0
        self.lock, self.closed = threading.Lock(), threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
        while len(body) < int(headers.get("content-length", 0)):
            body += conn.recv(65536)
        return request_line, headers, body

    def _serve(self, conn):
        with conn:
            conn.settimeout(60)
            try:
                if self.tls:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                request = self._read(conn)
            except OSError:
                return
            if request is None:
                return
            with self.lock:
                self.requests.append(request)
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                self._answer(conn)
            except OSError:
                pass
            finally:
                with self.lock:
                    self.in_flight -= 1

    def _answer(self, conn):
        if self.mode == "hang":
            self.closed.wait(120)
        elif self.mode == "trickle":
            for byte in b"HTTP/1.1 200 OK\r\nX-Trickle: " + b"a" * 1000:
                if self.closed.wait(0.2):
                    return
                conn.sendall(bytes([byte]))
        else:
            status = f"302 Found\r\nLocation: {self.location}" if self.mode == "redirect" else "200 OK"
            conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())

    def close(self):
        self.closed.set()
        self.sock.close()


@pytest.fixture
def receiver():
    made = []

    def make(mode="ok", location=None, tls=None):
        made.append(Receiver(mode, location, tls))
        return made[-1]

    yield make
    for r in made:
        r.close()


def settings_for(tmp_path, **extra):
    return Settings(data_dir=tmp_path / "data", weights_dir=tmp_path / "weights", webhook_secret=SECRET,
                    **extra)


def until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def fake_dns(monkeypatch, answers: dict):
    """Host names resolve to ``answers[name]`` (changeable while the test runs); calls are counted."""
    calls = []

    def resolve(host, port):
        calls.append(host)
        if host in answers:
            return [answers[host]]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(webhooks, "resolve", resolve)
    return calls


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A client of an app with the default rules: public targets only, the service on port 8000."""
    with TestClient(create_app(settings_for(tmp_path_factory.mktemp("strict")))) as client:
        yield client
        # Nothing refused was queued.
        assert client.get("/v1/jobs").json()["data"] == []


# -- at submission -----------------------------------------------------------------------

@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:8080/v1/jobs", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://LOCALHOST./hook", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00::1]/", "private"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/", "link-local"),          # 169.254.169.254, IPv4-mapped
    ("https://[2002:7f00:1::]/", "loopback"),               # 6to4 of 127.0.0.1
    ("http://2130706433/", "loopback"),                     # 127.0.0.1 as one decimal number
    ("http://0x7f.1/", "loopback"),                         # hexadecimal, short form
    ("http://0177.0.0.1/", "loopback"),                     # octal
    ("http://127.1/", "loopback"),
])
def test_internal_targets_are_refused_at_submission(strict, url, reason):
    r = strict.post("/v1/jobs", json={**JOB, "webhook": {"url": url}})
    assert_error(r, 422, "validation_error")
    message = r.json()["error"]["message"]
    assert message.startswith("webhook.url: ") and reason in message, message
    assert "TALKINGFACE_WEBHOOK_ALLOW" in message


@pytest.mark.parametrize("url", [
    f"http://user:s3cret@{PUBLIC}/hook",
    f"https://s3cret@{PUBLIC}/hook",
    f"http://{PUBLIC}/hook\r\nX-Injected: s3cret",
    f"http://{PUBLIC}/hook\nX: s3cret",
    f"http://{PUBLIC}/a s3cret",
    f"http://{PUBLIC}/\ts3cret",
    f"http://{PUBLIC}\\@127.0.0.1/s3cret",
    f"http://{PUBLIC}/caf\u00e9-s3cret",
    "ftp://example.com/s3cret",
    "file:///etc/s3cret",
    "gopher://127.0.0.1:25/s3cret",
    "http:///s3cret",
    "http://exa%6dple.com/s3cret",
    f"http://{PUBLIC}:99999/s3cret",
    f"http://{PUBLIC}:0/s3cret",
    f"http://{PUBLIC}/" + "s3cret" * 400,
    "s3cret",
])
def test_malformed_urls_are_refused_and_never_echoed(strict, url):
    r = strict.post("/v1/jobs", json={**JOB, "webhook": {"url": url}})
    assert_error(r, 422, "validation_error")
    assert "s3cret" not in r.text
    assert r.json()["error"]["message"].startswith("webhook.url")


def test_a_host_that_does_not_resolve_is_refused(strict, monkeypatch):
    fake_dns(monkeypatch, {})
    r = strict.post("/v1/jobs", json={**JOB, "webhook": {"url": "https://hooks.nowhere.test/x"}})
    assert_error(r, 422, "validation_error")
    assert "does not resolve" in r.json()["error"]["message"]


def test_batches_and_one_call_images_check_the_webhook_too(strict):
    good = {**JOB, "webhook": {"url": f"http://{PUBLIC}/hook"}}
    bad = {**JOB, "webhook": {"url": "http://169.254.169.254/"}}
    r = strict.post("/v1/batches", json={"jobs": [good, bad]})
    assert_error(r, 422, "validation_error")
    assert r.json()["error"]["message"].startswith("jobs[1]: webhook.url: 169.254.169.254 is link-local")
    r = strict.post("/v1/images", json={"model": "dcgan", "wait": 0, "webhook": {"url": "http://[::1]:9/"}})
    assert_error(r, 422, "validation_error")
    assert_error(strict.post("/v1/images", json={"model": "dcgan", "webhook": {"url": "http://a:b@x/"}}), 422,
                 "validation_error")


def test_the_service_itself_is_refused_even_when_loopback_is_allowed(tmp_path, receiver):
    hook = receiver()
    port = hook.port + 1 if hook.port < 65535 else hook.port - 1
    settings = settings_for(tmp_path, port=port, webhook_allow="127.0.0.0/8, ::1")
    with TestClient(create_app(settings)) as client:
        for url in (f"http://127.0.0.1:{port}/v1/jobs/job_x/cancel", f"http://localhost:{port}/",
                    f"http://[::1]:{port}/", f"http://0.0.0.0:{port}/", f"http://2130706433:{port}/",
                    f"http://127.0.0.2:{port}/"):
            r = client.post("/v1/jobs", json={**JOB, "webhook": {"url": url}})
            assert_error(r, 422, "validation_error")
            assert "the service itself" in r.json()["error"]["message"], url
        # Another port on loopback is what the operator allowed.
        assert client.post("/v1/jobs", json={**JOB, "webhook": {"url": hook.url}}).status_code == 202


def test_allow_list_setting_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("TALKINGFACE_WEBHOOK_ALLOW", " hooks.Internal , 10.0.0.0/8,::1,192.168.1.7")
    assert Settings().webhook_allow == ["hooks.internal", "10.0.0.0/8", "::1/128", "192.168.1.7/32"]
    monkeypatch.setenv("TALKINGFACE_WEBHOOK_ALLOW", "hooks.internal,not a host!")
    with pytest.raises(ValidationError, match="neither a host name nor an IP network"):
        Settings()


# -- at delivery -------------------------------------------------------------------------

def test_allowed_loopback_receiver_gets_the_signed_call(tmp_path, receiver):
    hook = receiver()
    with TestClient(create_app(settings_for(tmp_path, webhook_allow="127.0.0.1"))) as client:
        job = client.post("/v1/jobs", json={**JOB, "webhook": {"url": hook.url + "?tag=1"}}).json()
        client.post(f"/v1/jobs/{job['id']}/cancel")
        assert until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["webhook"]["state"] == "delivered")
    (request_line, headers, body), = hook.requests
    assert request_line == "POST /hook?tag=1 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{hook.port}"
    assert verify(body, headers[SIGNATURE_HEADER.lower()], SECRET)
    assert json.loads(body)["status"] == "canceled"


def test_a_call_goes_to_the_checked_address_under_the_urls_host_name(tmp_path, receiver, monkeypatch):
    hook = receiver()
    calls = fake_dns(monkeypatch, {"hooks.internal": "127.0.0.1"})
    with TestClient(create_app(settings_for(tmp_path, webhook_allow="hooks.internal"))) as client:
        url = f"http://hooks.internal:{hook.port}/in"
        job = client.post("/v1/jobs", json={**JOB, "webhook": {"url": url}}).json()
        assert job["webhook"]["url"] == url
        client.post(f"/v1/jobs/{job['id']}/cancel")
        assert until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["webhook"]["state"] == "delivered")
    # Resolved once at submission and once at delivery, where the call used that very answer
    # (the system resolver does not know hooks.internal).
    assert calls == ["hooks.internal", "hooks.internal"]
    assert hook.requests[0][1]["host"] == f"hooks.internal:{hook.port}"


def test_dns_rebinding_is_refused_at_delivery_without_a_connection(tmp_path, receiver, monkeypatch):
    hook = receiver()
    answers = {"rebind.example.test": PUBLIC}
    fake_dns(monkeypatch, answers)
    with TestClient(create_app(settings_for(tmp_path))) as client:
        job = client.post("/v1/jobs", json={**JOB, "webhook": {"url": f"http://rebind.example.test:{hook.port}/"}})
        assert job.status_code == 202, job.text
        answers["rebind.example.test"] = "127.0.0.1"          # the attacker's DNS changes its answer
        job_id = job.json()["id"]
        client.post(f"/v1/jobs/{job_id}/cancel")
        assert until(lambda: client.get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "failed")
        row = client.app.state.store.get_job(job_id)
    # Refused for good at the first attempt, the reason recorded, nothing sent.
    assert row["webhook_attempts"] == 1
    assert row["webhook_last_error"].startswith("refused url: rebind.example.test (127.0.0.1) is loopback")
    assert hook.connections == 0


def test_deliver_once_never_follows_a_redirect(receiver):
    target = receiver()
    hook = receiver("redirect", location=target.url)
    ok, error = deliver_once({"webhook_url": hook.url, "status": "succeeded"}, {"id": "job_1"}, SECRET, LOOPBACK, 2.0)
    assert not ok and error.startswith("HTTP 302") and "not followed" in error
    assert len(hook.requests) == 1 and target.connections == 0


def tls_for(tmp_path, name):
    """A server context with a certificate for ``name`` from a new test CA, and the CA's file."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "talkingface test CA")])

    def issue(subject, public_key, serial, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                   .serial_number(serial).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(ca_key, hashes.SHA256())

    ca = issue(ca_name, ca_key.public_key(), 1, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    leaf = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), 2,
                 [(x509.SubjectAlternativeName([x509.DNSName(name)]), False)])
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    return server, tmp_path / "ca.pem"


@pytest.mark.parametrize("certificate_name, delivered", [("hooks.internal", True), ("other.internal", False)])
def test_https_call_to_the_checked_address_keeps_the_host_name_for_sni_and_certificate(
        tmp_path, receiver, monkeypatch, certificate_name, delivered):
    server, ca_file = tls_for(tmp_path, certificate_name)
    names = []
    server.sni_callback = lambda connection, name, context: names.append(name)
    hook = receiver(tls=server)
    fake_dns(monkeypatch, {"hooks.internal": "127.0.0.1"})
    monkeypatch.setattr(webhooks, "_ssl_context", lambda: ssl.create_default_context(cafile=str(ca_file)))
    row = {"webhook_url": f"https://hooks.internal:{hook.port}/tls", "status": "succeeded"}
    ok, error = deliver_once(row, {"id": "job_1"}, SECRET, TargetRules(allow=["hooks.internal"]), 5.0)
    assert names == ["hooks.internal"]           # SNI: the URL's host, though the socket went to 127.0.0.1
    if delivered:
        assert ok, error
        assert hook.requests[0][1]["host"] == f"hooks.internal:{hook.port}"
    else:                                       # the certificate is checked against the URL's host
        assert not ok and error.startswith("connection error") and "CERTIFICATE_VERIFY_FAILED" in error
        assert hook.requests == []


def test_deadline_ends_a_call_to_a_trickling_receiver(receiver):
    hook = receiver("trickle")       # each byte within the per-read timeout, the answer never ends
    started = time.monotonic()
    ok, error = deliver_once({"webhook_url": hook.url, "status": "failed"}, {}, SECRET, LOOPBACK, timeout=1.0,
                             deadline_seconds=1.5)
    assert not ok and error.startswith("timeout"), error
    assert time.monotonic() - started < 20        # the trickle would last over three minutes


# -- the pool and shutdown ---------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    store = JobStore("sqlite:///" + str(tmp_path / "jobs.db"))
    store.register_worker("worker-1", "cpu", ["atvgnet"])
    yield store
    store.dispose()


@pytest.fixture
def dispatcher(store):
    made = []

    def make(**options):
        made.append(WebhookDispatcher(store, job_body, SECRET, 5, poll_seconds=0.02, rules=LOOPBACK, **options))
        return made[-1]

    yield make
    for d in made:
        d.stop(timeout=1)


def test_a_trickling_receiver_delays_no_other_webhook(store, receiver, dispatcher):
    slow, fast = receiver("trickle"), receiver()
    slow_job = finished_job(store, slow.url)
    dispatcher(timeout=5.0, deadline=120.0).start()
    assert until(lambda: slow.in_flight == 1)
    fast_job = finished_job(store, fast.url)      # ends while the slow receiver holds its call
    assert until(lambda: store.get_job(fast_job["id"])["webhook_state"] == "delivered", timeout=20)
    # The slow call is still in flight: its deadline is far away.
    assert slow.in_flight == 1 and store.get_job(slow_job["id"])["webhook_state"] == "pending"


def test_the_pool_holds_at_most_its_threads_in_flight(store, receiver, dispatcher):
    hook = receiver("hang")
    jobs = [finished_job(store, hook.url) for _ in range(4)]
    dispatcher(timeout=60.0, threads=2).start()
    assert until(lambda: hook.in_flight == 2)
    time.sleep(1.0)
    assert hook.most_in_flight == 2 and len(hook.requests) == 2
    assert all(store.get_job(j["id"])["webhook_state"] == "pending" for j in jobs)


def test_stop_returns_within_its_bound_while_a_receiver_hangs(store, receiver, dispatcher):
    hook = receiver("hang")
    finished_job(store, hook.url)
    pool = dispatcher(timeout=60.0, deadline=120.0, shutdown_seconds=0.5)
    pool.start()
    assert until(lambda: hook.in_flight == 1)
    started = time.monotonic()
    assert pool.stop() is False                 # a call was still in flight
    assert time.monotonic() - started < 10      # without the bound: up to the 120 s deadline


def test_a_call_cut_off_by_shutdown_is_delivered_after_a_restart(tmp_path, receiver):
    hook = receiver("hang")
    settings = settings_for(tmp_path, webhook_allow="127.0.0.1", webhook_timeout_seconds=1.0,
                            webhook_deadline_seconds=2.0, webhook_shutdown_seconds=0.2)
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/v1/jobs", json={**JOB, "webhook": {"url": hook.url}}).json()["id"]
        client.post(f"/v1/jobs/{job_id}/cancel")
        assert until(lambda: hook.in_flight == 1)
        started = time.monotonic()
    assert time.monotonic() - started < 10      # the app's shutdown did not wait for the receiver
    hook.mode = "ok"
    with TestClient(create_app(settings)) as client:
        assert until(lambda: client.get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "delivered")
    assert len(hook.requests) >= 2
    _, headers, body = hook.requests[-1]
    assert verify(body, headers[SIGNATURE_HEADER.lower()], SECRET) and json.loads(body)["id"] == job_id
