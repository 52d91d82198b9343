"""Worker processes never outlive ``talkingface serve``, yield the CPU to the API, and are
restarted with a growing delay when they keep dying young.

The main test kills a real ``serve`` process with SIGKILL while its worker renders a job:
the worker hands the job back and exits (parent-death signal, else its watchdog), and the
restarted server finds no stray worker and the job back in the queue.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import torch

from service.jobs import executor
from service.jobs.store import JobStore
from service.jobs.worker import default_threads, yield_cpu
from service.settings import Settings
from tests.conftest import ROOT
from tests.test_api import FACE, wav_bytes
from tests.test_e2e import Server


def alive(pid):
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def stat_field(pid, index):
    """Field ``index`` (1-based, as proc(5) numbers them) of /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[index - 3]


def live_workers(server):
    return [w for w in server.client.get("/v1/workers").json()["data"] if alive(w["pid"])]


def test_kill_9_of_serve_leaves_no_worker_and_the_job_goes_back(tmp_path, seeded_project_dir):
    data = tmp_path / "data"
    server = Server(data, seeded_project_dir, workers=1)
    try:
        server.wait_until(lambda: len(live_workers(server)) == 1, 120, "no worker came up")
        [worker] = live_workers(server)
        assert int(stat_field(worker["pid"], 4)) == server.process.pid       # ppid: the serve process
        assert int(stat_field(worker["pid"], 19)) == 10                      # nice: below the API's
        image, audio = server.upload(FACE, "f.jpg"), server.upload(wav_bytes(4.0), "long.wav")
        job_id = server.client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}).json()["id"]
        server.wait_until(lambda: server.job(job_id)["progress"] > 0, 120, "the job did not start")
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        deadline = time.monotonic() + 60
        while alive(worker["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker["pid"]), "the worker outlived the serve process"
    finally:
        server.stop()
    # The worker handed its job back on its way out (or its lease runs out): nothing is lost.
    row = JobStore(f"sqlite:///{(data / 'jobs.db').resolve()}", migrate=False).get_job(job_id)
    assert row["status"] in ("queued", "running") and row["attempts"] <= 1, row

    # Restarted (without workers of its own): no stray worker is there, and the job waits in the queue.
    server = Server(data, seeded_project_dir, workers=0)
    try:
        time.sleep(1.0)
        assert live_workers(server) == [] and server.job(job_id)["status"] == "queued"
    finally:
        server.stop()


def test_a_worker_whose_parent_died_before_it_was_tied_exits_at_once():
    # The child of a process that exits at once: by the time it runs, its parent is gone.
    code = ("import multiprocessing, os, sys\n"
            "from service.jobs import executor\n"
            "if __name__ == '__main__':\n"
            "    ctx = multiprocessing.get_context('spawn')\n"
            "    p = ctx.Process(target=executor.worker_process, args=('{}', -1))\n"
            "    p.start(); print(p.pid, flush=True); os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_parent_death_signal_reaches_a_grandchild_whose_parent_is_killed():
    # parent -> child (ties itself, sleeps); SIGKILL of the parent must end the child.
    code = ("import os, signal, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import os, time\\n"
            "from service.jobs.executor import set_parent_death_signal\\n"
            "assert set_parent_death_signal()\\n"
            "print(os.getpid(), flush=True)\\n"
            "time.sleep(120)'], stdout=subprocess.PIPE, text=True)\n"
            "print(child.stdout.readline().strip(), flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the child outlived its parent"
    finally:
        parent.kill()


def test_the_watchdog_notices_a_new_parent():
    gone = threading.Event()
    executor.watch_parent(os.getppid() + 999_999, gone.set, grace=3600, every=0.01)
    assert gone.wait(10)


def test_workers_that_die_young_are_restarted_later_and_later(monkeypatch):
    class Dead:
        pid, exitcode = 4242, 1

        def is_alive(self):
            return False

    clock = [1000.0]
    monkeypatch.setattr(executor.time, "monotonic", lambda: clock[0])
    pool = executor.EmbeddedWorkers.__new__(executor.EmbeddedWorkers)
    pool.count, pool.processes = 1, [Dead()]
    pool.started_at, pool.quick_deaths, pool.restart_at = [clock[0]], [0], [None]
    spawned = []

    def spawn(slot):
        spawned.append(clock[0])
        pool.started_at[slot] = clock[0]
        return Dead()

    monkeypatch.setattr(pool, "_spawn", spawn)
    for _ in range(400):                     # the watcher's turns, one second apart
        clock[0] += 1.0
        pool._restart(0, pool.processes[0])
    assert spawned[0] == 1000.0 + 1 + 2     # seen dead a second later, restarted 2 s after that
    gaps = [b - a for a, b in zip(spawned, spawned[1:])]
    assert gaps[:5] == [5.0, 9.0, 17.0, 33.0, 61.0] and max(gaps) == 61.0, gaps   # 1 s alive + 2^n s, up to 60
    # A worker that lived long dies of something new: restarted at once.
    pool.started_at[0] = clock[0] - executor.STABLE_SECONDS - 1
    pool.restart_at[0] = None
    clock[0] += 1.0
    before = len(spawned)
    pool._restart(0, pool.processes[0])
    assert len(spawned) == before + 1


def test_workers_take_bounded_threads():
    # The priority (nice 10) is checked on a real worker above: os.nice cannot be undone here.
    threads = torch.get_num_threads()
    try:
        assert yield_cpu(Settings(worker_threads=1, worker_nice=0)) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    cores = len(os.sched_getaffinity(0))
    assert default_threads(1) == max(1, cores - 1) and default_threads(cores) == 1


def test_a_job_past_its_time_limit_fails_with_timeout(tmp_path, monkeypatch):
    from service.jobs.worker import Worker

    settings = Settings(data_dir=tmp_path, job_timeout_seconds=0.3, min_free_bytes=0)
    worker = Worker(settings, models=["dcgan"])
    chunks = []

    def slow_generate(self, job, progress):       # chunk after chunk, past the limit
        for done in range(1, 50):
            time.sleep(0.05)
            chunks.append(done)
            progress(done, 50)
        raise AssertionError("the time limit did not stop the job")

    monkeypatch.setattr(Worker, "_generate", slow_generate)
    _, [row] = worker.store.create_jobs([{"task": "image-generation", "model": "dcgan", "inputs": {}}], 3)
    assert worker.run_job(row["id"]) is True
    job = worker.store.get_job(row["id"])
    assert job["status"] == "failed" and job["error_code"] == "timeout", job
    assert "TALKINGFACE_JOB_TIMEOUT_SECONDS" in job["error_message"] and 4 <= len(chunks) < 49
    assert worker.run_job(row["id"]) is False         # a second message for it does nothing
    worker.store.dispose()
