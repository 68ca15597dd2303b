"""conversations.{started,completed,failed}_event_at: each call event is emitted once per call

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 16:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("started_event_at", "completed_event_at", "failed_event_at")


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
