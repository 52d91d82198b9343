"""The durable job store: jobs, uploaded files, batches and workers in one SQL database.

SQLite (WAL) by default, any SQLAlchemy URL (PostgreSQL) by setting. Workers in other
processes, or on other machines, share it:

- ``claim`` moves the oldest queued job to ``running`` in one UPDATE and gives the
  worker a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers);
- ``heartbeat`` renews the lease and reports progress; it answers whether a cancel was
  asked for, and ``LeaseLost`` when the job is no longer the worker's;
- ``requeue_expired`` puts jobs whose lease ran out back in the queue (``attempts``
  counts claims), or fails them once ``max_attempts`` is reached;
- ``reconcile`` at start-up also re-queues jobs of workers on this host that are gone;
- with a broker (the Celery engine), ``claim_job`` claims one named job the same way, and
  ``take_undispatched`` / ``undispatch`` / ``redispatch_lost`` keep every queued job handed
  to the broker at least once (``dispatched_at``), whatever the broker forgets.

Files, batches and jobs carry an ``owner`` (the SHA-256 of the API key that made them, ""
without keys); queries that list take ``owner`` to keep to one owner's rows (None: all).

``storage_failure`` tells a full disk or database from one out of reach; ``free_bytes`` is
the space left under the data dir (the API and the worker both act on them).
"""

import contextlib
import enum
import errno
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import and_, case, create_engine, event, func, or_, select, true, tuple_, update
from sqlalchemy.exc import OperationalError

from service.jobs.tables import batches, files, jobs, workers


class JobStatus(enum.StrEnum):
    """A job's state: ``queued -> running -> succeeded | failed | canceled`` (a lost lease
    puts a running job back to ``queued``). Members are strings, stored as they are."""

    queued = "queued"          #: waiting for a worker
    running = "running"        #: claimed by a worker holding its lease
    succeeded = "succeeded"    #: the result file is there
    failed = "failed"          #: error_code / error_message say why
    canceled = "canceled"      #: asked to stop, before or while running


FINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class LeaseLost(Exception):
    """The job was re-queued or finished by someone else; the worker must drop it."""


