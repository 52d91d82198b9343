"""What the one-call routes share: the extra form fields as options, and waiting for the job.

``POST /v1/talking-face`` and ``POST /v1/pose-transfer`` turn a form into a job like any
other, then wait for it up to ``wait`` seconds. Done in time: 200 with the result. Not
yet: 202 with the job, to follow at its ``Location``.
"""

import asyncio
import time

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.api.errors import APIError
from service.api.jobs import JobCreate, check_job, result_response
from service.api.serialize import job_body
from service.jobs.store import FINAL, JobStatus

# Job errors that are the caller's to fix, with the status they answer.
CLIENT_ERRORS = {"invalid_input": 422, "no_face": 422, "canceled": 409, "weights_missing": 503}


async def form_options(request: Request, request_fields) -> dict:
    """Every text field of the form that is not one of ``request_fields``: the model's options."""
    form = await request.form()
    options = {}
    for name, value in form.multi_items():
        if name in request_fields:
            continue
        if not isinstance(value, str):
            raise APIError(400, "invalid_input", f"unexpected file field {name!r}")
        options[name] = value
    return options


def wait_seconds(wait, settings) -> float:
    return settings.default_wait_seconds if wait is None else max(0.0, min(wait, settings.max_wait_seconds))


async def submit_and_wait(spec: JobCreate, wait: float, settings, store):
    """Queue ``spec``; answer its result if it ends within ``wait`` seconds, else 202 with the job."""
    spec = await run_in_threadpool(check_job, spec, settings, store)
    _, [row] = await run_in_threadpool(store.create_jobs, [spec], settings.max_attempts)
    deadline = time.monotonic() + wait
    while row["status"] not in FINAL and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        row = await run_in_threadpool(store.get_job, row["id"])
    location = {"Location": f"/v1/jobs/{row['id']}"}
    if row["status"] == JobStatus.succeeded:
        return result_response(settings, row, headers=location | {"X-Job-Id": row["id"]})
    if row["status"] in FINAL:
        code = row["error_code"] or "failed"
        return JSONResponse({"error": {"code": code, "message": row["error_message"] or code},
                             "job": job_body(row)}, status_code=CLIENT_ERRORS.get(code, 500), headers=location)
    return JSONResponse(job_body(row), status_code=202, headers=location)
