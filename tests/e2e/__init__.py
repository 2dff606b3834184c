"""End-to-end tests against the real SnailJob server (see harness.py)."""
