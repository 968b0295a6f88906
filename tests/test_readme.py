"""The README stays in step with the code it documents."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cli import main
from config import render_markdown_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_settings_table_matches_the_settings_spec() -> None:
    """The README's configuration table is exactly the one rendered from the settings spec."""
    start = README.index("<!-- settings-table:start -->") + len("<!-- settings-table:start -->")
    end = README.index("<!-- settings-table:end -->")
    assert README[start:end].strip() == render_markdown_table().strip()


def test_every_cli_command_is_documented() -> None:
    """Each `reconcile` subcommand appears in the README as `reconcile <name>`."""
    names = set(main.commands)
    assert names, "the CLI has no commands"
    missing = [n for n in sorted(names) if f"reconcile {n}" not in README]
    assert missing == []


def test_exit_codes_in_help_match_readme() -> None:
    """Every exit code in `reconcile --help` is in the README's exit code table."""
    out = CliRunner().invoke(main, ["--help"]).output
    for code in ("0", "1", "2", "3", "4", "5"):
        assert f"  {code}  " in out
        assert f"| {code} |" in README
