"""A string wrapper that keeps credentials out of reprs, logs and error messages."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MASK = "**********"

# Known key prefixes are not secret and tell an operator which key is loaded, so the masked
# form keeps them (plus the last four characters, as the Stripe dashboard does).
_KNOWN_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_", "SG.")
# Below this length the last four characters would give away too much of the value.
_MIN_LEN_FOR_HINT = 20

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^\s/]*@")


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential; `reveal()` is the only way to read the value."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """Return the real value; call this only where the credential is handed to a client."""
        return self._value

    def masked(self) -> str:
        """Return a form safe to print: known prefix and last four characters, or stars."""
        for prefix in _KNOWN_PREFIXES:
            if self._value.startswith(prefix) and len(self._value) >= _MIN_LEN_FOR_HINT:
                return f"{prefix}…{self._value[-4:]}"
        return MASK

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    def __str__(self) -> str:
        return self.masked()


def preview(raw: str) -> str:
    """Show only the start of a rejected secret so the operator can tell which value it was."""
    return f"{raw[:4]}…" if len(raw) >= 12 else "…"


def mask_url_password(url: str) -> str:
    """Replace the password of every `scheme://user:password@host` in `url` with stars."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", url)
