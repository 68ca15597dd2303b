"""agent scenario tests and their runs

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-30 12:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0005"  # main chains 0007 → 0005
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_tests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("agent_tests") as batch:
        batch.create_index(batch.f("ix_agent_tests_agent_id"), ["agent_id"], unique=False)
    op.create_table(
        "agent_test_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("pass_rate", sa.Float(), nullable=True),
        sa.Column("llm", sa.String(length=32), nullable=True),
        sa.Column("judge", sa.String(length=32), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("agent_test_runs") as batch:
        batch.create_index(batch.f("ix_agent_test_runs_agent_id"), ["agent_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agent_test_runs") as batch:
        batch.drop_index(batch.f("ix_agent_test_runs_agent_id"))
    op.drop_table("agent_test_runs")
    with op.batch_alter_table("agent_tests") as batch:
        batch.drop_index(batch.f("ix_agent_tests_agent_id"))
    op.drop_table("agent_tests")
