"""Initial schema: users, subscriptions, invoices, reconcile_runs, reconcile_account.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
# Stripe ids are case-sensitive; the C collation compares bytes and keeps indexes fast.
ID = sa.Text(collation="C")


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    ]


def upgrade() -> None:
    # The host application owns `users`; it may already exist with these columns.
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS users (
            id bigserial PRIMARY KEY,
            email text,
            stripe_customer_id text COLLATE "C" UNIQUE,
            subscription_status text,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("stripe_subscription_id", ID, nullable=False, unique=True),
        sa.Column(
            "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL"), index=True
        ),
        sa.Column("stripe_customer_id", ID, nullable=False, index=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("current_period_end", TS),
        sa.Column("end_date", TS),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("stripe_price_id", ID),
        sa.Column("stripe_created", TS),
        # Staleness guard: Stripe's time of the state this row reflects (page Date header,
        # event.created or a retrieve's Date). Older observations never overwrite it.
        sa.Column("stripe_observed_at", TS, nullable=False),
        *_timestamps(),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("stripe_invoice_id", ID, nullable=False, unique=True),
        sa.Column("stripe_subscription_id", ID, index=True),
        sa.Column("stripe_customer_id", ID, nullable=False, index=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("amount_due", sa.BigInteger, nullable=False),
        sa.Column("amount_remaining", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_payment_attempt", TS),
        sa.Column("hosted_invoice_url", sa.Text),
        sa.Column("customer_email", sa.Text),
        sa.Column("created", TS),
        sa.Column("due_date", TS),
        sa.Column("stripe_observed_at", TS, nullable=False),
        *_timestamps(),
    )
    op.create_index(
        "ix_invoices_unsettled",
        "invoices",
        ["status"],
        postgresql_where=sa.text("status IN ('draft', 'open', 'uncollectible')"),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("started_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TS),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False, server_default="running"),
        sa.Column("counts", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("changes_applied", sa.Integer, nullable=False, server_default="0"),
        sa.Column("objects_listed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("stripe_requests", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
    )
    # The Stripe account (and mode) this database mirrors, remembered from the first run.
    op.create_table(
        "reconcile_account",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default="true"),
        sa.Column("stripe_account_id", ID, nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("first_seen_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("singleton", name="reconcile_account_one_row"),
    )


def downgrade() -> None:
    for table in ("reconcile_account", "reconcile_runs", "invoices", "subscriptions"):
        op.drop_table(table)
