"""Where uploads and results are kept: a folder (the default) or an S3-compatible bucket.

Both backends take the keys the job store records, relative paths such as ``files/<id>``,
``results/<job>.mp4`` and a motion target's ``results/<job>.target/...``:

- ``folder`` (``TALKINGFACE_STORAGE=folder``): the files under ``data_dir``, as they always
  were. Machines that mount one shared folder there (NFS, SMB) share it.
- ``s3``: objects in ``TALKINGFACE_S3_BUCKET`` under ``TALKINGFACE_S3_PREFIX``, on AWS or on
  any S3-compatible store (``TALKINGFACE_S3_ENDPOINT_URL``: MinIO, Ceph, R2...), through
  boto3. Credentials come from AWS's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``~/.aws``, an instance or pod role), never from our settings.

Bytes are streamed both ways, never held whole in memory: an upload goes in parts read from
its file (boto3's ``upload_file``), a job's inputs are downloaded to files of a staging folder
under ``data_dir`` and removed after the job, and a result is served to clients chunk by
chunk from the object's body (HTTP ranges and HEAD answered as for a local file).
"""

import contextlib
import datetime
import email.utils
import errno
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import anyio
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response, StreamingResponse

log = logging.getLogger("talkingface.storage")

CHUNK = 1 << 20                 # bytes sent to a client at a time
STAGING_HOURS = 24             # what is left in the staging folder longer than this is a crashed process's
PART = 8 << 20                  # multipart upload part size; s3transfer reads each from the file as it is sent


class StorageUnavailable(Exception):
    """The bucket cannot be used now (out of reach, refused, credentials missing); worth trying again later."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Storage:
    """Uploads and results by key; ``FolderStorage`` and ``S3Storage`` are the two kinds.

    Args:
        data_dir (`Path`): the service's data dir; the staging folder for files on their way in or
            out (``local_dir``, ``writing``, ``open_local``) is under it.
    """

    kind = ""

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)

    # -- files on this machine on their way in or out ----------------------------------
    def local_dir(self, prefix: str) -> Path:
        """A local folder (made if missing) where a file for a key under ``prefix`` is written before
        ``save``: on the same filesystem as where it ends up, when that is a folder."""
        raise NotImplementedError

    @contextlib.contextmanager
    def writing(self, key: str):
        """A local path to write the file that ``save(path, key)`` then keeps; what is left there
        when the block ends is removed (except the folder backend's own file)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def open_local(self, key: str):
        """The file of ``key`` as a local path while the block runs. FileNotFoundError when there is none."""
        raise NotImplementedError

    @contextlib.contextmanager
    def open_local_tree(self, prefix: str):
        """The files under ``prefix/`` as a local folder while the block runs (a motion target).
        FileNotFoundError when there is none."""
        raise NotImplementedError

    # -- keeping and removing ---------------------------------------------------------
    def save(self, local: Path, key: str) -> None:
        """Keep the file ``local`` as ``key``; the local file is moved or uploaded and then removed."""
        raise NotImplementedError

    def save_tree(self, local: Path, prefix: str) -> None:
        """Keep every file under the folder ``local`` as ``prefix/<its relative path>``; the folder is removed."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        """The file's size in bytes, None when there is no such key."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens when it is already gone."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key starting with ``prefix`` (``results/<job>.target/``: a motion target)."""
        raise NotImplementedError

    # -- serving and checking ---------------------------------------------------------------
    def response(self, key: str, media_type: str, filename: str, headers=None) -> Response:
        """A response streaming the file of ``key`` (``Range`` requests and HEAD answered). The folder
        backend raises FileNotFoundError when it is missing; the bucket's response answers 410 then."""
        raise NotImplementedError

    def check(self) -> str | None:
        """None when uploads and results can be kept now; else what is wrong, for ``/readyz``."""
        raise NotImplementedError

    def purge_staging(self, older_than: float) -> None:
        """Remove what crashed processes left in the staging folder before ``older_than`` (a Unix time),
        and never anything younger than a day: a job in hand may be using it."""
        older_than = min(older_than, time.time() - STAGING_HOURS * 3600)
        staging = self.data_dir / "staging"
        for entry in staging.glob("*") if staging.is_dir() else ():
            with contextlib.suppress(OSError):
                if entry.lstat().st_mtime < older_than:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    @contextlib.contextmanager
    def _staging(self):
        """A fresh folder under ``data_dir/staging``, removed with what is in it when the block ends."""
        root = self.data_dir / "staging"
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class FolderStorage(Storage):
    """The files under ``data_dir`` by their keys, as the service always kept them."""

    kind = "folder"

    def path(self, key: str) -> Path:
        return self.data_dir / key

    def local_dir(self, prefix):
        folder = self.path(prefix)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextlib.contextmanager
    def writing(self, key):
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path

    @contextlib.contextmanager
    def open_local(self, key):
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such file", key)
        yield path

    @contextlib.contextmanager
    def open_local_tree(self, prefix):
        path = self.path(prefix)
        if not path.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such folder", prefix)
        yield path

    def save(self, local, key):
        self._move(Path(local), self.path(key))

    def save_tree(self, local, prefix):
        self._move(Path(local), self.path(prefix))

    @staticmethod
    def _move(source: Path, target: Path):
        if source.resolve() == target.resolve():        # written in its place already (``writing``)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.move(source, target)                 # another filesystem: copied, then removed

    def size(self, key):
        path = self.path(key)
        return path.stat().st_size if path.is_file() else None

    def delete(self, key):
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix):
        path = self.path(prefix)
        if prefix.endswith("/"):
            shutil.rmtree(path, ignore_errors=True)
            return
        for entry in path.parent.glob(glob.escape(path.name) + "*"):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def response(self, key, media_type, filename, headers=None):
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such file", key)
        return FileResponse(path, media_type=media_type, filename=filename, content_disposition_type="inline",
                            headers=headers)

    def check(self):
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.data_dir, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"not writable: {self.data_dir}: {exc.strerror or type(exc).__name__}"
        return None


