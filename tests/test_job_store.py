"""The durable job store on both backends: SQLite (a file) and PostgreSQL.

Every test runs once per backend. Each PostgreSQL case gets a fresh schema of its own
(the connections' ``search_path`` points at it) that is dropped afterwards; when the
server is not reachable those cases are skipped with the reason (tests/components.py), and
fail under ``TALKINGFACE_TEST_ALL=1`` (CI).
"""

import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from service.jobs import store as store_module
from service.jobs.store import MIGRATIONS, JobStore, LeaseLost
from service.jobs.tables import jobs, metadata, workers
from tests import components

POSTGRES_URL = components.POSTGRES_URL
MODEL = "atvgnet"


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_admin():
    """An AUTOCOMMIT engine on the test server; skipped (failed under TALKINGFACE_TEST_ALL=1)
    when it cannot be reached."""
    components.require("postgresql")
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                           connect_args={"connect_timeout": 5})
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database URL with an empty database behind it."""
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path / "jobs.db")
        return
    admin = request.getfixturevalue("postgres_admin")
    schema = f"jobs_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def make_store(db_url):
    """``make_store(**kwargs)``: a new JobStore on this test's database, disposed after the test."""
    made = []

    def make(**kwargs):
        made.append(JobStore(db_url, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.dispose()


@pytest.fixture
def store(make_store):
    return make_store()


class Clock:
    """Stands in for the ``time`` module inside the store: ``time()`` returns ``now``."""

    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    """Freezes the store's clock at a whole second, so time differences are exact."""
    frozen = Clock(1_700_000_000.0)
    monkeypatch.setattr(store_module, "time", frozen)
    return frozen


# -- helpers -------------------------------------------------------------------------
def specs(n, model=MODEL, **extra):
    return [dict(task="talking-face", model=model, inputs={"image": f"file_img{i}", "audio": f"file_wav{i}"},
                 options={"fps": 25, "index": i}, **extra) for i in range(n)]


def create(store, n=1, model=MODEL, max_attempts=3, **extra):
    return store.create_jobs(specs(n, model, **extra), max_attempts=max_attempts)[1]


def claimed_running(store, worker_id="worker-a", lease=30, models=(MODEL,)):
    job = store.claim(worker_id, list(models), lease)
    assert job is not None and job["status"] == "running"
    return job


def set_worker(store, worker_id, **values):
    with store.engine.begin() as c:
        c.execute(update(workers).where(workers.c.id == worker_id).values(**values))


def dead_pid():
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def head_revision():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def all_jobs(store):
    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(jobs).order_by(jobs.c.created_at, jobs.c.id))]


# Run in spawned processes, so they live at module level.
def _open_store_each_round(url, rounds, barrier, results):
    for _ in range(rounds):
        barrier.wait(timeout=60)                       # the database is empty: go
        try:
            JobStore(url).dispose()
            results.put(None)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            results.put(f"{type(exc).__name__}: {exc}"[:300])
        barrier.wait(timeout=60)                       # every process is done


def _claim_until_empty(url, worker_id, barrier, results):
    try:
        s = JobStore(url, migrate=False)
        barrier.wait(timeout=60)
        ids = []
        while (job := s.claim(worker_id, [MODEL], 60)) is not None:
            assert job["worker_id"] == worker_id
            ids.append(job["id"])
        s.dispose()
        results.put((worker_id, ids))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put((worker_id, f"{type(exc).__name__}: {exc}"[:300]))


