"""Read the environment and an optional .env file into `Settings`, reporting every problem."""

from __future__ import annotations

import difflib
import io
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from dotenv.parser import parse_stream

from config.parsers import stripe_livemode
from config.secret import preview
from config.settings import Settings
from config.spec import GROUPS, SPECS, SPECS_BY_ENV, SettingSpec
from reconcile.errors import ConfigError

# Environment variables are only checked for typos under these prefixes: a shell carries many
# unrelated variables, but one starting like ours and not quite matching is almost always a
# misspelling. Keys in the .env file are all checked, since that file is ours alone.
TYPO_PREFIXES = ("STRIPE_", "RECONCILE_", "WEBHOOK_", "EMAIL_", "SENDGRID_", "NOTIFY_", "RETRY_")
# High enough that neighbours such as STRIPE_CLI_VERSION or STRIPE_DEVICE_NAME pass.
TYPO_CUTOFF = 0.85


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: Path | None = Path(".env"),
    require: Collection[str] = (),
) -> Settings:
    """Read, validate and return the settings; raise ConfigError listing every problem.

    `environ` defaults to os.environ and is never modified; it wins over `env_file` (a
    missing file is fine). Empty values count as unset. `require` names the groups
    ("database", "stripe", "webhook", "email") whose required settings must be present.
    """
    groups = frozenset(require)
    if groups - GROUPS:
        # A caller bug, not an operator mistake, so it is not reported as a ConfigError.
        raise ValueError(f"unknown settings group(s): {sorted(groups - GROUPS)}")
    env = os.environ if environ is None else environ
    problems: list[str] = []
    from_file = read_env_file(env_file, problems) if env_file is not None else {}
    problems.extend(find_typos(from_file, env, file_label=str(env_file)))
    raw = merge_sources(from_file, env)

    values: dict[str, Any] = {}
    for spec in SPECS:
        given = raw.get(spec.env)
        source = given if given is not None else spec.default
        values[spec.field] = spec.unset
        if source is None:
            continue
        try:
            values[spec.field] = spec.parse(source)
        except ValueError as exc:
            problems.append(_describe(spec, given, exc))

    for spec in SPECS:
        if spec.env not in raw and spec.is_required(groups, values):
            problems.append(_missing(spec))
    problems.extend(_cross_checks(raw, values))
    if problems:
        raise ConfigError(problems)
    return Settings(
        **values,
        stripe_livemode=stripe_livemode(values["stripe_api_key"]),
        retry_policy_explicit="RETRY_POLICY" in raw,
    )


def read_env_file(path: Path, problems: list[str]) -> dict[str, str]:
    """Parse a .env file without touching os.environ, appending unreadable lines to problems.

    Interpolation of ${VAR} is off: values are taken literally, so a password containing
    a dollar sign survives and the result does not depend on the process environment.
    """
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        problems.append(f"{path}: is not valid UTF-8; re-save the file as UTF-8")
        return {}
    except OSError as exc:
        problems.append(
            f"{path}: cannot be read ({exc.strerror or exc}); fix its permissions or remove it"
        )
        return {}
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(content)):
        if binding.error:
            problems.append(
                f"{path}:{binding.original.line}: cannot be parsed; write KEY=value and quote "
                "values that contain spaces or #"
            )
        elif binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values


def merge_sources(from_file: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Combine known variables, environment over file, dropping empty values.

    An empty value counts as unset (so it falls back to the file or the default), because
    container tooling turns unset variables into empty strings.
    """
    merged: dict[str, str] = {}
    for source in (from_file, env):
        for name in SPECS_BY_ENV:
            value = source.get(name, "").strip()
            if value:
                merged[name] = value
    return merged


def find_typos(
    from_file: Iterable[str], env: Iterable[str], *, file_label: str = ".env"
) -> list[str]:
    """Report unknown variables that are close to a known name, with a "did you mean" hint."""
    known = list(SPECS_BY_ENV)
    suspects: dict[str, str] = {}
    for name in env:
        if name.upper().startswith(TYPO_PREFIXES) and name not in SPECS_BY_ENV:
            suspects[name] = "in the environment"
    for name in from_file:
        if name not in SPECS_BY_ENV:
            suspects[name] = f"in {file_label}"
    problems = []
    for name, where in sorted(suspects.items()):
        # Upper-casing first catches a lower-case spelling of an exact name as well.
        match = difflib.get_close_matches(name.upper(), known, n=1, cutoff=TYPO_CUTOFF)
        if match:
            problems.append(
                f"{name} ({where}): is not a known setting; did you mean {match[0]}? "
                "rename it (names are case-sensitive)"
            )
    return problems


def _describe(spec: SettingSpec, given: str | None, exc: ValueError) -> str:
    message = str(exc)
    if spec.secret and given:
        # Parsers of secrets only print previews; this is the backstop if one slips.
        message = message.replace(given, preview(given))
    origin = "" if given is not None else " (built-in default; please report this)"
    return f"{spec.env}: {message}{origin}"


def _missing(spec: SettingSpec) -> str:
    reasons = []
    if spec.required_for:
        reasons.append(f"for {', '.join(sorted(spec.required_for))}")
    if spec.required_if is not None:
        reasons.append(f"when {spec.required_if[0]}={spec.required_if[1]}")
    return (
        f"{spec.env}: is required {' '.join(reasons)} but not set; set it in the environment "
        f"or .env ({spec.doc})"
    )


def _cross_checks(raw: Mapping[str, str], values: Mapping[str, Any]) -> list[str]:
    problems = []
    policy = values["retry_policy"]
    if "RETRY_SCHEDULE" in raw and policy is not None and policy != "custom":
        # A schedule that is silently ignored would make retries differ from what was intended.
        problems.append(
            f"RETRY_SCHEDULE: is only used when RETRY_POLICY=custom (RETRY_POLICY is "
            f"{policy!r}); set RETRY_POLICY=custom or remove RETRY_SCHEDULE"
        )
    return problems
