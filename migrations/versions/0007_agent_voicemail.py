"""agents: answering-machine detection and the voicemail action/message

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 12:15:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("voicemail_detection", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(
            sa.Column("voicemail_action", sa.String(length=16), nullable=False, server_default="hang_up")
        )
        batch.add_column(sa.Column("voicemail_message", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("voicemail_message")
        batch.drop_column("voicemail_action")
        batch.drop_column("voicemail_detection")
