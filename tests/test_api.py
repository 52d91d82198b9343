"""The REST API against the real app (ASGI, in process) with a real worker in a thread.

The networks carry seeded stand-in weights (a project weights folder with the project's
arrays, ``seeded_project_dir``); audio clips are short so that a job takes about a second
on a CPU.
"""

import contextlib
import json
import threading
import time
import wave

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service import media
from service.app import create_app
from service.jobs.worker import Worker
from service.settings import Settings
from service.webhooks import SIGNATURE_HEADER, verify
from tests.conftest import EXAMPLES
from tests.test_webhooks import Receiver

FACE = (EXAMPLES / "face.jpg").read_bytes()


def wav_bytes(seconds, sample_rate=16000):
    import io
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes((audio * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def make_settings(tmp_path, weights, **extra):
    return Settings(data_dir=tmp_path / "data", weights_dir=weights, heartbeat_seconds=0.5, poll_seconds=0.05,
                    lease_seconds=10, webhook_secret="whsec_test", **extra)


@contextlib.contextmanager
def serving(settings, worker):
    """A client of the app of ``settings`` while ``worker`` runs in a thread."""
    thread = threading.Thread(target=worker.run, daemon=True)
    with TestClient(create_app(settings)) as client:
        thread.start()
        yield client
        worker.stop.set()
        thread.join(60)


@pytest.fixture(scope="module")
def served(tmp_path_factory, seeded_project_dir):
    """(client, settings) of an app with one worker thread."""
    # Its webhook test's receiver listens on loopback, which webhooks call only when allowed.
    settings = make_settings(tmp_path_factory.mktemp("api"), seeded_project_dir, webhook_allow="127.0.0.1")
    with serving(settings, Worker(settings)) as client:
        yield client, settings


@pytest.fixture
def idle(tmp_path, seeded_project_dir):
    """A client of an app with no worker at all."""
    with TestClient(create_app(make_settings(tmp_path, seeded_project_dir))) as client:
        yield client


def upload(client, data, name):
    r = client.post("/v1/files", files={"file": (name, data)})
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(client, job_id, statuses=("succeeded", "failed", "canceled"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in response.text


def test_one_call_returns_a_playable_mp4(served, tmp_path, ffprobe):
    client, _ = served
    r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(1.0))},
                    data={"wait": "60"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4" and r.headers["location"].startswith("/v1/jobs/job_")
    path = tmp_path / "out.mp4"
    path.write_bytes(r.content)
    info = media.probe(path)
    codecs = sorted(s["codec_name"] for s in info["streams"])
    assert codecs == ["aac", "h264"]
    assert abs(float(info["format"]["duration"]) - 1.0) <= 0.04 + 0.03


def test_one_call_answers_202_when_it_outlasts_wait_then_the_result_is_fetched(served):
    client, _ = served
    r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(0.8))},
                    data={"wait": "0", "paste_back": "true"})
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
    job = wait_for(client, r.json()["id"])
    assert job["status"] == "succeeded" and job["result_url"] and job["frames"] == 19
    whole = client.get(job["result_url"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    part = client.get(job["result_url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]


def test_one_call_bad_inputs(served):
    client, _ = served
    grey = media_png(np.full((120, 120, 3), 128, np.uint8))
    r = client.post("/v1/talking-face", files={"image": ("g.png", grey), "audio": ("a.wav", wav_bytes(0.5))})
    assert_error(r, 422, "no_face")
    assert r.headers["location"].startswith("/v1/jobs/")
    assert_error(client.post("/v1/talking-face", files={"image": ("f.jpg", FACE)}), 400, "invalid_input")
    assert_error(client.post("/v1/talking-face", files={"image": ("f.jpg", b"GIF89a...."),
                                                         "audio": ("a.wav", wav_bytes(0.5))}), 415, "unsupported_media")
    silent = client.post("/v1/talking-face", files={"image": ("f.jpg", FACE), "audio": ("a.wav", wav_bytes(0.1))})
    assert_error(silent, 422, "invalid_input")


def media_png(array):
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_files_are_checked_by_content(served):
    client, settings = served
    assert upload(client, FACE, "photo.bin")["kind"] == "image"
    audio = upload(client, wav_bytes(0.5), "voice.jpg")
    assert audio["kind"] == "audio" and audio["bytes"] > 0 and len(audio["sha256"]) == 64
    assert_error(client.post("/v1/files", files={"file": ("x.wav", b"plain text, not audio")}), 415,
                 "unsupported_media")
    assert_error(client.post("/v1/files", files={"file": ("x.wav", b"")}), 400, "invalid_input")
    assert_error(client.post("/v1/files", data={"nothing": "1"}), 422, "validation_error")
    assert client.get(f"/v1/files/{audio['id']}").json()["id"] == audio["id"]
    assert client.delete(f"/v1/files/{audio['id']}").json()["deleted"] is True
    assert_error(client.get(f"/v1/files/{audio['id']}"), 404, "not_found")
    saved, settings.max_upload_bytes = settings.max_upload_bytes, 1000
    try:
        assert_error(client.post("/v1/files", files={"file": ("f.jpg", FACE)}), 413, "too_large")
    finally:
        settings.max_upload_bytes = saved
    saved, settings.max_image_pixels = settings.max_image_pixels, 100 * 100
    try:
        r = client.post("/v1/files", files={"file": ("f.jpg", FACE)})
        assert_error(r, 413, "too_large")
        assert "pixels" in r.json()["error"]["message"]
    finally:
        settings.max_image_pixels = saved


def test_job_requests_are_validated(served):
    client, _ = served
    image = upload(client, FACE, "f.jpg")["id"]
    audio = upload(client, wav_bytes(0.5), "a.wav")["id"]
    assert_error(client.post("/v1/jobs", json={"inputs": {"image": "file_nope", "audio": audio}}), 404,
                 "file_not_found")
    assert_error(client.post("/v1/jobs", json={"model": "nope", "inputs": {"image": image, "audio": audio}}), 400,
                 "unknown_model")
    assert_error(client.post("/v1/jobs", json={"inputs": {"image": audio, "audio": image}}), 400, "invalid_input")
    assert_error(client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}, "x": 1}), 422,
                 "validation_error")
    assert_error(client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
                 422, "validation_error")
    assert_error(client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio},
                                               "webhook": {"url": "file:///etc/passwd"}}), 422, "validation_error")
    assert_error(client.get("/v1/jobs/job_nope"), 404, "not_found")
    assert_error(client.get("/v1/jobs?status=bogus"), 422, "validation_error")


