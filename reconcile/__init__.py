"""stripe-reconcile: keeps a subscription database in step with Stripe.

Data flows Stripe -> snapshot -> stage -> diff -> apply -> notify; see README "How it works".
"""

__version__ = "0.1.0"
