"""Prometheus metrics: HTTP traffic counted in the server, job numbers read from the store.

Job counters live in the database (every worker process writes there), so the scrape
reads them at collection time; they are the same whichever process is scraped.
"""

import time
import weakref
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from service.jobs.store import JobStatus

JOB_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class JobCollector:
    def __init__(self, store, settings):
        self.store, self.settings = store, settings

    def collect(self):
        by_status, finished, frames = self.store.counts()
        yield CounterMetricFamily("talkingface_jobs_submitted", "Jobs submitted.", value=sum(by_status.values()))
        done = CounterMetricFamily("talkingface_jobs_finished", "Jobs that reached a final state.",
                                   labels=["model", "status"])
        for (model, status), n in sorted(finished.items()):
            done.add_metric([model, status], n)
        yield done
        yield GaugeMetricFamily("talkingface_jobs_queued", "Jobs waiting for a worker.",
                                value=by_status.get(JobStatus.queued, 0))
        yield GaugeMetricFamily("talkingface_jobs_running", "Jobs being run.",
                                value=by_status.get(JobStatus.running, 0))
        yield CounterMetricFamily("talkingface_frames_generated", "Video frames generated.", value=frames)

        histograms = self.store.histograms(JOB_BUCKETS)
        for key, name, text in (("run", "talkingface_job_duration_seconds", "Time from claim to finish."),
                                ("wait", "talkingface_job_queue_wait_seconds", "Time from submission to first claim.")):
            family = HistogramMetricFamily(name, text, labels=["model"])
            for model, (counts, n, total) in sorted(histograms[key].items()):
                buckets = [(str(b), c) for b, c in zip(JOB_BUCKETS, counts)] + [("+Inf", n)]
                family.add_metric([model], buckets, total)
            yield family

        workers = self.store.list_workers(self.settings.worker_timeout_seconds)
        yield GaugeMetricFamily("talkingface_workers", "Workers heard from recently.", value=len(workers))
        gpu = GaugeMetricFamily("talkingface_gpu_memory_bytes", "CUDA memory allocated by a worker.",
                                labels=["worker", "device"])
        for w in workers:
            if w["gpu_memory_bytes"] is not None:
                gpu.add_metric([w["id"], w["device"] or ""], w["gpu_memory_bytes"])
        yield gpu
        uploads, results = self.store.storage_bytes()
        storage = GaugeMetricFamily("talkingface_storage_bytes", "Bytes kept on disk.", labels=["kind"])
        storage.add_metric(["uploads"], uploads)
        storage.add_metric(["results"], results)
        yield storage


def build_registry(store, settings):
    registry = CollectorRegistry()
    requests = Counter("talkingface_http_requests", "HTTP requests.", ["method", "route", "status"],
                       registry=registry)
    latency = Histogram("talkingface_http_request_duration_seconds", "HTTP request latency.",
                        ["method", "route"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
    registry.register(JobCollector(store, settings))
    live_metrics(registry)
    return registry, requests, latency


LIVE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
_live = weakref.WeakKeyDictionary()


def live_metrics(registry):
    """The live sessions' metrics (``service.api.live``) in ``registry``, made once:
    ``active`` sessions, ``frames`` sent, and ``latency`` from an audio message's arrival to
    each frame it completed going out."""
    if registry not in _live:
        _live[registry] = SimpleNamespace(
            active=Gauge("talkingface_live_sessions", "Live sessions open.", registry=registry),
            frames=Counter("talkingface_live_frames_sent", "Frames sent to live sessions.", registry=registry),
            latency=Histogram("talkingface_live_frame_latency_seconds",
                              "Time from the audio a frame needed arriving to the frame being sent.",
                              registry=registry, buckets=LIVE_BUCKETS))
    return _live[registry]


class HTTPMetrics:
    """Pure ASGI middleware counting requests and timing them by route template.

    (Not ``@app.middleware("http")``: that wrapper costs a task and a stream per request.)
    """

    def __init__(self, app, requests, latency):
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The route template, not the raw path: job ids must not become label values.
            name = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], name, str(status[0])).inc()
            self.latency.labels(scope["method"], name).observe(time.perf_counter() - start)
