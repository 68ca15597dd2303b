"""supervisor seat: control_actions (who did what to a live call, when); live_calls.instance_url

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-07 19:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "control_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("command_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_control_actions_conversation_id", "control_actions", ["conversation_id"])
    with op.batch_alter_table("live_calls") as batch:
        batch.add_column(sa.Column("instance_url", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("live_calls") as batch:
        batch.drop_column("instance_url")
    op.drop_index("ix_control_actions_conversation_id", table_name="control_actions")
    op.drop_table("control_actions")
