"""live_calls: calls in progress on every instance (instance id, state, heartbeat)

Revision ID: 0005
Revises: 0007 (re-chained after merging main: 0003 → 0004 → 0006 → 0007 → 0005)
Create Date: 2026-11-30 13:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "live_calls",
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=100), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=True),
        sa.Column("agent_id", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("agent_speaking", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_sid"),
    )
    op.create_index(op.f("ix_live_calls_instance_id"), "live_calls", ["instance_id"], unique=False)
    op.create_index(op.f("ix_live_calls_heartbeat_at"), "live_calls", ["heartbeat_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_live_calls_heartbeat_at"), table_name="live_calls")
    op.drop_index(op.f("ix_live_calls_instance_id"), table_name="live_calls")
    op.drop_table("live_calls")