class S3Storage(Storage):
    """Objects of one bucket of AWS S3 or an S3-compatible store, under a key prefix.

    Args:
        data_dir (`Path`): where files are staged on this machine (``data_dir/staging``).
        bucket (`str`): the bucket; it must exist.
        prefix (`str`, *optional*, defaults to ""): a folder of the bucket holding every key ("talkingface").
        endpoint_url (`str`, *optional*): an S3-compatible store's URL; None for AWS.
        region (`str`, *optional*): None: AWS's chain (``AWS_DEFAULT_REGION``, ``~/.aws/config``).
    """

    kind = "s3"

    def __init__(self, data_dir, bucket, prefix="", endpoint_url=None, region=None):
        super().__init__(data_dir)
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None,
            config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 4, "mode": "standard"},
                          # Checksums only where the API requires them: S3-compatible stores (MinIO, Ceph,
                          # R2...) do not all take the newer default ones.
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))
        # Parts are read from the file as they are sent: at most max_concurrency requests in flight.
        self.transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=4)

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- errors ----------------------------------------------------------------------
    def _missing(self, exc) -> bool:
        from botocore.exceptions import ClientError

        # A missing bucket (NoSuchBucket) is no missing file: the store cannot be used.
        return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
            "404", "NoSuchKey", "NotFound")

    def _unavailable(self, exc) -> StorageUnavailable:
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError) and isinstance(exc.__context__, ClientError):
            exc = exc.__context__           # boto3's transfers wrap the error the store answered
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            what = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
        else:
            what = type(exc).__name__       # botocore's own text may name the endpoint and no more
        return StorageUnavailable(f"the bucket {self.bucket} cannot be used now ({what})")

    @contextlib.contextmanager
    def _calling(self):
        """botocore's failures as StorageUnavailable; a missing object as FileNotFoundError."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError, S3UploadFailedError

        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error, RetriesExceededError, S3DownloadFailedError,
                S3UploadFailedError) as exc:
            if self._missing(exc):
                raise FileNotFoundError(errno.ENOENT, "no such object", self.bucket) from None
            raise self._unavailable(exc) from exc

    # -- files on this machine ---------------------------------------------------------
    def local_dir(self, prefix):
        folder = self.data_dir / "staging"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextlib.contextmanager
    def writing(self, key):
        with self._staging() as folder:
            yield folder / Path(key).name

    @contextlib.contextmanager
    def open_local(self, key):
        with self._staging() as folder:
            path = folder / Path(key).name
            with self._calling():
                # Written to a temporary file in parts, renamed when whole.
                self.client.download_file(self.bucket, self.object_key(key), str(path), Config=self.transfer)
            yield path

    @contextlib.contextmanager
    def open_local_tree(self, prefix):
        prefix = prefix.rstrip("/") + "/"
        with self._staging() as folder:
            root = folder / Path(prefix).name
            root.mkdir()
            found = 0
            with self._calling():
                for key in self._keys(prefix):
                    relative = key[len(self.object_key(prefix)):]
                    target = (root / relative).resolve()
                    if not relative or not target.is_relative_to(root.resolve()):
                        continue                # a "folder" marker, or a key that would land outside
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(self.bucket, key, str(target), Config=self.transfer)
                    found += 1
            if not found:
                raise FileNotFoundError(errno.ENOENT, "no such folder", prefix)
            yield root

    # -- keeping and removing ---------------------------------------------------------
    def save(self, local, key):
        with self._calling():
            # A file over PART bytes goes in parts, each read from the file while it is sent.
            self.client.upload_file(str(local), self.bucket, self.object_key(key), Config=self.transfer)
        Path(local).unlink(missing_ok=True)

    def save_tree(self, local, prefix):
        local = Path(local)
        with self._calling():
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
                self.client.upload_file(str(path), self.bucket, self.object_key(key), Config=self.transfer)
        shutil.rmtree(local, ignore_errors=True)

    def head(self, key) -> dict | None:
        """The object's metadata (``ContentLength``, ``ETag``, ``LastModified``), None when there is none."""
        try:
            with self._calling():
                return self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except FileNotFoundError:
            return None

    def size(self, key):
        head = self.head(key)
        return None if head is None else head["ContentLength"]

    def delete(self, key):
        with self._calling():
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def _keys(self, prefix):
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=self.object_key(prefix))
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"]

    def delete_prefix(self, prefix):
        with self._calling():
            batch = []
            for key in self._keys(prefix):
                batch.append({"Key": key})
                if len(batch) == 1000:              # the most one DeleteObjects call takes
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                    batch = []
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def get(self, key, first=None, last=None):
        """The object's streaming body, from byte ``first`` to ``last`` (inclusive) when given."""
        extra = {} if first is None else {"Range": f"bytes={first}-{last}"}
        with self._calling():
            return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key), **extra)["Body"]

    # -- serving and checking ---------------------------------------------------------------
    def response(self, key, media_type, filename, headers=None):
        return ObjectResponse(self, key, media_type, filename, headers)

    def check(self):
        try:
            with self._calling():
                self.client.head_bucket(Bucket=self.bucket)
        except FileNotFoundError:
            return f"no bucket {self.bucket}"
        except StorageUnavailable as exc:
            return f"unreachable: {exc.message}"
        return None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range (first, last byte, inclusive) of a ``Range: bytes=...`` header; None to send the
    whole object (no header, several ranges, or one that does not parse: RFC 9110 lets a server ignore
    those). ValueError when the range starts past the end."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash or not (first or last) or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:                                   # bytes=-N: the last N bytes
        if int(last) == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - int(last)), size - 1
    if int(first) >= size:
        raise ValueError("the range starts past the end")
    end = min(int(last), size - 1) if last else size - 1
    if end < int(first):
        return None
    return int(first), end


