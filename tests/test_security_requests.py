"""Requests checked before their bodies are read, timeouts, caps, and the small failures of point 8.

Most tests talk to a real uvicorn on loopback (``service.server``, as ``talkingface serve``
runs it) over raw sockets: only there can a client announce a body it never sends, send
headers a byte at a time, or stop half-way. Waits are bounded generously; what a test
proves is that an answer comes at all (a server that read bodies first would never answer).
"""

import contextlib
import json
import signal
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from service import server
from service.app import create_app
from service.jobs.worker import Worker
from tests.test_api import FACE, assert_error, make_settings, serving, upload, wait_for, wav_bytes

KEY = "tfk_requests-test-key"
BOUND = 20          # seconds any answer may take on a loaded machine


@contextlib.contextmanager
def live(settings):
    """``create_app(settings)`` under ``service.server``'s uvicorn on a free loopback port; yields (port, server)."""
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uvicorn_server = server.Server(server.config(app, settings, log_level="warning"), app.state.stopping)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + BOUND
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port, uvicorn_server
    finally:
        uvicorn_server.should_exit = True
        thread.join(BOUND)
        sock.close()


def request_head(method, path, headers):
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: test"]
    lines += [name.encode() + b": " + (value if isinstance(value, bytes) else str(value).encode())
              for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND)


