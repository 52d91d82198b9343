"""Uploads and results in an S3-compatible bucket (``TALKINGFACE_STORAGE=s3``), against a real
S3 server in this process: moto's ``ThreadedMotoServer`` on loopback, spoken to by boto3
through its endpoint URL, as a MinIO or Ceph would be. Nothing leaves the machine.

The folder backend (the default) is what the rest of the suite runs on; the interface's
contract is checked here on both.
"""

import dataclasses
import io
import itertools
import time
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer
from PIL import Image
from pydantic import ValidationError

from service import cli, render
from service.app import create_app, purge_expired
from service.jobs.worker import Worker
from service.settings import Settings
from service.storage import FolderStorage, S3Storage, StorageUnavailable, byte_range, storage_for
from tests.test_api import FACE, assert_error, make_settings, serving, upload, wait_for, wav_bytes
from tests.test_e2e import Server
from tests.test_upload_memory import memory_kib

PREFIX = "tenant/a"
BIG_UPLOAD_GROWTH_BOUND = 30 << 20      # the 60 MB upload held whole would take at least 60 MB
_buckets = itertools.count()


class S3:
    """The server's endpoint and a client of it, for the tests to look into the bucket."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def bucket(self):
        name = f"talkingface-test-{next(_buckets)}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket):
        return sorted(o["Key"] for o in self.client.list_objects_v2(Bucket=bucket).get("Contents", ()))

    def read(self, bucket, key):
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server on a free loopback port, with made-up credentials in AWS's environment variables
    (and no config files or instance metadata to find others)."""
    with pytest.MonkeyPatch.context() as env:
        none = tmp_path_factory.mktemp("aws") / "none"
        for name, value in {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(none),
                            "AWS_SHARED_CREDENTIALS_FILE": str(none), "AWS_EC2_METADATA_DISABLED": "true"}.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield S3(f"http://{host}:{port}")
        finally:
            server.stop()


def s3_settings(tmp_path, weights, s3, bucket, **extra):
    return make_settings(tmp_path, weights, storage="s3", s3_bucket=bucket, s3_prefix=PREFIX,
                         s3_endpoint_url=s3.endpoint, **extra)


def local_files(settings):
    """The files of uploads and results under the data dir, and those on their way in or out."""
    return sorted(p.relative_to(settings.data_dir).as_posix() for folder in ("files", "results", "staging")
                  for p in (settings.data_dir / folder).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def served(tmp_path_factory, seeded_project_dir, s3):
    """(client, settings, bucket) of an app on a bucket, with one worker thread."""
    bucket = s3.bucket()
    settings = s3_settings(tmp_path_factory.mktemp("s3api"), seeded_project_dir, s3, bucket)
    with serving(settings, Worker(settings)) as client:
        yield client, settings, bucket


# -- the interface, on both backends ---------------------------------------------------------
@pytest.fixture(params=["folder", "s3"])
def storage(request, tmp_path):
    if request.param == "folder":
        return FolderStorage(tmp_path / "data")
    s3 = request.getfixturevalue("s3")
    return S3Storage(tmp_path / "data", s3.bucket(), PREFIX, s3.endpoint, "us-east-1")


def test_storage_keeps_fetches_and_removes_files_and_folders(storage, tmp_path):
    source = storage.local_dir("files") / "upload.tmp"
    source.write_bytes(b"some bytes")
    storage.save(source, "files/file_1")
    assert not source.exists()                                  # moved or uploaded, never left behind
    assert storage.exists("files/file_1") and storage.size("files/file_1") == 10
    assert storage.size("files/file_2") is None and not storage.exists("files/file_2")
    with storage.open_local("files/file_1") as path:
        assert path.read_bytes() == b"some bytes"
    with pytest.raises(FileNotFoundError):
        with storage.open_local("files/file_2"):
            pass

    # A result written locally, then kept, with a motion target's folder beside it.
    with storage.writing("results/job_1.json") as path:
        path.write_text("{}")
        trained = path.with_suffix(".target")
        (trained / "net").mkdir(parents=True)
        (trained / "net" / "model.safetensors").write_bytes(b"weights")
        (trained / "config.json").write_text("{}")
        storage.save_tree(trained, "results/job_1.target")
        storage.save(path, "results/job_1.json")
    with storage.open_local_tree("results/job_1.target") as folder:
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
            "config.json", "net/model.safetensors"]
        assert (folder / "net" / "model.safetensors").read_bytes() == b"weights"
    assert storage.size("results/job_1.json") == 2

    storage.delete_prefix("results/job_1.target/")
    with pytest.raises(FileNotFoundError):
        with storage.open_local_tree("results/job_1.target"):
            pass
    assert storage.exists("results/job_1.json")                 # the folder's prefix only
    storage.delete_prefix("results/job_1.")
    storage.delete("files/file_1")
    storage.delete("files/file_1")                              # gone already: nothing happens
    assert not storage.exists("results/job_1.json") and not storage.exists("files/file_1")
    assert storage.check() is None
    # Nothing is left in the staging folder by the files fetched and written above.
    assert not [p for p in (storage.data_dir / "staging").rglob("*") if p.is_file()]


