"""What Stripe states mean for us: user status precedence, terminal states.  [pure]

These rules are data so that the set-based SQL can use the very same lists (passed as
parameters) that the unit tests check.
"""

from __future__ import annotations

from collections.abc import Iterable

# A user's status is the best of their subscriptions' statuses. "Best" means "gives the most
# access": an active subscription outranks an old canceled one, a trial outranks a failing
# payment, and so on. Unknown (future) statuses rank below every known one.
USER_STATUS_PRECEDENCE: tuple[str, ...] = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "paused",
    "incomplete",
    "canceled",
    "incomplete_expired",
)

# Stripe never moves a subscription out of these; an observation that would is older than
# what we have, whatever its timestamp says.
TERMINAL_SUBSCRIPTION_STATUSES: tuple[str, ...] = ("canceled", "incomplete_expired")

# Paid and void invoices never change status again (uncollectible can still be paid).
TERMINAL_INVOICE_STATUSES: tuple[str, ...] = ("paid", "void")

# Invoices whose status can still change; used to confirm those the listing did not return.
UNSETTLED_INVOICE_STATUSES: tuple[str, ...] = ("draft", "open", "uncollectible")


def status_rank(status: str) -> int:
    """Lower is better; unknown statuses rank last."""
    try:
        return USER_STATUS_PRECEDENCE.index(status)
    except ValueError:
        return len(USER_STATUS_PRECEDENCE)


def derive_user_status(statuses: Iterable[str]) -> str | None:
    """The status a user gets from all their subscriptions; None when they have none."""
    best: str | None = None
    for status in statuses:
        if best is None or status_rank(status) < status_rank(best):
            best = status
    return best


def is_regression(current: str, incoming: str, terminal: Iterable[str]) -> bool:
    """True when `incoming` would move an object out of a terminal state."""
    final = tuple(terminal)
    return current in final and incoming not in final
