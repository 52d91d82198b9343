"""The embedded executor: worker processes started and watched by ``talkingface serve``.

Workers are started with the ``spawn`` method (a fresh interpreter: CUDA cannot be
forked) and restarted when they die. Jobs of a dead worker are re-queued when their
lease runs out, by any other worker or by the restarted one.
"""

import logging
import multiprocessing
import threading

from service.jobs.worker import worker_main

log = logging.getLogger("talkingface.executor")


class EmbeddedWorkers:
    def __init__(self, settings, count):
        self.settings_json = settings.model_dump_json()
        self.count = count
        self.context = multiprocessing.get_context("spawn")
        self.processes = []
        self._stop = threading.Event()
        self._watcher = None

    def start(self):
        self.processes = [self._spawn(slot) for slot in range(self.count)]
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="worker-watcher")
        self._watcher.start()

    def _spawn(self, slot):
        process = self.context.Process(target=worker_main, args=(self.settings_json,),
                                       name=f"talkingface-worker-{slot}", daemon=True)
        process.start()
        log.info("started worker process %s (pid %s)", process.name, process.pid)
        return process

    def _watch(self):
        while not self._stop.wait(1.0):
            for slot, process in enumerate(self.processes):
                if not process.is_alive() and not self._stop.is_set():
                    log.warning("worker pid %s exited with %s; starting another", process.pid, process.exitcode)
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
