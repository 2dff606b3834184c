"""The script executors (to be written)."""

from __future__ import annotations

from typing import Any, Callable

from snailjob.settings import Settings


def script_job(kind: str, settings: Settings) -> Callable[[Any], Any]:
    raise NotImplementedError
