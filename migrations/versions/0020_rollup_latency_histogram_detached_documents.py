"""the rollup's voice-to-voice latency as a histogram on its ``all`` rows, its rows also keyed by the agent
alone; knowledge documents can be detached (kept for the versions that list them)

Revision ID: 0020
Revises: 0017
Create Date: 2026-12-07 22:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BINS = 37
MEASURES = ("calls", "answered", "human", "conversations", "qualified", "booked", "call_seconds")
KEY = ("grain", "bucket", "agent_id", "campaign_id", "version_id", "experiment_id")


def _lower(index: int) -> int:  # storage.analytics.bin_lower, frozen here
    return index * 50 if index < 30 else 1500 + (index - 30) * 250 if index < 36 else 3000


def upgrade() -> None:
    for i in range(BINS):
        op.add_column(
            "analytics_rollup", sa.Column(f"v2v_{i:02d}", sa.Integer(), nullable=False, server_default="0")
        )
    # the bins that were rows of their own (dim "v2v") move onto the matching "all" row
    same_key = " AND ".join(f"b.{c} = analytics_rollup.{c}" for c in KEY)
    for i in range(BINS):
        op.execute(
            f"UPDATE analytics_rollup SET v2v_{i:02d} = (SELECT COALESCE(SUM(b.calls), 0)"
            f" FROM analytics_rollup b WHERE b.dim = 'v2v' AND b.dim_value = '{_lower(i)}' AND {same_key})"
            " WHERE dim = 'all'"
        )
    op.execute("DELETE FROM analytics_rollup WHERE dim IN ('v2v', 'v2v_agent')")
    # every row again keyed by the agent alone (campaign, version, experiment "*"): what the queries
    # without a campaign, version or experiment filter read
    measures = [*MEASURES, *(f"v2v_{i:02d}" for i in range(BINS))]
    op.execute(
        f"INSERT INTO analytics_rollup (grain, dim, bucket, agent_id, campaign_id, version_id, experiment_id,"
        f" dim_value, {', '.join(measures)}) SELECT grain, dim, bucket, agent_id, '*', '*', '*', dim_value,"
        f" {', '.join(f'SUM({m})' for m in measures)} FROM analytics_rollup"
        " GROUP BY grain, dim, bucket, agent_id, dim_value"
    )
    op.add_column("knowledge_documents", sa.Column("detached_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("knowledge_documents") as batch:
        batch.drop_column("detached_at")
    op.execute("DELETE FROM analytics_rollup WHERE campaign_id = '*'")
    with op.batch_alter_table("analytics_rollup") as batch:
        for i in range(BINS):
            batch.drop_column(f"v2v_{i:02d}")
