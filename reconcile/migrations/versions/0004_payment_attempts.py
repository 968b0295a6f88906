"""Payment retries: payment_attempts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
ID = sa.Text(collation="C")

OUTCOMES = (
    "pending", "abandoned", "succeeded", "processing", "declined", "requires_action", "failed",
)


def upgrade() -> None:
    # One row per charge we attempt. It is written as `pending` and committed *before* the
    # request goes out, so a crash leaves evidence and the rerun resends the same
    # Idempotency-Key (derived from invoice and attempt) instead of charging anew.
    op.create_table(
        "payment_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("stripe_invoice_id", ID, nullable=False),
        sa.Column("stripe_subscription_id", ID),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TS),
        sa.Column("outcome", sa.Text, nullable=False, server_default="pending"),
        sa.Column("amount", sa.BigInteger),
        sa.Column("currency", sa.Text),
        # Stripe's error code and, for card errors, the bank's decline code.
        sa.Column("error_code", sa.Text),
        sa.Column("decline_code", sa.Text),
        sa.Column("replayed", sa.Boolean, nullable=False, server_default="false"),
        sa.UniqueConstraint("stripe_invoice_id", "attempt", name="uq_payment_attempts_number"),
        sa.CheckConstraint("attempt >= 1", name="ck_payment_attempts_attempt"),
        sa.CheckConstraint(
            "outcome IN (" + ", ".join(f"'{o}'" for o in OUTCOMES) + ")",
            name="ck_payment_attempts_outcome",
        ),
    )
    # A run looks for the rows a crash left behind.
    op.create_index(
        "ix_payment_attempts_pending",
        "payment_attempts",
        ["stripe_invoice_id"],
        postgresql_where=sa.text("outcome = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("payment_attempts")
