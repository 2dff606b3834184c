"""Runs dispatched tasks: one pool of worker threads per ``taskBatchId``
(at most ``parallelNum`` threads), per-batch stop events, client-side
``executorTimeout`` and interruption.

Worker threads are shared: a batch takes an idle one (or starts one) for
each of its at most ``parallelNum`` concurrent tasks and gives it back when
its queue is empty; a thread unused for ``linger`` seconds exits, so nothing
grows with the number of batches seen.

A client-wide cap (``max_running``) bounds the threads running work at once.
A batch that wants a thread while the cap is reached waits in a ring of
batches (each batch at most once), and a thread that finishes a task while
batches wait hands itself to the batch at the head of the ring and puts its
own batch at the tail: freed threads go round the waiting batches one task
at a time, so a small batch waits for at most one task of each batch ahead
of it, never for a big batch to drain.  At most ``max_queued`` tasks wait;
a task beyond that (or, with ``refuse_when_full``, a task of a batch that
has no thread while the cap is reached) is refused with ``DispatcherFull``
and never enters.  Coroutine tasks take no thread and are not capped (only
``parallelNum`` per batch applies).  A waiting task's ``executorTimeout``
runs from its arrival, as the server's does.

Interruption: a stop or a timeout sets the batch's stop event and that of
each of its tasks (what ``current_task().is_stopped()`` and
``ThreadPoolCache.event_is_set`` read) and raises ``TaskInterrupted`` in each
running task's thread.  CPython delivers that exception only between
bytecodes: code blocked in one long C call (``time.sleep(600)``, a socket read
without timeout, a C extension's loop) is interrupted only when that call
returns.  Stopped tasks are never reported; the server records them as STOP.
A task of an ``isolation="process"`` executor runs in a worker process
(``snailjob.processes``); its batch thread waits for it, and the
interruption of that thread ends the worker, by SIGKILL if need be.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Hashable, List, Optional, Tuple

from snailjob.errors import TaskInterrupted
from snailjob.threads import LoopThread, StopEvent, TimerWheel
from snailjob.work import DONE as _DONE
from snailjob.work import QUEUED as _QUEUED
from snailjob.work import RUNNING as _RUNNING
from snailjob.work import STOPPED as _STOPPED
from snailjob.work import Done, W, Work, is_async_callable

logger = logging.getLogger(__name__)


def _ignore_error(problem: str) -> None:
    """The default ``on_internal_error``: nobody listens."""

_STOP_MEMORY = 4096  # stopped batches remembered for event_is_set()
_STOPPED_EVENT = threading.Event()  # what a stopped batch that has left reports
_STOPPED_EVENT.set()


class DispatcherFull(Exception):
    """A task the dispatcher refuses: the cap on running tasks is reached
    and the queue limit (or the ``refuse`` policy) leaves no room."""


def _raise_in_thread(thread_id: int, exc: Optional[type]) -> None:
    """Set (or, with ``None``, clear) a pending async exception of a thread."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


@dataclass
class _Batch:
    batch_id: Hashable
    parallel: int
    stop_event: threading.Event = field(default_factory=StopEvent)
    queue: Deque[Work] = field(default_factory=deque)
    tasks: Dict[int, Work] = field(default_factory=dict)
    workers: int = 0
    waiting: bool = False  # in the dispatcher's ring of batches waiting for a thread
    async_slots: Optional[asyncio.Semaphore] = None


class _Slot:
    """A worker thread's mailbox: the batch it should drain next."""

    def __init__(self, batch: Optional[_Batch], number: int) -> None:
        self.batch = batch
        self.number = number
        # held while there is nothing to wake for: a plain lock, whose release wakes the waiting
        # thread with less work than an Event's condition (measured: BENCHMARKS.md, K=1)
        self.wake = threading.Lock()
        self.wake.acquire()


