"""Probes and metrics: ``/livez``, ``/readyz``, ``/metrics``."""

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models import registry
from service.api.deps import get_settings, get_store
from service.jobs.store import free_bytes
from service.storage import storage_for

router = APIRouter(tags=["health"])


@router.get("/livez")
def livez():
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, settings=Depends(get_settings), store=Depends(get_store)):
    """200 only when the job store answers, a worker is up, the default model's weights are found,
    the data dir has at least ``min_free_bytes`` free and (with the Celery engine) the broker answers."""
    checks = {}
    free = free_bytes(settings)
    disk_ok = free >= settings.min_free_bytes
    checks["disk"] = (f"ok ({free:,} bytes free)" if disk_ok else
                      f"low: {free:,} bytes free, under TALKINGFACE_MIN_FREE_BYTES={settings.min_free_bytes:,}")
    try:
        store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # the point of the probe is to report it
        checks["store"] = f"unreachable: {type(exc).__name__}"
    workers = len(store.list_workers(settings.worker_timeout_seconds)) if checks["store"] == "ok" else 0
    checks["workers"] = f"{workers} up"
    kind, _, missing = registry.weights_ready(settings.default_model, weights_root=settings.weights_dir)
    checks["weights"] = f"ok ({kind})" if not missing else "missing " + ", ".join(missing)
    problem = storage_for(settings).check()        # the folder writable, or the bucket reachable
    checks["storage"] = f"ok ({settings.storage})" if problem is None else problem
    broker = getattr(request.app.state, "broker", None)
    if broker is not None:
        checks["broker"] = broker.ping()
    ready = (checks["store"] == "ok" and workers > 0 and not missing and disk_ok and problem is None
             and checks.get("broker", "ok") == "ok")
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request):
    body = await run_in_threadpool(generate_latest, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
