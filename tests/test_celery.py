"""The Celery engine against the machine's real Redis, RabbitMQ and PostgreSQL.

The API (``talkingface serve --workers 0``) and each worker (``talkingface worker --models
...``) run as separate processes on one PostgreSQL database, as they would on separate
machines. Covered: the job path (Redis; RabbitMQ with two workers); a worker killed with SIGKILL mid-job and
another finishing it (``attempts`` 2, one result); two workers serving two model queues; a
Redis restarted mid-batch with every job still succeeding; a job canceled while running.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from kombu import Connection
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from service.jobs.celery_engine import queue_name
from tests import components
from tests.conftest import ROOT
from tests.test_api import FACE, wav_bytes
from tests.test_e2e import Server, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def database():
    """A new PostgreSQL database for the test (the API and the workers share it)."""
    components.require("postgresql")
    admin = create_engine(components.POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"tf_celery_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(components.POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def redis_url():
    """The machine's Redis, on a database of its own for this test, emptied first."""
    base = components.require("redis").rstrip("/")
    url = f"{base}/{11 + os.getpid() % 4}"
    with Connection(url) as connection:
        connection.default_channel.client.flushdb()
    return url


def rabbitmq_url():
    url = components.require("rabbitmq")
    with Connection(url) as connection:         # messages of an earlier run must not leak in
        channel = connection.channel()
        for model in ("dcgan", "lapgan", "atvgnet"):
            try:
                channel.queue_purge(queue_name(model))
            except Exception:                   # the queue does not exist yet
                channel = connection.channel()
    return url


class Cluster:
    """An API process and any number of Celery worker processes on one database and broker."""

    def __init__(self, tmp_path, weights, database, broker):
        self.tmp_path, self.workers = tmp_path, []
        self.env = dict(TALKINGFACE_DATABASE_URL=database, TALKINGFACE_BROKER_URL=broker,
                        TALKINGFACE_DISPATCH_SECONDS="0.2", TALKINGFACE_REDISPATCH_AFTER_SECONDS="2",
                        TALKINGFACE_WORKER_NICE="0", TALKINGFACE_WORKER_THREADS="2",
                        # Face detection holds the GIL, so the lease's keep-alive waits for it: on a
                        # loaded machine a 3 s lease can lapse under a live worker.
                        TALKINGFACE_LEASE_SECONDS="8")
        self.api = Server(tmp_path / "data", weights, workers=0, **self.env)
        self.client = self.api.client

    def worker(self, models):
        """Start ``talkingface worker --models ...``; returns its process once it serves its queues."""
        log = open(self.tmp_path / f"worker-{len(self.workers)}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--models", models],
                                   cwd=ROOT, env=self.api.env, stdout=log, stderr=subprocess.STDOUT)
        process.log = log
        self.workers.append(process)
        self.wait_until(lambda: self.consuming(process), 120, f"worker for {models} did not come up")
        return process

    def consuming(self, process):
        assert process.poll() is None, f"the worker exited with {process.returncode}: {self.tail(process)}"
        return b" ready." in open(process.log.name, "rb").read()

    def tail(self, process):
        process.log.flush()
        return open(process.log.name, "rb").read()[-3000:].decode(errors="replace")

    def wait_until(self, condition, timeout, message):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        logs = "\n".join(self.tail(w) for w in self.workers)
        raise AssertionError(f"{message} within {timeout} s\nAPI: {self.api.tail()}\nworkers: {logs}")

    def image_job(self, model="dcgan", **options):
        response = self.client.post("/v1/jobs", json={"task": "image-generation", "model": model, "inputs": {},
                                                      "options": {"n": 1, **options}})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def talking_face_job(self, seconds):
        image, audio = self.api.upload(FACE, "face.jpg"), self.api.upload(wav_bytes(seconds), "a.wav")
        response = self.client.post("/v1/jobs", json={"model": "atvgnet", "inputs": {"image": image, "audio": audio}})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id):
        return self.client.get(f"/v1/jobs/{job_id}").json()

    def wait_final(self, job_ids, timeout=120):
        final = ("succeeded", "failed", "canceled")
        self.wait_until(lambda: all(self.job(j)["status"] in final for j in job_ids), timeout, "jobs did not end")
        return [self.job(j) for j in job_ids]

    def stop(self):
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.log.close()
        self.api.stop()


@pytest.fixture
def cluster(tmp_path, seeded_project_dir, database):
    made = []

    def make(broker):
        made.append(Cluster(tmp_path, seeded_project_dir, database, broker))
        return made[-1]

    yield make
    for each in made:
        each.stop()


