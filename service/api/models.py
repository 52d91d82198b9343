"""``GET /v1/models``: what the service can run, what each model takes (its declared
inputs and options, which the REST form, the job schema and the dashboard follow), and
whether its weights are there."""

from fastapi import APIRouter, Depends

from models import registry
from service.api.deps import get_settings, get_store, require_key
from service.render import TASKS

router = APIRouter(tags=["models"], dependencies=[Depends(require_key)])


@router.get("/v1/models")
def list_models(settings=Depends(get_settings), store=Depends(get_store)):
    workers = store.list_workers(settings.worker_timeout_seconds)
    data = []
    for name, spec in registry.REGISTRY.items():
        files = [{"name": f.name, "role": f.role, "found": path is not None, "optional": f.optional,
                  "source": f.source, "sha256": f.sha256, "licence": f.licence}
                 for f, path in registry.file_status(name, settings.weights_dir)]
        serving = [w for w in workers if name in (w["models"] or [])]
        kind, folder, missing = registry.weights_ready(name, weights_root=settings.weights_dir)
        pipeline = registry.pipeline_class(name)
        task = TASKS.get(spec.task)
        data.append({"id": name, "object": "model", "task": spec.task, "paper": spec.paper,
                     "inputs": {role: list(kinds) for role, kinds in task.inputs.items()} if task else {},
                     "result": task.media_type if task else None,
                     "accepts_video": pipeline.accepts_video,
                     # ``stream=true`` answers with the video as it is made (its default options),
                     # or with the options ``stream_options`` lists.
                     "stream": bool(pipeline.streams({})),
                     **({"stream_options": dict(pipeline.stream_options)}
                        if pipeline.can_stream and pipeline.stream_options else {}),
                     **({"conditions": list(pipeline.conditions()), "levels": bool(pipeline.levels),
                         "condition_required": bool(pipeline.condition_required)}
                        if spec.task == "image-generation" else {}),
                     "options": [option.describe() for option in pipeline.declared_options().values()],
                     "ready": not missing, "weights_in_use": {"kind": kind, "folder": str(folder)},
                     "weights": files, "device": settings.device,
                     "workers": [{"id": w["id"], "device": w["device"]} for w in serving]})
    return {"object": "list", "data": data}
