"""A full disk or a full database: 507 ``insufficient_storage`` with ``Retry-After`` (a database
out of reach: 503), never a reset or a 500; nothing partial left behind; ``DELETE`` still frees
space; ``/readyz`` says 503 while free space is low; the worker hands its job back and backs
off instead of crashing; all recovered without a restart.

Faults are injected (``OSError(ENOSPC)`` from writes, SQLite's "database or disk is full"),
and, where this user may mount one, also met on a real 8 MB tmpfs.
"""

import errno
import logging
import os
import sqlite3
import subprocess
import time

import pytest
import starlette.formparsers
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from service.app import create_app
from service.jobs.worker import Worker
from tests.test_api import FACE, assert_error, make_settings, serving, upload, wait_for, wav_bytes
from tests.test_e2e import Server

IMAGE_JOB = {"task": "image-generation", "model": "dcgan", "inputs": {}}


def disk_full():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def database(message):
    return OperationalError("UPDATE jobs SET ...", {}, sqlite3.OperationalError(message))


def raises(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


def assert_storage_full(response):
    assert_error(response, 507, "insufficient_storage")
    assert int(response.headers["retry-after"]) > 0


def stored_files(settings):
    return sorted(p.name for p in settings.files_dir.iterdir()) if settings.files_dir.exists() else []


@pytest.fixture
def app(tmp_path, seeded_project_dir):
    """(client, settings) of an app without workers; any free space counts as enough."""
    settings = make_settings(tmp_path, seeded_project_dir, min_free_bytes=0)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def test_uploads_that_fill_the_disk_answer_507_leave_nothing_and_recover(app, monkeypatch):
    client, settings = app
    kept = stored_files(settings)
    real_fdopen = os.fdopen

    class FillsUp:
        """A file that takes 1 KB, then finds the disk full."""

        def __init__(self, out):
            self.out, self.written = out, 0

        def write(self, data):
            if self.written + len(data) > 1024:
                raise disk_full()
            self.written += len(data)
            return self.out.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.out.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FillsUp(real_fdopen(fd, *a, **k)))
    assert_storage_full(client.post("/v1/files", files={"file": ("f.jpg", FACE)}))
    assert_storage_full(client.post("/v1/talking-face", data={"wait": "0"},
                                    files={"image": ("f.jpg", FACE), "audio": ("a.wav", wav_bytes(0.5))}))
    assert stored_files(settings) == kept                   # no partial upload left behind

    # A multipart body that Starlette cannot spool to its temporary file.
    monkeypatch.undo()

    monkeypatch.setattr(starlette.formparsers.MultiPartParser, "parse", raises(disk_full()))
    assert_storage_full(client.post("/v1/files", files={"file": ("f.jpg", FACE)}))

    monkeypatch.undo()                                       # space is back: no restart needed
    assert upload(client, FACE, "f.jpg")["kind"] == "image"


def test_a_full_database_answers_507_and_one_out_of_reach_503(app, monkeypatch):
    client, settings = app
    store = client.app.state.store
    image = upload(client, FACE, "f.jpg")

    full = raises(database("database or disk is full"))
    monkeypatch.setattr(store, "create_jobs", full)
    assert_storage_full(client.post("/v1/jobs", json=IMAGE_JOB))
    monkeypatch.setattr(store, "add_file", full)
    before = stored_files(settings)
    assert_storage_full(client.post("/v1/files", files={"file": ("f.jpg", FACE)}))
    assert stored_files(settings) == before                 # the bytes of an unrecorded file are removed

    monkeypatch.setattr(store, "create_jobs", raises(database("database is locked")))
    r = client.post("/v1/jobs", json=IMAGE_JOB)
    assert_error(r, 503, "store_unavailable")
    assert int(r.headers["retry-after"]) > 0

    monkeypatch.undo()
    assert client.post("/v1/jobs", json=IMAGE_JOB).status_code == 202
    assert client.get(f"/v1/files/{image['id']}").status_code == 200


def test_deleting_a_file_frees_its_bytes_before_the_database_is_written(app, monkeypatch):
    client, settings = app
    row = upload(client, FACE, "f.jpg")
    path = settings.files_dir / row["id"]
    store = client.app.state.store
    real_delete, seen = store.delete_file, []

    def delete_on_a_full_disk(file_id):
        seen.append(path.exists())
        if len(seen) == 1:
            raise database("database or disk is full")
        return real_delete(file_id)

    monkeypatch.setattr(store, "delete_file", delete_on_a_full_disk)
    assert_storage_full(client.delete(f"/v1/files/{row['id']}"))
    assert client.delete(f"/v1/files/{row['id']}").json()["deleted"] is True
    assert seen == [False, False]                            # the bytes were gone before each write
    assert_error(client.get(f"/v1/files/{row['id']}"), 404, "not_found")


def fake_result(worker, job, fails):
    """What ``Worker._generate`` returns, after writing a small result; raises ``fails.pop(0)`` first."""
    path = worker.settings.results_dir / f"{job['id']}.png"
    worker.settings.results_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    if fails:
        raise fails.pop(0)
    path.write_bytes(b"\x89PNG a result")
    return dict(result_path=f"results/{path.name}", result_bytes=path.stat().st_size, frames=1,
                generated_at=time.time(), info={})


