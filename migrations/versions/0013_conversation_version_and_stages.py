"""conversations: the agent version that ran the call, the playbook stages it went through, where it ended

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 19:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("agent_version_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("stage_path", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("ended_stage", sa.String(length=64), nullable=True))
        batch.create_index("ix_conversations_agent_version_id", ["agent_version_id"])


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_agent_version_id")
        batch.drop_column("ended_stage")
        batch.drop_column("stage_path")
        batch.drop_column("agent_version_id")
