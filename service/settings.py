"""Every knob of the service, read from ``TALKINGFACE_*`` environment variables.

Defaults are safe for one machine with nothing else installed: SQLite and artifacts
under ``./data``, one worker, bound to localhost, no API keys (open to local callers;
``talkingface serve`` refuses any other address without keys unless told ``--insecure``).
"""

import hashlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALKINGFACE_", extra="ignore")

    # Where things live
    data_dir: Path = Path("data")
    database_url: str | None = None            # default: sqlite:///<data_dir>/jobs.db
    weights_dir: Path | None = None            # default: models.weights.weights_dir()

    # Serving
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1                           # embedded worker processes started by `serve`
    device: str = "auto"
    default_model: str = "atvgnet"
    # Comma-separated entries "sha256:<hex of the key>[:scope+scope]" (`talkingface keys create` makes
    # them), or plain keys (hashed on reading: only hashes are kept). Empty: no authentication.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    insecure: bool = False                     # `serve` may bind beyond loopback without API keys
    header_timeout_seconds: float = Field(10.0, gt=0)   # a connection must finish its request headers in this

    # Limits on what clients send
    max_upload_bytes: int = 100 * 1024 * 1024
    max_json_bytes: int = 16 * 1024 * 1024     # a request body that is not multipart (JSON)
    max_uploads_in_flight: int = Field(8, ge=1)          # bodies being received at once; more: 503
    body_timeout_seconds: float = Field(30.0, gt=0)      # a body that stops arriving this long: 408
    max_image_pixels: int = 50_000_000
    max_audio_seconds: float = 600.0
    max_batch_jobs: int = 500
    max_images: int = 16                       # images one image-generation job may ask for
    default_wait_seconds: float = 60.0
    max_wait_seconds: float = 300.0

    # Scale-out: with a broker URL (redis://... or amqp://...) jobs go through Celery (service/jobs/celery_engine.py)
    broker_url: str | None = None
    dispatch_seconds: float = Field(1.0, gt=0)          # how often the API hands new and re-queued jobs over
    redispatch_after_seconds: float = Field(15.0, gt=0) # a job handed this long ago, missing from the broker: again
    database_pool_size: int = Field(5, ge=1)            # connections a process keeps open (PostgreSQL)
    database_max_overflow: int = Field(10, ge=0)        # and may open beyond that under load

    # Jobs
    max_attempts: int = 3
    lease_seconds: float = 30.0                # a job whose worker is silent this long is re-queued
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 0.2                  # how often an idle worker looks for work
    worker_timeout_seconds: float = 30.0       # a worker silent this long is not counted as up
    job_timeout_seconds: float = Field(3600.0, gt=0)    # a job running longer fails ("timeout")
    retention_hours: float = 7 * 24            # uploads and results older than this are deleted

    # Resources
    worker_nice: int = Field(10, ge=0, le=19)  # workers' CPU priority below the API's (0: the same)
    worker_threads: int = Field(0, ge=0)       # torch threads a worker; 0: the cores less one, shared out
    min_free_bytes: int = Field(1 << 30, ge=0)  # less free under data_dir: /readyz 503, workers take no job
    decode_budget_bytes: int = Field(512 << 20, gt=0)   # memory the API may spend at once checking uploads
    decode_wait_seconds: float = Field(30.0, ge=0)      # a check waiting longer for that budget: 503

    # Storage of uploads and results: "folder" (under data_dir; a shared mount there, such as NFS, shares
    # them between machines) or "s3" (a bucket of AWS S3 or of an S3-compatible store). The bucket's
    # credentials come from AWS's chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, a role),
    # never from these settings.
    storage: Literal["folder", "s3"] = "folder"
    s3_bucket: str = Field("", validate_default=True)   # needed with storage "s3"
    s3_prefix: str = ""                        # keys under this folder of the bucket ("talkingface")
    s3_endpoint_url: str | None = None         # MinIO, Ceph, R2...: its URL; unset: AWS
    s3_region: str | None = None               # unset: AWS's chain (AWS_DEFAULT_REGION, ~/.aws/config)

    @field_validator("s3_bucket")
    @classmethod
    def _check_bucket(cls, value, info):
        if info.data.get("storage") == "s3":
            if not value:
                raise ValueError("TALKINGFACE_STORAGE=s3 needs the bucket's name in TALKINGFACE_S3_BUCKET")
            if importlib.util.find_spec("boto3") is None:
                raise ValueError("TALKINGFACE_STORAGE=s3 needs boto3: pip install 'talkingface[s3]'")
        return value

    # Live sessions (/v1/live): each runs its model in the API process; a session's audio is capped by
    # max_audio_seconds
    max_live_sessions: int = Field(2, ge=0)    # open at once; more are closed with code 1013 (try later)
    max_streams: int = Field(2, ge=0)          # stream=true responses made at once by one API process; more: 503
    live_max_message_bytes: int = Field(1 << 20, gt=0)  # one audio message (1 MiB: 16 s of f32 at 16 kHz)

    # Inference
    precision: Literal["fp32", "int8", "auto"] = "auto"   # int8 (CPU): atvgnet, davs; auto: int8 on VNNI CPUs only

    # Webhooks
    webhook_secret: str = ""                   # HMAC-SHA256 key; empty: calls are not signed
    webhook_max_attempts: int = 6
    webhook_timeout_seconds: float = Field(10.0, gt=0)      # each of connect, write and read of one call
    webhook_deadline_seconds: float = Field(15.0, gt=0)     # one whole call, however the receiver trickles
    webhook_threads: int = Field(4, ge=1)                   # calls in flight at once
    webhook_shutdown_seconds: float = Field(5.0, ge=0)      # stop waits this long; the rest go at the next start
    # Hosts and networks (comma-separated: "hooks.internal,10.0.0.0/8") that webhooks may call even
    # though they are loopback, private or link-local; the service's own port stays refused.
    webhook_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("webhook_allow", mode="before")
    @classmethod
    def _split_allow(cls, value):
        from service.webhooks import parse_allow_list  # where the rules that read the list live
        return parse_allow_list(value)

    # Provenance: results carry a signed C2PA manifest and an invisible watermark (false: neither)
    provenance: bool = True
    signing_key: Path | None = None            # PEM private key; with signing_cert. Unset: a development
    signing_cert: Path | None = None           # key and certificate generated once under <data_dir>/signing

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            value = value.split(",")
        return [key_entry(k.strip()) for k in value or () if k.strip()]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'jobs.db').resolve()}"

    @property
    def max_request_bytes(self) -> int:
        """The largest multipart body: two uploads (image + audio) and the form's fields."""
        return 2 * self.max_upload_bytes + (1 << 20)

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


