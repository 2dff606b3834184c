"""``RetryRegistry``: the ``@retryable`` functions a client serves.

Kept apart from ``snailjob.retry`` so that a client (and ``import
snailjob``) can hold an empty registry without loading the retry feature;
``snailjob.retry`` re-exports it.  This module imports nothing of the
retry feature: ``RetryableBase``, defined here, is what the registry knows
of a ``@retryable`` function (``snailjob.retry.Retryable`` subclasses it),
so ``is_retryable`` answers without loading ``snailjob.retry``.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Protocol, Tuple

from snailjob.errors import RetryDefinitionError

if TYPE_CHECKING:
    from snailjob.wire.models import RetryTaskRequest


class RetrySink(Protocol):
    """Where reports go: a running client (set by the client at start)."""

    def queue_retry_report(self, request: RetryTaskRequest) -> None: ...

    def send_retry_report(self, request: RetryTaskRequest, timeout: float) -> None: ...


class RetryableBase:
    """What the registry needs of a ``@retryable`` function: its key and a
    way to hand it the registry.  ``snailjob.retry.Retryable`` is the one
    subclass; only it passes ``is_retryable``."""

    scene: str
    executor_name: str

    def _attach(self, registry: RetryRegistry) -> None:
        raise NotImplementedError


def is_retryable(obj: object) -> bool:
    """Whether ``obj`` is a ``@retryable`` function, without importing
    ``snailjob.retry`` (none can exist before it is imported)."""
    return isinstance(obj, RetryableBase)


@dataclass
class RetryRegistry:
    """Retryable functions by (scene, executor name); a running client
    attaches itself as ``sink`` so the functions can report through it."""

    _entries: Dict[Tuple[str, str], RetryableBase] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sink: Optional[weakref.ReferenceType[Any]] = None

    def register(self, item: RetryableBase) -> None:
        if not is_retryable(item):
            raise RetryDefinitionError(f"{item!r} is not a @retryable function")
        key = (item.scene, item.executor_name)
        with self._lock:
            known = self._entries.get(key)
            if known is not None and known is not item:
                raise RetryDefinitionError(f"two retryables for scene {item.scene!r} share the executor "
                                           f"name {item.executor_name!r}; give one an executor_name=")
            self._entries[key] = item
        item._attach(self)

    def get(self, scene: str, executor_name: str) -> Optional[RetryableBase]:
        """The ``snailjob.retry.Retryable`` registered under the key."""
        with self._lock:
            return self._entries.get((scene, executor_name))

    def names(self) -> List[Tuple[str, str]]:
        with self._lock:
            return sorted(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __hash__(self) -> int:  # kept in the retryables' weak sets
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def sink(self) -> Optional[RetrySink]:
        ref = self._sink
        return ref() if ref is not None else None

    def attach(self, sink: Any) -> None:
        self._sink = weakref.ref(sink)

    def detach(self, sink: Any) -> None:
        if self._sink is not None and self._sink() is sink:
            self._sink = None