def read_response(sock):
    """(status, lower-cased headers, body) of one response; the socket's timeout bounds the wait."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((name.strip().lower(), value.strip()) for name, value in (line.split(":", 1) for line in lines[1:]))
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside a response"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock, timeout=BOUND):
    """True once the server closes the connection (within ``timeout``)."""
    sock.settimeout(timeout)
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def assert_json_error(status, headers, body, expected_status, code):
    assert status == expected_status, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]


def leftover_files(settings):
    files = settings.data_dir / "files"
    return sorted(p.name for p in files.iterdir()) if files.exists() else []


@pytest.fixture
def keyed(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, api_keys=KEY)      # bodies up to 201 MiB
    with live(settings) as (port, _):
        yield port, settings


def test_a_wrong_key_is_refused_before_a_byte_of_its_body_is_read(keyed):
    # 50 connections announce 150-MB uploads (within the size limit) with a wrong key and send
    # none of it: each is answered 401 and closed. A server that read bodies before keys would
    # wait for ever.
    port, settings = keyed
    announced = {"Authorization": "Bearer tfk_wrong", "Content-Type": "multipart/form-data; boundary=b",
                 "Content-Length": 150 << 20}
    clients = [connect(port) for _ in range(50)]
    for client in clients:
        client.sendall(request_head("POST", "/v1/files", announced))
    for client in clients:
        status, headers, body = read_response(client)
        assert_json_error(status, headers, body, 401, "unauthorized")
        assert headers["connection"] == "close" and headers["www-authenticate"] == "Bearer"
        assert closed_by_server(client)
        client.close()
    assert leftover_files(settings) == []


def test_a_declared_body_over_the_limit_is_413_json_before_it_is_read(keyed):
    port, settings = keyed
    for content_type, size in [("multipart/form-data; boundary=b", settings.max_request_bytes + 1),
                               ("application/json", settings.max_json_bytes + 1)]:
        with connect(port) as client:
            client.sendall(request_head("POST", "/v1/files", {"Authorization": f"Bearer {KEY}",
                                                              "Content-Type": content_type, "Content-Length": size}))
            status, headers, body = read_response(client)
            assert_json_error(status, headers, body, 413, "payload_too_large")
            assert str(size) in json.loads(body)["error"]["message"] and closed_by_server(client)


def test_a_body_without_a_length_is_413_json_once_it_passes_the_limit(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, max_json_bytes=1000)
    with live(settings) as (port, _), connect(port) as client:
        client.sendall(request_head("POST", "/v1/jobs", {"Content-Type": "application/json",
                                                         "Transfer-Encoding": "chunked"}))
        client.sendall(b"7d0\r\n" + b" " * 2000 + b"\r\n")          # 2000 bytes, and the body goes on
        status, headers, body = read_response(client)
        assert_json_error(status, headers, body, 413, "payload_too_large")
        assert closed_by_server(client)


def test_every_413_is_the_json_error_shape(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, max_upload_bytes=10_000)
    with TestClient(create_app(settings)) as client:
        whole = client.post("/v1/files", files={"file": ("big.bin", b"x" * (settings.max_request_bytes + 1))})
        assert_error(whole, 413, "payload_too_large")
        one_file = client.post("/v1/files", files={"file": ("big.bin", b"x" * 50_000)})
        assert_error(one_file, 413, "too_large")
        big_json = client.post("/v1/jobs", content=b"[" + b"0," * (settings.max_json_bytes // 2) + b"0]",
                               headers={"content-type": "application/json"})
        assert_error(big_json, 413, "payload_too_large")
    assert leftover_files(settings) == []


def test_a_body_that_stops_arriving_is_answered_408_and_frees_its_upload_slot(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, body_timeout_seconds=1, max_uploads_in_flight=1)
    with live(settings) as (port, _), connect(port) as client:
        client.sendall(request_head("POST", "/v1/files", {"Content-Type": "multipart/form-data; boundary=b",
                                                          "Content-Length": 100_000}) + b"--b\r\n")
        started = time.monotonic()
        status, headers, body = read_response(client)
        assert_json_error(status, headers, body, 408, "request_timeout")
        assert time.monotonic() - started >= 0.9 and closed_by_server(client)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/files", files={"file": ("f.jpg", FACE)}, timeout=BOUND)
        assert r.status_code == 201, r.text
    assert leftover_files(settings) == [r.json()["id"]]


def trickle_until_closed(client, pieces, every=0.2):
    """Send ``pieces`` one at a time; seconds until the server closed the connection (None: it never did)."""
    started = time.monotonic()
    client.settimeout(every)
    for piece in pieces:
        try:
            client.sendall(piece)
            if client.recv(1) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    return None


def test_headers_that_never_finish_are_dropped(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, header_timeout_seconds=1)
    with live(settings) as (port, _):
        with connect(port) as silent:                       # connects and says nothing
            assert closed_by_server(silent)
        with connect(port) as slow:                         # headers a line every 0.2 s, for up to 20 s
            pieces = [b"POST /v1/files HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * int(BOUND / 0.2)
            took = trickle_until_closed(slow, pieces)
            assert took is not None and took < BOUND
        with connect(port) as kept_alive:                   # the clock restarts for each request
            kept_alive.sendall(request_head("GET", "/livez", {}))
            assert read_response(kept_alive)[0] == 200
            kept_alive.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n")
            assert closed_by_server(kept_alive)
        with connect(port) as flood:                        # 80 KiB of headers that never end
            flood.sendall(b"GET /livez HTTP/1.1\r\n" + b"X-Big: " + b"a" * 1000 + b"\r\n" * 1 + (
                b"X-More: " + b"b" * 1000 + b"\r\n") * 80)
            status, headers, body = read_response(flood)
            assert_json_error(status, headers, body, 431, "headers_too_large")
            assert closed_by_server(flood)
        # A request sent whole is untouched by all this.
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=BOUND).status_code == 200


def test_uploads_over_the_cap_are_503_with_retry_after_and_json_calls_are_not(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, max_uploads_in_flight=1)
    with live(settings) as (port, _), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=BOUND) as http:
        holder = connect(port)                              # an upload that takes its time
        holder.sendall(request_head("POST", "/v1/files", {"Content-Type": "multipart/form-data; boundary=b",
                                                          "Content-Length": 100_000}) + b"--b\r\n")
        deadline = time.monotonic() + BOUND
        while (r := http.post("/v1/files", files={"file": ("f.jpg", FACE)})).status_code != 503:
            assert r.status_code == 201 and time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert_error(r, 503, "too_many_uploads")
        assert int(r.headers["retry-after"]) > 0
        # Small JSON bodies and reads are not uploads: they go on.
        assert http.get("/v1/jobs").status_code == 200
        assert_error(http.post("/v1/jobs", json={"inputs": {"image": "file_x", "audio": "file_y"}}), 404,
                     "file_not_found")
        holder.close()                                      # the slot frees as the client goes
        while (r := http.post("/v1/files", files={"file": ("f.jpg", FACE)})).status_code != 201:
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.05)


@pytest.mark.parametrize("authorization", [b"Bearer \xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", b"Bearer \xff", b"\xd0\xba"])
def test_a_non_ascii_bearer_over_the_wire_is_401_json(keyed, authorization):
    port, _ = keyed
    with connect(port) as client:
        client.sendall(request_head("GET", "/v1/jobs", {"Authorization": authorization}))
        status, headers, body = read_response(client)
        assert_json_error(status, headers, body, 401, "unauthorized")


def test_the_event_stream_ends_cleanly_when_the_server_stops(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir)
    with live(settings) as (port, uvicorn_server):
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=BOUND)
        image, audio = upload(http, FACE, "f.jpg")["id"], upload(http, wav_bytes(0.5), "a.wav")["id"]
        job = http.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()["id"]   # no worker
        events, outcome, first = [], {}, threading.Event()

        def follow():
            try:
                with http.stream("GET", f"/v1/jobs/{job}/events") as stream:
                    for line in stream.iter_lines():
                        events.append(line)
                        first.set()
                outcome["ended"] = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - what the test reports
                outcome["error"] = repr(exc)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert first.wait(BOUND), "no first event"
        asked = time.monotonic()
        uvicorn_server.handle_exit(signal.SIGTERM, None)
        reader.join(BOUND)
        http.close()
        assert "error" not in outcome, outcome
        # Ended by the stream itself, well before uvicorn would cut it (its graceful timeout).
        assert outcome["ended"] - asked < server.GRACEFUL_SHUTDOWN_SECONDS
        assert events[0] == "event: job" and json.loads(events[1].removeprefix("data: "))["status"] == "queued"


# -- point 8 through the app: with a worker where a job has to run --------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory, seeded_project_dir):
    settings = make_settings(tmp_path_factory.mktemp("requests"), seeded_project_dir)
    with serving(settings, Worker(settings)) as client:
        yield client, settings


@pytest.fixture
def idle(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def test_a_rejected_one_call_request_stores_nothing(idle):
    client, settings = idle
    bad_audio = client.post("/v1/talking-face", files={"image": ("f.jpg", FACE), "audio": ("a.wav", b"not audio")})
    assert_error(bad_audio, 415, "unsupported_media")
    swapped = client.post("/v1/talking-face", files={"image": ("a.wav", wav_bytes(0.5)), "audio": ("f.jpg", FACE)})
    assert_error(swapped, 400, "invalid_input")              # stored both, then refused: both removed
    bad_pose = client.post("/v1/pose-transfer", files={"image": ("f.jpg", FACE), "pose": ("p.json", b"{nope")})
    assert bad_pose.status_code in (400, 415, 422) and bad_pose.json()["error"]["code"]
    assert leftover_files(settings) == []
    assert client.app.state.store.storage_bytes() == (0, 0)
    assert client.get("/v1/jobs").json()["data"] == []


def test_an_unknown_after_cursor_is_400_not_the_first_page(idle):
    client, _ = idle
    image, audio = upload(client, FACE, "f.jpg")["id"], upload(client, wav_bytes(0.5), "a.wav")["id"]
    client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}})
    r = client.get("/v1/jobs?after=job_doesnotexist")
    assert_error(r, 400, "invalid_input")
    assert "job_doesnotexist" in r.json()["error"]["message"]


def test_a_face_index_out_of_range_says_which_faces_there_are(served):
    client, _ = served
    r = client.post("/v1/talking-face", files={"image": ("f.jpg", FACE), "audio": ("a.wav", wav_bytes(0.5))},
                    data={"face_index": "3"})
    assert_error(r, 422, "invalid_input")
    message = r.json()["error"]["message"]
    assert message.startswith("face_index 3") and "1 face found" in message and "0 to 0" in message
    assert "pydantic" not in message and "http" not in message


def test_head_on_a_result_answers_like_get_without_a_body(served):
    client, _ = served
    image, audio = upload(client, FACE, "f.jpg")["id"], upload(client, wav_bytes(0.5), "a.wav")["id"]
    job = wait_for(client, client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()["id"],
                   timeout=120)
    assert job["status"] == "succeeded"
    got = client.get(job["result_url"])
    head = client.head(job["result_url"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(got.content)) == got.headers["content-length"]
    assert head.headers["content-type"] == got.headers["content-type"] == "video/mp4"
    part = client.head(job["result_url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.headers["content-length"] == "100" and part.content == b""
    missing = client.head("/v1/jobs/job_doesnotexist/result")
    assert missing.status_code == 404 and missing.content == b""
