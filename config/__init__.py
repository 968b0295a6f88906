"""Settings from the environment and an optional .env file, validated all at once.

    settings = load_settings(require={"database", "stripe"})

Every problem is collected and raised together as `reconcile.errors.ConfigError`. Secrets
are `Secret` values that mask themselves; call `.reveal()` only where a client needs them.
"""

from config.loader import load_settings
from config.secret import Secret
from config.settings import Settings
from config.spec import GROUPS, SPECS, SettingSpec, render_markdown_table

__all__ = [
    "GROUPS",
    "SPECS",
    "Secret",
    "SettingSpec",
    "Settings",
    "load_settings",
    "render_markdown_table",
]
