"""The embedded executor: worker processes started and watched by ``talkingface serve``.

Workers are started with the ``spawn`` method (a fresh interpreter: CUDA cannot be
forked) and restarted when they die; one that dies soon after starting (a full disk, a
broken database) is restarted after a growing delay, not in a tight loop. Jobs of a
dead worker are re-queued when their lease runs out, by any other worker or by the
restarted one.

Workers never outlive the serve process, even when it is killed with ``kill -9``: each
asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``) and
watches its parent's pid from a thread (every platform); either way it hands its job
back and exits, so a restarted server finds no stray workers claiming jobs.
"""

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

log = logging.getLogger("talkingface.executor")

WATCH_SECONDS = 1.0            # how often dead workers are looked for
STABLE_SECONDS = 60.0          # a worker that lived this long died of something new: restart at once
MAX_RESPAWN_DELAY = 60.0
PARENT_GONE_GRACE = 15.0       # a worker whose parent died this long ago exits even mid-job
PR_SET_PDEATHSIG = 1           # <linux/prctl.h>


def respawn_delay(quick_deaths: int) -> float:
    """Seconds before restarting a worker that died ``quick_deaths`` times in a row soon after starting."""
    return 0.0 if quick_deaths <= 0 else min(MAX_RESPAWN_DELAY, 2.0 ** quick_deaths)


def set_parent_death_signal(sig=signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux only).

    The signal comes when the parent *thread* that started this process exits; the executor
    starts workers from the serve process's main thread and from its watcher thread, which
    both live as long as the executor. Returns False where it is not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, on_gone, grace: float = PARENT_GONE_GRACE, every: float = 1.0):
    """A daemon thread that calls ``on_gone()`` once this process's parent is no longer
    ``parent_pid``, then ends the process ``grace`` seconds later if it is still running."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(every)
        log.warning("the serve process (pid %s) is gone; this worker stops", parent_pid)
        on_gone()
        time.sleep(grace)
        log.warning("still running %.0f s after the serve process died; exiting", grace)
        os._exit(1)

    thread = threading.Thread(target=watch, daemon=True, name="parent-watch")
    thread.start()
    return thread


def worker_process(settings_json, parent_pid):
    """Entry point of an embedded worker process: tied to its parent before anything slow runs."""
    set_parent_death_signal(signal.SIGTERM)
    # The parent may have died before the line above: then no signal would ever come.
    if os.getppid() != parent_pid:
        os._exit(0)
    # Imported only now: torch and the models take seconds to import.
    from service.jobs.worker import worker_main

    worker_main(settings_json, parent_pid=parent_pid)


class EmbeddedWorkers:
    def __init__(self, settings, count):
        self.settings_json = settings.model_dump_json()
        self.count = count
        self.context = multiprocessing.get_context("spawn")
        self.processes = []
        self.started_at = []       # per slot: when its process was started (monotonic)
        self.quick_deaths = []     # per slot: deaths in a row within STABLE_SECONDS of starting
        self.restart_at = []       # per slot: when a dead worker is started again (None: not dead)
        self._stop = threading.Event()
        self._watcher = None

    def start(self):
        self.started_at = [0.0] * self.count
        self.quick_deaths = [0] * self.count
        self.restart_at = [None] * self.count
        self.processes = [self._spawn(slot) for slot in range(self.count)]
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="worker-watcher")
        self._watcher.start()

    def _spawn(self, slot):
        process = self.context.Process(target=worker_process, args=(self.settings_json, os.getpid()),
                                       name=f"talkingface-worker-{slot}", daemon=True)
        process.start()
        self.started_at[slot] = time.monotonic()
        log.info("started worker process %s (pid %s)", process.name, process.pid)
        return process

    def _watch(self):
        while not self._stop.wait(WATCH_SECONDS):
            for slot, process in enumerate(self.processes):
                if not process.is_alive() and not self._stop.is_set():
                    self._restart(slot, process)

    def _restart(self, slot, process):
        now = time.monotonic()
        if self.restart_at[slot] is None:
            lived = now - self.started_at[slot]
            self.quick_deaths[slot] = self.quick_deaths[slot] + 1 if lived < STABLE_SECONDS else 0
            delay = respawn_delay(self.quick_deaths[slot])
            log.warning("worker pid %s exited with %s after %.0f s; starting another in %.0f s",
                        process.pid, process.exitcode, lived, delay)
            self.restart_at[slot] = now + delay
        if now >= self.restart_at[slot]:
            self.restart_at[slot] = None
            self.processes[slot] = self._spawn(slot)

    def pids(self):
        return [p.pid for p in self.processes if p.is_alive()]

    def stop(self, timeout=15.0):
        self._stop.set()
        if self._watcher:
            self._watcher.join()
        for process in self.processes:
            if process.is_alive():
                process.terminate()          # SIGTERM: the worker hands its job back at the next chunk
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join()
