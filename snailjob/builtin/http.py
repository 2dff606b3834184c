"""snailJobHttpExecutor (to be written)."""

from __future__ import annotations

from typing import Any, Callable

from snailjob.settings import Settings


def http_job(settings: Settings) -> Callable[[Any], Any]:
    raise NotImplementedError