def test_a_batch_of_12_jobs_all_succeed(served):
    client, _ = served
    image = upload(client, FACE, "f.jpg")["id"]
    audio = upload(client, wav_bytes(0.4), "a.wav")["id"]
    r = client.post("/v1/batches", json={"jobs": [{"inputs": {"image": image, "audio": audio}}] * 12,
                                          "metadata": {"name": "twelve"}})
    assert r.status_code == 202 and r.json()["request_counts"]["total"] == 12
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] == "completed":
            break
        time.sleep(0.2)
    assert batch["request_counts"]["succeeded"] == 12 and batch["request_counts"]["failed"] == 0
    page1 = client.get(f"/v1/jobs?batch_id={batch_id}&limit=8").json()
    page2 = client.get(f"/v1/jobs?batch_id={batch_id}&limit=8&after={page1['next_after']}").json()
    ids = [j["id"] for j in page1["data"] + page2["data"]]
    assert page1["has_more"] and not page2["has_more"] and len(set(ids)) == 12
    assert all(j["status"] == "succeeded" for j in page1["data"] + page2["data"])
    # A batch is checked whole before anything is queued.
    bad = client.post("/v1/batches", json={"jobs": [{"inputs": {"image": image, "audio": audio}},
                                                     {"inputs": {"image": "file_x", "audio": audio}}]})
    assert_error(bad, 404, "file_not_found")
    assert "jobs[1]" in bad.json()["error"]["message"]


