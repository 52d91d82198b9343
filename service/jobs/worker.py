"""The worker: claim a job, run its model, write the result (MP4 or PNG), finish the job. Repeat.

A worker loads each model once and keeps it. While a job runs it renews the job's lease
(at every chunk of frames, and from a keep-alive thread between chunks), so a worker
that dies -- even by ``kill -9`` -- lets its job be re-queued once the lease runs out.
A cancel asked for through the API stops the job at the next chunk boundary.

A worker yields the CPU to the API: it runs at a lower priority (``worker_nice``) with a
bounded torch thread pool (``worker_threads``). A full disk or database, or a free space
under ``min_free_bytes``, never crashes it: the job in hand goes back to the queue, and
the worker waits (exponentially longer, capped) before trying again, logging each change
of state once.
"""

import contextlib
import logging
import os
import signal
import threading
import time

import torch

from models import registry
from models.common.device import pick_device
from models.errors import TalkingFaceError
from service import render
from service.jobs.store import JobStatus, JobStore, LeaseLost, free_bytes, new_id, storage_failure
from service.settings import Settings
from service.storage import StorageUnavailable, storage_for

log = logging.getLogger("talkingface.worker")


class JobCanceled(Exception):
    pass


class WorkerStopping(Exception):
    pass


class JobTimedOut(TalkingFaceError):
    code = "timeout"


class DiskLow(Exception):
    """Less free space under the data dir than ``min_free_bytes``: no job is taken."""


def wait_reason(exc: BaseException) -> str | None:
    """Why a worker should wait before its next job ("disk space low", "full", "unavailable"), or None
    when ``exc`` is not a storage problem."""
    return "disk space low" if isinstance(exc, DiskLow) else storage_failure(exc)


class Backoff:
    """Waits that double while storage keeps failing (capped), with one log line per change of state."""

    def __init__(self, first=1.0, cap=30.0):
        self.first, self.cap = first, cap
        self.delay, self.state = first, None

    def failed(self, state: str, detail) -> float:
        """Record a failure of kind ``state`` ("full", "unavailable", "disk space low"); returns how
        long to wait before trying again."""
        if state != self.state:
            log.warning("storage %s: %s; trying again with backoff, up to %g s apart", state, detail, self.cap)
            self.state, self.delay = state, self.first
        delay, self.delay = self.delay, min(self.cap, self.delay * 2)
        return delay

    def succeeded(self):
        if self.state is not None:
            log.info("storage no longer %s; taking jobs again", self.state)
        self.state, self.delay = None, self.first


