"""Webhook event ledger: stripe_events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # One row per Stripe event id, written in the same transaction as the event's effect:
    # a redelivery finds its row and has no second effect.
    op.create_table(
        "stripe_events",
        sa.Column("event_id", sa.Text(collation="C"), primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("api_version", sa.Text),
        sa.Column("object_id", sa.Text(collation="C")),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("processed_at", TS),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default="webhook"),
    )
    op.create_index("ix_stripe_events_object", "stripe_events", ["object_id", "created"])


def downgrade() -> None:
    op.drop_table("stripe_events")