class Dispatcher:
    """Queues work per batch and runs it on the batch's worker threads.

    Every work that ends without being stopped has its outcome (the value
    of ``work.run()``) handed to the ``done`` its submitter gave.
    """

    def __init__(self, linger: float = 1.0, interrupt_delay: float = 1.0,
                 max_running: int = 0, max_queued: int = 0, refuse_when_full: bool = False,
                 max_queued_bytes: int = 0) -> None:
        """``max_running``: threads running work at once (0: no cap);
        ``max_queued``: tasks waiting at once (0: no limit);
        ``max_queued_bytes``: bytes of arguments (``Work.size``) of the
        tasks waiting at once (0: no limit);
        ``refuse_when_full``: refuse, rather than queue, a task of a batch
        that has no thread while ``max_running`` threads are busy."""
        self.on_internal_error: Callable[[str], None] = _ignore_error
        """Told (without blocking) of an internal error: the client's alarms."""
        self._linger = linger
        self._interrupt_delay = interrupt_delay
        self._max_running = max_running
        self._max_queued = max_queued
        self._refuse_when_full = refuse_when_full
        self._busy = 0  # threads assigned to a batch
        self._queued = 0  # thread tasks not started yet
        self._max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0  # their Work.size
        self._ring: Deque[_Batch] = deque()  # batches waiting for a thread, each at most once
        self.refused = 0  # tasks refused by DispatcherFull
        self._lock = threading.Lock()
        self._batches: Dict[Hashable, _Batch] = {}
        self._stopped: OrderedDict[Hashable, None] = OrderedDict()  # ids of recently stopped batches
        self._timers = TimerWheel()
        self._names = itertools.count(1)
        self._loop = LoopThread()
        self._idle: List[_Slot] = []  # parked worker threads

    # --- queries ----------------------------------------------------------

    def stop_event(self, batch_id: Hashable) -> Optional[threading.Event]:
        """The stop event of a live or recently stopped batch."""
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is not None:
                return batch.stop_event
            return _STOPPED_EVENT if batch_id in self._stopped else None

    def running_count(self) -> int:
        """Tasks queued or running."""
        with self._lock:
            return sum(len(b.tasks) for b in self._batches.values())

    def batch_count(self) -> int:
        with self._lock:
            return len(self._batches)

    def load(self) -> Dict[str, int]:
        """Threads running work, thread tasks waiting, batches waiting for a
        thread under the cap, and tasks refused so far."""
        with self._lock:
            return {"threads_busy": self._busy, "tasks_queued": self._queued, "queued_bytes": self._queued_bytes,
                    "batches_waiting": len(self._ring), "tasks_refused": self.refused}

    # --- submit -----------------------------------------------------------

    def _batch_for(self, task: Work) -> _Batch:
        key = task.key
        batch = self._batches.get(key)
        if batch is None:
            batch = _Batch(key, task.parallel)
            self._batches[key] = batch
            self._stopped.pop(key, None)
        return batch

    def submit(self, task: W, done: Done[W]) -> None:
        """Queue a task; it starts as soon as its batch has a free worker
        (a thread for plain functions, a slot on the event loop for
        coroutine functions; each kind at most ``parallelNum`` at once) and,
        for a thread, the cap allows.  ``done(task, outcome)`` is called on
        the thread that ran it, unless it was stopped.  Raises
        ``DispatcherFull`` (and keeps nothing of the task) when it cannot be
        queued."""
        task.done = done
        task.is_async = is_async_callable(task.func) and not task.in_process
        self._arm_timeout(task)  # before the task can finish, so that finishing cancels it
        if task.is_async:
            with self._lock:
                batch = self._batch_for(task)
                batch.tasks[id(task)] = task
            self._loop.call(self._start_async, task, batch)
            return
        with self._lock:
            refusal = self._refusal(task)
            if refusal is None:
                batch = self._batch_for(task)
                batch.queue.append(task)
                self._queued += 1
                self._queued_bytes += task.size
                batch.tasks[id(task)] = task
                if batch.workers < batch.parallel:
                    if not self._max_running or self._busy < self._max_running:
                        batch.workers += 1
                        self._busy += 1
                        self._assign(batch)
                    elif not batch.waiting:
                        batch.waiting = True
                        self._ring.append(batch)
                return
            self.refused += 1
        if task.timer is not None:
            task.timer.cancel()
        raise DispatcherFull(refusal)

    def _refusal(self, task: Work) -> Optional[str]:
        """Why a thread task cannot be queued now, or None (caller holds the lock)."""
        if self._max_queued and self._queued >= self._max_queued:
            return (f"{self._queued} tasks already wait on this client (SNAIL_MAX_QUEUED={self._max_queued}); "
                    "dispatch it to another node")
        if (self._max_queued_bytes and self._queued
                and self._queued_bytes + task.size > self._max_queued_bytes):
            return (f"the {self._queued} tasks waiting on this client hold {self._queued_bytes} bytes of arguments "
                    f"and this one {task.size} more (SNAIL_MAX_QUEUED_BYTES={self._max_queued_bytes}); "
                    "dispatch it to another node")
        if self._refuse_when_full and self._max_running and self._busy >= self._max_running:
            batch = self._batches.get(task.key)
            if batch is None or batch.workers == 0:
                return (f"{self._busy} tasks already run on this client (SNAIL_MAX_RUNNING={self._max_running}, "
                        "SNAIL_WHEN_BUSY=refuse); dispatch it to another node")
        return None

    def _assign(self, batch: _Batch) -> None:
        """Give ``batch`` a worker thread: an idle one, else a new one
        (caller holds the lock)."""
        if self._idle:
            slot = self._idle.pop()
            slot.batch = batch
            slot.wake.release()
            return
        slot = _Slot(batch, next(self._names))
        threading.Thread(target=self._thread_main, args=(slot,), name=f"snailjob-worker-{slot.number}",
                         daemon=True).start()

    def _thread_main(self, slot: _Slot) -> None:
        """A worker thread: runs the tasks of the batches it is given; after
        ``linger`` seconds without one it exits."""
        me = threading.current_thread()
        while True:
            self._worker(slot, me)
            with self._lock:
                slot.batch = None
                slot.wake.acquire(blocking=False)  # a wake-up it did not need is spent
                self._idle.append(slot)
            me.name = "snailjob-worker-idle"
            slot.wake.acquire(timeout=self._linger)
            with self._lock:
                if slot.batch is None:  # not handed a batch while it waited
                    self._idle.remove(slot)
                    return

    def _arm_timeout(self, task: Work) -> None:
        timeout = task.timeout
        if timeout is not None and timeout > 0:
            task.timer = self._timers.schedule(
                task.received + timeout, lambda: self._timed_out(task, timeout))

    # --- stop -------------------------------------------------------------

    def stop_batch(self, batch_id: Hashable, reason: str = "stop") -> int:
        """Stop a batch: set its stop event, drop its queued tasks, and after
        ``interrupt_delay`` seconds interrupt the tasks still running (a job
        that watches the event can return on its own first).  Returns how many
        tasks were affected (0 for an unknown or finished batch)."""
        with self._lock:
            batch = self._batches.pop(batch_id, None)
            if batch is None:
                return 0
            batch.stop_event.set()
            self._remember_stopped(batch_id)
            running = []
            for task in list(batch.tasks.values()):
                task.stop_event.set()
                if task.state == _RUNNING:
                    running.append(task)
                elif task.is_async:
                    self._loop.call(_cancel, task)  # still waiting for a slot
                task.state = _STOPPED
                if task.timer is not None:
                    task.timer.cancel()
            affected = len(batch.tasks)
            self._queued -= len(batch.queue)
            self._queued_bytes -= sum(task.size for task in batch.queue)
            batch.queue.clear()
        if running:
            if self._interrupt_delay > 0:
                self._timers.schedule(time.monotonic() + self._interrupt_delay,
                                      lambda: self._interrupt(running))
            else:
                self._interrupt(running)
        if affected:
            logger.info("batch %s %s: %d task(s) stopped", batch_id, reason, affected)
        return affected

    def _interrupt(self, tasks: List[Work]) -> None:
        with self._lock:
            for task in tasks:
                if task.finished or task.interrupted:
                    continue
                if task.is_async:
                    task.interrupted = True
                    self._loop.call(_cancel, task)
                elif task.thread_id is not None:
                    task.interrupted = True
                    _raise_in_thread(task.thread_id, TaskInterrupted)

    def _remember_stopped(self, batch_id: Hashable) -> None:
        self._stopped[batch_id] = None
        while len(self._stopped) > _STOP_MEMORY:
            self._stopped.popitem(last=False)

    def _timed_out(self, task: Work, timeout: int) -> None:
        with self._lock:
            if task.state not in (_QUEUED, _RUNNING):
                return
        logger.warning("%s exceeded executorTimeout=%ss; stopping it", task.describe(), timeout)
        self.stop_batch(task.key, reason="timed out")

    def stop_all(self, reason: str = "shutdown") -> int:
        with self._lock:
            ids = list(self._batches)
        return sum(self.stop_batch(i, reason) for i in ids)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task is queued or running; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = any(b.tasks for b in self._batches.values())
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def use_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run coroutine executors on ``loop`` from now on (see ``LoopThread.adopt``)."""
        self._loop.adopt(loop)

    def close(self) -> None:
        self._timers.close()
        self._loop.close()

    # --- coroutines -------------------------------------------------------

    def _start_async(self, task: Work, batch: _Batch) -> None:
        """On the loop thread: create the asyncio task of a queued coroutine."""
        if batch.async_slots is None:
            batch.async_slots = asyncio.Semaphore(batch.parallel)
        task.async_task = asyncio.get_running_loop().create_task(self._run_async(task, batch))

    async def _run_async(self, task: Work, batch: _Batch) -> None:
        try:
            assert batch.async_slots is not None
            async with batch.async_slots:
                with self._lock:
                    if task.state != _QUEUED:
                        return
                    task.state = _RUNNING
                token = task.enter()
                try:
                    outcome = await task.run_async()
                finally:
                    task.leave(token)
                with self._lock:
                    if task.state != _RUNNING:
                        return
                    task.state = _DONE
                _hand_back(task, outcome)
        except asyncio.CancelledError:
            pass  # stopped or timed out: no report
        except Exception:
            logger.exception("internal error running coroutine of batch %s", batch.batch_id)
            self.on_internal_error(f"internal error running a coroutine of batch {batch.batch_id}")
        finally:
            with self._lock:
                task.finished = True
                batch.tasks.pop(id(task), None)
                if task.timer is not None:
                    task.timer.cancel()
                if batch.workers == 0 and not batch.tasks and self._batches.get(batch.batch_id) is batch:
                    del self._batches[batch.batch_id]

    # --- workers ----------------------------------------------------------

    def _next(self, slot: _Slot, done: Optional[Work]) -> Optional[Work]:
        """Finish ``done`` (the task the thread just ran) and take the next
        task: of the thread's batch, or, when batches wait for a thread, of
        the batch at the head of the ring (``slot.batch`` changes).  None when
        the thread has nothing left to run."""
        with self._lock:
            batch = slot.batch
            assert batch is not None
            if done is not None:
                self._finish(batch, done)
            if batch.queue and not batch.stop_event.is_set():
                if not self._ring:
                    return self._take(batch)
                self._want_thread(batch)  # batches wait: go to the back of the line
            self._release(batch)
            while self._ring:
                nxt = self._ring.popleft()
                nxt.waiting = False
                if (nxt.queue and not nxt.stop_event.is_set() and nxt.workers < nxt.parallel
                        and self._batches.get(nxt.batch_id) is nxt):
                    nxt.workers += 1
                    if nxt.workers < nxt.parallel and len(nxt.queue) > 1:
                        self._want_thread(nxt)  # more of it could run: it stays in the ring
                    slot.batch = nxt
                    return self._take(nxt)
            self._busy -= 1
            return None

    def _take(self, batch: _Batch) -> Work:
        task = batch.queue.popleft()
        self._queued -= 1
        self._queued_bytes -= task.size
        task.state = _RUNNING
        task.thread_id = threading.get_ident()
        return task

    def _want_thread(self, batch: _Batch) -> None:
        if not batch.waiting:
            batch.waiting = True
            self._ring.append(batch)

    def _release(self, batch: _Batch) -> None:
        """A thread leaves ``batch`` (caller holds the lock)."""
        batch.workers -= 1
        if batch.workers == 0 and not batch.tasks and self._batches.get(batch.batch_id) is batch:
            del self._batches[batch.batch_id]

    def _finish(self, batch: _Batch, task: Work) -> None:
        """Caller holds the lock."""
        if task.interrupted:
            # The exception may still be pending if the task ended on its own
            # just as it was stopped; it must not hit the next task.
            _raise_in_thread(threading.get_ident(), None)
        if task.state == _RUNNING:
            task.state = _DONE
        task.finished = True
        batch.tasks.pop(id(task), None)
        if task.timer is not None:
            task.timer.cancel()

    def _worker(self, slot: _Slot, me: threading.Thread) -> None:
        done: Optional[Work] = None
        named: Optional[_Batch] = None
        while True:
            try:
                task = self._next(slot, done)
                done = task
                if task is None:
                    return
                if slot.batch is not named:
                    named = slot.batch
                    assert named is not None
                    me.name = f"snailjob-{named.batch_id}-{slot.number}"  # what job logs show as the thread
                self._execute(task)
            except TaskInterrupted:
                continue  # a stop that landed outside the job function
            except BaseException:  # never let a worker die with a task RUNNING
                logger.exception("internal error in worker of batch %s",
                                 slot.batch.batch_id if slot.batch else None)
                self.on_internal_error(f"internal error in a worker of batch "
                                       f"{slot.batch.batch_id if slot.batch else None}")

    def _execute(self, task: Work) -> None:
        token = task.enter()
        try:
            outcome = task.run()
        except TaskInterrupted:
            return
        finally:
            task.leave(token)
        with self._lock:
            if task.state != _RUNNING:
                return  # stopped while finishing: no report
            task.state = _DONE
            batch = self._batches.get(task.key)
            task.may_wait = not self._ring and (batch is None or not batch.queue)
        _hand_back(task, outcome)


def _hand_back(task: Work, outcome: object) -> None:
    """Give a finished work's outcome to its submitter's handler."""
    assert task.done is not None
    task.done(task, outcome)


def _cancel(task: Work) -> None:
    if task.async_task is not None:
        task.async_task.cancel()


__all__: Tuple[str, ...] = ("Dispatcher", "DispatcherFull")
