"""agent versions, experiments and their assignments, the analytics rollup

Revision ID: 0017
Revises: 0019
Create Date: 2026-12-07 19:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_versions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("restored_from", sa.String(length=40), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "number", name="uq_agent_version_number"),
    )
    op.create_index("ix_agent_versions_agent_created", "agent_versions", ["agent_id", "created_at"])

    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=True),
        sa.Column("phone_number", sa.String(length=32), nullable=True),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stopped_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_experiments_agent_id", "experiments", ["agent_id"])
    op.create_index("ix_experiments_campaign_status", "experiments", ["campaign_id", "status"])
    op.create_index("ix_experiments_number_status", "experiments", ["phone_number", "status"])

    op.create_table(
        "experiment_assignments",
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("experiment_id", sa.String(length=40), nullable=False),
        sa.Column("variant", sa.String(length=40), nullable=False),
        sa.Column("version_id", sa.String(length=40), nullable=False),
        sa.Column("lead_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    op.create_index(
        "ix_experiment_assignments_experiment", "experiment_assignments", ["experiment_id", "variant"]
    )

    op.create_table(
        "analytics_recorded",
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id"),
    )

    op.create_table(
        "analytics_rollup",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("grain", sa.String(length=1), nullable=False),
        sa.Column("dim", sa.String(length=16), nullable=False),
        sa.Column("bucket", TS, nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("version_id", sa.String(length=40), nullable=False),
        sa.Column("experiment_id", sa.String(length=40), nullable=False),
        sa.Column("dim_value", sa.String(length=64), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("human", sa.Integer(), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("qualified", sa.Integer(), nullable=False),
        sa.Column("booked", sa.Integer(), nullable=False),
        sa.Column("call_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "grain",
            "dim",
            "bucket",
            "agent_id",
            "campaign_id",
            "version_id",
            "experiment_id",
            "dim_value",
            name="uq_analytics_rollup_key",
        ),
    )
    op.create_index("ix_analytics_rollup_agent", "analytics_rollup", ["grain", "dim", "agent_id", "bucket"])
    op.create_index("ix_analytics_rollup_campaign", "analytics_rollup", ["grain", "dim", "campaign_id", "bucket"])
    op.create_index("ix_analytics_rollup_version", "analytics_rollup", ["grain", "dim", "version_id", "bucket"])
    op.create_index("ix_analytics_rollup_experiment", "analytics_rollup", ["experiment_id", "grain", "dim"])


def downgrade() -> None:
    op.drop_table("analytics_rollup")
    op.drop_table("analytics_recorded")
    op.drop_table("experiment_assignments")
    op.drop_table("experiments")
    op.drop_table("agent_versions")