class Worker:
    """One worker. ``run()`` loops until ``stop`` is set; ``run_one()`` does one job if any;
    ``run_job(id)`` does one named job (the Celery engine's task body)."""

    def __init__(self, settings: Settings, worker_id=None, models=None, store=None):
        self.settings = settings
        # A worker's threads (the job, its lease keep-alive, housekeeping) need a few connections only.
        self.store = store or JobStore(settings.db_url, pool_size=2, max_overflow=2)
        self.id = worker_id or new_id("worker")
        self.models = list(models or registry.REGISTRY)
        self.pipelines = {}
        self.stop = threading.Event()
        self.current = None             # id of the job being run
        self._registered, self._last_beat, self._last_sweep = False, 0.0, 0.0
        self.backoff_seconds = (1.0, 30.0)  # first and longest wait while storage fails
        self.device = str(pick_device(settings.device))

    # -- model cache ---------------------------------------------------------------
    def pipeline(self, model):
        if model not in self.pipelines:
            log.info("loading %s", model)
            self.pipelines[model] = registry.load(model, weights_root=self.settings.weights_dir, device=self.device,
                                                  precision=self.settings.precision)
        return self.pipelines[model]

    # -- loop ----------------------------------------------------------------------
    def run(self):
        """The embedded engine: take jobs from the job store until ``stop`` is set."""
        backoff = Backoff(*self.backoff_seconds)
        try:
            while not self.stop.is_set():
                try:
                    self.housekeeping()
                    self._check_free_space()
                    worked = self.run_one()
                    backoff.succeeded()
                except Exception as exc:
                    state = wait_reason(exc)
                    if state is None:
                        raise
                    self.stop.wait(backoff.failed(state, exc))
                    continue
                if not worked:
                    self.stop.wait(self.settings.poll_seconds)
        finally:
            self.unregister()

    def housekeeping(self):
        """Register once, beat every ``heartbeat_seconds``, and re-queue jobs of dead workers (once a second)."""
        now = time.monotonic()
        if not self._registered:
            self.store.register_worker(self.id, self.device, self.models)
            log.info("worker %s up, serving %s", self.id, ", ".join(self.models))
            self._registered = True
        if now - self._last_sweep >= 1.0:
            self.store.requeue_expired()
            self._last_sweep = now
        if now - self._last_beat >= self.settings.heartbeat_seconds:
            self.store.worker_heartbeat(self.id, "busy" if self.current else "idle",
                                        current_job=self.current, gpu_memory_bytes=_gpu_memory())
            self._last_beat = now

    def unregister(self):
        if self._registered:
            self._worker_beat("stopped")
        log.info("worker %s stopped", self.id)

    def _check_free_space(self):
        free = free_bytes(self.settings)
        if free < self.settings.min_free_bytes:
            raise DiskLow(f"{free:,} bytes free under {self.settings.data_dir}, "
                          f"under TALKINGFACE_MIN_FREE_BYTES={self.settings.min_free_bytes:,}")

    def _worker_beat(self, status, current_job=None):
        """This worker's heartbeat, best effort: a full database must not stop a job or the shutdown."""
        try:
            self.store.worker_heartbeat(self.id, status, current_job=current_job, gpu_memory_bytes=_gpu_memory())
        except Exception as exc:
            if storage_failure(exc) is None:
                raise
            log.debug("worker heartbeat not recorded: %s", exc)

    def run_one(self):
        """Claim and run the oldest queued job of our models. Returns False when there was none."""
        job = self.store.claim(self.id, self.models, self.settings.lease_seconds)
        if job is None:
            return False
        self.execute(job)
        return True

    def run_job(self, job_id):
        """Run one named job (what a queue's message carries), if it is still queued.

        Returns False, doing nothing, when it is not: finished, canceled, or running under
        another worker. A message delivered twice therefore runs its job once.
        """
        self._check_free_space()
        job = self.store.claim_job(job_id, self.id, self.models, self.settings.lease_seconds)
        if job is None:
            return False
        self.execute(job)
        return True

    def execute(self, job):
        """Run a job this worker has claimed, to its final state (or back to the queue)."""
        self.current = job["id"]
        self._worker_beat("busy", current_job=job["id"])
        try:
            self._run(job)
        finally:
            self.current = None
            self._worker_beat("idle")

    # -- one job -------------------------------------------------------------------
    def _run(self, job):
        job_id, settings = job["id"], self.settings
        state = {"progress": 0.0, "beat": time.monotonic(), "cancel": False, "lost": False}
        deadline = time.monotonic() + settings.job_timeout_seconds
        keepalive_stop = threading.Event()

        def beat():
            try:
                state["cancel"] |= self.store.heartbeat(job_id, self.id, settings.lease_seconds, state["progress"])
            except LeaseLost:
                state["lost"] = True
            except Exception as exc:
                # A full or unreachable database: the job goes on; if the lease runs out
                # meanwhile, the job is re-queued and this worker's finish is refused.
                if storage_failure(exc) is None:
                    raise
                log.debug("job %s: lease not renewed: %s", job_id, exc)
            state["beat"] = time.monotonic()

        def keepalive():
            # Renews the lease while one chunk takes long (model loading, face detection),
            # and keeps this worker counted as alive however long the job runs.
            while not keepalive_stop.wait(settings.heartbeat_seconds):
                beat()
                self._worker_beat("busy", current_job=job_id)

        def progress(done, total):
            state["progress"] = done / max(total, 1)
            if time.monotonic() - state["beat"] >= min(0.5, settings.heartbeat_seconds):
                beat()
            if state["lost"]:
                raise LeaseLost(job_id)
            if state["cancel"]:
                raise JobCanceled(job_id)
            if self.stop.is_set():
                raise WorkerStopping(job_id)
            if time.monotonic() > deadline:
                raise JobTimedOut(f"the job ran longer than TALKINGFACE_JOB_TIMEOUT_SECONDS="
                                  f"{settings.job_timeout_seconds:g} s")

        thread = threading.Thread(target=keepalive, daemon=True, name=f"lease-{job_id}")
        thread.start()
        try:
            fields = self._generate(job, progress)
            self.store.finish(job_id, self.id, JobStatus.succeeded, **fields)
        except JobCanceled:
            self.store.finish(job_id, self.id, JobStatus.canceled, "canceled", "canceled while running")
        except WorkerStopping:
            log.info("job %s: handed back to the queue, the worker is stopping", job_id)
            self.store.release(job_id, self.id)
        except LeaseLost:
            log.warning("job %s: lease lost; another worker has it", job_id)
        except TalkingFaceError as exc:
            self.store.finish(job_id, self.id, JobStatus.failed, exc.code, exc.message)
        except Exception as exc:
            if storage_failure(exc) is None:  # a bug or a broken model: logged here, never sent to the client
                log.exception("job %s failed", job_id)
                self.store.finish(job_id, self.id, JobStatus.failed, "internal_error",
                                  "the worker failed on this job; the worker log has the details")
            else:
                self._hand_back_on_storage_failure(job, exc)
                raise                         # the loop backs off before taking another job
        finally:
            keepalive_stop.set()
            thread.join()

    def _hand_back_on_storage_failure(self, job, exc):
        """A full disk or database while running ``job``: its partial result is removed and it goes back
        to the queue (the attempt does not count). Without a database to say so, its lease runs out
        and the job is re-queued all the same."""
        log.warning("job %s: handed back to the queue: %s", job["id"], exc)
        try:
            storage_for(self.settings).delete_prefix(f"results/{job['id']}.")
        except StorageUnavailable as again:     # the bucket out of reach too: the retry overwrites it
            log.debug("job %s: partial result not removed: %s", job["id"], again)
        try:
            self.store.release(job["id"], self.id)
        except Exception as again:
            if storage_failure(again) is None:
                raise

    def _generate(self, job, progress):
        settings, inputs = self.settings, job["inputs"]
        storage = storage_for(settings)
        options = job["options"] or {}
        pipe = self.pipeline(job["model"])
        task = render.TASKS[job["task"]]
        # Inputs are local files for the job's length (fetched from a bucket, removed after it); the
        # result is written to a local file, then kept by the storage.
        with contextlib.ExitStack() as local:
            if job["task"] == "motion-transfer" and options.get("target"):
                options = dict(options, target=str(self._target_folder(options["target"], local)))
            files = {role: self._file_path(file_id, role, local) for role, file_id in inputs.items() if file_id}
            sample = task.read(pipe, files, options,
                               render.Limits(settings.max_audio_seconds, settings.max_image_pixels))
            relative = f"results/{job['id']}{task.result_file(options)[0]}"
            path = local.enter_context(storage.writing(relative))
            done = task.render(pipe, sample, path, options=options, progress=progress, comment=f"; job {job['id']}",
                               provenance=render.Provenance.from_settings(settings))
            size = path.stat().st_size
            if render.target_folder(path).is_dir():    # a motion target's trained folder, beside its summary
                storage.save_tree(render.target_folder(path), render.target_folder(relative).as_posix())
            storage.save(path, relative)
        return dict(result_path=relative, result_bytes=size, frames=done.frames,
                    generated_at=done.generated_at, info=done.info)

    def _target_folder(self, target, local: contextlib.ExitStack):
        """The trained folder of the motion-target job ``target``, local while ``local`` lasts."""
        row = self.store.get_job(target)
        if row is None or row["task"] != "motion-target" or not row["result_path"]:
            raise TalkingFaceError(f"the target {target} no longer exists")
        try:
            return local.enter_context(storage_for(self.settings).open_local_tree(
                render.target_folder(row["result_path"]).as_posix()))
        except FileNotFoundError:
            raise TalkingFaceError(f"the target {target} no longer exists") from None

    def _file_path(self, file_id, role, local: contextlib.ExitStack):
        """The input file ``file_id`` as a local path while ``local`` lasts."""
        row = self.store.get_file(file_id) if file_id else None
        if row is None or not row["path"]:
            raise TalkingFaceError(f"the {role} file {file_id} no longer exists")
        try:
            return local.enter_context(storage_for(self.settings).open_local(row["path"]))
        except FileNotFoundError:
            raise TalkingFaceError(f"the {role} file {file_id} no longer exists") from None


