"""wallet transactions: BidPaw's charges and credits, moved exactly once in the casino's wallet

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_STATES = "state IN ('recorded', 'reversing', 'delivering')"


def upgrade() -> None:
    op.create_table(
        "wallet_transactions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("partner", sa.Text(), nullable=False),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("game_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("answer", sa.SmallInteger(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("method IN ('charge', 'credit')", name=op.f("ck_wallet_transactions_method")),
        sa.CheckConstraint(
            "state IN ('recorded', 'reversing', 'delivering', 'final', 'stuck')",
            name=op.f("ck_wallet_transactions_state"),
        ),
        sa.CheckConstraint("answer IN (0, 1, 7, 8)", name=op.f("ck_wallet_transactions_answer")),
        sa.CheckConstraint(
            "outcome IN ('applied', 'insufficient_funds', 'refused', 'reversed')",
            name=op.f("ck_wallet_transactions_outcome"),
        ),
        # Only a transaction being recorded has no answer yet; every other state has given one.
        sa.CheckConstraint(
            "(state = 'recorded') = (answer IS NULL)", name=op.f("ck_wallet_transactions_answered")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_wallet_transactions_amount")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_transactions")),
        # The final arbiter of "exactly once": one transaction per partner transactionId.
        sa.UniqueConstraint("partner", "transaction_id", name=op.f("uq_wallet_transactions_partner")),
    )
    op.create_index(
        "ix_wallet_transactions_open",
        "wallet_transactions",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text(OPEN_STATES),
    )
    op.create_index("ix_wallet_transactions_created_at", "wallet_transactions", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_wallet_transactions_created_at", table_name="wallet_transactions")
    op.drop_index("ix_wallet_transactions_open", table_name="wallet_transactions")
    op.drop_table("wallet_transactions")
