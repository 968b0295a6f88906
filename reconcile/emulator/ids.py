"""Id generation for emulated objects."""

from __future__ import annotations

import threading


class IdFactory:
    """Hands out unique, Stripe-looking ids.

    Ids are zero-padded counters per prefix so that, within one prefix, string order equals
    creation order; listings break `created` ties by id, which then matches Stripe's
    newest-first order for objects made in the same second.
    """

    def __init__(self, tag: str = "1Emu") -> None:
        self._tag = tag
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def new(self, prefix: str) -> str:
        """Return the next id for `prefix`, e.g. ``sub_1Emu0000000042``."""
        with self._lock:
            n = self._counters.get(prefix, 0) + 1
            self._counters[prefix] = n
        return f"{prefix}_{self._tag}{n:010d}"