def _gpu_memory():
    return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None


def yield_cpu(settings: Settings):
    """Lower this process's CPU priority and bound its torch threads (``worker_nice``, ``worker_threads``),
    so that the API answers quickly while models run on the same cores."""
    if settings.worker_nice > 0:
        try:
            os.nice(settings.worker_nice)         # inherited by the ffmpeg this worker starts
        except (AttributeError, OSError) as exc:
            log.warning("could not lower the worker's priority: %s", exc)
    threads = settings.worker_threads or default_threads(settings.workers)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:                          # only possible before any parallel work ran
        pass
    return threads


def default_threads(workers: int) -> int:
    """Torch threads a worker takes by default: the cores less one (left to the API), shared by the workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, (cores - 1) // max(1, workers))


def worker_main(settings_json, worker_id=None, parent_pid=None, models=None):
    """Entry point of a worker process (spawned: safe with CUDA).

    With a broker URL in the settings it is a Celery worker (service/jobs/celery_engine.py),
    otherwise it takes jobs from the job store. With ``parent_pid`` (a worker of ``talkingface
    serve``) the worker stops when that process is gone.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.model_validate_json(settings_json)
    threads = yield_cpu(settings)
    log.info("worker process %s: nice %+d, %d torch threads", os.getpid(), settings.worker_nice, threads)
    if settings.broker_url:
        from service.jobs.celery_engine import run_worker

        if parent_pid is not None:
            from service.jobs.executor import watch_parent

            watch_parent(parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
        run_worker(settings, worker_id=worker_id, models=models)
        return
    worker = Worker(settings, worker_id=worker_id, models=models)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    if parent_pid is not None:
        from service.jobs.executor import watch_parent

        watch_parent(parent_pid, worker.stop.set)
    worker.run()
