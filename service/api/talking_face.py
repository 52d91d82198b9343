"""The one-call path: ``POST /v1/talking-face`` with a photo and a voice clip, get the MP4.

The request becomes a job like any other and a worker runs it; this handler waits for
it up to ``wait`` seconds (``service.api.one_call``). Done in time: 200 with the MP4.
Not yet: 202 with the job, to follow at its ``Location``.

A ``video`` instead of the ``audio`` drives models that read lips (``accepts_video`` in
``GET /v1/models``: the face says what the person in the video says, with the video's
sound); for models driven by audio alone it is only the source of the voice. Every other
form field is one of the model's declared options (``paste_back``, ``face_index``,
``seed`` and the model's own, as ``GET /v1/models`` lists them).

``stream=true`` (models whose ``GET /v1/models`` entry says ``"stream": true``) answers at
once with the video as it is made: fragmented MP4 (``video/mp4``, H.264 + AAC, a fragment
every 0.5 s), playable while it downloads. The job is recorded as any other (its id in
``X-Job-Id``) and its result is the whole MP4 (``service.stream``).
"""

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from models import registry
from service.api.deps import Principal, get_settings, get_store, require_key
from service.api.errors import APIError
from service.api.jobs import Inputs, JobCreate, check_model
from service.api.one_call import (
    Uploads,
    answer_streamed,
    answer_when_done,
    check_streamable,
    form_options,
    submit,
    wait_seconds,
)

router = APIRouter(tags=["talking-face"], dependencies=[Depends(require_key)])

# Form fields of the request itself; any other field is an option of the model.
REQUEST_FIELDS = ("image", "audio", "video", "model", "wait", "stream")


@router.post("/v1/talking-face", responses={200: {"content": {"video/mp4": {}}}, 202: {}})
async def talking_face(
    request: Request,
    image: UploadFile = File(..., description="face photo"),
    audio: UploadFile | None = File(None, description="voice clip"),
    video: UploadFile | None = File(None, description="a driving video: models that read lips follow it, "
                                                       "other models use its sound"),
    model: str | None = Form(None),
    wait: float | None = Form(None, description="seconds to wait for the video before answering 202"),
    stream: bool = Form(False, description="send the video as fragmented MP4 while it is made"),
    settings=Depends(get_settings),
    store=Depends(get_store),
    principal: Principal = Depends(require_key),
):
    """One call, one video. Options go as further form fields (see ``GET /v1/models``)."""
    if audio is None and video is None:
        raise APIError(400, "invalid_input", "send an 'audio' (or 'video') file with the image")
    if audio is not None and video is not None:
        raise APIError(400, "invalid_input", "send an 'audio' or a 'video' file, not both")
    options = await form_options(request, REQUEST_FIELDS)
    # Checked before the uploads are stored: a bad option costs the client nothing to redo.
    model, options = await run_in_threadpool(check_model, model, "talking-face", options, settings)
    if stream:
        check_streamable(model, options, as_video=video is not None and registry.accepts_video(model))
    async with Uploads(settings, store, principal) as uploads:
        image_row = await uploads.save(image, "image")
        driving_row = await uploads.save(audio or video, "audio" if audio else "video")
        # A video drives the lips of models that read them; for the others it is a voice.
        as_video = (video is not None and driving_row["kind"] == "video"
                    and registry.accepts_video(model))
        inputs = Inputs(image=image_row["id"], **{"video" if as_video else "audio": driving_row["id"]})
        if stream:
            return await answer_streamed(JobCreate(model=model, inputs=inputs, options=options), settings, store,
                                         principal)
        job = await submit(JobCreate(model=model, inputs=inputs, options=options), settings, store, principal)
    return await answer_when_done(job, wait_seconds(wait, settings), settings, store)
