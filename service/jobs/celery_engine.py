"""The Celery engine: jobs carried by a broker (Redis or RabbitMQ) to workers on many machines.

With ``TALKINGFACE_BROKER_URL`` set, ``talkingface serve --workers 0`` is the API tier and
``talkingface worker [--models a,b]`` is one Celery worker process for one device. The job
row in the database stays the source of truth; a message carries only a job id:

- the API's ``Dispatcher`` hands every queued job to the broker, on the queue of its model
  (``talkingface.<model>``), and hands it again whenever it goes back to the queue (a lease
  that ran out, a worker that stopped) or when the broker no longer holds its message (a
  broker restarted without persistence): a job's message may come twice, never not at all;
- the task body (``Worker.run_job``) claims the job in one conditional UPDATE, so a message
  delivered twice runs its job once, and a message for a finished, canceled or running job
  does nothing; retries are the job's own (``attempts`` against ``max_attempts``, counted at
  each claim), never Celery's, so the two never disagree;
- ``acks_late`` with ``reject_on_worker_lost`` and a prefetch of one: a worker holds one
  message at a time and acknowledges it once the job has ended; a broker visibility timeout
  above the longest allowed job (``job_timeout_seconds``) keeps Redis from handing a running
  job's message to another worker;
- a worker runs its tasks in its own process (``--pool solo``: no forked child, so CUDA is
  safe), loads its models once at start, and beats in the ``workers`` table like an embedded
  worker (``/v1/workers``, the dashboard, ``/readyz``); cancel, progress and leases are the
  same rows, so the API cannot tell the engines apart.
"""

import logging
import os
import socket
import threading
import time

try:
    from celery import Celery, signals
except ImportError as exc:  # the engine is an extra: say how to get it
    raise ImportError("TALKINGFACE_BROKER_URL needs Celery: pip install 'talkingface[celery]'") from exc

from service.jobs.store import JobStore, storage_failure
from service.settings import Settings

log = logging.getLogger("talkingface.celery")

TASK = "talkingface.run_job"
LOST_CHECK_SECONDS = 5.0          # how often the broker's queues are compared with the queued jobs


def queue_name(model: str) -> str:
    return f"talkingface.{model}"


def visibility_timeout(settings: Settings) -> int:
    """Seconds Redis waits for an unacknowledged message before handing it out again: above the
    longest job, so a running job's message is never given to a second worker."""
    return int(settings.job_timeout_seconds + 4 * settings.lease_seconds + 60)