def test_cancel_a_queued_job(idle):
    image = upload(idle, FACE, "f.jpg")["id"]
    audio = upload(idle, wav_bytes(0.5), "a.wav")["id"]
    job = idle.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()
    canceled = idle.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert canceled["status"] == "canceled" and canceled["finished_at"]
    assert_error(idle.post(f"/v1/jobs/{job['id']}/cancel"), 409, "already_finished")


def test_cancel_a_running_job_stops_it_at_a_chunk_boundary(served):
    client, _ = served
    image = upload(client, FACE, "f.jpg")["id"]
    audio = upload(client, wav_bytes(12.0), "long.wav")["id"]
    job = client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()
    running = wait_for(client, job["id"], statuses=("running",))
    deadline = time.monotonic() + 30
    while running["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        running = client.get(f"/v1/jobs/{job['id']}").json()
    assert 0 < running["progress"] < 1
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
    done = wait_for(client, job["id"], timeout=20)
    assert done["status"] == "canceled" and done["progress"] < 1 and done["result_url"] is None
    assert_error(client.get(f"/v1/jobs/{job['id']}/result"), 409, "not_ready")


def test_webhook_receiver_gets_a_signed_call(served):
    client, _ = served
    receiver = Receiver()
    try:
        image = upload(client, FACE, "f.jpg")["id"]
        audio = upload(client, wav_bytes(0.5), "a.wav")["id"]
        job = client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio},
                                             "webhook": {"url": receiver.url}}).json()
        wait_for(client, job["id"])
        deadline = time.monotonic() + 15
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(receiver.requests) == 1
        headers, body = receiver.requests[0]
        assert verify(body, headers[SIGNATURE_HEADER], "whsec_test")
        assert not verify(body, headers[SIGNATURE_HEADER], "another secret")
        sent = json.loads(body)
        assert sent["id"] == job["id"] and sent["status"] == "succeeded" and sent["result_url"]
    finally:
        receiver.close()


def test_events_stream_progress_until_the_end(served):
    client, _ = served
    image = upload(client, FACE, "f.jpg")["id"]
    audio = upload(client, wav_bytes(2.0), "a.wav")["id"]
    job = client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()
    events = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "succeeded" and events[-1]["progress"] == 1.0
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.split(" ")[0] == name or name.endswith("}"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_counters_move(served):
    client, _ = served
    before = client.get("/metrics").text
    r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(0.5))})
    assert r.status_code == 200
    after = client.get("/metrics").text
    assert metric(after, "talkingface_jobs_submitted_total") == metric(before, "talkingface_jobs_submitted_total") + 1
    done = 'talkingface_jobs_finished_total{model="atvgnet",status="succeeded"}'
    assert metric(after, done) == metric(before, done) + 1
    assert metric(after, "talkingface_frames_generated_total") > metric(before, "talkingface_frames_generated_total")
    assert 'talkingface_job_duration_seconds_bucket{le="+Inf",model="atvgnet"}' in after
    assert "talkingface_job_queue_wait_seconds_count" in after
    assert 'talkingface_http_requests_total{method="POST",route="/v1/talking-face",status="200"}' in after
    assert "talkingface_jobs_queued" in after and "talkingface_jobs_running" in after


def test_readiness_needs_a_worker(idle, served):
    r = idle.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["workers"] == "0 up"
    client, _ = served
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").json() == {"status": "ok"}


def test_models_workers_stats(served):
    client, _ = served
    r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(0.5))})
    assert r.status_code == 200
    model = client.get("/v1/models").json()["data"][0]
    assert model["id"] == "atvgnet" and model["ready"] and model["workers"]
    assert {w["name"] for w in model["weights"]} >= {"atnet_lstm_18.pth", "generator_23.pth"}
    workers = client.get("/v1/workers").json()["data"]
    assert len(workers) == 1 and "atvgnet" in workers[0]["models"]
    assert workers[0]["device"] in ("cpu", "cuda")        # resolved, never "auto"
    stats = client.get("/v1/stats?minutes=10").json()
    assert len(stats["series"]) == 10 and sum(m["succeeded"] for m in stats["series"]) >= 1