KEY_SCOPES = ("admin", "metrics")     # admin: every tenant's jobs and files; metrics: GET /metrics
_HASHED_KEY = re.compile(r"sha256:([0-9a-fA-F]{64})(?::([a-z+]*))?")


def key_entry(text: str) -> str:
    """One ``api_keys`` entry as it is kept: ``sha256:<hex>`` or ``sha256:<hex>:<scope>+<scope>``.

    A plain key (anything not starting with ``sha256:``) is hashed here, so the key itself
    is never kept; it takes no scopes. ValueError names what is wrong without echoing the key.
    """
    if text.startswith("sha256:"):
        match = _HASHED_KEY.fullmatch(text)
        if not match:
            raise ValueError("an api_keys entry sha256:<64 hex digits>[:scope+scope] is malformed")
        scopes = sorted({s for s in (match.group(2) or "").split("+") if s})
        unknown = [s for s in scopes if s not in KEY_SCOPES]
        if unknown:
            raise ValueError(f"unknown API key scope {unknown[0]!r}: scopes are {', '.join(KEY_SCOPES)}")
        return ":".join(["sha256", match.group(1).lower()] + (["+".join(scopes)] if scopes else []))
    if not all(33 <= ord(c) <= 126 for c in text):
        raise ValueError("API keys are printable ASCII without spaces (as a Bearer token is sent)")
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


@lru_cache
def get_settings() -> Settings:
    return Settings()
