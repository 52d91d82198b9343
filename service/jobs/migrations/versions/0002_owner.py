"""Owners: the API key (its SHA-256) that made each file, batch and job; "" for rows made without keys.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("files", "batches", "jobs")


def upgrade():
    # Rows that exist already were made without keys: they get "" (seen by admin keys only once
    # keys are set).
    for table in TABLES:
        op.add_column(table, sa.Column("owner", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])


def downgrade():
    op.drop_index("ix_jobs_owner_created", "jobs")
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("owner")
