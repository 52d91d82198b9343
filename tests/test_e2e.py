"""End to end: a real ``talkingface serve`` process (uvicorn) with real worker processes.

Short leases and heartbeats make worker death visible within seconds.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from service import media
from tests.conftest import ROOT
from tests.test_api import FACE, wav_bytes
from tests.test_dashboard_static import chromium, dump_dom  # noqa: F401  (chromium is a fixture)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``talkingface serve`` in a subprocess, on its own data dir."""

    def __init__(self, data_dir, weights, workers, port=None, **env):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, TALKINGFACE_DATA_DIR=str(data_dir), TALKINGFACE_WEIGHTS_DIR=str(weights),
                        TALKINGFACE_LEASE_SECONDS="3", TALKINGFACE_HEARTBEAT_SECONDS="0.5",
                        TALKINGFACE_POLL_SECONDS="0.05", TALKINGFACE_WORKER_TIMEOUT_SECONDS="4",
                        TALKINGFACE_WEBHOOK_SECRET="whsec_e2e")
        self.env.update(env)
        self.log = open(data_dir.parent / f"server-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self.wait_until(lambda: self.get("/livez").status_code == 200, 60, "the server did not start")

    def get(self, path, **kwargs):
        try:
            return self.client.get(path, **kwargs)
        except httpx.TransportError:
            return httpx.Response(599)

    def wait_until(self, condition, timeout, message):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}: {self.tail()}")
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"{message} within {timeout} s: {self.tail()}")

    def job(self, job_id):
        return self.client.get(f"/v1/jobs/{job_id}").json()

    def upload(self, data, name):
        return self.client.post("/v1/files", files={"file": (name, data)}).json()["id"]

    def tail(self):
        self.log.flush()
        return (self.log.name and open(self.log.name, "rb").read()[-3000:].decode(errors="replace"))

    def stop(self):
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def weights(seeded_project_dir):
    return seeded_project_dir


def test_served_mp4_worker_killed_mid_job_and_dashboard(tmp_path, weights, chromium, ffprobe):  # noqa: F811
    server = Server(tmp_path / "data", weights, workers=1)
    try:
        server.wait_until(lambda: server.get("/readyz").status_code == 200, 90, "no worker came up")

        # The one-call path gives a playable MP4 of the audio's duration.
        r = server.client.post("/v1/talking-face", files={"image": ("face.jpg", FACE),
                                                         "audio": ("a.wav", wav_bytes(1.2))})
        assert r.status_code == 200, r.text
        (tmp_path / "one.mp4").write_bytes(r.content)
        info = media.probe(tmp_path / "one.mp4")
        assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
        assert abs(float(info["format"]["duration"]) - 1.2) <= 0.07

        # kill -9 of the worker in the middle of a job: a new worker finishes it.
        image, audio = server.upload(FACE, "f.jpg"), server.upload(wav_bytes(2.5), "long.wav")
        job_id = server.client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()["id"]
        server.wait_until(lambda: server.job(job_id)["progress"] > 0.05, 60, "the job did not start")
        def busy_worker():
            found = [w for w in server.client.get("/v1/workers").json()["data"] if w["current_job"] == job_id]
            return found[0] if found else None
        server.wait_until(lambda: busy_worker() is not None, 30, "no worker reported the job")
        worker = busy_worker()
        os.kill(worker["pid"], signal.SIGKILL)
        server.wait_until(lambda: server.job(job_id)["status"] in ("succeeded", "failed"), 120,
                          "the job was not finished after its worker died")
        job = server.job(job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 2 and job["worker_id"] != worker["id"]
        assert server.client.get(job["result_url"]).status_code == 200

        metrics = server.client.get("/metrics").text
        assert 'talkingface_jobs_finished_total{model="atvgnet",status="succeeded"} 2.0' in metrics

        # The dashboard, in a real browser, lists the finished job with its video.
        dom = dump_dom(chromium, f"{server.url}/dashboard", tmp_path / "chromium")
        rows = {row.attrs["data-job-id"]: row for row in dom.by_id("recent-jobs").find_all("tr")
                if "data-job-id" in row.attrs}
        assert rows[job_id].attrs["data-status"] == "succeeded"
        assert any(job["result_url"] in (a.attrs.get("href") or "") for a in rows[job_id].find_all("a"))
    finally:
        server.stop()


def test_queued_jobs_survive_a_restart_and_readyz_needs_a_worker(tmp_path, weights):
    data = tmp_path / "data"
    server = Server(data, weights, workers=0)
    try:
        ready = server.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["workers"] == "0 up"
        image, audio = server.upload(FACE, "f.jpg"), server.upload(wav_bytes(0.5), "a.wav")
        ids = [server.client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()["id"]
               for _ in range(3)]
    finally:
        server.stop()

    server = Server(data, weights, workers=0, port=server.port)
    worker = None
    try:
        assert [server.job(i)["status"] for i in ids] == ["queued"] * 3
        worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], cwd=ROOT, env=server.env,
                                  stdout=server.log, stderr=subprocess.STDOUT)
        server.wait_until(lambda: all(server.job(i)["status"] == "succeeded" for i in ids), 120,
                          "the restarted queue was not worked off")
        assert server.get("/readyz").status_code == 200
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        server.wait_until(lambda: server.get("/readyz").status_code == 503, 10,
                          "readyz still said ready without a worker")
    finally:
        if worker and worker.poll() is None:
            worker.kill()
        server.stop()


def test_sigterm_ends_serve_in_bounded_time_while_a_webhook_receiver_hangs(tmp_path, weights):
    # A receiver that takes the connection and never answers.
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)
    server = Server(tmp_path / "data", weights, workers=1, TALKINGFACE_WEBHOOK_ALLOW="127.0.0.1",
                    TALKINGFACE_WEBHOOK_TIMEOUT_SECONDS="60", TALKINGFACE_WEBHOOK_DEADLINE_SECONDS="120")
    try:
        server.wait_until(lambda: server.get("/readyz").status_code == 200, 90, "no worker came up")
        image, audio = server.upload(FACE, "f.jpg"), server.upload(wav_bytes(0.5), "a.wav")
        hook = f"http://127.0.0.1:{hanging.getsockname()[1]}/hook"
        job = server.client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio},
                                                   "webhook": {"url": hook}}).json()["id"]
        server.wait_until(lambda: server.job(job)["status"] == "succeeded", 120, "the job did not finish")
        hanging.settimeout(30)
        connection, _ = hanging.accept()            # the call is out, and will get no answer
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)
        # uvicorn's graceful 10 s, the webhook pool's 5 s, the workers' hand-back: never the
        # receiver's 60-s timeout.
        assert time.monotonic() - started < 30
        connection.close()
    finally:
        hanging.close()
        server.stop()
