"""The one-call path: ``POST /v1/talking-face`` with a photo and a voice clip, get the MP4.

The request becomes a job like any other and a worker runs it; this handler waits for
it up to ``wait`` seconds. Done in time: 200 with the MP4. Not yet: 202 with the job,
to follow at its ``Location``.

A ``video`` instead of the ``audio`` drives models that read lips (``davs``: the face
says what the person in the video says, with the video's sound); for models driven by
audio alone it is only the source of the voice.
"""

import asyncio
import time

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from models import registry
from service.api.deps import get_settings, get_store, require_key
from service.api.errors import APIError
from service.api.files import save_upload
from service.api.jobs import Inputs, JobCreate, Options, check_job
from service.api.serialize import job_body
from service.jobs.store import FINAL

router = APIRouter(tags=["talking-face"], dependencies=[Depends(require_key)])
# Job errors that are the caller's to fix, with the status they answer.
CLIENT_ERRORS = {"invalid_input": 422, "no_face": 422, "canceled": 409, "weights_missing": 503}


@router.post("/v1/talking-face", responses={200: {"content": {"video/mp4": {}}}, 202: {}})
async def talking_face(
    image: UploadFile = File(..., description="face photo"),
    audio: UploadFile | None = File(None, description="voice clip"),
    video: UploadFile | None = File(None, description="a driving video: davs follows its lips, "
                                                       "other models its sound"),
    model: str | None = Form(None),
    paste_back: bool = Form(False),
    face_index: int = Form(0),
    seed: int | None = Form(None),
    finetune_steps: int | None = Form(None, description="davs: test-time fine-tuning steps (0: off)"),
    wait: float | None = Form(None, description="seconds to wait for the video before answering 202"),
    settings=Depends(get_settings),
    store=Depends(get_store),
):
    if audio is None and video is None:
        raise APIError(400, "invalid_input", "send an 'audio' (or 'video') file with the image")
    if audio is not None and video is not None:
        raise APIError(400, "invalid_input", "send an 'audio' or a 'video' file, not both")
    wait = settings.default_wait_seconds if wait is None else max(0.0, min(wait, settings.max_wait_seconds))
    try:
        options = Options(paste_back=paste_back, face_index=face_index, seed=seed, finetune_steps=finetune_steps)
    except ValueError as exc:
        raise APIError(422, "validation_error", str(exc).splitlines()[-1]) from None
    image_row = await save_upload(image, settings, store, "image")
    driving_row = await save_upload(audio or video, settings, store, "audio" if audio else "video")
    # A video drives the lips of models that read them; for the others it is a voice.
    as_video = (video is not None and driving_row["kind"] == "video"
                and await run_in_threadpool(_accepts_video, model or settings.default_model))
    inputs = Inputs(image=image_row["id"], **{"video" if as_video else "audio": driving_row["id"]})
    spec = JobCreate(model=model, inputs=inputs, options=options)
    spec = await run_in_threadpool(check_job, spec, settings, store)
    _, [row] = await run_in_threadpool(store.create_jobs, [spec], settings.max_attempts)

    deadline = time.monotonic() + wait
    while row["status"] not in FINAL and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        row = await run_in_threadpool(store.get_job, row["id"])
    location = {"Location": f"/v1/jobs/{row['id']}"}
    if row["status"] == "succeeded":
        return FileResponse(settings.data_dir / row["result_path"], media_type="video/mp4",
                            filename=f"{row['id']}.mp4", content_disposition_type="inline",
                            headers=location | {"X-Job-Id": row["id"]})
    if row["status"] in FINAL:
        code = row["error_code"] or "failed"
        return JSONResponse({"error": {"code": code, "message": row["error_message"] or code},
                             "job": job_body(row)}, status_code=CLIENT_ERRORS.get(code, 500), headers=location)
    return JSONResponse(job_body(row), status_code=202, headers=location)


def _accepts_video(model):
    try:
        return registry.accepts_video(model)
    except Exception:       # an unknown model: check_job names it
        return False
