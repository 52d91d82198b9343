"""Jobs: submit, list, follow, cancel, fetch the result. Batches submit many at once.

Every job, batch and input file belongs to the API key that made it (``service.api.deps``):
for another key it does not exist (404, and left out of lists), unless that key is ``admin``.
"""

import asyncio
import json
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import registry
from models.common.pipeline import InvalidOption, check_options
from models.errors import TalkingFaceError
from service.api.deps import ANONYMOUS, Principal, get_settings, get_store, require_key
from service.api.errors import APIError
from service.api.files import unavailable
from service.api.serialize import iso, job_body
from service.jobs.store import FINAL, JobStatus
from service.render import TASKS, target_folder
from service.storage import StorageUnavailable, storage_for
from service.webhooks import WebhookURLError, check_webhook_syntax, check_webhook_url

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_key)])


class Inputs(BaseModel):
    """The uploaded files of a job, by role; which roles a task takes is in ``service.render.TASKS``."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="talking-face, pose-transfer: id of an uploaded image "
                                                "(POST /v1/files): the face, or the person")
    audio: str | None = Field(None, description="talking-face: id of an uploaded audio (or video) file, the voice")
    video: str | None = Field(None, description="talking-face: id of an uploaded video: models that read lips "
                                                "(accepts_video in GET /v1/models) follow it and keep its "
                                                "sound; others use its sound. motion-transfer: the source "
                                                "dancer's video. motion-target: a video of the target person")
    pose: str | None = Field(None, description="pose-transfer: id of an uploaded OpenPose JSON file, or of a "
                                               "photo whose pose is taken")
    condition: str | None = Field(None, description="image-generation: id of an uploaded NumPy .npy vector, "
                                                    "(d,) or (n, d): a text embedding, InfoGAN's codes")


class Webhook(BaseModel):
    """Where the job is POSTed when it ends (``service.webhooks``)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="an http(s) URL without credentials whose host resolves to public addresses "
                                 "(or to ones the operator allows: TALKINGFACE_WEBHOOK_ALLOW)")

    @field_validator("url")
    @classmethod
    def _well_formed(cls, url):
        check_webhook_syntax(url)      # a WebhookURLError is a ValueError: 422 validation_error
        return url

    def check_target(self, settings):
        """APIError 422 unless the URL's host resolves, now, to addresses a webhook may call."""
        try:
            check_webhook_url(self.url, settings)
        except WebhookURLError as exc:
            raise APIError(422, "validation_error", f"webhook.url: {exc}") from None


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Literal["talking-face", "pose-transfer", "motion-transfer", "motion-target", "image-generation"] = \
        "talking-face"
    model: str | None = None
    inputs: Inputs
    options: dict[str, bool | int | float | str | None] = Field(
        default_factory=dict, description="the model's options, as GET /v1/models declares them "
                                          "(paste_back, face_index, seed, n, text, label, and the "
                                          "model's own)")
    webhook: Webhook | None = None


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: list[JobCreate] = Field(min_length=1)
    metadata: dict | None = None


def check_model(model, task, options, settings):
    """``(model, options)``: the model's name (the default of ``task`` when None) and its options
    checked against its declaration; APIError naming the first problem."""
    models_task = TASKS[task].models_task
    model = model or registry.default_model(models_task, settings.default_model)
    if model is None:
        raise APIError(400, "unknown_model", f"no model here does {task}")
    if model not in registry.REGISTRY:
        raise APIError(400, "unknown_model", f"unknown model {model!r}; known: {', '.join(registry.REGISTRY)}")
    if registry.REGISTRY[model].task != models_task:
        raise APIError(400, "invalid_input", f"model {model} does not do {task}")
    try:
        return model, check_options(registry.pipeline_class(model), options)
    except InvalidOption as exc:
        raise APIError(422, "validation_error", f"options.{exc.message}") from None
    except TalkingFaceError as exc:
        raise APIError(400, exc.code, exc.message) from None


