"""Dispatch: when a queued job was last handed to the broker (the Celery engine); NULL: not yet.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("jobs", sa.Column("dispatched_at", sa.Float, nullable=True))


def downgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dispatched_at")