def test_byte_ranges_parse_as_http_says():
    assert byte_range(None, 100) is None
    assert byte_range("bytes=0-9", 100) == (0, 9)
    assert byte_range("bytes=90-", 100) == (90, 99)
    assert byte_range("bytes=90-500", 100) == (90, 99)
    assert byte_range("bytes=-5", 100) == (95, 99)
    assert byte_range("bytes=-500", 100) == (0, 99)
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=a-b", "bytes=5-2", "bytes=-", "bytes"):
        assert byte_range(ignored, 100) is None, ignored
    for unsatisfiable in ("bytes=100-", "bytes=-0"):
        with pytest.raises(ValueError):
            byte_range(unsatisfiable, 100)


def test_the_worker_keeps_and_fetches_a_motion_target_folder_in_the_bucket(tmp_path, s3, monkeypatch):
    """A motion-target job's trained folder goes to the bucket beside its summary; a motion-transfer
    job gets it back as a local folder for its length; a job handed back loses both. The models are
    stand-ins: this is the worker's part (the training itself is tests/test_edn_pipeline.py's)."""
    bucket = s3.bucket()
    settings = s3_settings(tmp_path, None, s3, bucket)
    s3.client.put_object(Bucket=bucket, Key=f"{PREFIX}/files/file_video", Body=b"a video")
    worker = Worker(settings, models=["edn"])
    monkeypatch.setattr(worker, "pipeline", lambda model: object())
    monkeypatch.setattr(worker.store, "get_file", lambda file_id: {"path": f"files/{file_id}"})
    monkeypatch.setattr(worker.store, "get_job", lambda job_id: {"task": "motion-target",
                                                                 "result_path": f"results/{job_id}.json"})
    seen = {}

    def train(pipe, video, output, **_):
        seen["video"] = video
        folder = render.target_folder(output)
        (folder / "generator").mkdir(parents=True)
        (folder / "generator" / "model.safetensors").write_bytes(b"trained")
        output.write_text('{"object": "motion_target"}')
        return render.Rendered(frames=0, seconds=0.0, generated_at=time.time(), info={})

    def transfer(pipe, video, output, options=None, **_):
        target = Path(options["target"])
        seen["target"] = (target, (target / "generator" / "model.safetensors").read_bytes())
        output.write_bytes(b"a moved video")
        return render.Rendered(frames=1, seconds=0.04, generated_at=time.time(), info={})

    def read(pipe, files, options, limits):
        assert Path(files["video"]).read_bytes() == b"a video"  # fetched from the bucket
        return Path(files["video"])

    monkeypatch.setitem(render.TASKS, "motion-target",
                        dataclasses.replace(render.TASKS["motion-target"], read=read, render=train))
    monkeypatch.setitem(render.TASKS, "motion-transfer",
                        dataclasses.replace(render.TASKS["motion-transfer"], read=read, render=transfer))

    trained = worker._generate({"id": "job_target", "task": "motion-target", "model": "edn", "options": {},
                                "inputs": {"video": "file_video"}}, progress=None)
    assert trained["result_path"] == "results/job_target.json" and trained["result_bytes"] == 27
    assert s3.keys(bucket) == [f"{PREFIX}/files/file_video", f"{PREFIX}/results/job_target.json",
                               f"{PREFIX}/results/job_target.target/generator/model.safetensors"]
    moved = worker._generate({"id": "job_moved", "task": "motion-transfer", "model": "edn",
                              "options": {"target": "job_target"}, "inputs": {"video": "file_video"}}, progress=None)
    assert s3.read(bucket, f"{PREFIX}/{moved['result_path']}") == b"a moved video"
    folder, weights = seen["target"]
    assert weights == b"trained" and folder.is_relative_to(settings.data_dir / "staging")
    assert not folder.exists() and not seen["video"].exists()   # fetched for the job, removed after it
    assert local_files(settings) == []

    worker._hand_back_on_storage_failure({"id": "job_target"}, OSError("a full disk"))
    assert s3.keys(bucket) == [f"{PREFIX}/files/file_video", f"{PREFIX}/results/job_moved.mp4"]