def check_job(job: JobCreate, settings, store, principal: Principal = ANONYMOUS):
    """A job spec the store accepts, or APIError naming the first problem.

    Input files and a motion target must be ``principal``'s: another key's are not found.
    """
    model, options = check_model(job.model, job.task, job.options, settings)
    task = TASKS[job.task]
    given = job.inputs.model_dump(exclude_none=True)
    try:
        task.check_roles(given, model)
    except TalkingFaceError as exc:
        raise APIError(400, "invalid_input", exc.message) from None
    wanted = task.inputs
    found = store.get_files(given.values())
    for role, file_id in given.items():
        kinds = wanted[role]
        row = found.get(file_id)
        if not principal.can_see(row):
            raise APIError(404, "file_not_found", f"inputs.{role}: no file {file_id}")
        if row["kind"] not in kinds:
            raise APIError(400, "invalid_input", f"inputs.{role}: file {file_id} is {row['kind']}, not {kinds[0]}")
    if options.get("target") is not None and job.task == "motion-transfer":
        check_target(store, model, options["target"], principal)
    if job.task == "image-generation":
        check_image_request(model, options, given, settings)
    if job.webhook:
        job.webhook.check_target(settings)
    return {"task": job.task, "model": model, "inputs": given,
            "options": options, "webhook_url": job.webhook.url if job.webhook else None}


def check_image_request(model, options, inputs, settings):
    """``n`` within the service's cap, and a condition the model takes (before any work is queued)."""
    if int(options.get("n") or 1) > settings.max_images:
        raise APIError(422, "validation_error", f"options.n: at most {settings.max_images} images a request "
                                                "(TALKINGFACE_MAX_IMAGES)")
    given = [kind for kind in ("text", "label") if options.get(kind) is not None] + \
        (["vector"] if inputs.get("condition") else [])
    try:
        registry.pipeline_class(model).check_condition_kinds(given, options)
    except TalkingFaceError as exc:
        raise APIError(400, exc.code, exc.message) from None


def check_target(store, model, target, principal: Principal = ANONYMOUS):
    """A motion-transfer ``target`` option must be the id of a finished motion-target job of the model."""
    row = store.get_job(target) if isinstance(target, str) and target.startswith("job_") else None
    if not principal.can_see(row) or row["task"] != "motion-target" or row["model"] != model:
        raise APIError(404, "not_found", f"options.target: no {model} target {target!r} "
                                         "(a target is the id of a POST /v1/motion-targets job)")
    if row["status"] != JobStatus.succeeded:
        raise APIError(409, "not_ready", f"options.target: target {target} is {row['status']}, not trained yet")
    if not row["result_path"]:
        raise APIError(410, "gone", f"options.target: target {target} was deleted")


def get_job_or_404(store, job_id, principal: Principal = ANONYMOUS):
    """The job's row if ``principal`` may see it; else APIError 404, the same whether it exists or not."""
    row = store.get_job(job_id)
    if not principal.can_see(row):
        raise APIError(404, "not_found", f"no job {job_id}")
    return row


@router.post("/v1/jobs", status_code=202)
def create_job(job: JobCreate, request: Request, settings=Depends(get_settings), store=Depends(get_store),
               principal: Principal = Depends(require_key)):
    """Queue one job; answers 202 with the job and its URL in ``Location``."""
    _, [row] = store.create_jobs([check_job(job, settings, store, principal)], settings.max_attempts,
                                 owner=principal.owner)
    return JSONResponse(job_body(row), status_code=202, headers={"Location": f"/v1/jobs/{row['id']}"})


@router.get("/v1/jobs")
def list_jobs(status: list[JobStatus] | None = Query(None), model: str | None = None,
              batch_id: str | None = None, limit: int = Query(20, ge=1, le=200), after: str | None = None,
              store=Depends(get_store), principal: Principal = Depends(require_key)):
    """Newest first. ``after`` is the last id of the previous page (400 when it names no job of yours)."""
    if after is not None and not principal.can_see(store.get_job(after)):
        raise APIError(400, "invalid_input", f"after: no job {after} (give the next_after of the previous page)")
    rows, more = store.list_jobs(status=status, model=model, batch_id=batch_id, limit=limit, before=after,
                                 owner=principal.owner_filter)
    return {"object": "list", "data": [job_body(r) for r in rows], "has_more": more,
            "next_after": rows[-1]["id"] if more and rows else None}


@router.get("/v1/jobs/{job_id}")
def get_job(job_id: str, store=Depends(get_store), principal: Principal = Depends(require_key)):
    return job_body(get_job_or_404(store, job_id, principal))


@router.post("/v1/jobs/{job_id}/cancel")
def cancel_job(job_id: str, store=Depends(get_store), principal: Principal = Depends(require_key)):
    """Queued jobs stop at once; running ones at their next chunk of frames."""
    row = get_job_or_404(store, job_id, principal)
    if row["status"] in FINAL:
        raise APIError(409, "already_finished", f"job {job_id} is already {row['status']}")
    return job_body(store.cancel(job_id))


