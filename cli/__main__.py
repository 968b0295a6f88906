"""`python -m cli` runs the `reconcile` command (used by benchmarks and subprocess tests)."""

from cli import main

main()
