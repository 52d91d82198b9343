"""Initial schema: files, batches, jobs, workers.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255)),
        sa.Column("content_type", sa.String(100)),
        sa.Column("path", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("deleted_at", sa.Float),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("metadata", sa.JSON),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("model", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("batch_id", sa.String(40)),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("claimed_at", sa.Float),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("generated_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("error_code", sa.String(40)),
        sa.Column("error_message", sa.Text),
        sa.Column("result_path", sa.Text),
        sa.Column("result_bytes", sa.BigInteger),
        sa.Column("frames", sa.Integer),
        sa.Column("info", sa.JSON),
        sa.Column("webhook_url", sa.Text),
        sa.Column("webhook_state", sa.String(16)),
        sa.Column("webhook_attempts", sa.Integer, nullable=False),
        sa.Column("webhook_next_at", sa.Float),
        sa.Column("webhook_last_error", sa.Text),
    )
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_batch", "jobs", ["batch_id"])
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])
    op.create_index("ix_jobs_webhook", "jobs", ["webhook_state", "webhook_next_at"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("device", sa.String(64)),
        sa.Column("models", sa.JSON),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_job", sa.String(40)),
        sa.Column("gpu_memory_bytes", sa.BigInteger),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )


def downgrade():
    for table in ("workers", "jobs", "batches", "files"):
        op.drop_table(table)
