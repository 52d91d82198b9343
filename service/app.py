"""``create_app()``: the FastAPI application -- routers, error handlers, metrics, lifespan.

At start-up the job store is migrated and reconciled (jobs left running by workers that
are gone go back to the queue), the webhook dispatcher and the retention sweeper start,
and with ``start_workers`` (what ``talkingface serve`` does) the embedded worker
processes are spawned.

Every request passes ``RequestGuard`` (``service.api.guard``) first: API key, body size,
uploads in flight and body timeout are checked there, before a byte of body is read.
``app.state.stopping`` is set when the server is asked to stop (``service.server``) and
at the end of the lifespan; endless responses (event streams) end when they see it.
"""

import gc
import importlib.util
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

from service.api import dashboard, errors, files, health, images, jobs, models, motion, pose, talking_face, workers
from service.api.deps import KeyRing
from service.api.guard import RequestGuard
from service.api.live import router as live_router
from service.api.serialize import job_body
from service.jobs.store import JobStore
from service.prometheus import HTTPMetrics, build_registry
from service.render import target_folder
from service.settings import Settings, get_settings
from service.storage import storage_for
from service.webhooks import WebhookDispatcher

log = logging.getLogger("talkingface.app")
# Swagger UI and ReDoc as files of an installed package: /docs and /redoc work offline.
DOCS_ASSETS = Path(importlib.util.find_spec("fastapi_offline").origin).parent / "static"


def purge_expired(store, settings):
    """Delete uploads and results older than the retention period; returns how many."""
    older_than = time.time() - settings.retention_hours * 3600
    old_files, old_results = store.expired_artifacts(older_than)
    storage = storage_for(settings)
    for file_id, _ in old_files:
        row = store.delete_file(file_id)
        if row and row["path"]:
            storage.delete(row["path"])
    for job_id, path in old_results:
        storage.delete(path)
        storage.delete_prefix(target_folder(path).as_posix() + "/")    # a motion target's trained folder
        store.clear_result(job_id)
    storage.purge_staging(older_than)
    return len(old_files) + len(old_results)


def _sweep(store, settings, stop):
    while not stop.wait(600):
        try:
            purge_expired(store, settings)
        except Exception:
            log.exception("retention sweep failed")


def create_app(settings: Settings | None = None, start_workers: bool = False) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.db_url, pool_size=settings.database_pool_size,
                     max_overflow=settings.database_max_overflow)
    stopping = threading.Event()

    @asynccontextmanager
    async def lifespan(app):
        released = store.reconcile()
        if released:
            log.info("re-queued or closed %d jobs left running by workers that are gone", released)
        purge_expired(store, settings)
        stop = threading.Event()
        sweeper = threading.Thread(target=_sweep, args=(store, settings, stop), daemon=True)
        sweeper.start()
        webhooks = WebhookDispatcher.from_settings(store, job_body, settings)
        webhooks.start()
        broker = None
        if settings.broker_url:
            # The Celery engine: queued jobs are handed to the broker from here (any number of API
            # processes may do it), woken by each submission.
            from service.jobs.celery_engine import Dispatcher
            broker = Dispatcher(store, settings)
            store.on_jobs_created.append(broker.submitted)
            broker.start()
        app.state.broker = broker
        executor = None
        if start_workers and settings.workers > 0:
            from service.jobs.executor import EmbeddedWorkers
            executor = EmbeddedWorkers(settings, settings.workers)
            executor.start()
        app.state.executor = executor
        # Objects alive after start-up (models' registries, routes, settings) stay out of
        # the garbage collector's scans: fewer long pauses in request latency.
        gc.freeze()
        try:
            yield
        finally:
            stopping.set()
            stop.set()
            webhooks.stop()
            if broker:
                broker.stop()
            if executor:
                executor.stop()
            store.dispose()

    app = FastAPI(title="talkingface", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Talking-face video from a photo and a voice clip, and pose-driven people, "
                              "as durable jobs.")
    app.state.settings = settings
    app.state.store = store
    app.state.keys = KeyRing(settings.api_keys)
    app.state.stopping = stopping
    registry, requests, latency = build_registry(store, settings)
    app.state.metrics_registry = registry
    # Outermost is added last: metrics count what the guard refuses too.
    app.add_middleware(RequestGuard, settings=settings, keys=app.state.keys)
    app.add_middleware(HTTPMetrics, requests=requests, latency=latency)
    errors.install(app)
    for router in (talking_face.router, pose.router, motion.router, images.router, files.router, jobs.router,
                   models.router, workers.router, health.router, dashboard.router, live_router):
        app.include_router(router)
    add_docs(app)
    return app


def add_docs(app):
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts served by the app itself, not a CDN."""
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request):
        root = request.scope.get("root_path", "")
        schema = f"{root}{app.openapi_url}{key_query(request)}"
        return get_swagger_ui_html(openapi_url=schema, title=f"{app.title} - API",
                                   swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs-assets/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request):
        root = request.scope.get("root_path", "")
        schema = f"{root}{app.openapi_url}{key_query(request)}"
        return get_redoc_html(openapi_url=schema, title=f"{app.title} - API",
                              redoc_js_url=f"{root}/docs-assets/redoc.standalone.js",
                              redoc_favicon_url=f"{root}/docs-assets/favicon.png", with_google_fonts=False)


def key_query(request: Request) -> str:
    """``?key=...`` when the docs page was opened with one: its schema request needs the key too."""
    key = request.query_params.get("key")
    return f"?{urlencode({'key': key})}" if key else ""
