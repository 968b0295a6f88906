"""Fixtures shared by the emulator tests: a started emulator on a fixed clock, and the SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from reconcile.emulator import StripeEmulator

START = 1_800_000_000


@pytest.fixture
def emu() -> Iterator[StripeEmulator]:
    """A started emulator with a fixed clock (and the default retry policy)."""
    with StripeEmulator(start_time=START) as emulator:
        yield emulator


@pytest.fixture
def client(emu: StripeEmulator) -> stripe.StripeClient:
    """The real SDK pointed at the emulator, without SDK-level retries."""
    return stripe.StripeClient(
        api_key=emu.api_key, base_addresses={"api": emu.url}, max_network_retries=0
    )
