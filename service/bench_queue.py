"""``talkingface bench queue``: the job engines side by side, embedded and Celery.

    talkingface bench queue --jobs 50 --workers 1,2 --broker redis://127.0.0.1:6379/9 \\
        --database postgresql+psycopg://postgres@127.0.0.1/bench

For each engine (``embedded``: workers poll the job store; ``celery``: the API hands jobs to
the broker, ``talkingface worker`` processes consume them) and each worker count, on one
PostgreSQL database (a new one each run, dropped after) and the demo weights:

1. Throughput: ``--jobs`` short talking-face jobs (``--seconds`` of audio each) submitted as
   one batch; jobs per minute from the submission to the last job's end.
2. Latency (one worker, ``--latency-jobs`` jobs one at a time, the worker idle): from the
   submission to the first progress a client polling every 5 ms sees, and from the model's
   last frame (``generated_at``, recorded by the worker) to the result downloadable.

The difference between the engines' latencies is what the broker path adds.
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

from models.common.bench import EXAMPLE_IMAGE
from service.bench_api import speech_wav
from service.settings import Settings


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seconds(iso):
    return datetime.fromisoformat(iso).timestamp()


class _Deployment:
    """An API process and ``workers`` workers of one engine, on a data folder of their own."""

    def __init__(self, engine, workers, database, broker, folder, model):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TALKINGFACE_DATA_DIR=str(folder), TALKINGFACE_DATABASE_URL=database,
                   TALKINGFACE_PORT=str(self.port), TALKINGFACE_WORKER_THREADS="1")
        env.pop("TALKINGFACE_BROKER_URL", None)
        if engine == "celery":
            env["TALKINGFACE_BROKER_URL"] = broker
        self.logs = open(folder / "bench.log", "ab")
        self.processes = [subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--workers", "0" if engine == "celery" else str(workers)],
            env=env, stdout=self.logs, stderr=subprocess.STDOUT)]
        if engine == "celery":
            self.processes += [subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--models", model],
                                                env=env, stdout=self.logs, stderr=subprocess.STDOUT)
                               for _ in range(workers)]
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self.wait(lambda: self._workers_up() >= workers, 300, f"{workers} workers did not come up")

    def _workers_up(self):
        try:
            return len(self.client.get("/v1/workers").json()["data"])
        except (httpx.TransportError, ValueError, KeyError):
            return 0

    def wait(self, condition, timeout, message, every=0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a process exited; see {self.logs.name}")
            if condition():
                return
            time.sleep(every)
        raise RuntimeError(f"{message} within {timeout} s; see {self.logs.name}")

    def job(self, job_id):
        return self.client.get(f"/v1/jobs/{job_id}").json()

    def stop(self):
        self.client.close()
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        self.logs.close()


def _database(url):
    """A new database on the server of ``url``; returns (its URL, a function dropping it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"tf_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def _run_one(engine, workers, args, inputs_audio, folder, latency):
    from service.jobs.store import JobStore

    database, drop = _database(args.database)
    deployment = None
    try:
        model = Settings().default_model          # the talking-face model a user gets without asking
        deployment = _Deployment(engine, workers, database, args.broker, folder, model)
        client = deployment.client
        image = client.post("/v1/files", files={"file": ("face.jpg", EXAMPLE_IMAGE.read_bytes())}).json()["id"]
        audio = client.post("/v1/files", files={"file": ("a.wav", inputs_audio)}).json()["id"]
        spec = {"model": model, "inputs": {"image": image, "audio": audio}}
        # Warm-up: every worker loads its model and has run once.
        warm = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(workers)]
        deployment.wait(lambda: all(deployment.job(j)["status"] == "succeeded" for j in warm), 300, "warm-up")

        result = {"engine": engine, "workers": workers}
        if latency:
            store = JobStore(database, migrate=False, pool_size=1, max_overflow=1)
            first_progress, delivery = [], []
            for _ in range(args.latency_jobs):
                sent = time.time()
                job_id = client.post("/v1/jobs", json=spec).json()["id"]
                deployment.wait(lambda j=job_id: deployment.job(j)["progress"] > 0, 120, "no progress", every=0.005)
                first_progress.append(time.time() - sent)
                deployment.wait(lambda j=job_id: deployment.job(j)["result_url"] is not None, 120, "no result",
                                every=0.005)
                available = time.time()
                delivery.append(available - store.get_job(job_id)["generated_at"])
            store.dispose()
            result["submit_to_first_progress_ms"] = _summary(first_progress)
            result["last_frame_to_result_ms"] = _summary(delivery)

        batch = client.post("/v1/batches", json={"jobs": [spec] * args.jobs})
        batch.raise_for_status()
        submitted = time.time()
        batch_id = batch.json()["id"]
        deployment.wait(lambda: client.get(f"/v1/batches/{batch_id}").json()["status"] == "completed",
                        3600, "the batch did not end", every=0.5)
        jobs, cursor = [], None
        while True:
            params = {"batch_id": batch_id, "limit": 100, **({"after": cursor} if cursor else {})}
            page = client.get("/v1/jobs", params=params).json()
            jobs += page["data"]
            if not page["has_more"]:
                break
            cursor = page["next_after"]
        ended = max(_seconds(j["finished_at"]) for j in jobs)
        result.update(jobs=args.jobs, succeeded=sum(j["status"] == "succeeded" for j in jobs),
                      seconds=round(ended - submitted, 2),
                      jobs_per_minute=round(60 * args.jobs / (ended - submitted), 2))
        return result
    finally:
        if deployment is not None:
            deployment.stop()
        drop()


def _summary(values):
    values = sorted(values)
    return {"median": round(1000 * statistics.median(values), 1),
            "p90": round(1000 * values[int(0.9 * (len(values) - 1))], 1), "max": round(1000 * values[-1], 1)}


def run(args):
    engines = ["embedded", "celery"] if args.engine == "both" else [args.engine]
    counts = [int(n) for n in str(args.workers_list).split(",")]
    audio = speech_wav(args.seconds or 1.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="talkingface-bench-queue-") as tmp:
        for engine in engines:
            for workers in counts:
                folder = Path(tmp) / f"{engine}-{workers}"
                folder.mkdir()
                row = _run_one(engine, workers, args, audio, folder, latency=workers == counts[0])
                rows.append(row)
                sys.stderr.write(json.dumps(row) + "\n")   # each run as it ends: the whole takes minutes
    return {"clip_seconds": args.seconds or 1.0, "cpu_cores": os.cpu_count(), "runs": rows}
