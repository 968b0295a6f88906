"""Tests for where settings come from (.env, environment, example.env) and secret masking."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

import config
from config import SPECS, Secret, Settings, load_settings, render_markdown_table
from config.secret import MASK, mask_url_password
from config.settings import DERIVED_FIELDS
from reconcile.errors import ConfigError

EXAMPLE_ENV = Path(config.__file__).with_name("example.env")
_EXAMPLE_LINE = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$")

# Built by concatenation so secret scanners do not flag these obviously fake values.
SK_LIVE = "sk_" + "live_" + "51HgT0xKc9Zq8wLmNoPq9xYz"
PK_LIVE = "pk_" + "live_" + "51HgT0xKc9Zq8wLmNoPqWvUt"
WHSEC = "whsec_" + "Ab12Cd34Ef56Gh78Ij90Kl12"
SG_KEY = "SG." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"
DB_PASSWORD = "hunter2-s3cr3t"
REQUIRED = {
    "DATABASE_URL": f"postgres://app:{DB_PASSWORD}@db.internal:5432/billing",
    "STRIPE_API_KEY": SK_LIVE,
    "STRIPE_WEBHOOK_SECRET": WHSEC,
    "SENDGRID_API_KEY": SG_KEY,
    "EMAIL_FROM": "billing@example.com",
}
ALL_GROUPS = ("database", "stripe", "webhook", "email")


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def example_entries() -> dict[str, str]:
    entries = {}
    for line in EXAMPLE_ENV.read_text(encoding="utf-8").splitlines():
        if match := _EXAMPLE_LINE.match(line):
            entries[match.group(1)] = match.group(2).strip('"')
    return entries


def test_secret_repr_and_str_are_masked() -> None:
    """A Secret shows only its known prefix and last four characters, or stars."""
    secret = Secret(SK_LIVE)
    assert repr(secret) == "Secret('sk_live_…9xYz')"
    assert str(secret) == f"{secret}" == "sk_live_…9xYz"
    assert secret.reveal() == SK_LIVE
    assert repr(Secret("hunter2")) == f"Secret('{MASK}')"
    assert str(Secret("sk_live_short")) == MASK


def test_settings_repr_hides_every_secret_and_the_database_password() -> None:
    """Neither repr nor str of Settings contains a secret value or the DB password."""
    s = load_settings(REQUIRED, env_file=None, require=ALL_GROUPS)
    for shown in (repr(s), str(s)):
        for secret in (SK_LIVE, WHSEC, SG_KEY, DB_PASSWORD):
            assert secret not in shown
        assert f"postgresql+psycopg://app:{MASK}@db.internal:5432/billing" in shown
    assert s.database_url == f"postgresql+psycopg://app:{DB_PASSWORD}@db.internal:5432/billing"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("STRIPE_API_KEY", PK_LIVE),
        ("STRIPE_API_KEY", "sk_" + "tset_" + "51HgT0xKc9Zq8wLmNoPq9xYz"),
        ("STRIPE_WEBHOOK_SECRET", f"{WHSEC},{SK_LIVE}"),
        ("SENDGRID_API_KEY", SG_KEY.replace(".", "-")),
        ("ALERT_WEBHOOK_URL", "hooks.example.com/services/T0/B0/XXXXSECRET"),
        ("DATABASE_URL", f"mysql://app:{DB_PASSWORD}@db/x"),
        ("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db:port/x"),
    ],
)
def test_config_error_messages_never_contain_secrets(name: str, raw: str) -> None:
    """A rejected secret or database URL appears in the error only as a short preview."""
    with pytest.raises(ConfigError) as info:
        load_settings({name: raw}, env_file=None)
    message = str(info.value)
    assert name in message
    hidden = [DB_PASSWORD] if name == "DATABASE_URL" else raw.split(",")
    assert not [part for part in hidden if part in message]


def test_mask_url_password_handles_several_urls_and_at_signs() -> None:
    """Passwords (even with an unencoded @) are masked; password-less URLs are untouched."""
    text = "a=postgres://u:p@ss@h/db b=https://h/x c=redis://:pw@r:6379"
    assert mask_url_password(text) == f"a=postgres://u:{MASK}@h/db b=https://h/x c=redis://:{MASK}@r:6379"


def test_env_file_is_read_without_touching_os_environ(tmp_path: Path) -> None:
    """Quoted, exported and commented lines are read, and os.environ is left alone."""
    path = write_env(
        tmp_path,
        '# comment\nexport LOG_LEVEL=debug\nSCHEDULE_RECONCILE="*/5 * * * *"  # five\n'
        f"STRIPE_API_KEY='{SK_LIVE}'\nUNRELATED=1\n",
    )
    before = dict(os.environ)
    s = load_settings({}, env_file=path)
    assert (s.log_level, s.schedule_reconcile) == ("DEBUG", "*/5 * * * *")
    assert s.stripe_api_key == Secret(SK_LIVE)
    assert dict(os.environ) == before


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    """A variable set in the environment overrides the .env file; an empty one does not."""
    path = write_env(tmp_path, "LOG_LEVEL=DEBUG\nRECONCILE_CONCURRENCY=4\n")
    s = load_settings({"LOG_LEVEL": "error", "RECONCILE_CONCURRENCY": " "}, env_file=path)
    assert (s.log_level, s.reconcile_concurrency) == ("ERROR", 4)


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping the process environment is read."""
    monkeypatch.setenv("RECONCILE_MAX_CHANGES", "7")
    assert load_settings(env_file=None).reconcile_max_changes == 7


