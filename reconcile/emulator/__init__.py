"""A stateful, stdlib-only Stripe API emulator for tests, benchmarks and demos.

with StripeEmulator() as emu:
    client = stripe.StripeClient(api_key=emu.api_key, base_addresses={"api": emu.url})
    emu.seed(1_000, rng_seed=1)
    client.v1.subscriptions.list({"status": "all", "limit": 100})
"""

from .emulator import StripeEmulator
from .errors import ApiError
from .faults import FaultInjector
from .seed_config import DEFAULT_MIX, SeedReport
from .shapes import CURRENT_API_VERSION, LEGACY_API_VERSION, TEST_CARDS, TestCard
from .state import RetryPolicy
from .webhooks import DeliveryResult, WebhookEndpoint, sign_payload

__all__ = [
    "CURRENT_API_VERSION",
    "DEFAULT_MIX",
    "LEGACY_API_VERSION",
    "TEST_CARDS",
    "ApiError",
    "DeliveryResult",
    "FaultInjector",
    "RetryPolicy",
    "SeedReport",
    "StripeEmulator",
    "TestCard",
    "WebhookEndpoint",
    "sign_payload",
]
