"""call_commands: the per-call command channel; campaign_recipients.requeued_reason

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 16:15:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_commands",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_call_commands_pending", "call_commands", ["conversation_id", "consumed_at"])
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.add_column(sa.Column("requeued_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.drop_column("requeued_reason")
    op.drop_index("ix_call_commands_pending", table_name="call_commands")
    op.drop_table("call_commands")