def test_missing_env_file_is_fine(tmp_path: Path) -> None:
    """A .env path that does not exist is simply skipped."""
    assert load_settings({}, env_file=tmp_path / "absent.env").log_level == "INFO"


def test_unreadable_env_file_is_a_problem(tmp_path: Path) -> None:
    """A .env path that cannot be read (here a directory) is reported with the other problems."""
    with pytest.raises(ConfigError) as info:
        load_settings({"LOG_LEVEL": "loud"}, env_file=tmp_path)
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith(f"{tmp_path}: cannot be read")


def test_unparsable_env_file_line_is_reported_with_its_number(tmp_path: Path) -> None:
    """A line python-dotenv cannot parse is a problem naming file and line."""
    path = write_env(tmp_path, "LOG_LEVEL=INFO\nthis is not a binding\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, env_file=path)
    assert info.value.problems == [
        f"{path}:2: cannot be parsed; write KEY=value and quote values that contain spaces or #"
    ]


@pytest.mark.parametrize(
    ("env", "file_text", "flagged"),
    [
        ({"STRIPE_API_KY": "x"}, "", "STRIPE_API_KY (in the environment): is not a known "
         "setting; did you mean STRIPE_API_KEY?"),
        ({"STRIPE_WEBHOOK_SECRETS": "x"}, "", "did you mean STRIPE_WEBHOOK_SECRET?"),
        ({}, "DATABSE_URL=x\n", "DATABSE_URL (in {file}): is not a known setting; "
         "did you mean DATABASE_URL?"),
        ({}, "stripe_api_key=x\n", "did you mean STRIPE_API_KEY?"),
    ],
)
def test_misspelt_variables_get_a_did_you_mean_hint(
    tmp_path: Path, env: dict[str, str], file_text: str, flagged: str
) -> None:
    """Unknown names close to a setting are problems that suggest the right name."""
    path = write_env(tmp_path, file_text)
    with pytest.raises(ConfigError) as info:
        load_settings(env, env_file=path)
    assert [flagged.format(file=path) in p for p in info.value.problems] == [True]


@pytest.mark.parametrize(
    "name", ["STRIPE_CLI_VERSION", "STRIPE_DEVICE_NAME", "STRIPE_API_VERSION", "DATABSE_URL",
             "EMAIL", "RETRY_COUNT", "PATH"],
)
def test_unrelated_environment_variables_are_ignored(name: str) -> None:
    """Shell variables that are not close to a setting, or lack our prefixes, pass."""
    load_settings({name: "x"}, env_file=None)


def test_example_env_lists_exactly_the_specified_settings_with_their_defaults() -> None:
    """example.env names every setting once, no others, each with its default value."""
    entries = example_entries()
    assert set(entries) == {spec.env for spec in SPECS}
    assert entries == {spec.env: spec.default or "" for spec in SPECS}


def test_example_env_loads_once_required_settings_are_filled(tmp_path: Path) -> None:
    """example.env, as shipped and with every default uncommented, loads without problems."""
    shipped = load_settings(REQUIRED, env_file=EXAMPLE_ENV, require=ALL_GROUPS)
    text = EXAMPLE_ENV.read_text(encoding="utf-8")
    uncommented = write_env(tmp_path, re.sub(r"(?m)^# ([A-Z][A-Z0-9_]*=)", r"\1", text))
    explicit = load_settings(REQUIRED, env_file=uncommented, require=ALL_GROUPS)
    assert dataclasses.replace(explicit, retry_policy_explicit=False) == shipped


def test_every_spec_has_a_settings_field_and_back() -> None:
    """Settings fields are exactly the spec fields plus the derived ones."""
    names = {f.name for f in dataclasses.fields(Settings)}
    assert names == {spec.field for spec in SPECS} | DERIVED_FIELDS
    assert len({spec.env for spec in SPECS}) == len(SPECS)


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after loading."""
    s = load_settings({}, env_file=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.log_level = "DEBUG"  # type: ignore[misc]


def test_markdown_table_has_a_row_per_setting() -> None:
    """The README table has a header plus one row per setting, defaults in code spans."""
    lines = render_markdown_table().splitlines()
    assert lines[0].startswith("| Variable | Default |")
    assert len(lines) == 2 + len(SPECS)
    assert "| `STRIPE_MAX_NETWORK_RETRIES` | `5` |" in render_markdown_table()
    assert "| `STRIPE_API_KEY` |  | stripe | yes |" in render_markdown_table()