def test_result_artifacts_can_be_deleted(served):
    client, _ = served
    r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(0.5))})
    job_id = r.headers["x-job-id"]
    assert client.delete(f"/v1/jobs/{job_id}").json()["result_url"] is None
    assert_error(client.get(f"/v1/jobs/{job_id}/result"), 410, "gone")


def test_api_keys(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, api_keys=["k1", "k2"])
    with TestClient(create_app(settings)) as client:
        assert_error(client.get("/v1/jobs"), 401, "unauthorized")
        assert_error(client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert client.get("/livez").status_code == 200       # probes stay open


def test_retention_deletes_old_uploads_and_results(tmp_path, seeded_project_dir):
    from service.app import purge_expired
    settings = make_settings(tmp_path, seeded_project_dir)
    with TestClient(create_app(settings)) as client:
        image = upload(client, FACE, "f.jpg")
        store = client.app.state.store
        assert store.storage_bytes()[0] == image["bytes"]
        assert purge_expired(store, settings) == 0            # nothing is old yet
        settings.retention_hours = -1                         # everything is older than "now + 1 h"
        assert purge_expired(store, settings) == 1
        assert_error(client.get(f"/v1/files/{image['id']}"), 404, "not_found")
        assert not list((settings.data_dir / "files").iterdir())
        assert store.storage_bytes() == (0, 0)


def test_oversized_request_bodies_are_refused_while_streaming(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, max_upload_bytes=10_000)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/files", files={"file": ("big.bin", b"x" * 50_000)})
        assert_error(r, 413, "too_large")
        files_dir = settings.data_dir / "files"
        assert not files_dir.exists() or not any(files_dir.iterdir())


def test_openapi_docs_are_served(idle):
    assert idle.get("/docs").status_code == 200
    paths = idle.get("/openapi.json").json()["paths"]
    assert {"/v1/talking-face", "/v1/jobs", "/v1/batches", "/v1/files", "/readyz"} <= set(paths)


def test_jobs_command_reads_the_same_store(tmp_path, seeded_project_dir, monkeypatch, capsys):
    from service.cli import main
    settings = make_settings(tmp_path, seeded_project_dir)
    with TestClient(create_app(settings)) as client:
        image, audio = upload(client, FACE, "f.jpg")["id"], upload(client, wav_bytes(0.5), "a.wav")["id"]
        job_id = client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()["id"]
    monkeypatch.setenv("TALKINGFACE_DATA_DIR", str(settings.data_dir))
    assert main(["jobs", "list"]) == 0 and job_id in capsys.readouterr().out
    assert main(["jobs", "cancel", job_id]) == 0 and '"status": "canceled"' in capsys.readouterr().out
    assert main(["jobs", "cancel", job_id]) == 2 and "already canceled" in capsys.readouterr().err
    assert main(["jobs", "show", "job_nope"]) == 2


def test_a_worker_stays_counted_during_a_long_job(tmp_path, seeded_project_dir):
    # A job longer than worker_timeout_seconds must not make its worker look dead.
    settings = make_settings(tmp_path, seeded_project_dir, worker_timeout_seconds=1.0)
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    with TestClient(create_app(settings)) as client:
        thread.start()
        image, audio = upload(client, FACE, "f.jpg")["id"], upload(client, wav_bytes(6.0), "a.wav")["id"]
        job = client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()
        wait_for(client, job["id"], statuses=("running",))
        time.sleep(2.5)                                  # well past the 1-s timeout
        running = client.get(f"/v1/jobs/{job['id']}").json()
        assert running["status"] == "running"
        workers = client.get("/v1/workers").json()["data"]
        assert [w["current_job"] for w in workers] == [job["id"]]
        assert client.get("/readyz").status_code == 200
        client.post(f"/v1/jobs/{job['id']}/cancel")
        worker.stop.set()
        thread.join(60)