def test_jobs_run_through_the_broker_on_a_worker_process(cluster):
    nodes = cluster(redis_url())
    assert nodes.client.get("/readyz").status_code == 503          # no worker yet
    worker = nodes.worker("dcgan")
    nodes.wait_until(lambda: nodes.client.get("/readyz").status_code == 200, 30, "not ready with a worker")
    ready = nodes.client.get("/readyz").json()["checks"]
    assert ready["broker"] == "ok" and ready["workers"] == "1 up"
    [listed] = nodes.client.get("/v1/workers").json()["data"]
    assert listed["pid"] == worker.pid and listed["models"] == ["dcgan"]

    job_ids = [nodes.image_job(seed=i) for i in range(4)]
    jobs = nodes.wait_final(job_ids)
    assert [j["status"] for j in jobs] == ["succeeded"] * 4, jobs
    assert all(j["attempts"] == 1 and j["progress"] == 1.0 and j["worker_id"] == listed["id"] for j in jobs)
    png = nodes.client.get(jobs[0]["result_url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    # A model no worker serves waits in its own queue; the others are not held up by it.
    waiting = nodes.image_job(model="lapgan")
    done = nodes.image_job(seed=9)
    assert nodes.wait_final([done])[0]["status"] == "succeeded"
    assert nodes.job(waiting)["status"] == "queued"


def test_a_worker_killed_mid_job_leaves_it_to_another_and_a_cancel_stops_one(cluster):
    nodes = cluster(redis_url())
    first = nodes.worker("atvgnet")
    job_id = nodes.talking_face_job(2.0)
    nodes.wait_until(lambda: nodes.job(job_id)["progress"] > 0, 120, "the job did not start")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    second = nodes.worker("atvgnet")
    [job] = nodes.wait_final([job_id], timeout=180)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    workers = {w["id"]: w["pid"] for w in nodes.client.get("/v1/workers").json()["data"]}
    assert workers[job["worker_id"]] == second.pid
    results = list((nodes.tmp_path / "data" / "results").glob(f"{job_id}*"))
    assert len(results) == 1, results
    assert nodes.client.get(job["result_url"]).content[4:8] == b"ftyp"

    # A job canceled while it runs on a Celery worker stops at its next chunk; the worker is free again.
    job_id = nodes.talking_face_job(20.0)
    nodes.wait_until(lambda: nodes.job(job_id)["progress"] > 0, 120, "the job did not start")
    assert nodes.client.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    [job] = nodes.wait_final([job_id], timeout=60)
    assert job["status"] == "canceled" and job["progress"] < 1.0, job
    assert nodes.client.get(f"/v1/jobs/{job_id}/result").status_code in (404, 409)
    nodes.wait_until(lambda: [w["status"] for w in nodes.client.get("/v1/workers").json()["data"]] == ["idle"], 30,
                     "the worker did not come back idle")


def test_two_workers_serve_two_model_queues_on_rabbitmq(cluster):
    nodes = cluster(rabbitmq_url())
    dcgan, lapgan = nodes.worker("dcgan"), nodes.worker("lapgan")
    nodes.wait_until(lambda: nodes.client.get("/readyz").status_code == 200, 30, "not ready with workers")
    assert nodes.client.get("/readyz").json()["checks"]["broker"] == "ok"
    job_ids = [nodes.image_job(model=m, seed=i) for i in range(3) for m in ("dcgan", "lapgan")]
    jobs = nodes.wait_final(job_ids)
    pids = {w["id"]: w["pid"] for w in nodes.client.get("/v1/workers").json()["data"]}
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    for job in jobs:
        assert pids[job["worker_id"]] == (dcgan.pid if job["model"] == "dcgan" else lapgan.pid), job


def test_a_redis_restarted_mid_batch_loses_no_job(cluster, tmp_path):
    components.require("redis")
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]

    def start_redis():
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return process
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    redis = start_redis()
    try:
        nodes = cluster(f"redis://127.0.0.1:{port}/0")
        nodes.worker("dcgan")
        batch = nodes.client.post("/v1/batches", json={"jobs": [
            {"task": "image-generation", "model": "dcgan", "inputs": {}, "options": {"n": 4, "seed": i}}
            for i in range(16)]})
        assert batch.status_code == 202, batch.text
        batch_id = batch.json()["id"]
        job_ids = [j["id"] for j in nodes.client.get("/v1/jobs", params={"batch_id": batch_id, "limit": 50})
                   .json()["data"]]
        assert len(job_ids) == 16
        nodes.wait_until(lambda: sum(nodes.job(j)["status"] == "succeeded" for j in job_ids) >= 2, 120,
                         "the batch did not start")
        # Mid-batch: the broker goes away with every message it held, and comes back empty.
        redis.kill()
        redis.wait()
        time.sleep(1.0)
        left = sum(nodes.job(j)["status"] != "succeeded" for j in job_ids)
        assert left > 0, "the batch ended before the restart: nothing was tested"
        redis = start_redis()
        jobs = nodes.wait_final(job_ids, timeout=180)
        assert [j["status"] for j in jobs] == ["succeeded"] * 16, [(j["status"], j["error"]) for j in jobs]
    finally:
        redis.kill()
        redis.wait()


def test_dispatch_hands_every_queued_job_over_once_and_again_when_lost(tmp_path):
    """The dispatcher's bookkeeping without a worker: taken once, handed back on a failed publish,
    and again when the broker's queue holds fewer messages than the jobs handed to it."""
    from service.jobs.celery_engine import Dispatcher
    from service.jobs.store import JobStore
    from service.settings import Settings

    url = redis_url()
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    settings = Settings(data_dir=tmp_path, broker_url=url, redispatch_after_seconds=0.01)
    dispatcher = Dispatcher(store, settings)
    specs = [{"task": "image-generation", "model": "dcgan", "inputs": {}, "options": {}} for _ in range(3)]
    _, rows = store.create_jobs(specs, 3)
    assert dispatcher.dispatch() == 3 and dispatcher.dispatch() == 0
    assert dispatcher.queue_length("dcgan") == 3
    time.sleep(0.05)
    assert dispatcher.find_lost() == 0                   # all three are in the queue
    with Connection(url) as connection:                  # the broker forgets two of them
        client = connection.default_channel.client
        client.rpop(queue_name("dcgan"))
        client.rpop(queue_name("dcgan"))
    assert dispatcher.find_lost() == 2 and dispatcher.dispatch() == 2
    assert dispatcher.queue_length("dcgan") == 3

    broken = Dispatcher(store, Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    store.create_jobs(specs[:1], 3)
    assert broken.dispatch() == 0 and broken.broker_ok is False
    assert store.take_undispatched() != []               # handed back for the next tick
    store.dispose()