class ObjectResponse(Response):
    """An object of the bucket sent in chunks, as ``FileResponse`` sends a file: one byte range
    (206) when asked for, 416 for one past the end, headers alone for HEAD; 410 when it is gone."""

    def __init__(self, storage: S3Storage, key: str, media_type: str, filename: str, headers=None):
        self.storage, self.key, self.media_type, self.filename = storage, key, media_type, filename
        self.extra = dict(headers or {})
        self.status_code, self.background = 200, None

    async def __call__(self, scope, receive, send):
        from service.api.errors import RETRY_AFTER_SECONDS, error_response

        try:
            head = await anyio.to_thread.run_sync(self.storage.head, self.key)
        except StorageUnavailable as exc:
            log.warning("storage unavailable: %s", exc.message)
            busy = error_response(503, "storage_unavailable", "the storage of uploads and results cannot be "
                                  "used now; try again", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            return await busy(scope, receive, send)
        if head is None:
            return await error_response(410, "gone", "the result was deleted")(scope, receive, send)
        size = head["ContentLength"]
        modified = head.get("LastModified")
        if modified is not None:
            modified = email.utils.format_datetime(modified.astimezone(datetime.timezone.utc), usegmt=True)
        headers = {"content-type": self.media_type, "accept-ranges": "bytes",
                   "content-disposition": f'inline; filename="{self.filename}"'}
        if head.get("ETag"):
            headers["etag"] = head["ETag"]
        if modified:
            headers["last-modified"] = modified
        headers.update(self.extra)
        asked = Headers(scope=scope)
        if_range = asked.get("if-range")
        span = None
        if if_range is None or if_range in (head.get("ETag"), modified):
            try:
                span = byte_range(asked.get("range"), size)
            except ValueError:
                answer = Response(status_code=416, headers={"content-range": f"bytes */{size}"})
                return await answer(scope, receive, send)
        status, length = 200, size
        if span is not None:
            status, length = 206, span[1] - span[0] + 1
            headers["content-range"] = f"bytes {span[0]}-{span[1]}/{size}"
        headers["content-length"] = str(length)
        if scope["method"].upper() == "HEAD" or length == 0:
            return await Response(status_code=status, headers=headers)(scope, receive, send)
        body = await anyio.to_thread.run_sync(self.storage.get, self.key, *(span or (None, None)))

        async def chunks():
            while chunk := await anyio.to_thread.run_sync(body.read, CHUNK):
                yield chunk

        try:
            await StreamingResponse(chunks(), status_code=status, headers=headers)(scope, receive, send)
        finally:
            body.close()                # a client gone mid-way: the connection to the bucket is let go


_cache: dict = {}
_cache_lock = threading.Lock()


def storage_for(settings) -> Storage:
    """The storage ``settings`` choose, made once per process and kept (its S3 client is thread-safe)."""
    key = (settings.storage, str(Path(settings.data_dir).resolve()), settings.s3_bucket, settings.s3_prefix,
           settings.s3_endpoint_url, settings.s3_region)
    with _cache_lock:
        if key not in _cache:
            if settings.storage == "s3":
                _cache[key] = S3Storage(settings.data_dir, settings.s3_bucket, settings.s3_prefix,
                                        settings.s3_endpoint_url, settings.s3_region)
                log.info("uploads and results in the bucket %s%s", settings.s3_bucket,
                         f" under {settings.s3_prefix.strip('/')}/" if settings.s3_prefix.strip("/") else "")
            else:
                _cache[key] = FolderStorage(settings.data_dir)
        return _cache[key]
