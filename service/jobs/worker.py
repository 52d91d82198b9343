"""The worker: claim a job, run its model, write the result (MP4 or PNG), finish the job. Repeat.

A worker loads each model once and keeps it. While a job runs it renews the job's lease
(at every chunk of frames, and from a keep-alive thread between chunks), so a worker
that dies -- even by ``kill -9`` -- lets its job be re-queued once the lease runs out.
A cancel asked for through the API stops the job at the next chunk boundary.
"""

import logging
import signal
import threading
import time

import torch

from models import registry
from models.common.device import pick_device
from models.errors import TalkingFaceError
from service import render
from service.jobs.store import JobStatus, JobStore, LeaseLost, new_id
from service.settings import Settings

log = logging.getLogger("talkingface.worker")


class JobCanceled(Exception):
    pass


class WorkerStopping(Exception):
    pass


class Worker:
    """One worker. ``run()`` loops until ``stop`` is set; ``run_one()`` does one job if any."""

    def __init__(self, settings: Settings, worker_id=None, models=None, store=None):
        self.settings = settings
        self.store = store or JobStore(settings.db_url)
        self.id = worker_id or new_id("worker")
        self.models = list(models or registry.REGISTRY)
        self.pipelines = {}
        self.stop = threading.Event()
        self.current = None             # id of the job being run
        self.device = str(pick_device(settings.device))

    # -- model cache ---------------------------------------------------------------
    def pipeline(self, model):
        if model not in self.pipelines:
            log.info("loading %s", model)
            self.pipelines[model] = registry.load(model, weights_root=self.settings.weights_dir, device=self.device)
        return self.pipelines[model]

    # -- loop ----------------------------------------------------------------------
    def run(self):
        self.store.register_worker(self.id, self.device, self.models)
        log.info("worker %s up, serving %s", self.id, ", ".join(self.models))
        last_beat = last_sweep = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() - last_sweep >= 1.0:
                    # Jobs of dead workers go back to the queue; one sweep a second is plenty.
                    self.store.requeue_expired()
                    last_sweep = time.monotonic()
                if self.run_one():
                    continue
                if time.monotonic() - last_beat >= self.settings.heartbeat_seconds:
                    self.store.worker_heartbeat(self.id, "idle", gpu_memory_bytes=_gpu_memory())
                    last_beat = time.monotonic()
                self.stop.wait(self.settings.poll_seconds)
        finally:
            self.store.worker_heartbeat(self.id, "stopped")
            log.info("worker %s stopped", self.id)

    def run_one(self):
        """Claim and run one job. Returns False when the queue had nothing for us."""
        job = self.store.claim(self.id, self.models, self.settings.lease_seconds)
        if job is None:
            return False
        self.current = job["id"]
        self.store.worker_heartbeat(self.id, "busy", current_job=job["id"], gpu_memory_bytes=_gpu_memory())
        try:
            self._run(job)
        finally:
            self.current = None
            self.store.worker_heartbeat(self.id, "idle", gpu_memory_bytes=_gpu_memory())
        return True

    # -- one job -------------------------------------------------------------------
    def _run(self, job):
        job_id, settings = job["id"], self.settings
        state = {"progress": 0.0, "beat": time.monotonic(), "cancel": False, "lost": False}
        keepalive_stop = threading.Event()

        def beat():
            try:
                state["cancel"] |= self.store.heartbeat(job_id, self.id, settings.lease_seconds, state["progress"])
            except LeaseLost:
                state["lost"] = True
            state["beat"] = time.monotonic()

        def keepalive():
            # Renews the lease while one chunk takes long (model loading, face detection),
            # and keeps this worker counted as alive however long the job runs.
            while not keepalive_stop.wait(settings.heartbeat_seconds):
                beat()
                self.store.worker_heartbeat(self.id, "busy", current_job=job_id, gpu_memory_bytes=_gpu_memory())

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
        except Exception:  # a bug or a broken model: logged here, never sent to the client
            log.exception("job %s failed", job_id)
            self.store.finish(job_id, self.id, JobStatus.failed, "internal_error",
                              "the worker failed on this job; the worker log has the details")
        finally:
            keepalive_stop.set()
            thread.join()

    def _generate(self, job, progress):
        settings, inputs = self.settings, job["inputs"]
        options = job["options"] or {}
        pipe = self.pipeline(job["model"])
        task = render.TASKS[job["task"]]
        if job["task"] == "motion-transfer" and options.get("target"):
            options = dict(options, target=str(self._target_folder(options["target"])))
        files = {role: self._file_path(file_id, role) for role, file_id in inputs.items() if file_id}
        sample = task.read(pipe, files, options, render.Limits(settings.max_audio_seconds, settings.max_image_pixels))
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        relative = f"results/{job['id']}{task.result_file(options)[0]}"
        path = settings.data_dir / relative
        done = task.render(pipe, sample, path, options=options, progress=progress, comment=f"; job {job['id']}",
                           provenance=render.Provenance.from_settings(settings))
        return dict(result_path=relative, result_bytes=path.stat().st_size, frames=done.frames,
                    generated_at=done.generated_at, info=done.info)

    def _target_folder(self, target):
        row = self.store.get_job(target)
        if row is None or row["task"] != "motion-target" or not row["result_path"]:
            raise TalkingFaceError(f"the target {target} no longer exists")
        return render.target_folder(self.settings.data_dir / row["result_path"])

    def _file_path(self, file_id, role):
        row = self.store.get_file(file_id) if file_id else None
        if row is None or not row["path"]:
            raise TalkingFaceError(f"the {role} file {file_id} no longer exists")
        return self.settings.data_dir / row["path"]


def _gpu_memory():
    return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None


def worker_main(settings_json, worker_id=None):
    """Entry point of a worker process (spawned: safe with CUDA)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = Worker(Settings.model_validate_json(settings_json), worker_id=worker_id)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    worker.run()
