"""What the dashboard polls: workers, and per-minute throughput and latency.

A key sees the numbers of its own jobs, and a worker's current job only when it is theirs
(``admin`` keys, and everyone without keys, see all).
"""

import time

from fastapi import APIRouter, Depends, Query

from service.api.deps import Principal, get_settings, get_store, require_key
from service.api.serialize import iso
from service.jobs.store import JobStatus

router = APIRouter(tags=["workers"], dependencies=[Depends(require_key)])


@router.get("/v1/workers")
def list_workers(settings=Depends(get_settings), store=Depends(get_store),
                 principal: Principal = Depends(require_key)):
    listed = store.list_workers(settings.worker_timeout_seconds)

    def current_job(job_id):
        return job_id if job_id and (principal.sees_all or principal.can_see(store.get_job(job_id))) else None

    return {"object": "list", "data": [
        {"id": w["id"], "pid": w["pid"], "hostname": w["hostname"], "device": w["device"],
         "models": w["models"] or [], "status": w["status"], "current_job": current_job(w["current_job"]),
         "started_at": iso(w["started_at"]), "heartbeat_at": iso(w["heartbeat_at"])}
        for w in listed]}


def _quantile(values, q):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


@router.get("/v1/stats")
def stats(minutes: int = Query(60, ge=1, le=24 * 60), settings=Depends(get_settings), store=Depends(get_store),
          principal: Principal = Depends(require_key)):
    """Queue depth now, and for each of the last ``minutes`` minutes: jobs finished and their run time."""
    now = time.time()
    first = int(now // 60) - minutes + 1
    series = {m: {"succeeded": 0, "failed": 0, "canceled": 0, "durations": []} for m in range(first, first + minutes)}
    owner = principal.owner_filter
    for _model, status, _created, claimed, _started, finished in store.finished_since(first * 60, owner=owner):
        bucket = series.get(int(finished // 60))
        if bucket is None:
            continue
        bucket[status] += 1
        if status == JobStatus.succeeded and claimed is not None:
            bucket["durations"].append(finished - claimed)
    by_status, _, _ = store.counts(owner=owner)
    return {
        "queued": by_status.get(JobStatus.queued, 0), "running": by_status.get(JobStatus.running, 0),
        "workers": len(store.list_workers(settings.worker_timeout_seconds)),
        "series": [{"minute": iso(m * 60), "succeeded": b["succeeded"], "failed": b["failed"],
                    "canceled": b["canceled"], "p50_seconds": _quantile(b["durations"], 0.5),
                    "p95_seconds": _quantile(b["durations"], 0.95)} for m, b in series.items()],
    }