def make_app(settings: Settings) -> Celery:
    app = Celery("talkingface", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,                    # results are rows of the job store
        task_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,         # a worker outlives a broker restart
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.task(name=TASK, acks_late=True, max_retries=0, ignore_result=True)(_run_job)
    return app


# -- the worker side ---------------------------------------------------------------
_worker = None                    # this process's service.jobs.worker.Worker


def _run_job(job_id):
    """The task body: run the job if it is still queued. Storage trouble: the job goes back."""
    worker = _worker
    from service.jobs.worker import wait_reason

    try:
        ran = worker.run_job(job_id)
        worker.backoff.succeeded()
        return ran
    except Exception as exc:
        state = wait_reason(exc)
        if state is None:
            raise
        # Take no other message meanwhile (this process is the only consumer); the job is
        # handed to the broker again once the database answers.
        worker.stop.wait(worker.backoff.failed(state, exc))
        try:
            worker.store.undispatch([job_id])
        except Exception as again:
            if storage_failure(again) is None:
                raise
        return False


def _housekeeping(worker, stop):
    while not stop.wait(min(1.0, worker.settings.heartbeat_seconds)):
        try:
            worker.housekeeping()
        except Exception as exc:
            if storage_failure(exc) is None:
                log.exception("worker housekeeping failed")
            else:
                log.debug("worker housekeeping: %s", exc)


def run_worker(settings: Settings, worker_id=None, models=None):
    """One Celery worker process serving ``models`` (default: all) on ``settings.device``."""
    from models import registry
    from service.jobs.worker import Backoff, Worker

    global _worker
    unknown = [m for m in models or () if m not in registry.REGISTRY]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; models are {', '.join(registry.REGISTRY)}")
    worker = Worker(settings, worker_id=worker_id, models=models)
    worker.backoff = Backoff(*worker.backoff_seconds)
    for model in worker.models:               # once per process, before the first message
        worker.pipeline(model)
    _worker = worker
    app = make_app(settings)

    stop_housekeeping = threading.Event()
    worker.housekeeping()
    threading.Thread(target=_housekeeping, args=(worker, stop_housekeeping), daemon=True,
                     name="worker-housekeeping").start()

    # A warm shutdown (SIGTERM) waits for the running task: make that task hand its job back
    # at the next chunk instead of finishing a long video first.
    def shutting_down(**_):
        worker.stop.set()

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    consumer = app.Worker(hostname=f"{worker.id}@{socket.gethostname()}", pool="solo", concurrency=1,
                          queues=[queue_name(m) for m in worker.models], without_mingle=True,
                          without_gossip=True, without_heartbeat=False, optimization="fair",
                          loglevel=logging.getLevelName(logging.getLogger().level))
    log.info("celery worker %s (pid %s) on %s, queues %s", worker.id, os.getpid(), settings.device,
             ", ".join(queue_name(m) for m in worker.models))
    try:
        consumer.start()
    finally:
        stop_housekeeping.set()
        worker.unregister()


# -- the API side ------------------------------------------------------------------
class Dispatcher:
    """Hands queued jobs to the broker (a thread of the API process; any number of API
    processes may run one: ``take_undispatched`` gives each job to one of them)."""

    def __init__(self, store: JobStore, settings: Settings, app: Celery | None = None):
        self.store, self.settings = store, settings
        self.app = app or make_app(settings)
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._last_lost_check = 0.0
        self.broker_ok = None            # last publish or check: True, False, None (not tried)
        self.published = 0

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True, name="celery-dispatch")
        self._thread.start()

    def stop(self, timeout=5.0):
        self._stop.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout)

    def submitted(self):
        """New jobs are in the store: hand them over now, not at the next tick."""
        self.wake.set()

    def _loop(self):
        while not self._stop.is_set():
            self.wake.wait(self.settings.dispatch_seconds)
            self.wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick()
            except Exception as exc:
                if storage_failure(exc) is None:
                    log.exception("dispatch failed")
                else:
                    log.debug("dispatch: %s", exc)

    def tick(self):
        self.store.requeue_expired()
        now = time.monotonic()
        if now - self._last_lost_check >= LOST_CHECK_SECONDS:
            self._last_lost_check = now
            self.find_lost()
        return self.dispatch()

    def dispatch(self):
        """Publish every queued job not yet handed over; those that fail go back for the next tick."""
        pending = self.store.take_undispatched()
        sent = 0
        try:
            for job_id, model in pending:
                queue = queue_name(model)
                self.app.send_task(TASK, args=[job_id], queue=queue, routing_key=queue,
                                   retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
                sent += 1
        except Exception as exc:
            self.store.undispatch([job_id for job_id, _ in pending[sent:]])
            if self.broker_ok is not False:
                log.warning("broker unreachable (%s: %s); jobs stay queued and are handed over when it is back",
                            type(exc).__name__, exc)
            self.broker_ok = False
            return sent
        if sent and self.broker_ok is False:
            log.info("broker reachable again")
        if sent:
            self.broker_ok = True
        self.published += sent
        return sent

    def find_lost(self):
        """Jobs handed to the broker a while ago that its queue no longer holds: hand them again."""
        before = time.time() - self.settings.redispatch_after_seconds
        waiting = self.store.dispatched_waiting(before)
        again = 0
        for model, count in waiting.items():
            held = self.queue_length(model)
            if held is None or held >= count:
                continue
            again += self.store.redispatch_lost(model, count - held, before)
        if again:
            log.warning("%d queued jobs were missing from the broker (restarted?); handing them over again", again)
        return again

    def queue_length(self, model) -> int | None:
        """Messages waiting in a model's queue (not those a worker holds); None when it cannot be read."""
        try:
            with self.app.connection_for_read() as connection:
                channel = connection.channel()
                try:
                    return channel.queue_declare(queue=queue_name(model), passive=True).message_count
                finally:
                    try:
                        channel.close()
                    except Exception:
                        pass
        except Exception as exc:
            # RabbitMQ: a queue nobody declared yet (no worker, nothing published) does not exist.
            if "NOT_FOUND" in str(exc) or "404" in str(exc):
                return 0
            log.debug("queue length of %s unknown: %s", model, exc)
            return None

    def ping(self, timeout=2.0) -> str:
        """"ok" or why not, for ``/readyz``."""
        try:
            with self.app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
            return "ok"
        except Exception as exc:
            return f"unreachable: {type(exc).__name__}"