@router.get("/v1/jobs/{job_id}/result")
@router.head("/v1/jobs/{job_id}/result", include_in_schema=False)
def get_result(job_id: str, settings=Depends(get_settings), store=Depends(get_store),
               principal: Principal = Depends(require_key)):
    """The MP4 or PNG the job made (Range requests supported; HEAD answers the headers alone)."""
    row = get_job_or_404(store, job_id, principal)
    if row["status"] != JobStatus.succeeded:
        raise APIError(409, "not_ready", f"job {job_id} is {row['status']}; its result is not available")
    try:
        if row["result_path"]:
            return result_response(settings, row)
    except FileNotFoundError:
        pass
    raise APIError(410, "gone", f"the result of job {job_id} was deleted")


def result_response(settings, row, headers=None):
    """The result file of a finished job, with its task's media type, streamed from the storage.

    FileNotFoundError when the folder holds no such file; a bucket's response answers 410 itself then.
    """
    task = TASKS.get(row["task"], TASKS["talking-face"])
    suffix, media_type = task.result_file(row["options"])
    return storage_for(settings).response(row["result_path"], media_type, f"{row['id']}{suffix}", headers=headers)


@router.delete("/v1/jobs/{job_id}")
def delete_job_artifacts(job_id: str, settings=Depends(get_settings), store=Depends(get_store),
                         principal: Principal = Depends(require_key)):
    """Delete the job's result file, and a motion-target job's trained target (the job's record stays,
    for history and metrics)."""
    row = get_job_or_404(store, job_id, principal)
    if row["status"] not in FINAL:
        raise APIError(409, "not_finished", f"job {job_id} is {row['status']}; cancel it first")
    if row["result_path"]:
        storage = storage_for(settings)
        try:
            storage.delete(row["result_path"])
            storage.delete_prefix(target_folder(row["result_path"]).as_posix() + "/")
        except StorageUnavailable as exc:
            raise unavailable(exc) from None
        store.clear_result(job_id)
    return job_body(store.get_job(job_id))


@router.get("/v1/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request, store=Depends(get_store),
                     principal: Principal = Depends(require_key)):
    """Server-sent events: one ``job`` event per change of status or progress, until it ends.

    The stream also ends, cleanly, when the server is stopping; a client reconnects to the next one.
    """
    await run_in_threadpool(get_job_or_404, store, job_id, principal)
    stopping = request.app.state.stopping

    async def stream():
        last = None
        while not stopping.is_set() and not await request.is_disconnected():
            row = await run_in_threadpool(store.get_job, job_id)
            state = (row["status"], round(row["progress"] or 0, 3))
            if state != last:
                last = state
                yield f"event: job\ndata: {json.dumps(job_body(row))}\n\n"
            if row["status"] in FINAL:
                return
            await asyncio.sleep(0.25)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/v1/batches", status_code=202)
def create_batch(batch: BatchCreate, settings=Depends(get_settings), store=Depends(get_store),
                 principal: Principal = Depends(require_key)):
    """Queue many jobs in one call; all are checked before any is queued."""
    if len(batch.jobs) > settings.max_batch_jobs:
        raise APIError(400, "too_many_jobs", f"a batch holds at most {settings.max_batch_jobs} jobs")
    specs = []
    for i, job in enumerate(batch.jobs):
        try:
            specs.append(check_job(job, settings, store, principal))
        except APIError as exc:
            raise APIError(exc.status, exc.code, f"jobs[{i}]: {exc.message}") from None
    batch_id, _ = store.create_jobs(specs, settings.max_attempts, batch_metadata=batch.metadata, batch=True,
                                    owner=principal.owner)
    return JSONResponse(batch_body(store.get_batch(batch_id)), status_code=202,
                        headers={"Location": f"/v1/batches/{batch_id}"})


@router.get("/v1/batches/{batch_id}")
def get_batch(batch_id: str, store=Depends(get_store), principal: Principal = Depends(require_key)):
    row = store.get_batch(batch_id)
    if not principal.can_see(row):
        raise APIError(404, "not_found", f"no batch {batch_id}")
    return batch_body(row)


def batch_body(row):
    counts = row["counts"]
    total = sum(counts.values())
    done = sum(counts.get(s, 0) for s in FINAL)
    return {"id": row["id"], "object": "batch", "created_at": iso(row["created_at"]), "metadata": row["metadata"],
            "status": "completed" if done == total else "in_progress",
            "request_counts": {"total": total, **{status: counts.get(status, 0) for status in JobStatus}},
            "jobs_url": f"/v1/jobs?batch_id={row['id']}"}
