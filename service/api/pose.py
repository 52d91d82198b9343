"""The one-call path of pose transfer: ``POST /v1/pose-transfer`` with a person and a pose, get the PNG.

``image`` is a photo of the person; ``pose`` is the target pose, an OpenPose JSON file
(keypoints measured in the person's photo) or a second photo whose pose is taken. The
request becomes a job like any other (``service.api.one_call``): 200 with the PNG when it
ends within ``wait`` seconds, else 202 with the job. Every other form field is one of the
model's declared options (``seed``, and the model's own such as ``variant``, as ``GET
/v1/models`` lists them).
"""

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from service.api.deps import Principal, get_settings, get_store, require_key
from service.api.jobs import Inputs, JobCreate, check_model
from service.api.one_call import Uploads, answer_when_done, form_options, submit, wait_seconds

router = APIRouter(tags=["pose-transfer"], dependencies=[Depends(require_key)])

# Form fields of the request itself; any other field is an option of the model.
REQUEST_FIELDS = ("image", "pose", "model", "wait")


@router.post("/v1/pose-transfer", responses={200: {"content": {"image/png": {}}}, 202: {}})
async def pose_transfer(
    request: Request,
    image: UploadFile = File(..., description="photo of the person"),
    pose: UploadFile = File(..., description="target pose: OpenPose JSON keypoints, or a photo whose pose is taken"),
    model: str | None = Form(None, description="a pose-transfer model (GET /v1/models)"),
    wait: float | None = Form(None, description="seconds to wait for the image before answering 202"),
    settings=Depends(get_settings),
    store=Depends(get_store),
    principal: Principal = Depends(require_key),
):
    """One call, one image. Options go as further form fields (see ``GET /v1/models``)."""
    options = await form_options(request, REQUEST_FIELDS)
    # Checked before the uploads are stored: a bad option costs the client nothing to redo.
    model, options = await run_in_threadpool(check_model, model, "pose-transfer", options, settings)
    async with Uploads(settings, store, principal) as uploads:
        image_row = await uploads.save(image, "image")
        pose_row = await uploads.save(pose, "pose")
        spec = JobCreate(task="pose-transfer", model=model, inputs=Inputs(image=image_row["id"], pose=pose_row["id"]),
                         options=options)
        job = await submit(spec, settings, store, principal)
    return await answer_when_done(job, wait_seconds(wait, settings), settings, store)
