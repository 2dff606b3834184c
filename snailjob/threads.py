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
from typing import Any, Callable, List, Optional, Tuple

logger = logging.getLogger(__name__)


class StopEvent(threading.Event):
    """A ``threading.Event`` that costs a flag until somebody waits on it.

    Every task and batch has a stop event, and nearly all of them end
    without anyone waiting on it: ``threading.Event()`` builds a
    ``Condition`` (a lock and a waiter list, in Python) each time, a
    measurable share of a trivial task's cost.  This one builds its
    ``Condition`` on the first ``wait``; ``set``, ``is_set`` and ``clear``
    read and write a flag.  It is an ``Event`` for ``isinstance`` and every
    method behaves as ``Event``'s."""

    _create = threading.Lock()  # held only while a waiter builds its condition

    def __init__(self) -> None:  # no super().__init__(): that is the cost avoided
        self._flag = False
        self._cond: Optional[threading.Condition] = None

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set

    def set(self) -> None:
        self._flag = True  # written before the condition is read: see wait()
        cond = self._cond
        if cond is not None:
            with cond:
                cond.notify_all()

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._flag:
            return True
        cond = self._cond
        if cond is None:
            with StopEvent._create:
                if self._cond is None:
                    self._cond = threading.Condition(threading.Lock())
                cond = self._cond
        with cond:
            # a set() that read no condition yet wrote the flag first: seen here
            if self._flag:
                return True
            cond.wait(timeout)
            return self._flag


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
        # (when, seq, handle): tuples compare in C, a dataclass's __lt__ in Python
        self._heap: List[Tuple[float, int, TimerHandle]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def schedule(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(when, next(self._seq), callback)
        with self._cond:
            if len(self._heap) > 1024 and handle.seq % 1024 == 0:
                # drop cancelled handles so long timeouts do not pile up
                self._heap = [e for e in self._heap if not e[2].cancelled]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (when, handle.seq, handle))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="snailjob-timeouts", daemon=True)
                self._thread.start()
            if self._heap[0][2] is handle:  # only an earlier deadline needs the thread awake
                self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        handle = heapq.heappop(self._heap)[2]
                        break
                    # bounded wait: a far deadline must not overflow the lock's timeout
                    self._cond.wait(min(self._heap[0][0] - now, 3600.0) if self._heap else None)
            try:
                handle.callback()
            except Exception:
                logger.exception("timeout callback failed")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
