"""Uploads: ``POST /v1/files`` checks a file by its content and keeps it for jobs to use.

A file belongs to the API key that uploaded it; for another key it does not exist (404).
"""

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, UploadFile
from fastapi.concurrency import run_in_threadpool

from models.errors import InvalidInput
from service import media, render
from service.api.deps import Principal, get_settings, get_store, require_key
from service.api.errors import RETRY_AFTER_SECONDS, APIError
from service.api.serialize import iso
from service.jobs.store import new_id
from service.storage import StorageUnavailable, storage_for

log = logging.getLogger("talkingface.api")
router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Depends(require_key)])
CHUNK = 1 << 20


def file_body(row):
    return {"id": row["id"], "object": "file", "kind": row["kind"], "bytes": row["bytes"], "sha256": row["sha256"],
            "filename": row["filename"], "content_type": row["content_type"], "created_at": iso(row["created_at"])}


def classify(path, settings):
    """'image', 'audio', 'video', 'pose' (OpenPose JSON) or 'array' (a NumPy .npy vector) by content;
    InvalidInput for anything else."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(media.NPY_MAGIC):
        media.read_array(path)          # numbers, (d,) or (n, d), within the cap
        return "array"
    if head.lstrip()[:1] in (b"{", b"["):
        render.read_pose(path)          # checked now: a job never meets a broken pose file
        return "pose"
    budget = media.decode_budget(settings)
    try:
        # Checked, not decoded: the pixels are the worker's to decode (bounded API memory).
        media.check_image(path, max_pixels=settings.max_image_pixels, admit=budget.admit)
        return "image"
    except media.ImageTooLarge:
        raise                           # an image, but too large: say so, not "unknown format"
    except InvalidInput:
        pass
    if media.sniff_container(head) is None:
        raise InvalidInput("the file is not an image, audio, video or pose this service reads "
                           "(JPEG, PNG, WebP, BMP; WAV, MP3, AAC, FLAC, OGG; MP4, MOV, MKV, WebM, AVI; "
                           "OpenPose JSON; NumPy .npy)")
    video = media.has_video_stream(path)
    try:
        with budget.admit(media.audio_check_bytes(settings.max_audio_seconds, 16000)):
            media.read_audio(path, sample_rate=16000, max_seconds=settings.max_audio_seconds)
    except InvalidInput as exc:
        if not video or "longer than" in exc.message:
            raise
    return "video" if video else "audio"


async def save_upload(upload: UploadFile, settings, store, field="file", owner=""):
    """Copy an upload to a local file within the size cap, check it, keep it in the storage and
    record it as ``owner``'s."""
    if upload is None or not upload.filename and upload.size in (None, 0):
        raise APIError(400, "invalid_input", f"the multipart field '{field}' is missing")
    storage = storage_for(settings)
    digest, size, kept = hashlib.sha256(), 0, None
    fd, tmp = tempfile.mkstemp(dir=storage.local_dir("files"), prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise APIError(413, "too_large", f"'{field}' is larger than {settings.max_upload_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise APIError(400, "invalid_input", f"'{field}' is empty")
        try:
            kind = await media.run_check(classify, tmp, settings)
        except InvalidInput as exc:
            # Messages name the file as the decoders saw it: the temporary path or its name.
            message = f"{field}: " + exc.message.replace(tmp, upload.filename or field).replace(
                os.path.basename(tmp), upload.filename or field)
            if isinstance(exc, media.ImageTooLarge):
                raise APIError(413, "too_large", message) from None
            if "longer than" in exc.message:        # a medium we read, over the duration cap
                raise APIError(422, "invalid_input", message) from None
            raise APIError(415, "unsupported_media", message) from None
        file_id = new_id("file")
        relative = f"files/{file_id}"
        # Moved into place, or uploaded to the bucket (in parts read from the file); shielded, so that a
        # client gone meanwhile cannot leave a kept file that no row records.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(storage.save, Path(tmp), relative)
        tmp, kept = None, relative      # removed below when its row cannot be written
        return store.add_file(kind, size, digest.hexdigest(), (upload.filename or "")[:255],
                              (upload.content_type or "")[:100], relative, file_id=file_id, owner=owner)
    except BaseException as exc:        # a refusal, a full disk or database: no file is left behind
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if kept:
            try:
                storage.delete(kept)
            except StorageUnavailable:  # the bucket is out of reach: the object stays, unrecorded
                pass
        if isinstance(exc, StorageUnavailable):
            raise unavailable(exc) from None
        raise


def unavailable(exc: StorageUnavailable) -> APIError:
    """503 for a bucket that cannot be used now (what it answered is logged, not sent): try again."""
    log.warning("storage unavailable: %s", exc.message)
    return APIError(503, "storage_unavailable", "the storage of uploads and results cannot be used now; try again",
                    {"Retry-After": str(RETRY_AFTER_SECONDS)})


def save_array(array, settings, store, filename="condition.npy", owner=""):
    """Keep a vector given in a request's JSON as an ``array`` file, as if it had been uploaded."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    data = buffer.getvalue()
    storage = storage_for(settings)
    file_id = new_id("file")
    relative = f"files/{file_id}"
    fd, tmp = tempfile.mkstemp(dir=storage.local_dir("files"), prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        storage.save(Path(tmp), relative)
    except (OSError, StorageUnavailable) as exc:    # a full disk: no partial file is left behind
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, StorageUnavailable):
            raise unavailable(exc) from None
        raise
    return store.add_file("array", len(data), hashlib.sha256(data).hexdigest(), filename, "application/x-npy",
                          relative, file_id=file_id, owner=owner)


@router.post("", status_code=201)
async def upload_file(file: UploadFile, settings=Depends(get_settings), store=Depends(get_store),
                      principal: Principal = Depends(require_key)):
    """Upload an image, audio, video, pose (OpenPose JSON) or vector (NumPy .npy) once; use its id in jobs."""
    return file_body(await save_upload(file, settings, store, owner=principal.owner))


def get_file_or_404(store, file_id, principal: Principal):
    """The file's row if ``principal`` may see it; else APIError 404, the same whether it exists or not."""
    row = store.get_file(file_id)
    if not principal.can_see(row):
        raise APIError(404, "not_found", f"no file {file_id}")
    return row


def remove_file(row, settings, store):
    """Delete a stored file: its bytes, then its row (marked deleted)."""
    # The bytes go first: on a full disk that frees the room the database needs to record it.
    if row["path"]:
        try:
            storage_for(settings).delete(row["path"])
        except StorageUnavailable as exc:
            raise unavailable(exc) from None
    store.delete_file(row["id"])


@router.get("/{file_id}")
def get_file(file_id: str, store=Depends(get_store), principal: Principal = Depends(require_key)):
    return file_body(get_file_or_404(store, file_id, principal))


@router.delete("/{file_id}")
def delete_file(file_id: str, settings=Depends(get_settings), store=Depends(get_store),
                principal: Principal = Depends(require_key)):
    remove_file(get_file_or_404(store, file_id, principal), settings, store)
    return {"id": file_id, "object": "file", "deleted": True}