def run_processes(target, args_list):
    """Starts one spawned process per args tuple behind a common barrier; returns their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(args_list)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_list]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=90) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return out


# -- migrations ----------------------------------------------------------------------
def test_migrate_creates_every_table_at_the_head_revision(store):
    inspector = inspect(store.engine)
    assert set(inspector.get_table_names()) == set(metadata.tables) | {"alembic_version"}
    for name, table in metadata.tables.items():
        assert {c["name"] for c in inspector.get_columns(name)} == set(table.c.keys()), name
    with store.engine.connect() as c:
        context = MigrationContext.configure(c)
        assert context.get_current_revision() == head_revision()
        # The migrations build exactly what tables.py declares (columns, types, indexes).
        assert compare_metadata(context, metadata) == []


def test_second_store_on_the_same_database_migrates_nothing_and_keeps_rows(make_store):
    first = make_store()
    batch_id, created = first.create_jobs(specs(3), max_attempts=3, batch_metadata={"name": "b"}, batch=True)
    upload = first.add_file("image", 1234, "ab" * 32, "face.jpg", "image/jpeg", "uploads/face.jpg")
    first.register_worker("worker-a", "cpu", [MODEL])
    before = all_jobs(first)

    second = make_store()
    with second.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
    assert all_jobs(second) == before
    assert [second.get_job(j["id"]) for j in created] == created
    assert second.get_batch(batch_id)["counts"] == {"queued": 3}
    assert second.get_file(upload["id"]) == upload
    assert [w["id"] for w in second.list_workers(60)] == ["worker-a"]
    second.migrate()
    assert all_jobs(first) == before


def test_stores_opened_at_once_by_several_processes_on_a_new_database_all_start(db_url):
    # Server and workers start together on a fresh database (docker compose up). The race
    # is run several times over, each time on an emptied database.
    n, rounds = 4, 4
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_open_store_each_round, args=(db_url, rounds, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    engine = create_engine(db_url, poolclass=NullPool)
    errors = []
    try:
        for _ in range(rounds):
            with engine.begin() as c:
                for name in ["alembic_version", *metadata.tables]:
                    c.execute(text(f"DROP TABLE IF EXISTS {name}"))
            barrier.wait(timeout=60)
            barrier.wait(timeout=60)
            errors += [results.get(timeout=60) for _ in procs]
            with engine.connect() as c:
                assert MigrationContext.configure(c).get_current_revision() == head_revision()
            assert set(inspect(engine).get_table_names()) == set(metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()
        barrier.abort()                                # frees the processes if a round went wrong
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [e for e in errors if e is not None] == []


def test_a_database_made_before_owners_is_upgraded_and_its_rows_belong_to_no_key(db_url):
    # A store of the first schema, with a file, a batch and a job in it, as an older release left it.
    from alembic import command

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.begin() as c:
        config.attributes["connection"] = c
        command.upgrade(config, "0001")
        c.execute(text("INSERT INTO files (id, kind, bytes, sha256, created_at) "
                       "VALUES ('file_old', 'image', 1, 'x', 1)"))
        c.execute(text("INSERT INTO batches (id, created_at) VALUES ('batch_old', 1)"))
        c.execute(text("INSERT INTO jobs (id, task, model, status, inputs, options, batch_id, progress, attempts, "
                       "max_attempts, cancel_requested, created_at, webhook_attempts) VALUES ('job_old', "
                       "'talking-face', 'atvgnet', 'queued', '{}', '{}', 'batch_old', 0, 0, 3, false, 1, 0)"))
    engine.dispose()
    store = JobStore(db_url)
    try:
        with store.engine.connect() as c:
            assert MigrationContext.configure(c).get_current_revision() == head_revision()
        assert store.get_file("file_old")["owner"] == ""
        assert store.get_batch("batch_old")["owner"] == "" and store.get_job("job_old")["owner"] == ""
        assert [j["id"] for j in store.list_jobs(owner="")[0]] == ["job_old"]
        assert store.list_jobs(owner="a" * 64)[0] == []
        assert store.claim("worker-a", [MODEL], 30)["id"] == "job_old"      # workers take it as before
    finally:
        store.dispose()


# -- create_jobs ---------------------------------------------------------------------
def test_create_jobs_keeps_the_order_and_fills_defaults(store):
    batch_id, created = store.create_jobs(
        specs(4) + [dict(task="talking-face", model="davs", inputs={"image": "f"}, webhook_url="https://h/x")],
        max_attempts=5)
    assert batch_id is None
    assert [j["options"].get("index") for j in created] == [0, 1, 2, 3, None]
    assert [j["model"] for j in created] == [MODEL] * 4 + ["davs"]
    assert created[0]["inputs"] == {"image": "file_img0", "audio": "file_wav0"}
    assert created[4]["options"] == {} and created[4]["webhook_url"] == "https://h/x"
    assert len({j["id"] for j in created}) == 5 and all(j["id"].startswith("job_") for j in created)
    for job in created:
        assert job["status"] == "queued"
        assert job["attempts"] == 0 and job["max_attempts"] == 5
        assert job["progress"] == 0.0
        assert job["cancel_requested"] is False
        assert job["batch_id"] is None and job["worker_id"] is None
        assert job["started_at"] is None and job["claimed_at"] is None and job["finished_at"] is None
        assert job["lease_expires_at"] is None and job["error_code"] is None
        assert job["webhook_state"] is None and job["webhook_attempts"] == 0
    created_at = [j["created_at"] for j in created]
    assert created_at == sorted(created_at) and len(set(created_at)) == 5
    assert store.get_job(created[2]["id"]) == created[2]
    assert store.get_job("job_missing") is None
    # Submission order is the claim order.
    assert [store.claim("w", [MODEL, "davs"], 30)["id"] for _ in range(5)] == [j["id"] for j in created]


def test_create_jobs_in_a_batch_counts_its_jobs_by_status(store):
    batch_id, created = store.create_jobs(specs(4), max_attempts=3, batch_metadata={"name": "demo"}, batch=True)
    _, other = store.create_jobs(specs(2), max_attempts=3, batch=True)
    assert batch_id.startswith("batch_") and other[0]["batch_id"] != batch_id
    assert all(j["batch_id"] == batch_id for j in created)
    batch = store.get_batch(batch_id)
    assert batch["id"] == batch_id and batch["metadata"] == {"name": "demo"}
    assert batch["counts"] == {"queued": 4}

    job = claimed_running(store)
    assert job["id"] == created[0]["id"]
    assert store.finish(job["id"], "worker-a", "succeeded")
    claimed_running(store)
    store.cancel(created[2]["id"])
    assert store.get_batch(batch_id)["counts"] == {"succeeded": 1, "running": 1, "canceled": 1, "queued": 1}
    assert store.get_batch(other[0]["batch_id"])["counts"] == {"queued": 2}
    assert store.get_batch("batch_missing") is None


# -- claim ---------------------------------------------------------------------------
def test_claim_takes_the_oldest_queued_job_first(store, clock):
    first = create(store, 2)
    clock.advance(1)
    later = create(store, 2)
    order = [j["id"] for j in first + later]
    assert [claimed_running(store)["id"] for _ in range(4)] == order
    assert store.claim("worker-a", [MODEL], 30) is None


def test_claim_only_takes_models_the_worker_serves(store, clock):
    old = create(store, 1, model=MODEL)[0]
    clock.advance(1)
    new = create(store, 1, model="davs")[0]
    assert store.claim("worker-b", ["pg2"], 30) is None
    assert store.claim("worker-b", [], 30) is None
    assert store.claim("worker-b", ["davs"], 30)["id"] == new["id"]
    assert store.get_job(old["id"])["status"] == "queued"
    assert store.claim("worker-b", ["davs"], 30) is None
    assert store.claim("worker-a", ["davs", MODEL], 30)["id"] == old["id"]


def test_claim_returns_none_when_nothing_is_queued(store):
    assert store.claim("worker-a", [MODEL], 30) is None
    job = create(store)[0]
    store.cancel(job["id"])
    assert store.claim("worker-a", [MODEL], 30) is None


def test_claim_sets_worker_attempts_and_lease_and_keeps_started_at_on_a_new_claim(store, clock):
    job = create(store)[0]
    clock.advance(2)
    t1 = clock.now
    row = store.claim("worker-a", [MODEL], 30)
    assert row["id"] == job["id"] and row["status"] == "running"
    assert row["worker_id"] == "worker-a" and row["attempts"] == 1
    assert row["started_at"] == t1 and row["claimed_at"] == t1 and row["heartbeat_at"] == t1
    assert row["lease_expires_at"] == t1 + 30
    assert store.get_job(job["id"]) == row

    clock.advance(31)
    assert store.requeue_expired() == 1
    clock.advance(5)
    t2 = clock.now
    again = store.claim("worker-b", [MODEL], 60)
    assert again["id"] == job["id"] and again["worker_id"] == "worker-b" and again["attempts"] == 2
    assert again["started_at"] == t1                    # first claim
    assert again["claimed_at"] == t2 and again["lease_expires_at"] == t2 + 60
    assert again["progress"] == 0.0


# -- concurrency ---------------------------------------------------------------------
def test_threads_with_their_own_stores_claim_every_job_exactly_once(make_store):
    seed = make_store()
    created = create(seed, 40)
    n = 6
    stores = [make_store(migrate=False) for _ in range(n)]
    barrier = threading.Barrier(n)
    claimed, errors = {}, []

    def work(i):
        try:
            barrier.wait(timeout=30)
            ids = []
            while (job := stores[i].claim(f"worker-{i}", [MODEL], 60)) is not None:
                assert job["worker_id"] == f"worker-{i}"
                ids.append(job["id"])
            claimed[f"worker-{i}"] = ids
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(claimed) == n
    ids = [j for got in claimed.values() for j in got]
    assert sorted(ids) == sorted(j["id"] for j in created)        # each once, none lost
    owner = {j: w for w, got in claimed.items() for j in got}
    for row in all_jobs(seed):
        assert row["status"] == "running" and row["attempts"] == 1
        assert row["worker_id"] == owner[row["id"]]


def test_processes_with_their_own_stores_claim_every_job_exactly_once(db_url, store):
    created = create(store, 40)
    results = run_processes(_claim_until_empty, [(db_url, f"proc-{i}") for i in range(3)])
    assert not [r for _, r in results if isinstance(r, str)], results
    ids = [j for _, got in results for j in got]
    assert sorted(ids) == sorted(j["id"] for j in created)
    owner = {j: w for w, got in results for j in got}
    for row in all_jobs(store):
        assert row["status"] == "running" and row["attempts"] == 1
        assert row["worker_id"] == owner[row["id"]]


# -- heartbeat -----------------------------------------------------------------------
def test_heartbeat_renews_the_lease_and_records_progress(store, clock):
    job = create(store)[0]
    claimed_running(store, lease=30)
    clock.advance(20)
    assert store.heartbeat(job["id"], "worker-a", 30, progress=0.25) is False
    row = store.get_job(job["id"])
    assert row["lease_expires_at"] == clock.now + 30 and row["heartbeat_at"] == clock.now
    assert row["progress"] == 0.25
    clock.advance(20)                                  # past the first lease, within the renewed one
    assert store.requeue_expired() == 0
    assert store.heartbeat(job["id"], "worker-a", 45) is False
    row = store.get_job(job["id"])
    assert row["progress"] == 0.25 and row["lease_expires_at"] == clock.now + 45
    assert row["status"] == "running" and row["worker_id"] == "worker-a"


def test_heartbeat_answers_true_once_a_cancel_was_asked_for(store):
    job = create(store)[0]
    claimed_running(store)
    assert store.heartbeat(job["id"], "worker-a", 30, progress=0.1) is False
    store.cancel(job["id"])
    assert store.heartbeat(job["id"], "worker-a", 30, progress=0.2) is True
    assert store.get_job(job["id"])["progress"] == 0.2


def test_heartbeat_raises_lease_lost_once_another_worker_holds_the_job(store, clock):
    job = create(store)[0]
    claimed_running(store, "worker-a", lease=30)
    with pytest.raises(LeaseLost):
        store.heartbeat(job["id"], "worker-b", 30)
    clock.advance(31)
    assert store.requeue_expired() == 1
    with pytest.raises(LeaseLost):                    # re-queued: no one holds it
        store.heartbeat(job["id"], "worker-a", 30)
    claimed_running(store, "worker-b", lease=30)
    with pytest.raises(LeaseLost):
        store.heartbeat(job["id"], "worker-a", 30, progress=0.9)
    row = store.get_job(job["id"])
    assert row["worker_id"] == "worker-b" and row["progress"] == 0.0
    assert store.heartbeat(job["id"], "worker-b", 30) is False
    assert store.finish(job["id"], "worker-b", "succeeded")
    with pytest.raises(LeaseLost):                    # finished
        store.heartbeat(job["id"], "worker-b", 30)
    with pytest.raises(LeaseLost):
        store.heartbeat("job_missing", "worker-b", 30)


# -- requeue_expired -----------------------------------------------------------------
def test_requeue_expired_puts_a_job_back_and_the_next_claim_is_attempt_two(store, clock):
    job, queued = create(store, 2)
    claimed_running(store, "worker-a", lease=10)
    clock.advance(5)
    assert store.requeue_expired() == 0
    assert store.get_job(job["id"])["status"] == "running"
    clock.advance(6)
    assert store.requeue_expired() == 1
    row = store.get_job(job["id"])
    assert row["status"] == "queued" and row["worker_id"] is None and row["lease_expires_at"] is None
    assert row["attempts"] == 1 and row["finished_at"] is None
    assert store.get_job(queued["id"])["status"] == "queued" and store.get_job(queued["id"])["attempts"] == 0
    again = claimed_running(store, "worker-b")
    assert again["id"] == job["id"] and again["attempts"] == 2
    assert store.requeue_expired(now=clock.now + 31) == 1  # ``now`` may be given


def test_requeue_expired_fails_the_job_after_max_attempts(store, clock):
    job = create(store, max_attempts=2)[0]
    claimed_running(store, "worker-a", lease=10)
    clock.advance(11)
    assert store.requeue_expired() == 1
    assert claimed_running(store, "worker-b", lease=10)["attempts"] == 2
    clock.advance(11)
    assert store.requeue_expired() == 1
    row = store.get_job(job["id"])
    assert row["status"] == "failed" and row["error_code"] == "worker_lost" and row["error_message"]
    assert row["finished_at"] == clock.now and row["lease_expires_at"] is None and row["attempts"] == 2
    assert store.claim("worker-c", [MODEL], 10) is None
    clock.advance(100)
    assert store.requeue_expired() == 0
    assert store.get_job(job["id"]) == row


def test_requeue_expired_cancels_a_job_whose_cancel_was_asked_for(store, clock):
    job = create(store)[0]
    claimed_running(store, lease=10)
    store.cancel(job["id"])
    clock.advance(11)
    assert store.requeue_expired() == 1
    row = store.get_job(job["id"])
    assert row["status"] == "canceled" and row["error_code"] == "canceled"
    assert row["finished_at"] == clock.now and row["lease_expires_at"] is None
    assert store.claim("worker-b", [MODEL], 10) is None


# -- finish --------------------------------------------------------------------------
def test_only_the_holder_finishes_and_a_stale_worker_changes_nothing(store, clock):
    job = create(store)[0]
    claimed_running(store, "worker-a", lease=10)
    assert store.finish(job["id"], "worker-b", "succeeded") is False
    clock.advance(11)
    store.requeue_expired()
    claimed_running(store, "worker-b", lease=10)
    store.heartbeat(job["id"], "worker-b", 10, progress=0.5)
    before = store.get_job(job["id"])
    assert store.finish(job["id"], "worker-a", "succeeded", result_path="results/stale.mp4", frames=3) is False
    assert store.finish(job["id"], "worker-a", "failed", error_code="x", error_message="y") is False
    assert store.get_job(job["id"]) == before

    clock.advance(3)
    info = {"weights": "atvgnet.safetensors", "device": "cpu"}
    assert store.finish(job["id"], "worker-b", "succeeded", result_path="results/a.mp4", result_bytes=4096,
                        frames=75, info=info, generated_at=clock.now - 1) is True
    row = store.get_job(job["id"])
    assert row["status"] == "succeeded" and row["progress"] == 1.0
    assert row["finished_at"] == clock.now and row["lease_expires_at"] is None
    assert (row["result_path"], row["result_bytes"], row["frames"], row["info"]) == ("results/a.mp4", 4096, 75, info)
    assert row["generated_at"] == clock.now - 1
    assert row["error_code"] is None and row["error_message"] is None
    assert store.finish(job["id"], "worker-b", "failed", error_code="late") is False
    assert store.get_job(job["id"]) == row
    assert store.finish("job_missing", "worker-b", "succeeded") is False


def test_finish_failed_keeps_progress_and_records_the_error(store):
    job = create(store)[0]
    claimed_running(store)
    store.heartbeat(job["id"], "worker-a", 30, progress=0.4)
    assert store.finish(job["id"], "worker-a", "failed", error_code="no_face", error_message="no face found")
    row = store.get_job(job["id"])
    assert row["status"] == "failed" and row["progress"] == 0.4
    assert (row["error_code"], row["error_message"]) == ("no_face", "no face found")


def test_release_hands_the_job_back_without_counting_the_attempt(store, clock):
    job = create(store)[0]
    first = claimed_running(store, "worker-a")
    store.heartbeat(job["id"], "worker-a", 30, progress=0.3)
    assert store.release(job["id"], "worker-b") is False
    assert store.get_job(job["id"])["worker_id"] == "worker-a"
    assert store.release(job["id"], "worker-a") is True
    row = store.get_job(job["id"])
    assert (row["status"], row["worker_id"], row["attempts"], row["progress"]) == ("queued", None, 0, 0.0)
    assert row["lease_expires_at"] is None and row["finished_at"] is None
    assert store.release(job["id"], "worker-a") is False
    clock.advance(5)
    again = claimed_running(store, "worker-b")
    assert again["attempts"] == 1 and again["started_at"] == first["started_at"]
    assert store.finish(job["id"], "worker-b", "succeeded")
    assert store.release(job["id"], "worker-b") is False
    assert store.get_job(job["id"])["status"] == "succeeded"


# -- cancel --------------------------------------------------------------------------
def test_cancel_of_a_queued_job_is_immediate(store, clock):
    job = create(store)[0]
    clock.advance(4)
    row = store.cancel(job["id"])
    assert row["status"] == "canceled" and row["finished_at"] == clock.now
    assert row["error_code"] == "canceled"
    assert store.get_job(job["id"]) == row
    assert store.claim("worker-a", [MODEL], 30) is None
    assert store.cancel("job_missing") is None


def test_cancel_of_a_running_job_only_asks_it_to_stop(store):
    job = create(store)[0]
    claimed_running(store)
    row = store.cancel(job["id"])
    assert row["status"] == "running" and row["cancel_requested"] is True
    assert row["finished_at"] is None and row["worker_id"] == "worker-a"
    assert store.finish(job["id"], "worker-a", "canceled", error_code="canceled", error_message="stopped")
    assert store.get_job(job["id"])["status"] == "canceled"


def test_cancel_leaves_finished_jobs_unchanged(store):
    done, failed, canceled = create(store, 3)
    for job, status in ((done, "succeeded"), (failed, "failed")):
        claimed_running(store)
        store.finish(job["id"], "worker-a", status)
    store.cancel(canceled["id"])
    for job in (done, failed, canceled):
        before = store.get_job(job["id"])
        assert store.cancel(job["id"]) == before
        assert store.get_job(job["id"]) == before
    assert [store.get_job(j["id"])["status"] for j in (done, failed, canceled)] == ["succeeded", "failed", "canceled"]


# -- reconcile -----------------------------------------------------------------------
def test_reconcile_requeues_jobs_of_dead_workers_on_this_host_only(store):
    dead_job, live_job, remote_job = create(store, 3)
    store.register_worker("worker-dead", "cpu", [MODEL])
    store.register_worker("worker-live", "cpu", [MODEL])
    store.register_worker("worker-remote", "cuda:0", [MODEL])
    pid = dead_pid()
    set_worker(store, "worker-dead", pid=pid)
    set_worker(store, "worker-remote", pid=pid, hostname="another-host.example")
    claimed_running(store, "worker-dead", lease=600)
    claimed_running(store, "worker-live", lease=600)
    claimed_running(store, "worker-remote", lease=600)

    assert store.reconcile() == 1
    row = store.get_job(dead_job["id"])
    assert row["status"] == "queued" and row["worker_id"] is None and row["lease_expires_at"] is None
    assert store.get_job(live_job["id"])["status"] == "running"
    assert store.get_job(live_job["id"])["worker_id"] == "worker-live"
    assert store.get_job(remote_job["id"])["worker_id"] == "worker-remote"
    assert store.reconcile(hostname=socket.gethostname()) == 0
    assert store.claim("worker-live", [MODEL], 30)["id"] == dead_job["id"]


def test_reconcile_fails_a_job_of_a_dead_worker_after_its_last_attempt(store):
    job = create(store, max_attempts=1)[0]
    store.register_worker("worker-dead", "cpu", [MODEL])
    set_worker(store, "worker-dead", pid=dead_pid())
    claimed_running(store, "worker-dead", lease=600)
    released = store.reconcile()
    row = store.get_job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "worker_lost")
    assert released == 1
    assert store.claim("worker-live", [MODEL], 30) is None


def test_reconcile_cancels_a_job_of_a_dead_worker_whose_cancel_was_asked_for(store):
    job = create(store)[0]
    store.register_worker("worker-dead", "cpu", [MODEL])
    set_worker(store, "worker-dead", pid=dead_pid())
    claimed_running(store, "worker-dead", lease=600)
    store.cancel(job["id"])
    released = store.reconcile()
    row = store.get_job(job["id"])
    assert (row["status"], row["error_code"]) == ("canceled", "canceled")
    assert released == 1
    assert store.claim("worker-live", [MODEL], 30) is None


def test_reconcile_also_requeues_expired_leases(store, clock):
    job = create(store)[0]
    store.register_worker("worker-live", "cpu", [MODEL])
    claimed_running(store, "worker-live", lease=10)
    assert store.reconcile() == 0
    clock.advance(11)
    assert store.reconcile() == 1
    assert store.get_job(job["id"])["status"] == "queued"


# -- list_jobs -----------------------------------------------------------------------
def test_list_jobs_is_newest_first_and_filters(store, clock):
    batch_id, in_batch = store.create_jobs(specs(3), max_attempts=3, batch=True)
    clock.advance(1)
    davs = create(store, 2, model="davs")
    clock.advance(1)
    last = create(store, 1)[0]
    newest_first = [last] + davs[::-1] + in_batch[::-1]
    page, more = store.list_jobs(limit=10)
    assert [j["id"] for j in page] == [j["id"] for j in newest_first] and more is False
    page, more = store.list_jobs(limit=2)
    assert [j["id"] for j in page] == [j["id"] for j in newest_first[:2]] and more is True

    claimed_running(store, models=[MODEL])             # in_batch[0]
    store.cancel(davs[0]["id"])

    def ids(**filters):
        return [j["id"] for j in store.list_jobs(limit=10, **filters)[0]]

    assert ids(status="running") == [in_batch[0]["id"]]
    assert ids(status="canceled") == [davs[0]["id"]]
    assert ids(status=["running", "canceled"]) == [davs[0]["id"], in_batch[0]["id"]]
    assert ids(status=("canceled",)) == [davs[0]["id"]]
    assert ids(status="succeeded") == []
    assert ids(model="davs") == [davs[1]["id"], davs[0]["id"]]
    assert ids(batch_id=batch_id) == [j["id"] for j in in_batch[::-1]]
    assert ids(batch_id=batch_id, status="queued") == [in_batch[2]["id"], in_batch[1]["id"]]
    assert ids(model="davs", status="queued") == [davs[1]["id"]]
    assert ids(batch_id="batch_missing") == []


def test_rows_carry_their_owner_and_lists_and_counts_keep_to_one(store, clock):
    alice, bob = "a" * 64, "b" * 64
    batch_id, mine = store.create_jobs(specs(2), max_attempts=3, batch=True, owner=alice)
    clock.advance(1)
    _, theirs = store.create_jobs(specs(1), max_attempts=3, owner=bob)
    shared = create(store, 1)
    upload = store.add_file("image", 10, "ab" * 32, "face.jpg", "image/jpeg", "files/x", owner=alice)
    assert store.get_file(upload["id"])["owner"] == alice and store.get_batch(batch_id)["owner"] == alice
    assert {store.get_job(j["id"])["owner"] for j in mine} == {alice} and shared[0]["owner"] == ""

    def ids(**filters):
        return {j["id"] for j in store.list_jobs(limit=10, **filters)[0]}

    assert ids(owner=alice) == {j["id"] for j in mine}
    assert ids(owner=bob) == {theirs[0]["id"]}
    assert ids(owner="") == {shared[0]["id"]}
    assert ids() == {j["id"] for j in mine + theirs + shared}
    assert ids(owner=bob, batch_id=batch_id) == set()
    page, more = store.list_jobs(limit=1, owner=alice)
    assert more and store.list_jobs(limit=5, owner=alice, before=page[0]["id"])[0][0]["owner"] == alice
    store.cancel(mine[0]["id"])
    assert store.counts(owner=alice)[0] == {"queued": 1, "canceled": 1}
    assert store.counts(owner=bob)[0] == {"queued": 1}
    assert store.counts()[0] == {"queued": 3, "canceled": 1}
    assert [r[1] for r in store.finished_since(0, owner=alice)] == ["canceled"]
    assert store.finished_since(0, owner=bob) == []


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 9])
def test_list_jobs_pages_walk_every_job_once(store, clock, limit):
    # Frozen clock: jobs of the three calls share created_at values, so ties are broken by id.
    made = create(store, 3) + create(store, 3) + create(store, 3, model="davs")
    expected = [j["id"] for j in sorted(made, key=lambda j: (j["created_at"], j["id"]), reverse=True)]
    seen, before, pages = [], None, 0
    while True:
        page, more = store.list_jobs(limit=limit, before=before)
        pages += 1
        assert len(page) == min(limit, len(expected) - len(seen))
        seen += [j["id"] for j in page]
        assert more is (len(seen) < len(expected))
        if not more:
            break
        before = page[-1]["id"]
        assert pages <= len(expected)
    assert seen == expected
    # The same walk with a filter.
    seen, before = [], None
    while True:
        page, more = store.list_jobs(model=MODEL, limit=limit, before=before)
        seen += [j["id"] for j in page]
        if not more:
            break
        before = page[-1]["id"]
    assert seen == [j for j in expected if store.get_job(j)["model"] == MODEL]


# -- webhooks ------------------------------------------------------------------------
def test_finished_and_canceled_jobs_with_a_webhook_are_taken_once_until_the_hold_expires(store, clock):
    hooked = create(store, webhook_url="https://hooks.example/a")[0]
    clock.advance(1)
    plain = create(store)[0]
    clock.advance(1)
    queued_hook = create(store, webhook_url="https://hooks.example/b")[0]
    assert store.take_due_webhooks(30) == []
    claimed_running(store)                             # hooked
    assert store.finish(hooked["id"], "worker-a", "succeeded", frames=10)
    assert store.get_job(hooked["id"])["webhook_state"] == "pending"
    clock.advance(1)
    store.cancel(queued_hook["id"])
    claimed_running(store)                             # plain
    store.finish(plain["id"], "worker-a", "succeeded")
    assert store.get_job(plain["id"])["webhook_state"] is None
    clock.advance(1)

    taken = {j["id"]: j for j in store.take_due_webhooks(30)}
    assert set(taken) == {hooked["id"], queued_hook["id"]}
    assert taken[hooked["id"]]["status"] == "succeeded" and taken[queued_hook["id"]]["status"] == "canceled"
    assert all(j["webhook_state"] == "pending" and j["webhook_next_at"] == clock.now + 30 for j in taken.values())
    assert store.take_due_webhooks(30) == []
    clock.advance(29)
    assert store.take_due_webhooks(30) == []
    clock.advance(2)
    assert {j["id"] for j in store.take_due_webhooks(30)} == {hooked["id"], queued_hook["id"]}
    assert store.take_due_webhooks(30) == []


def test_take_due_webhooks_respects_the_limit(store, clock):
    made = create(store, 3, webhook_url="https://hooks.example/a")
    for job in made:
        store.cancel(job["id"])
        clock.advance(1)
    # The ones due longest are taken first.
    assert {j["id"] for j in store.take_due_webhooks(30, limit=2)} == {j["id"] for j in made[:2]}
    assert [j["id"] for j in store.take_due_webhooks(30, limit=2)] == [made[2]["id"]]


def test_jobs_failed_or_canceled_by_requeue_expired_get_their_webhook(store, clock):
    lost, canceled = create(store, 2, max_attempts=1, webhook_url="https://hooks.example/a")
    claimed_running(store, lease=10)
    claimed_running(store, lease=10)
    store.cancel(canceled["id"])
    clock.advance(11)
    assert store.requeue_expired() == 2
    assert {j["id"]: j["status"] for j in store.take_due_webhooks(30)} == {lost["id"]: "failed",
                                                                          canceled["id"]: "canceled"}


def test_record_webhook_moves_between_states_and_counts_attempts(store, clock):
    job = create(store, webhook_url="https://hooks.example/a")[0]
    store.cancel(job["id"])
    assert len(store.take_due_webhooks(30)) == 1

    store.record_webhook(job["id"], False, error="HTTP 503", retry_at=clock.now + 10)
    row = store.get_job(job["id"])
    assert (row["webhook_state"], row["webhook_attempts"], row["webhook_next_at"], row["webhook_last_error"]) == \
        ("pending", 1, clock.now + 10, "HTTP 503")
    clock.advance(9)
    assert store.take_due_webhooks(30) == []
    clock.advance(1)
    assert [j["webhook_attempts"] for j in store.take_due_webhooks(30)] == [1]

    store.record_webhook(job["id"], False, error="timed out")
    row = store.get_job(job["id"])
    assert (row["webhook_state"], row["webhook_attempts"], row["webhook_last_error"]) == ("failed", 2, "timed out")
    assert row["webhook_next_at"] is None
    clock.advance(100)
    assert store.take_due_webhooks(30) == []

    other = create(store, webhook_url="https://hooks.example/b")[0]
    store.cancel(other["id"])
    store.take_due_webhooks(30)
    store.record_webhook(other["id"], True)
    row = store.get_job(other["id"])
    assert (row["webhook_state"], row["webhook_attempts"], row["webhook_next_at"]) == ("delivered", 1, None)
    assert row["webhook_last_error"] is None
    clock.advance(100)
    assert store.take_due_webhooks(30) == []


def test_a_due_webhook_is_handed_to_one_of_two_dispatchers_at_once(make_store):
    # Dispatcher A stops right after its first statement; B takes while A is paused.
    a, b = make_store(), make_store(migrate=False)
    job = create(a, webhook_url="https://hooks.example/a")[0]
    a.cancel(job["id"])
    a_paused, b_done = threading.Event(), threading.Event()
    armed = [True]

    @event.listens_for(a.engine, "after_cursor_execute")
    def pause(*_args):
        if armed[0] and threading.current_thread().name == "dispatcher-a":
            armed[0] = False
            a_paused.set()
            b_done.wait(1)      # a store that locks makes B wait instead; A then goes on

    taken = {}
    thread = threading.Thread(target=lambda: taken.update(a=a.take_due_webhooks(60)), name="dispatcher-a")
    thread.start()
    assert a_paused.wait(10)
    taken["b"] = b.take_due_webhooks(60)
    b_done.set()
    thread.join(timeout=30)
    assert [j["id"] for j in taken["a"] + taken["b"]] == [job["id"]]


# -- workers -------------------------------------------------------------------------
def test_workers_register_beat_and_only_recent_running_ones_are_listed(store, clock):
    store.register_worker("worker-a", "cuda:0", [MODEL, "davs"])
    clock.advance(1)
    store.register_worker("worker-b", "cpu", [MODEL])
    listed = store.list_workers(alive_within=60)
    assert [w["id"] for w in listed] == ["worker-a", "worker-b"]
    a = listed[0]
    assert (a["hostname"], a["pid"], a["device"], a["models"], a["status"]) == \
        (socket.gethostname(), os.getpid(), "cuda:0", [MODEL, "davs"], "idle")
    assert a["started_at"] == a["heartbeat_at"] == clock.now - 1 and a["current_job"] is None

    clock.advance(50)
    store.worker_heartbeat("worker-a", "busy", current_job="job_x", gpu_memory_bytes=512 << 20)
    clock.advance(20)
    listed = store.list_workers(alive_within=60)
    assert [w["id"] for w in listed] == ["worker-a"]   # b last heard 70 s ago
    assert (listed[0]["status"], listed[0]["current_job"], listed[0]["gpu_memory_bytes"],
            listed[0]["heartbeat_at"]) == ("busy", "job_x", 512 << 20, clock.now - 20)
    assert [w["id"] for w in store.list_workers(alive_within=600)] == ["worker-a", "worker-b"]

    store.worker_heartbeat("worker-a", "stopped")
    assert [w["id"] for w in store.list_workers(alive_within=600)] == ["worker-b"]
    store.worker_heartbeat("worker-b", "idle")
    assert [w["id"] for w in store.list_workers(alive_within=1)] == ["worker-b"]


def test_worker_heartbeat_records_the_memory_of_a_large_gpu(store):
    # An 80 GB card holding a few models reports well over 2**31 bytes.
    store.register_worker("worker-a", "cuda:0", [MODEL])
    store.worker_heartbeat("worker-a", "busy", current_job="job_x", gpu_memory_bytes=23 << 30)
    assert store.list_workers(alive_within=60)[0]["gpu_memory_bytes"] == 23 << 30


# -- numbers -------------------------------------------------------------------------
def test_counts_by_status_by_model_and_frames(store):
    assert store.counts() == ({}, {}, 0)
    create(store, 4)
    create(store, 2, model="davs")
    for frames in (10, 15):
        job = claimed_running(store)
        store.finish(job["id"], "worker-a", "succeeded", frames=frames)
    job = claimed_running(store)
    store.finish(job["id"], "worker-a", "failed", error_code="no_face")
    claimed_running(store)
    davs = claimed_running(store, models=["davs"])
    store.finish(davs["id"], "worker-a", "succeeded", frames=7)
    store.cancel(store.list_jobs(model="davs", status="queued")[0][0]["id"])
    by_status, finished, frames = store.counts()
    assert by_status == {"succeeded": 3, "failed": 1, "running": 1, "canceled": 1}
    assert finished == {(MODEL, "succeeded"): 2, (MODEL, "failed"): 1, ("davs", "succeeded"): 1,
                        ("davs", "canceled"): 1}
    assert frames == 32


def test_histograms_of_run_and_wait_are_cumulative_with_count_and_sum(store, clock):
    buckets = [1, 2.5, 5, 10]
    assert store.histograms(buckets) == {"run": {}, "wait": {}}
    # (wait before the claim, run time) of three atvgnet jobs and one davs job.
    timings = [(MODEL, 2, 3), (MODEL, 0.5, 8), (MODEL, 6, 20), ("davs", 1, 1)]
    for model, wait, run in timings:
        job = create(store, model=model)[0]
        clock.advance(wait)
        claimed_running(store, models=[model])
        clock.advance(run)
        assert store.finish(job["id"], "worker-a", "succeeded")
    create(store)                                      # queued: not counted
    store.cancel(create(store)[0]["id"])               # never claimed: not counted
    claimed_running(store)                             # running: not counted
    result = store.histograms(buckets)
    assert set(result) == {"run", "wait"}
    run_counts, n, total = result["run"][MODEL]
    assert (run_counts, n) == ([0, 0, 1, 2], 3) and total == pytest.approx(31)
    wait_counts, n, total = result["wait"][MODEL]
    assert (wait_counts, n) == ([1, 2, 2, 3], 3) and total == pytest.approx(8.5, abs=1e-4)
    assert result["run"]["davs"][0] == [1, 1, 1, 1] and result["run"]["davs"][1] == 1
    assert result["wait"]["davs"][2] == pytest.approx(1, abs=1e-4)


def test_storage_bytes_and_expired_artifacts(store, clock):
    assert store.storage_bytes() == (0, 0)
    assert store.expired_artifacts(clock.now + 1) == ([], [])
    old_file = store.add_file("image", 1000, "a" * 64, "face.jpg", "image/jpeg", "uploads/old.jpg")
    gone = store.add_file("audio", 50, "b" * 64, "a.wav", "audio/wav", "uploads/gone.wav")
    old_job, cleared, running = create(store, 3)
    for job, path in ((old_job, "results/old.mp4"), (cleared, "results/cleared.mp4")):
        claimed_running(store)
        store.finish(job["id"], "worker-a", "succeeded", result_path=path, result_bytes=700)
    claimed_running(store)
    clock.advance(100)
    cutoff = clock.now
    new_file = store.add_file("video", 20, "c" * 64, "v.mp4", "video/mp4", "uploads/new.mp4")
    new_job = create(store)[0]
    claimed_running(store)
    store.finish(new_job["id"], "worker-a", "succeeded", result_path="results/new.mp4", result_bytes=5)

    assert store.delete_file(gone["id"])["path"] == "uploads/gone.wav"
    assert store.get_file(gone["id"]) is None and store.delete_file(gone["id"]) is None
    store.clear_result(cleared["id"])
    assert store.get_job(cleared["id"])["result_path"] is None

    assert store.storage_bytes() == (1000 + 20, 700 + 5)
    old_files, old_results = store.expired_artifacts(cutoff)
    assert [tuple(r) for r in old_files] == [(old_file["id"], "uploads/old.jpg")]
    assert [tuple(r) for r in old_results] == [(old_job["id"], "results/old.mp4")]
    old_files, old_results = store.expired_artifacts(clock.now + 1)
    assert sorted(tuple(r) for r in old_files) == sorted([(old_file["id"], "uploads/old.jpg"),
                                                          (new_file["id"], "uploads/new.mp4")])
    assert sorted(tuple(r) for r in old_results) == sorted([(old_job["id"], "results/old.mp4"),
                                                            (new_job["id"], "results/new.mp4")])
    assert running["status"] == "queued" and store.get_job(running["id"])["status"] == "running"
