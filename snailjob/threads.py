"""Two generic threads the dispatcher uses, apart from its scheduling:

- ``LoopThread``: the event loop that runs coroutine executors (or a loop
  adopted from a web app);
- ``TimerWheel``: one thread that runs callbacks at monotonic deadlines
  (task timeouts, delayed interruptions).

Both start on first use, so a client that never needs them has no such thread.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

logger = logging.getLogger(__name__)


class LoopThread:
    """The event loop that runs coroutine executors: one thread, started on
    first use.  Coroutines share it, so a coroutine that blocks (a sync
    ``time.sleep``, a CPU-bound loop) delays every other coroutine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._external = False

    def adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run coroutines on ``loop`` (running in another thread, e.g. a web
        app's) instead of a loop of our own; it is never stopped here."""
        with self._lock:
            if self._loop is not None and not self._external:
                raise RuntimeError("coroutine executors already run on the client's own event loop")
            self._loop, self._external = loop, True

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="snailjob-asyncio",
                                                daemon=True)
                self._thread.start()
            self._loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop = self._loop, self._thread, None
            external, self._external = self._external, False
        if loop is None or thread is None or external:
            return

        async def _shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(_shutdown()))
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


def _nothing() -> None:
    pass


@dataclass(order=True)
class TimerHandle:
    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _nothing  # release the task it refers to now, not at its deadline


class TimerWheel:
    """One thread running callbacks at monotonic deadlines (started lazily)."""

    def __init__(self) -> None:
        self._heap: List[TimerHandle] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def schedule(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(when, next(self._seq), callback)
        with self._cond:
            if len(self._heap) > 1024 and handle.seq % 1024 == 0:
                # drop cancelled handles so long timeouts do not pile up
                self._heap = [h for h in self._heap if not h.cancelled]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, handle)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="snailjob-timeouts", daemon=True)
                self._thread.start()
            if self._heap[0] is handle:  # only an earlier deadline needs the thread awake
                self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    while self._heap and self._heap[0].cancelled:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0].when <= now:
                        handle = heapq.heappop(self._heap)
                        break
                    # bounded wait: a far deadline must not overflow the lock's timeout
                    self._cond.wait(min(self._heap[0].when - now, 3600.0) if self._heap else None)
            try:
                handle.callback()
            except Exception:
                logger.exception("timeout callback failed")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
