"""``talkingface bench api``: submission latency under concurrent clients, and delivery delay.

    talkingface bench api --clients 50 --requests 20 --weights DIR --random-weights

1. Submission: a ``talkingface serve --workers 0`` process (no model runs, so only the
   service is measured) takes ``POST /v1/jobs`` from ``--clients`` concurrent clients.
   Closed loop (each client sends its next job as soon as the last is answered, the
   server saturated): with ``wrk`` when it is installed (Debian package ``wrk``; a
   Python load generator would take half of a 2-core machine), else ``--requests`` per
   client from Python. Open loop: the same clients together offering ``--rate`` jobs/s,
   the latency a user sees at that load. Both print p50/p90/p99.
   With ``--busy-workers N`` the server runs N worker processes kept busy rendering long
   clips (``--busy-seconds`` of audio each) of the demo model while the submissions are
   timed: the latency a user sees while the machine's CPUs are doing model work.
2. Delivery: a server with one worker runs ``--jobs`` short jobs one at a time; for each,
   the time from the model's last frame (``generated_at``, recorded by the worker) to the
   moment a client polling every 5 ms can download the MP4 (``--jobs 0`` skips it).
"""

import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import httpx
import numpy as np

from models.common.bench import EXAMPLE_IMAGE, speech_like


def _percentiles(values):
    values = sorted(values)
    pick = lambda q: round(1000 * values[min(len(values) - 1, int(q * len(values)))], 2)  # noqa: E731
    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99), "max_ms": round(1000 * values[-1], 2)}


def speech_wav(seconds):
    """A 16-kHz mono WAV file's bytes of ``seconds`` of speech-like sound."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((np.clip(speech_like(seconds), -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _random_weights(arrays_dir, folder):
    """A weights folder with random-initialised checkpoints beside the authors' arrays."""
    import torch

    from models.atvgnet.networks import ATNet, VGNet
    from models.weights import weights_dir

    for array in weights_dir(arrays_dir).glob("*.npy"):
        shutil.copy(array, folder / array.name)
    torch.save(ATNet().state_dict(), folder / "atnet_lstm_18.pth")
    torch.save(VGNet().state_dict(), folder / "generator_23.pth")
    return folder


class _Server:
    def __init__(self, data_dir, weights, workers):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, TALKINGFACE_DATA_DIR=str(data_dir), TALKINGFACE_POLL_SECONDS="0.05")
        if weights is not None:
            env["TALKINGFACE_WEIGHTS_DIR"] = str(weights)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        ready, answer = ("/readyz" if workers else "/livez"), "no answer"
        while time.monotonic() < deadline:
            try:
                response = httpx.get(self.url + ready)
                if response.status_code == 200:
                    return
                answer = response.text
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not become ready: {answer}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _wrk(url, body, clients, seconds):
    """Closed-loop POSTs with wrk; returns its latency percentiles and rate."""
    import json
    import re

    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [[{json.dumps(body)}]]\n")
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url + "/v1/jobs"], capture_output=True, text=True, check=True).stdout
    script.unlink()
    to_ms = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = {f"p{q}_ms": round(float(v) * to_ms[u], 2)
               for q, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return dict(latency, requests=int(re.search(r"(\d+) requests in", out).group(1)),
                per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                non_2xx=int(errors.group(1)) if errors else 0, tool="wrk")


async def _open_loop(url, body, clients, rate, seconds):
    """``clients`` clients together sending ``rate`` jobs/s on a fixed schedule."""
    latencies = []
    interval = clients / rate
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=clients), timeout=60) as client:
        async def one_client(offset):
            start = time.perf_counter() + offset
            for i in range(int(seconds * rate / clients)):
                await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
                sent = time.perf_counter()
                r = await client.post("/v1/jobs", json=body)
                latencies.append(time.perf_counter() - sent)
                assert r.status_code == 202, r.text
        await asyncio.gather(*(one_client(k * interval / clients) for k in range(clients)))
    return latencies