def test_worker_hands_the_job_back_and_backs_off_on_a_full_disk_or_database(tmp_path, seeded_project_dir,
                                                                            monkeypatch, caplog):
    settings = make_settings(tmp_path, seeded_project_dir, min_free_bytes=0)
    worker = Worker(settings, models=["dcgan"])
    worker.backoff_seconds = (0.05, 0.2)
    from service.storage import StorageUnavailable

    fails = [disk_full(), database("database or disk is full"), StorageUnavailable("the bucket is out of reach")]
    monkeypatch.setattr(Worker, "_generate", lambda self, job, progress: fake_result(self, job, fails))
    real_claim, claims = worker.store.claim, []

    def claim(*args):
        claims.append(time.monotonic())
        if len(claims) <= 3:                                 # the database is full for a while
            raise database("database or disk is full")
        return real_claim(*args)

    monkeypatch.setattr(worker.store, "claim", claim)
    caplog.set_level(logging.INFO, logger="talkingface.worker")
    with serving(settings, worker) as client:
        job_id = client.post("/v1/jobs", json=IMAGE_JOB).json()["id"]
        job = wait_for(client, job_id, timeout=60)
        assert job["status"] == "succeeded", job
        # Handed back three times (disk, database full, bucket out of reach), each attempt given back: one counted.
        assert job["attempts"] == 1 and fails == []
        assert (settings.data_dir / f"results/{job_id}.png").read_bytes() == b"\x89PNG a result"
        assert len(claims) >= 6
        waits = [b - a for a, b in zip(claims, claims[1:4])]
        assert all(w >= 0.04 for w in waits), waits         # it waited between tries

        # DELETE of the result on a full database: the bytes go first, the row stays for a retry.
        store = client.app.state.store
        real_clear = store.clear_result
        monkeypatch.setattr(store, "clear_result", raises(database("database or disk is full")))
        assert_storage_full(client.delete(f"/v1/jobs/{job_id}"))
        assert not (settings.data_dir / f"results/{job_id}.png").exists()
        monkeypatch.setattr(store, "clear_result", real_clear)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    states = [r.getMessage() for r in caplog.records if r.getMessage().startswith("storage ")]
    # One line when storage starts failing, one when it recovers: not one a try.
    assert [s.split(":")[0].split(";")[0] for s in states] == ["storage full", "storage unavailable",
                                                                "storage no longer unavailable"], states
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the worker logged an error"


def test_readyz_is_503_and_workers_wait_while_free_space_is_low(tmp_path, seeded_project_dir, monkeypatch):
    settings = make_settings(tmp_path, seeded_project_dir, min_free_bytes=1 << 62)
    worker = Worker(settings, models=["dcgan"])
    worker.backoff_seconds = (0.05, 0.2)
    monkeypatch.setattr(Worker, "_generate", lambda self, job, progress: fake_result(self, job, []))
    with serving(settings, worker) as client:
        job_id = client.post("/v1/jobs", json=IMAGE_JOB).json()["id"]
        deadline = time.monotonic() + 30
        while not client.get("/v1/workers").json()["data"] and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["disk"].startswith("low:"), ready.text
        time.sleep(0.5)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"   # no job taken meanwhile
        settings.min_free_bytes = 0                                            # space freed
        assert wait_for(client, job_id)["status"] == "succeeded"
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["disk"].startswith("ok"), ready.text


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (mounting needs root: skipped where it is refused)."""
    mount = tmp_path / "small"          # the data dir itself: the server's log stays outside
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()}); "
                    "the fault-injection tests cover the same answers")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path):
    """Write zeros to ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_real_full_disk_answers_507_then_recovers_without_a_restart(small_disk, seeded_project_dir, monkeypatch):
    monkeypatch.setenv("TALKINGFACE_MIN_FREE_BYTES", str(2 << 20))
    server = Server(small_disk, seeded_project_dir, workers=0)
    try:
        image = server.client.post("/v1/files", files={"file": ("f.jpg", FACE)}).json()["id"]
        assert server.get("/readyz").json()["checks"]["disk"].startswith("ok")
        fill(small_disk / "ballast")
        ready = server.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["disk"].startswith("low:")
        assert_storage_full(server.client.post("/v1/files", files={"file": ("a.wav", wav_bytes(2.0))}))
        codes = {server.client.post("/v1/jobs", json=IMAGE_JOB).status_code for _ in range(200)}
        assert codes <= {202, 507} and 507 in codes, codes      # the database fills up too
        assert not list((small_disk / "files").glob(".upload-*"))
        # DELETE works on the full disk, and frees room for new work.
        assert server.client.delete(f"/v1/files/{image}").status_code == 200
        assert server.client.post("/v1/jobs", json=IMAGE_JOB).status_code == 202
        (small_disk / "ballast").unlink()
        assert server.client.post("/v1/files", files={"file": ("f.jpg", FACE)}).status_code == 201
        assert server.get("/readyz").json()["checks"]["disk"].startswith("ok")
        assert server.process.poll() is None
    finally:
        server.stop()
