"""Motion transfer: train a target person from a video, then make them perform another video's motion.

    POST /v1/motion-targets   video of the target person   -> 202, a job that trains the target
    POST /v1/motion-transfer  source video + target id     -> 200 MP4 (or 202 with the job)

A target is the id of its training job; the job's result (``GET /v1/jobs/{id}/result``)
is a JSON summary of what was trained. Training takes minutes (the ``minutes`` option),
so ``/v1/motion-targets`` answers at once unless told to ``wait``. Both are jobs like any
other (``service.api.one_call``): progress, cancel, webhooks, batches through
``POST /v1/jobs`` with ``task`` "motion-target" / "motion-transfer". Every other form
field is one of the model's declared options (``GET /v1/models``).
"""

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from service.api.deps import Principal, get_settings, get_store, require_key
from service.api.jobs import Inputs, JobCreate, check_model
from service.api.one_call import Uploads, answer_when_done, form_options, submit, wait_seconds

router = APIRouter(tags=["motion-transfer"], dependencies=[Depends(require_key)])


async def _submit(task, request, video, model, wait, settings, store, principal, default_wait):
    # Form fields of the request itself; any other field is an option of the model.
    options = await form_options(request, ("video", "model", "wait"))
    # Checked before the upload is stored: a bad option costs the client nothing to redo.
    model, options = await run_in_threadpool(check_model, model, task, options, settings)
    async with Uploads(settings, store, principal) as uploads:
        video_row = await uploads.save(video, "video")
        spec = JobCreate(task=task, model=model, inputs=Inputs(video=video_row["id"]), options=options)
        job = await submit(spec, settings, store, principal)
    return await answer_when_done(job, wait_seconds(default_wait if wait is None else wait, settings),
                                  settings, store)


@router.post("/v1/motion-targets", status_code=202, responses={200: {"content": {"application/json": {}}}})
async def create_target(
    request: Request,
    video: UploadFile = File(..., description="a video of the target person moving (their whole body in view)"),
    model: str | None = Form(None, description="a motion-transfer model (GET /v1/models)"),
    wait: float | None = Form(None, description="seconds to wait for the training (default 0: answer at once)"),
    settings=Depends(get_settings),
    store=Depends(get_store),
    principal: Principal = Depends(require_key),
):
    """Train a target person; the job's id is the target's id. Options: ``minutes`` and the model's own."""
    return await _submit("motion-target", request, video, model, wait, settings, store, principal, default_wait=0.0)


@router.post("/v1/motion-transfer", responses={200: {"content": {"video/mp4": {}}}, 202: {}})
async def motion_transfer(
    request: Request,
    video: UploadFile = File(..., description="the source video: a dancer whose motion the target performs"),
    model: str | None = Form(None, description="a motion-transfer model (GET /v1/models)"),
    wait: float | None = Form(None, description="seconds to wait for the video before answering 202"),
    settings=Depends(get_settings),
    store=Depends(get_store),
    principal: Principal = Depends(require_key),
):
    """One call, one video: the ``target`` form field names the target (the model's demo target when absent)."""
    return await _submit("motion-transfer", request, video, model, wait, settings, store, principal, default_wait=None)
