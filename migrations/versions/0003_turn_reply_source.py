"""conversation_turns: how an agent reply was produced, and its knowledge/tool stage times

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversation_turns") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("retrieval_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("knowledge_answer_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("tool_result_ms", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversation_turns") as batch:
        batch.drop_column("tool_result_ms")
        batch.drop_column("knowledge_answer_ms")
        batch.drop_column("retrieval_ms")
        batch.drop_column("source")
