"""The one-call path of the image generators: ``POST /v1/images`` with JSON, get the images.

    {"model": "<an image generator>", "n": 8, "seed": 1, "condition": "a red bird", "options": {"levels": true}}

``condition`` is what the model draws, in the form it takes (``GET /v1/models`` lists its
``conditions``): a caption (a string), a class (an integer), a vector (a list of numbers,
or one list per image: a text embedding, InfoGAN's codes), or an object naming several
(``{"label": 3, "vector": [...]}``, ``{"file": "<id of an uploaded .npy>"}``). The request
becomes a job like any other (``service.api.one_call``): 200 with a PNG (a grid when ``n``
is more than one) or, with ``options.format = "zip"``, a zip of PNGs, when it ends within
``wait`` seconds; else 202 with the job. The same seed gives the same images.
"""

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from service.api.deps import Principal, get_settings, get_store, require_key
from service.api.errors import APIError
from service.api.files import save_array
from service.api.jobs import Inputs, JobCreate, Webhook, check_image_request, check_model
from service.api.one_call import Uploads, answer_when_done, submit, wait_seconds
from service.media import MAX_ARRAY_VALUES

router = APIRouter(tags=["images"], dependencies=[Depends(require_key)])

Vector = list[StrictFloat | StrictInt]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = Field(None, max_length=1000, description="a caption")
    label: StrictInt | None = Field(None, description="a class index")
    vector: Vector | list[Vector] | None = Field(None, description="numbers (d,), or one list per image (n, d)")
    file: StrictStr | None = Field(None, description="id of an uploaded NumPy .npy vector (POST /v1/files)")


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="an image-generation model (GET /v1/models)")
    n: StrictInt = Field(1, ge=1, description="how many images (at most TALKINGFACE_MAX_IMAGES)")
    seed: StrictInt | None = Field(None, ge=0, description="the same seed gives the same images; "
                                                           "one is drawn (and reported) when absent")
    condition: StrictStr | StrictInt | Vector | list[Vector] | Condition | None = Field(
        None, description="a caption, a class, a vector (or one per image), or an object naming several")
    options: dict[str, bool | int | float | str | None] = Field(
        default_factory=dict, description="the model's options (levels, format, and its own: GET /v1/models)")
    wait: float | None = Field(None, description="seconds to wait for the images before answering 202")
    webhook: Webhook | None = None


def split_condition(condition) -> Condition:
    """The request's ``condition`` in its object form."""
    if condition is None or isinstance(condition, Condition):
        return condition or Condition()
    if isinstance(condition, str):
        return Condition(text=condition)
    if isinstance(condition, int):
        return Condition(label=condition)
    return Condition(vector=condition)


@router.post("/v1/images", responses={200: {"content": {"image/png": {}, "application/zip": {}}}, 202: {}})
async def images(request: ImageRequest, settings=Depends(get_settings), store=Depends(get_store),
                 principal: Principal = Depends(require_key)):
    """One call: ``n`` images from a seed (and a condition)."""
    condition = split_condition(request.condition)
    if condition.vector is not None and condition.file is not None:
        raise APIError(400, "invalid_input", "condition: give a vector or a file, not both")
    options = {**request.options, "n": request.n}
    if request.seed is not None:
        options["seed"] = request.seed
    for kind in ("text", "label"):
        if getattr(condition, kind) is not None:
            options[kind] = getattr(condition, kind)
    # Checked before anything is stored: a bad request costs the client nothing to redo.
    model, options = await run_in_threadpool(check_model, request.model, "image-generation", options, settings)
    file_id = condition.file
    given = {"condition": "vector"} if condition.vector is not None or file_id else {}
    await run_in_threadpool(check_image_request, model, options, given, settings)
    if condition.vector is not None:
        rows = condition.vector if condition.vector and isinstance(condition.vector[0], list) else [condition.vector]
        if len({len(row) for row in rows}) != 1 or sum(len(row) for row in rows) > MAX_ARRAY_VALUES:
            raise APIError(422, "validation_error", "condition.vector: rows of one length, at most "
                                                    f"{MAX_ARRAY_VALUES} numbers in all")
        if not rows[0]:
            raise APIError(422, "validation_error", "condition.vector is empty")
    async with Uploads(settings, store, principal) as uploads:
        if condition.vector is not None:
            file_id = uploads.keep(await run_in_threadpool(save_array, condition.vector, settings, store,
                                                           owner=principal.owner))["id"]
        spec = JobCreate(task="image-generation", model=model, inputs=Inputs(condition=file_id), options=options,
                         webhook=request.webhook)
        job = await submit(spec, settings, store, principal)
    return await answer_when_done(job, wait_seconds(request.wait, settings), settings, store)