# -- the service on a bucket -------------------------------------------------------------------
def test_uploads_go_to_the_bucket_and_a_job_reads_and_writes_it(served, s3):
    client, settings, bucket = served
    image, audio = upload(client, FACE, "face.jpg"), upload(client, wav_bytes(0.5), "a.wav")
    assert s3.keys(bucket) == sorted([f"{PREFIX}/files/{image['id']}", f"{PREFIX}/files/{audio['id']}"])
    assert s3.read(bucket, f"{PREFIX}/files/{image['id']}") == FACE
    assert local_files(settings) == []                          # nothing kept in the data dir

    job = client.post("/v1/jobs", json={"inputs": {"image": image["id"], "audio": audio["id"]}}).json()
    job = wait_for(client, job["id"])
    assert job["status"] == "succeeded", job
    key = f"{PREFIX}/results/{job['id']}.mp4"
    assert key in s3.keys(bucket)
    result = s3.read(bucket, key)
    assert result[4:8] == b"ftyp" and len(result) == job["result_bytes"]
    assert local_files(settings) == []                          # the inputs fetched for it and the result: gone

    r = client.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 200 and r.content == result
    assert int(r.headers["content-length"]) == len(result) and r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes" and r.headers["etag"]

    r = client.get(f"/v1/jobs/{job['id']}/result", headers={"Range": "bytes=100-1099"})
    assert r.status_code == 206 and r.content == result[100:1100]
    assert r.headers["content-range"] == f"bytes 100-1099/{len(result)}" and r.headers["content-length"] == "1000"
    r = client.get(f"/v1/jobs/{job['id']}/result", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == result[-10:]
    r = client.get(f"/v1/jobs/{job['id']}/result", headers={"Range": f"bytes={len(result)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(result)}"
    # If-Range naming another version: the whole file.
    r = client.get(f"/v1/jobs/{job['id']}/result", headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == result
    r = client.head(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) == len(result)

    # The one call answers with the result from the bucket too; once the object is gone, 410.
    r = client.post("/v1/talking-face", data={"wait": "60"},
                    files={"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(0.5))})
    assert r.status_code == 200, r.text
    other = f"{PREFIX}/results/{r.headers['x-job-id']}.mp4"
    assert r.content == s3.read(bucket, other)
    s3.client.delete_object(Bucket=bucket, Key=other)          # deleted behind the service's back
    assert_error(client.get(f"/v1/jobs/{r.headers['x-job-id']}/result"), 410, "gone")

    ready = client.get("/readyz").json()
    assert ready["checks"]["storage"] == "ok (s3)", ready

    # DELETE removes the objects; the result is then gone.
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200
    assert key not in s3.keys(bucket)
    assert_error(client.get(f"/v1/jobs/{job['id']}/result"), 410, "gone")
    assert client.delete(f"/v1/files/{image['id']}").json()["deleted"] is True
    assert f"{PREFIX}/files/{image['id']}" not in s3.keys(bucket)


def test_retention_purges_the_bucket(served, s3):
    client, settings, bucket = served
    upload(client, FACE, "face.jpg")
    job = client.post("/v1/jobs", json={"task": "image-generation", "model": "dcgan", "inputs": {}}).json()
    assert wait_for(client, job["id"])["status"] == "succeeded"
    assert f"{PREFIX}/results/{job['id']}.png" in s3.keys(bucket)
    store = client.app.state.store
    saved = settings.retention_hours
    try:
        settings.retention_hours = -1                           # everything is older than "now + 1 h"
        assert purge_expired(store, settings) >= 2              # the image and the result at least
    finally:
        settings.retention_hours = saved
    assert s3.keys(bucket) == []
    assert store.storage_bytes() == (0, 0)


def test_a_missing_bucket_makes_readyz_503_and_uploads_503(tmp_path, seeded_project_dir, s3):
    settings = s3_settings(tmp_path, seeded_project_dir, s3, "no-such-bucket-here")
    assert "no bucket no-such-bucket-here" in storage_for(settings).check()
    with TestClient(create_app(settings)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "no bucket" in r.json()["checks"]["storage"]
        r = client.post("/v1/files", files={"file": ("face.jpg", FACE)})
        assert_error(r, 503, "storage_unavailable")
        assert r.headers["retry-after"]
    assert local_files(settings) == []                          # the refused upload's local copy is gone


def test_an_unreachable_endpoint_is_storage_unavailable(tmp_path):
    endpoint = "http://127.0.0.1:9"                            # the discard port: nothing listens
    storage = S3Storage(tmp_path, "any-bucket", endpoint_url=endpoint, region="us-east-1")
    storage.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                  config=Config(retries={"max_attempts": 1}))   # no waits between tries
    with pytest.raises(StorageUnavailable, match="any-bucket"):
        storage.exists("files/x")
    assert storage.check().startswith("unreachable")


def test_s3_without_a_bucket_is_refused_at_start_up(monkeypatch, capsys):
    with pytest.raises(ValidationError, match="TALKINGFACE_S3_BUCKET"):
        Settings(storage="s3")
    with pytest.raises(ValidationError):
        Settings(storage="nfs")
    monkeypatch.setenv("TALKINGFACE_STORAGE", "s3")
    monkeypatch.delenv("TALKINGFACE_S3_BUCKET", raising=False)
    assert cli.main(["serve", "--workers", "0"]) == 2
    assert "TALKINGFACE_S3_BUCKET" in capsys.readouterr().err


def test_a_60_mb_upload_goes_to_the_bucket_in_parts_without_the_api_holding_it(tmp_path, seeded_project_dir, s3):
    # Incompressible pixels: a 61 MB PNG of 4500x4500 (20 M pixels, under the cap), checked by its chunks.
    pixels = np.random.default_rng(0).integers(0, 256, (4500, 4500, 3), dtype=np.uint8)
    big = tmp_path / "big.png"
    Image.fromarray(pixels).save(big, compress_level=0)
    del pixels
    size = big.stat().st_size
    assert size > 60_000_000
    bucket = s3.bucket()
    server = Server(tmp_path / "data", seeded_project_dir, workers=0, TALKINGFACE_STORAGE="s3",
                    TALKINGFACE_S3_BUCKET=bucket, TALKINGFACE_S3_PREFIX=PREFIX,
                    TALKINGFACE_S3_ENDPOINT_URL=s3.endpoint)
    try:
        small = io.BytesIO()
        Image.new("RGB", (64, 64)).save(small, format="PNG")
        assert server.client.post("/v1/files", files={"file": ("warm.png", small.getvalue())}).status_code == 201
        before = memory_kib(server.process.pid, "VmRSS") << 10
        started = time.monotonic()
        with open(big, "rb") as f, httpx.Client(base_url=server.url, timeout=300) as client:
            r = client.post("/v1/files", files={"file": ("big.png", f, "image/png")})
        seconds = time.monotonic() - started
        growth = (memory_kib(server.process.pid, "VmHWM") << 10) - before
        assert r.status_code == 201, r.text
        print(f"60 MB upload to the bucket: {seconds:.1f} s, API peak RSS growth {growth / 2**20:.0f} MiB")
        key = f"{PREFIX}/files/{r.json()['id']}"
        head = s3.client.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == size
        # A multipart upload's ETag ends in the count of its parts: 8 MiB parts.
        assert head["ETag"].strip('"').endswith(f"-{-(-size // (8 << 20))}"), head["ETag"]
        assert growth < BIG_UPLOAD_GROWTH_BOUND, f"the API's peak memory grew by {growth / 2**20:.0f} MiB"
        assert not list((tmp_path / "data" / "staging").glob("*"))  # the local copy is gone
    finally:
        server.stop()
