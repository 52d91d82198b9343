"""What the one-call routes share: the extra form fields as options, and waiting for the job.

``POST /v1/talking-face`` and ``POST /v1/pose-transfer`` turn a form into a job like any
other, then wait for it up to ``wait`` seconds. Done in time: 200 with the result. Not
yet: 202 with the job, to follow at its ``Location``.

``POST /v1/talking-face`` with ``stream=true`` instead runs its job in this process and
answers at once with the video as it is made (``answer_streamed``, ``service.stream``).

The files a request stores are kept by ``Uploads``: a request refused before its job is
queued (its second upload rejected, a bad option) leaves none of them behind.
"""

import asyncio
import time

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from models.errors import TalkingFaceError
from service.api.deps import ANONYMOUS, Principal
from service.api.errors import APIError
from service.api.files import remove_file, save_upload, unavailable
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


class Uploads:
    """``async with Uploads(...) as uploads``: the files stored inside are removed if the block fails."""

    def __init__(self, settings, store, principal: Principal = ANONYMOUS):
        self.settings, self.store, self.principal = settings, store, principal
        self.rows = []

    async def save(self, upload, field):
        """``save_upload`` as the caller's file, removed again if the request fails."""
        return self.keep(await save_upload(upload, self.settings, self.store, field, owner=self.principal.owner))

    def keep(self, row):
        """Remove ``row``'s file too if the request fails; returns it."""
        self.rows.append(row)
        return row

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, traceback):
        # Done here, without awaiting: the failure may be the task being canceled.
        for row in self.rows if exc_type else ():
            try:
                remove_file(row, self.settings, self.store)
            except Exception:       # the sweep of expired files removes it later
                pass
        return False


async def submit(spec: JobCreate, settings, store, principal: Principal = ANONYMOUS):
    """Check ``spec`` and queue it as ``principal``'s job; returns its row."""
    spec = await run_in_threadpool(check_job, spec, settings, store, principal)
    _, [row] = await run_in_threadpool(store.create_jobs, [spec], settings.max_attempts, owner=principal.owner)
    return row


async def answer_when_done(row, wait: float, settings, store):
    """The job's result if it ends within ``wait`` seconds; its error if it fails; else 202 with the job."""
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


def check_streamable(model: str, options: dict, as_video=False):
    """APIError 400 unless ``model`` can stream a request with these (checked) options."""
    from models import registry

    pipeline = registry.pipeline_class(model)
    if not pipeline.can_stream:
        raise APIError(400, "stream_unsupported", f"model {model} cannot stream its video; "
                                                  "send the request without stream=true")
    if not pipeline.streams(options):
        condition = pipeline.stream_condition()
        streams_with = f" (it streams {condition})" if condition else ""
        raise APIError(400, "stream_unsupported", f"model {model} cannot stream its video with these "
                                                  f"options{streams_with}; send the request without stream=true")
    if as_video:
        raise APIError(400, "stream_unsupported", f"model {model} cannot stream a video driven by a video; "
                                                  "send an audio file, or the request without stream=true")


async def answer_streamed(spec: JobCreate, settings, store, principal: Principal = ANONYMOUS):
    """Run ``spec`` in this process and answer with its video, fragmented MP4, as it is made.

    The job is recorded running from the start (``X-Job-Id``); its result is the whole MP4.
    A bad input found before the first frame (no face) is answered as JSON, as a job's error.
    """
    from service import stream

    spec = await run_in_threadpool(check_job, spec, settings, store, principal)
    # Each stream runs its model in this process: a bounded number at once.
    if not stream.take_slot(settings.max_streams):
        raise APIError(503, "busy", f"{settings.max_streams} streams are being made by this server "
                                    "(TALKINGFACE_MAX_STREAMS); try again", {"Retry-After": "5"})
    try:
        return await _start_stream(spec, settings, store, principal)
    finally:
        stream.release_slot()


async def _start_stream(spec: dict, settings, store, principal: Principal):
    from service import stream
    from service.storage import StorageUnavailable

    pipe = await run_in_threadpool(stream.service_pipeline, spec["model"], settings)
    runner = await run_in_threadpool(stream.streamer_id, store)
    row = await run_in_threadpool(store.create_running_job, spec, principal.owner, runner,
                                  settings.lease_seconds)
    job = stream.StreamedJob(settings, store, row, pipe)
    try:
        await run_in_threadpool(job.prepare)
    except TalkingFaceError as exc:
        await run_in_threadpool(job.fail, exc.code, exc.message)
        row = await run_in_threadpool(store.get_job, row["id"])
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}, "job": job_body(row)},
                            status_code=CLIENT_ERRORS.get(exc.code, 422), headers={"Location": f"/v1/jobs/{row['id']}"})
    except StorageUnavailable as exc:
        await run_in_threadpool(job.fail, "storage_unavailable", "the input files could not be read")
        raise unavailable(exc) from None
    job.start()
    headers = {"Location": f"/v1/jobs/{row['id']}", "X-Job-Id": row["id"], "Cache-Control": "no-store",
               "X-Content-Type-Options": "nosniff"}
    return StreamingResponse(job.body(), media_type=stream.MEDIA_TYPE, headers=headers)
