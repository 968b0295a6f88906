"""Notification outbox, and what an invoice's failed-payment e-mail needs to know.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
ID = sa.Text(collation="C")


def upgrade() -> None:
    # Not mirrored fields (no drift is reported for them): the product is filled in whenever
    # Stripe's payload names it, the failure time is maintained by reconcile.outbox.
    op.add_column("invoices", sa.Column("stripe_product_id", ID))
    op.add_column("invoices", sa.Column("product_name", sa.Text))
    op.add_column("invoices", sa.Column("payment_failed_at", TS))
    # Existing unpaid invoices: their last change is, as far as we can know, the failure
    # that left them unpaid. This is what lets the first run suppress old failures.
    op.execute(
        "UPDATE invoices SET payment_failed_at = stripe_observed_at "
        "WHERE status IN ('open', 'uncollectible') AND attempt_count >= 1"
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("stripe_invoice_id", ID, nullable=False),
        sa.Column("stripe_customer_id", ID, nullable=False),
        sa.Column("recipient", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        # When a pending row is due; while `sending`, when the claim's lease expires.
        sa.Column("next_attempt_at", TS, nullable=False, server_default=sa.func.now()),
        # Stripe's time of the failure the row is about (for the max-age rule).
        sa.Column("failed_at", TS),
        sa.Column("claim_token", sa.Text),
        sa.Column("last_error", sa.Text),
        sa.Column("provider_message_id", sa.Text),
        sa.Column("sent_at", TS),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("kind", "stripe_invoice_id", name="uq_notifications_kind_invoice"),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'suppressed', 'canceled')",
            name="ck_notifications_status",
        ),
    )
    # The drain's claim scans only rows still to do; finished rows never slow it down.
    op.create_index(
        "ix_notifications_due",
        "notifications",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_index("ix_notifications_invoice", "notifications", ["stripe_invoice_id"])


def downgrade() -> None:
    op.drop_table("notifications")
    for column in ("payment_failed_at", "product_name", "stripe_product_id"):
        op.drop_column("invoices", column)
