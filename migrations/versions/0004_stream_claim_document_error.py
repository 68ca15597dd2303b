"""conversations.stream_jti (a stream token admits one stream) and knowledge_documents.error

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("stream_jti", sa.String(length=64), nullable=True))
    with op.batch_alter_table("knowledge_documents") as batch:
        batch.add_column(sa.Column("error", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("knowledge_documents") as batch:
        batch.drop_column("error")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("stream_jti")
