"""A module whose import fails (tests/test_cli.py)."""

raise RuntimeError("cli_broken cannot be imported")
