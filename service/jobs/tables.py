"""The job store's tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them.

Times are floats (seconds since the epoch, UTC): lease and duration arithmetic is the
same on SQLite and PostgreSQL, and the API renders them as ISO 8601.

``owner`` is the SHA-256 (hex) of the API key that made a file, batch or job; another key
does not see it. Without keys it is "" and everything is shared.
"""

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

files = Table(
    "files", metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(16), nullable=False),          # image | audio | video | pose
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("filename", String(255)),
    Column("content_type", String(100)),
    Column("path", Text),                                # relative to the data dir; NULL once deleted
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
    Column("owner", String(64), nullable=False, server_default=""),
)

batches = Table(
    "batches", metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("metadata", JSON),
    Column("owner", String(64), nullable=False, server_default=""),
)

jobs = Table(
    "jobs", metadata,
    Column("id", String(40), primary_key=True),
    Column("task", String(40), nullable=False),
    Column("model", String(40), nullable=False),
    Column("status", String(16), nullable=False),        # queued | running | succeeded | failed | canceled
    Column("inputs", JSON, nullable=False),
    Column("options", JSON, nullable=False),
    Column("batch_id", String(40)),
    Column("progress", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("worker_id", String(64)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),                         # first claim
    Column("claimed_at", Float),                         # latest claim
    Column("heartbeat_at", Float),
    Column("lease_expires_at", Float),
    Column("generated_at", Float),                       # last frame made, before the MP4 is closed
    Column("finished_at", Float),
    Column("error_code", String(40)),
    Column("error_message", Text),
    Column("result_path", Text),                         # relative to the data dir
    Column("result_bytes", BigInteger),
    Column("frames", Integer),
    Column("info", JSON),                                # weights and device that made the result
    Column("webhook_url", Text),
    Column("webhook_state", String(16)),                 # pending | delivered | failed
    Column("webhook_attempts", Integer, nullable=False, default=0),
    Column("webhook_next_at", Float),
    Column("webhook_last_error", Text),
    Column("owner", String(64), nullable=False, server_default=""),
    Column("dispatched_at", Float),                      # last handed to the broker (Celery engine)
    Index("ix_jobs_status_created", "status", "created_at"),
    Index("ix_jobs_owner_created", "owner", "created_at"),
    Index("ix_jobs_batch", "batch_id"),
    Index("ix_jobs_finished", "finished_at"),
    Index("ix_jobs_webhook", "webhook_state", "webhook_next_at"),
)

workers = Table(
    "workers", metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("device", String(64)),
    Column("models", JSON),
    Column("status", String(16), nullable=False),        # starting | idle | busy | stopped
    Column("current_job", String(40)),
    Column("gpu_memory_bytes", BigInteger),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)