def new_id(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """All database access of the service. Methods return plain dicts (one per row)."""

    def __init__(self, url, migrate=True, pool_size=5, max_overflow=10):
        self.url = url
        sqlite = url.startswith("sqlite")
        self._write_lock = threading.Lock() if sqlite else contextlib.nullcontext()
        if sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Pooled connections (workers are spawned, not forked, so none crosses a fork);
            # check_same_thread off because the pool hands connections to many threads.
            self.engine = create_engine(url, pool_size=8, max_overflow=32,
                                        connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            # A server database: each process keeps ``pool_size`` connections (the API its request
            # threads' worth, a worker a few), so many workers stay under the server's max_connections.
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)
        self.on_jobs_created = []   # callables told after new jobs are committed (the Celery dispatcher)
        if migrate:
            self.migrate()

    def migrate(self):
        """Bring the schema to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            # Processes starting together on a new database migrate one at a time; the
            # others then find the schema at head. (On SQLite this also makes it atomic.)
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7263548)")
            elif connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def _tx(self):
        # Each write is one transaction. A claim is a single UPDATE whose subquery picks
        # the job, so on SQLite (one writer at a time) two workers never get the same job.
        # Threads of one process queue on a lock for SQLite's single write slot: SQLite's
        # own busy handler sleeps in growing steps and would give a long latency tail.
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    def ping(self):
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self):
        self.engine.dispose()

    # -- files ---------------------------------------------------------------------
    def add_file(self, kind, size, sha256, filename, content_type, path, file_id=None, owner=""):
        row = dict(id=file_id or new_id("file"), kind=kind, bytes=size, sha256=sha256, filename=filename,
                   content_type=content_type, path=path, created_at=time.time(), deleted_at=None, owner=owner)
        with self._tx() as c:
            c.execute(files.insert().values(**row))
        return row

    def get_file(self, file_id):
        return self.get_files([file_id]).get(file_id)

    def get_files(self, file_ids):
        """{id: row} of the files that exist (not deleted) among ``file_ids``, in one query."""
        with self.engine.connect() as c:
            rows = c.execute(select(files).where(files.c.id.in_(list(file_ids)), files.c.deleted_at.is_(None)))
            return {r.id: dict(r._mapping) for r in rows}

    def delete_file(self, file_id):
        """Mark the file deleted; returns its row (with the path to remove) or None."""
        row = self.get_file(file_id)
        if row:
            with self._tx() as c:
                c.execute(update(files).where(files.c.id == file_id).values(deleted_at=time.time(), path=None))
        return row

    # -- jobs ----------------------------------------------------------------------
    def create_jobs(self, specs, max_attempts, batch_metadata=None, batch=False, owner=""):
        """Insert jobs (each ``{task, model, inputs, options, webhook_url}``) of ``owner`` in one transaction.

        With ``batch`` a batch row groups them. Returns ``(batch_id or None, [job rows])``.
        """
        now = time.time()
        batch_id = new_id("batch") if batch else None
        rows = []
        for i, spec in enumerate(specs):
            rows.append(dict(
                id=new_id("job"), task=spec["task"], model=spec["model"], status=JobStatus.queued,
                inputs=spec["inputs"], options=spec.get("options") or {}, batch_id=batch_id, progress=0.0,
                attempts=0, max_attempts=max_attempts, cancel_requested=False,
                # Microsecond steps keep the submission order inside one batch.
                created_at=now + i * 1e-6, webhook_url=spec.get("webhook_url"), webhook_attempts=0, owner=owner))
        with self._tx() as c:
            if batch:
                c.execute(batches.insert().values(id=batch_id, created_at=now, metadata=batch_metadata, owner=owner))
            if rows:
                c.execute(jobs.insert(), rows)
        for listener in self.on_jobs_created:
            listener()
        defaults = {column.name: None for column in jobs.columns}
        return batch_id, [dict(defaults, **row) for row in rows]

    def create_running_job(self, spec, owner, runner, lease_seconds):
        """A job of ``owner`` that ``runner`` (a streaming API process) runs itself, running from the
        start: never queued, so no worker takes it. One attempt: if that process dies, its lease
        runs out and the job fails (its client is gone with it)."""
        now = time.time()
        row = dict(id=new_id("job"), task=spec["task"], model=spec["model"], status=JobStatus.running,
                   inputs=spec["inputs"], options=spec.get("options") or {}, batch_id=None, progress=0.0,
                   attempts=1, max_attempts=1, cancel_requested=False, worker_id=runner, created_at=now,
                   started_at=now, claimed_at=now, heartbeat_at=now, lease_expires_at=now + lease_seconds,
                   webhook_url=spec.get("webhook_url"), webhook_attempts=0, owner=owner)
        with self._tx() as c:
            c.execute(jobs.insert().values(**row))
        return self.get_job(row["id"])

    def get_job(self, job_id):
        with self.engine.connect() as c:
            row = c.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list_jobs(self, status=None, model=None, batch_id=None, limit=20, before=None, owner=None):
        """Newest first; ``before`` is the id of the last job of the previous page; ``owner``: only theirs."""
        query = select(jobs)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if status:
            query = query.where(jobs.c.status.in_(status if isinstance(status, (list, tuple)) else [status]))
        if model:
            query = query.where(jobs.c.model == model)
        if batch_id:
            query = query.where(jobs.c.batch_id == batch_id)
        if before:
            anchor = self.get_job(before)
            if anchor:
                query = query.where(or_(jobs.c.created_at < anchor["created_at"],
                                        and_(jobs.c.created_at == anchor["created_at"], jobs.c.id < anchor["id"])))
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(query)]
        return rows[:limit], len(rows) > limit

    def get_batch(self, batch_id):
        with self.engine.connect() as c:
            row = c.execute(select(batches).where(batches.c.id == batch_id)).first()
            if not row:
                return None
            counts = dict(c.execute(select(jobs.c.status, func.count()).where(jobs.c.batch_id == batch_id)
                                    .group_by(jobs.c.status)).all())
        return dict(row._mapping, counts=counts)

    def claim(self, worker_id, models, lease_seconds):
        """The oldest queued job of one of ``models``, now running under this worker's lease."""
        oldest = (select(jobs.c.id).where(jobs.c.status == JobStatus.queued, jobs.c.model.in_(list(models)))
                  .order_by(jobs.c.created_at, jobs.c.id).limit(1).with_for_update(skip_locked=True)
                  .scalar_subquery())
        return self._claim(jobs.c.id == oldest, worker_id, lease_seconds)

    def claim_job(self, job_id, worker_id, models, lease_seconds):
        """``claim`` for one named job: running under this worker's lease if it was queued, else None.

        The UPDATE's condition makes it atomic: of two workers given the same job (a message
        delivered twice), one gets it and the other None.
        """
        return self._claim(and_(jobs.c.id == job_id, jobs.c.model.in_(list(models))), worker_id, lease_seconds)

    def _claim(self, which, worker_id, lease_seconds):
        """The queued job ``which`` selects, moved to running under this worker's lease in one UPDATE."""
        now = time.time()
        statement = (update(jobs).where(which, jobs.c.status == JobStatus.queued)
                     .values(status=JobStatus.running, worker_id=worker_id, attempts=jobs.c.attempts + 1,
                             started_at=func.coalesce(jobs.c.started_at, now), claimed_at=now,
                             heartbeat_at=now, lease_expires_at=now + lease_seconds, progress=0.0)
                     .returning(jobs.c.id))
        with self._tx() as c:
            job_id = c.execute(statement).scalar()
        return self.get_job(job_id) if job_id else None

    # -- dispatch (the Celery engine) ------------------------------------------------
    def take_undispatched(self, limit=500):
        """Queued jobs never handed to the broker (or handed back), oldest first, now marked as
        handed: ``[(id, model)]``. Two API processes calling this at once get disjoint jobs."""
        now = time.time()
        pending = (select(jobs.c.id).where(jobs.c.status == JobStatus.queued, jobs.c.dispatched_at.is_(None))
                   .order_by(jobs.c.created_at, jobs.c.id).limit(limit).with_for_update(skip_locked=True))
        with self._tx() as c:
            taken = c.execute(update(jobs).where(jobs.c.id.in_(pending), jobs.c.dispatched_at.is_(None))
                              .values(dispatched_at=now)
                              .returning(jobs.c.id, jobs.c.model, jobs.c.created_at)).all()
        return [(job_id, model) for job_id, model, _ in sorted(taken, key=lambda row: (row[2], row[0]))]

    def undispatch(self, job_ids):
        """Jobs whose message did not reach the broker: handed again at the next dispatch."""
        if not job_ids:
            return 0
        with self._tx() as c:
            return c.execute(update(jobs).where(jobs.c.id.in_(list(job_ids)), jobs.c.status == JobStatus.queued)
                             .values(dispatched_at=None)).rowcount

    def dispatched_waiting(self, before):
        """Per model, the queued jobs handed to the broker before ``before``: ``{model: count}``."""
        with self.engine.connect() as c:
            rows = c.execute(select(jobs.c.model, func.count())
                             .where(jobs.c.status == JobStatus.queued, jobs.c.dispatched_at < before)
                             .group_by(jobs.c.model)).all()
        return dict(rows)

    def redispatch_lost(self, model, count, before):
        """The oldest ``count`` queued jobs of ``model`` handed before ``before``: to be handed again
        (a broker that lost its messages, e.g. restarted without persistence)."""
        oldest = (select(jobs.c.id).where(jobs.c.status == JobStatus.queued, jobs.c.model == model,
                                          jobs.c.dispatched_at < before)
                  .order_by(jobs.c.created_at, jobs.c.id).limit(count))
        with self._tx() as c:
            return c.execute(update(jobs).where(jobs.c.id.in_(oldest), jobs.c.status == JobStatus.queued)
                             .values(dispatched_at=None)).rowcount

    def heartbeat(self, job_id, worker_id, lease_seconds, progress=None):
        """Renew the lease (and record progress). Returns True when a cancel was asked for."""
        now = time.time()
        values = dict(heartbeat_at=now, lease_expires_at=now + lease_seconds)
        if progress is not None:
            values["progress"] = float(progress)
        with self._tx() as c:
            cancel = c.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.worker_id == worker_id,
                                                  jobs.c.status == JobStatus.running)
                               .values(**values).returning(jobs.c.cancel_requested)).scalar()
        if cancel is None:
            raise LeaseLost(job_id)
        return bool(cancel)

    def finish(self, job_id, worker_id, status, error_code=None, error_message=None, **fields):
        """Final state for a job this worker holds. Returns False when it no longer holds it."""
        assert status in FINAL
        now = time.time()
        values = dict(status=status, finished_at=now, lease_expires_at=None, error_code=error_code,
                      error_message=error_message, **fields)
        if status == JobStatus.succeeded:
            values["progress"] = 1.0
        with self._tx() as c:
            done = c.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.worker_id == worker_id,
                                                jobs.c.status == JobStatus.running).values(**values)).rowcount
            if done:
                self._queue_webhook(c, job_id, now)
        return bool(done)

    def release(self, job_id, worker_id):
        """A worker shutting down hands its job back; the attempt does not count.

        A job whose cancel was asked for is canceled instead of re-queued.
        """
        held = and_(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.status == JobStatus.running)
        now = time.time()
        with self._tx() as c:
            if c.execute(update(jobs).where(held, jobs.c.cancel_requested.is_(True))
                         .values(status=JobStatus.canceled, finished_at=now, lease_expires_at=None,
                                 error_code="canceled", error_message="canceled while running")).rowcount:
                self._queue_webhook(c, job_id, now)
                return True
            return bool(c.execute(update(jobs).where(held)
                                  .values(status=JobStatus.queued, worker_id=None, lease_expires_at=None, progress=0.0,
                                          attempts=jobs.c.attempts - 1, dispatched_at=None)).rowcount)

    def cancel(self, job_id):
        """Queued: canceled at once. Running: asked to stop at its next chunk. Returns the row."""
        now = time.time()
        with self._tx() as c:
            done = c.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.queued)
                             .values(status=JobStatus.canceled, finished_at=now, error_code="canceled",
                                     error_message="canceled before it started")).rowcount
            if done:
                self._queue_webhook(c, job_id, now)
            else:
                c.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.running)
                          .values(cancel_requested=True))
        return self.get_job(job_id)

    def clear_result(self, job_id):
        with self._tx() as c:
            c.execute(update(jobs).where(jobs.c.id == job_id).values(result_path=None, result_bytes=None))

    def requeue_expired(self, now=None):
        """Jobs whose lease ran out: back to the queue, or failed after ``max_attempts``."""
        now = now or time.time()
        expired = and_(jobs.c.status == JobStatus.running, jobs.c.lease_expires_at < now)
        return self._release(expired, now, "the worker stopped renewing its lease")

    def reconcile(self, hostname=None):
        """At start-up: release running jobs whose worker on this host no longer exists."""
        hostname = hostname or socket.gethostname()
        with self.engine.connect() as c:
            running = c.execute(select(jobs.c.id, jobs.c.worker_id, workers.c.pid, workers.c.hostname)
                                .select_from(jobs.outerjoin(workers, jobs.c.worker_id == workers.c.id))
                                .where(jobs.c.status == JobStatus.running)).all()
        gone = [(job_id, worker_id) for job_id, worker_id, pid, host in running
                if pid is None or (host == hostname and not _pid_alive(pid))]
        # Only while the same worker still holds it: a job re-queued and claimed by a live
        # worker since the SELECT above is left alone.
        held = tuple_(jobs.c.id, jobs.c.worker_id).in_(gone)
        released = self._release(held, time.time(), "its worker is gone") if gone else 0
        return released + self.requeue_expired()

    def _release(self, condition, now, reason):
        # Each UPDATE re-checks "running": the later ones must not touch rows the earlier
        # ones just canceled or failed.
        condition = and_(jobs.c.status == JobStatus.running, condition)
        with self._tx() as c:
            canceled = c.execute(update(jobs).where(condition, jobs.c.cancel_requested.is_(True))
                                 .values(status=JobStatus.canceled, finished_at=now, lease_expires_at=None,
                                         error_code="canceled", error_message="canceled while running")
                                 .returning(jobs.c.id)).scalars().all()
            failed = c.execute(update(jobs).where(condition, jobs.c.attempts >= jobs.c.max_attempts)
                               .values(status=JobStatus.failed, finished_at=now, lease_expires_at=None,
                                       error_code="worker_lost",
                                       error_message=f"gave up after the last attempt: {reason}")
                               .returning(jobs.c.id)).scalars().all()
            requeued = c.execute(update(jobs).where(condition)
                                 .values(status=JobStatus.queued, worker_id=None, lease_expires_at=None, progress=0.0,
                                         dispatched_at=None)
                                 .returning(jobs.c.id)).scalars().all()
            for job_id in canceled + failed:
                self._queue_webhook(c, job_id, now)
        return len(canceled) + len(failed) + len(requeued)

    # -- webhooks ------------------------------------------------------------------
    @staticmethod
    def _queue_webhook(c, job_id, now):
        c.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.webhook_url.is_not(None))
                  .values(webhook_state="pending", webhook_next_at=now))

    def take_due_webhooks(self, hold_seconds, limit=20):
        """Pending deliveries that are due, held for ``hold_seconds`` so no one else sends them."""
        now = time.time()
        due = (select(jobs.c.id).where(jobs.c.webhook_state == "pending", jobs.c.webhook_next_at <= now)
               .order_by(jobs.c.webhook_next_at).limit(limit).with_for_update(skip_locked=True))
        # One UPDATE picks and holds them: on SQLite a read-then-write transaction could
        # fail with "database is locked" when another process writes in between.
        with self._tx() as c:
            ids = c.execute(update(jobs).where(jobs.c.id.in_(due.scalar_subquery()))
                            .values(webhook_next_at=now + hold_seconds).returning(jobs.c.id)).scalars().all()
        return [self.get_job(i) for i in ids]

    def record_webhook(self, job_id, delivered, error=None, retry_at=None):
        """After one delivery attempt: delivered, or retried at ``retry_at``, or failed for good."""
        state = "delivered" if delivered else ("pending" if retry_at else "failed")
        with self._tx() as c:
            c.execute(update(jobs).where(jobs.c.id == job_id)
                      .values(webhook_state=state, webhook_attempts=jobs.c.webhook_attempts + 1,
                              webhook_next_at=retry_at, webhook_last_error=error))

    # -- workers -------------------------------------------------------------------
    def register_worker(self, worker_id, device, models):
        now = time.time()
        with self._tx() as c:
            c.execute(workers.insert().values(id=worker_id, hostname=socket.gethostname(), pid=os.getpid(),
                                              device=device, models=list(models), status="idle",
                                              current_job=None, started_at=now, heartbeat_at=now))

    def worker_heartbeat(self, worker_id, status, current_job=None, gpu_memory_bytes=None):
        with self._tx() as c:
            c.execute(update(workers).where(workers.c.id == worker_id)
                      .values(status=status, current_job=current_job, heartbeat_at=time.time(),
                              gpu_memory_bytes=gpu_memory_bytes))

    def list_workers(self, alive_within):
        """Workers heard from within ``alive_within`` seconds and not stopped."""
        since = time.time() - alive_within
        with self.engine.connect() as c:
            rows = c.execute(select(workers).where(workers.c.heartbeat_at >= since, workers.c.status != "stopped")
                             .order_by(workers.c.started_at)).all()
        return [dict(r._mapping) for r in rows]

    # -- numbers for metrics, stats and retention ----------------------------------
    def counts(self, owner=None):
        """{status: n} over all jobs (or ``owner``'s), and {(model, status): n} of finished ones."""
        mine = jobs.c.owner == owner if owner is not None else true()
        with self.engine.connect() as c:
            by_status = dict(c.execute(select(jobs.c.status, func.count()).where(mine)
                                       .group_by(jobs.c.status)).all())
            finished = {(m, s): n for m, s, n in c.execute(
                select(jobs.c.model, jobs.c.status, func.count()).where(jobs.c.status.in_(FINAL), mine)
                .group_by(jobs.c.model, jobs.c.status)).all()}
            frames = c.execute(select(func.coalesce(func.sum(jobs.c.frames), 0)).where(mine)).scalar()
        return by_status, finished, int(frames)

    def finished_since(self, since, owner=None):
        """(model, status, created, claimed, started, finished) of jobs (``owner``'s) finished after ``since``."""
        mine = jobs.c.owner == owner if owner is not None else true()
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(
                select(jobs.c.model, jobs.c.status, jobs.c.created_at, jobs.c.claimed_at, jobs.c.started_at,
                       jobs.c.finished_at).where(jobs.c.finished_at >= since, mine).order_by(jobs.c.finished_at))]

    def histograms(self, buckets):
        """Cumulative bucket counts, count and sum per model, of run time and of queue wait.

        Returns ``{"run": {model: (counts, n, total)}, "wait": {...}}`` over every job
        that ran to an end; computed in SQL, so the cost does not grow with rows fetched.
        """
        result = {}
        for name, value in (("run", jobs.c.finished_at - jobs.c.claimed_at),
                            ("wait", jobs.c.started_at - jobs.c.created_at)):
            columns = [func.sum(case((value <= b, 1), else_=0)) for b in buckets]
            query = (select(jobs.c.model, func.count(), func.sum(value), *columns)
                     .where(jobs.c.status.in_(FINAL), jobs.c.claimed_at.is_not(None)).group_by(jobs.c.model))
            with self.engine.connect() as c:
                result[name] = {row[0]: ([int(x or 0) for x in row[3:]], int(row[1]), float(row[2] or 0))
                                for row in c.execute(query)}
        return result

    def expired_artifacts(self, older_than):
        """Files and results created before ``older_than`` that are still on disk."""
        with self.engine.connect() as c:
            old_files = c.execute(select(files.c.id, files.c.path).where(
                files.c.created_at < older_than, files.c.deleted_at.is_(None))).all()
            old_results = c.execute(select(jobs.c.id, jobs.c.result_path).where(
                jobs.c.finished_at < older_than, jobs.c.result_path.is_not(None))).all()
        return old_files, old_results

    def storage_bytes(self):
        with self.engine.connect() as c:
            uploads = c.execute(select(func.coalesce(func.sum(files.c.bytes), 0))
                                .where(files.c.deleted_at.is_(None))).scalar()
            results = c.execute(select(func.coalesce(func.sum(jobs.c.result_bytes), 0))
                                .where(jobs.c.result_path.is_not(None))).scalar()
        return int(uploads), int(results)


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# ---------------------------------------------------------------------------------------
# Storage failures (the API answers them 507/503, the worker backs off)


def storage_failure(exc: BaseException) -> str | None:
    """``"full"`` when ``exc`` is a full disk or database, ``"unavailable"`` when the database or
    the bucket cannot be used for now (locked, out of reach), None for anything else."""
    from service.storage import StorageUnavailable  # the bucket (TALKINGFACE_STORAGE=s3): out of reach for now

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "full"
    if isinstance(exc, StorageUnavailable):
        return "unavailable"
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        # SQLite: "database or disk is full"; PostgreSQL: SQLSTATE 53100 disk_full.
        if "full" in text or "no space" in text or getattr(exc.orig, "sqlstate", None) == "53100":
            return "full"
        return "unavailable"
    return None


def free_bytes(settings) -> int:
    """Free bytes on the filesystem of the data dir (uploads, results and the SQLite database)."""
    try:
        return shutil.disk_usage(settings.data_dir).free
    except OSError:                 # the data dir is gone: nothing can be written there
        return 0
