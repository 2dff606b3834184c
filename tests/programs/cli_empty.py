"""A module that declares no executor (tests/test_cli.py)."""

ANSWER = 42
