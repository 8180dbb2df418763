"""bidpaw sessions: a record of every BidPaw lobby opened, for the wallet callbacks

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bidpaw_sessions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("game_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("session", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bidpaw_sessions")),
    )
    op.create_index(
        "ix_bidpaw_sessions_user_id_session", "bidpaw_sessions", ["user_id", "session"], unique=False
    )
    op.create_index("ix_bidpaw_sessions_last_used_at", "bidpaw_sessions", ["last_used_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bidpaw_sessions_last_used_at", table_name="bidpaw_sessions")
    op.drop_index("ix_bidpaw_sessions_user_id_session", table_name="bidpaw_sessions")
    op.drop_table("bidpaw_sessions")
