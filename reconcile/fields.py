"""The mirrored fields and the staleness guard, as SQL fragments shared by diff and apply.

One table of fields drives both the drift report and the writes, so what a dry run reports
is exactly what a real run changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reconcile.policy import TERMINAL_INVOICE_STATUSES, TERMINAL_SUBSCRIPTION_STATUSES

FieldType = Literal["text", "ts", "bool", "int"]


@dataclass(frozen=True, slots=True)
class Field:
    """A mirrored column: the drift kind it reports as, its name and type."""

    kind: str
    column: str
    type: FieldType


SUBSCRIPTION_FIELDS: tuple[Field, ...] = (
    Field("status", "status", "text"),
    Field("current_period_end", "current_period_end", "ts"),
    Field("end_date", "end_date", "ts"),
    Field("cancel_at_period_end", "cancel_at_period_end", "bool"),
    Field("price", "stripe_price_id", "text"),
    Field("customer", "stripe_customer_id", "text"),
    Field("subscription_field", "stripe_created", "ts"),
)

INVOICE_FIELDS: tuple[Field, ...] = (
    Field("invoice_status", "status", "text"),
    Field("invoice_amounts", "amount_due", "int"),
    Field("invoice_amounts", "amount_remaining", "int"),
    Field("invoice_attempts", "attempt_count", "int"),
    Field("invoice_attempts", "next_payment_attempt", "ts"),
    Field("invoice_field", "currency", "text"),
    Field("invoice_field", "hosted_invoice_url", "text"),
    Field("invoice_field", "customer_email", "text"),
    Field("invoice_field", "created", "ts"),
    Field("invoice_field", "due_date", "ts"),
    Field("invoice_field", "stripe_subscription_id", "text"),
    Field("invoice_field", "stripe_customer_id", "text"),
)


def as_text(expr: str, type_: FieldType) -> str:
    """SQL rendering a value the same way for local and Stripe sides (UTC ISO times)."""
    if type_ == "ts":
        return f"""to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
    return f"({expr})::text"


def any_differs(fields: tuple[Field, ...], local: str, incoming: str) -> str:
    """SQL that is true when any mirrored field differs between two row aliases."""
    left = ", ".join(f"{local}.{f.column}" for f in fields)
    right = ", ".join(f"{incoming}.{f.column}" for f in fields)
    return f"(({left}) IS DISTINCT FROM ({right}))"


def fresher(local: str, incoming_observed: str) -> str:
    """The staleness guard: the incoming observation is newer than the row's.

    `:allow_tie` lets a state re-fetched from Stripe win a same-second tie: it was read after
    the event that raised the question, so it is the newest truth we can have.
    """
    return (
        f"({local}.stripe_observed_at < {incoming_observed} OR "
        f"(CAST(:allow_tie AS boolean) AND {local}.stripe_observed_at = {incoming_observed}))"
    )


def not_regressing(local: str, incoming_status: str, terminal_param: str) -> str:
    """Stripe never leaves a terminal status; an observation that does is out of date."""
    return (
        f"NOT ({local}.status = ANY(CAST(:{terminal_param} AS text[])) "
        f"AND {incoming_status} <> ALL(CAST(:{terminal_param} AS text[])))"
    )


def guard_params(*, allow_tie: bool) -> dict[str, object]:
    """Bind parameters every guarded statement needs."""
    return {
        "allow_tie": allow_tie,
        "sub_terminal": list(TERMINAL_SUBSCRIPTION_STATUSES),
        "inv_terminal": list(TERMINAL_INVOICE_STATUSES),
    }


# Staged rows are unique per id once `staging.dedupe` ran (reconcile_staged and conflicts
# call it), so the statements read the tables directly instead of sorting them again each.
SUBSCRIPTION_SOURCE = "SELECT * FROM stage_subscriptions"
INVOICE_SOURCE = "SELECT * FROM stage_invoices"