async def _submit(url, body, clients, requests):
    latencies = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def one_client():
            for _ in range(requests):
                start = time.perf_counter()
                r = await client.post("/v1/jobs", json=body)
                latencies.append(time.perf_counter() - start)
                assert r.status_code == 202, r.text
        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - start
    return latencies, wall


def _upload(client, data, name):
    return client.post("/v1/files", files={"file": (name, data)}).json()["id"]


def _keep_busy(client, workers, seconds):
    """Queue one ``seconds``-long clip per worker and wait until every worker is rendering one."""
    body = {"inputs": {"image": _upload(client, EXAMPLE_IMAGE.read_bytes(), "face.jpg"),
                       "audio": _upload(client, speech_wav(seconds), "long.wav")}}
    ids = {client.post("/v1/jobs", json=body).json()["id"] for _ in range(workers)}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rendering = [job for job in (client.get(f"/v1/jobs/{i}").json() for i in ids)
                     if job["status"] == "running" and job["progress"] > 0]
        if len(rendering) == workers:
            return sorted(ids)
        time.sleep(0.5)
    raise RuntimeError(f"the {workers} busy jobs did not start rendering within 300 s")


def _still_running(client, ids):
    return sum(client.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids)


def run(args):
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if args.random_weights:
            (tmp / "weights").mkdir()
            weights = _random_weights(args.weights, tmp / "weights")
        busy = getattr(args, "busy_workers", 0) or 0
        result = {"clients": args.clients, "busy_workers": busy}

        server = _Server(tmp / "submit", weights, workers=busy)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                body = {"inputs": {"image": _upload(client, EXAMPLE_IMAGE.read_bytes(), "face.jpg"),
                                   "audio": _upload(client, speech_wav(1.0), "a.wav")}}
                busy_ids = _keep_busy(client, busy, args.busy_seconds) if busy else []
            asyncio.run(_submit(server.url, body, args.clients, 2))       # warm-up
            if shutil.which("wrk"):
                result["submit_closed_loop"] = _wrk(server.url, body, args.clients, 10)
            else:
                latencies, wall = asyncio.run(_submit(server.url, body, args.clients, args.requests))
                result["submit_closed_loop"] = dict(_percentiles(latencies), requests=len(latencies),
                                                    per_second=round(len(latencies) / wall, 1), tool="httpx")
            latencies = asyncio.run(_open_loop(server.url, body, args.clients, args.rate, 10))
            result["submit_open_loop"] = dict(_percentiles(latencies), requests=len(latencies),
                                              offered_per_second=args.rate)
            if busy:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    # Were the workers busy to the end? Else --busy-seconds was too short to say.
                    result["busy_jobs_still_running_at_end"] = _still_running(client, busy_ids)
        finally:
            server.stop()
        if args.jobs <= 0:
            return result

        server = _Server(tmp / "deliver", weights, workers=1)
        delays, finalise = [], []
        try:
            from service.jobs.store import JobStore
            store = JobStore(f"sqlite:///{(tmp / 'deliver' / 'jobs.db').resolve()}", migrate=False)
            with httpx.Client(base_url=server.url, timeout=60) as client:
                body = {"inputs": {"image": _upload(client, EXAMPLE_IMAGE.read_bytes(), "face.jpg"),
                                   "audio": _upload(client, speech_wav(1.0), "a.wav")}}
                for _ in range(args.jobs):
                    job_id = client.post("/v1/jobs", json=body).json()["id"]
                    while True:
                        job = client.get(f"/v1/jobs/{job_id}").json()
                        if job["status"] in ("succeeded", "failed", "canceled"):
                            break
                        time.sleep(0.005)
                    assert job["status"] == "succeeded", job
                    assert client.get(job["result_url"]).status_code == 200
                    seen = time.time()
                    row = store.get_job(job_id)
                    delays.append(seen - row["generated_at"])
                    finalise.append(row["finished_at"] - row["generated_at"])
        finally:
            server.stop()
        result["delivery"] = dict(_percentiles(delays), jobs=len(delays),
                                  mp4_close_and_record=_percentiles(finalise))
        return result
