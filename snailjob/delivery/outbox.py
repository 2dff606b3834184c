"""``ResultOutbox``: task results (and retry replay and callback results)
sent in the background until the server takes them or their task's timeout
has passed.  Apart from the shippers: results go one by one, may be delayed
or repeated, and are dropped per task batch (``discard_batch``).
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Tuple

from snailjob.delivery.backoff import backoff
from snailjob.delivery.store import OutboxStore
from snailjob.errors import TransportError
from snailjob.transport import Reply, Transport
from snailjob.wire.codec import clean

logger = logging.getLogger("snailjob.delivery")  # the name its lines have always had (docs/deploying.md)



def _no_alarm(problem: str) -> None:
    """The default ``on_problem``: nobody listens."""


# when a sentinel's result is sent again after its delivery (seconds; the last repeats)
REPEAT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(order=True)
class _Pending:
    not_before: float
    seq: int
    key: Any = field(compare=False)
    uri: str = field(compare=False)
    body: str = field(compare=False)
    expires: float = field(compare=False)  # wall-clock time.time()
    attempts: int = field(default=0, compare=False)
    describe: str = field(default="", compare=False)
    row: Optional[int] = field(default=None, compare=False)
    # None: sent until delivered; n >= 0: sent again after delivery (n repeats so far)
    repeats: Optional[int] = field(default=None, compare=False)
    held_since: Optional[float] = field(default=None, compare=False)  # monotonic time of the first failure

    @property
    def is_repeat(self) -> bool:
        return bool(self.repeats)


class ResultOutbox:
    """Delivers task results: with a transport that can start a call without
    waiting (``call_async``, as ``GrpcTransport``), from the thread that offers
    the result (or by that thread's own blocking call: ``offer(wait=True)``),
    at most ``max_in_flight`` calls at once, with one thread for
    the results whose time has not come yet (backoff, delays, repeats);
    otherwise on ``senders`` threads making blocking calls (so at most that
    many calls at once).

    Each result is retried with backoff until the server answers or its
    expiry passes (the dispatcher sets it to the task's ``executorTimeout``
    plus a margin: after that the server has recorded the task as stopped).
    At most ``max_pending`` results wait; beyond that the oldest is dropped
    with an error log.  ``key`` is the task batch id, so that ``discard_batch`` can
    drop undelivered results of a stopped batch.

    A result offered with ``repeat=True`` is sent again after each delivery
    (``REPEAT_DELAYS``) until it expires or its batch is discarded; repeats
    are kept in memory only and neither ``pending`` nor ``flush`` waits for them.
    """

    def __init__(self, transport: Transport, rpc_timeout: float, senders: int = 4,
                 max_pending: int = 100_000, store: Optional[OutboxStore] = None,
                 max_in_flight: int = 64) -> None:
        self._transport = transport
        call_async = getattr(transport, "call_async", None)
        self._call_async: Optional[Callable[..., None]] = \
            call_async if callable(call_async) and getattr(transport, "can_call_async", True) else None
        self._max_in_flight = max_in_flight if self._call_async is not None else senders
        # offer(wait=True) delivers a lone result by its thread's blocking call where that is
        # cheaper than a call on the loop (grpcio); the native transport says it is not
        self._alone_blocking = bool(getattr(transport, "lone_call_blocking", True))
        self._rpc_timeout = rpc_timeout
        self._queue: Deque[_Pending] = collections.deque()
        self._waiting: List[_Pending] = []  # heap of items in backoff
        self._repeats: List[_Pending] = []  # heap of results to send again
        self._repeats_ended: collections.OrderedDict[Any, None] = collections.OrderedDict()  # keys, recent
        self._cond = threading.Condition()
        self._in_flight = 0
        self._flushing = 0  # threads waiting in flush()
        self._senders = senders
        self._max_pending = max_pending
        self._store = store
        self._seq = 0
        self._closed = False
        self._threads: List[threading.Thread] = []
        self.delivered = 0
        self.dropped = 0
        self.refused = 0
        self.restored = 0
        self.repeated = 0
        self.retries = 0  # failed attempts that were tried again
        self.late = 0  # results delivered after at least one failed attempt
        self._holding = False  # an outage is being logged
        self.on_problem: Callable[[str], None] = _no_alarm
        """Told (without blocking; possibly under this outbox's lock) when a
        result is refused, dropped, or held after a failed attempt: the
        client's alarms."""

    def start(self) -> None:
        if self._store is not None:
            self._restore(self._store)

    def held(self) -> Tuple[int, List[Any]]:
        """Results waiting to be tried again after a failed attempt, and
        their batch ids (at most 20)."""
        with self._cond:
            keys = sorted({p.key for p in self._waiting if not p.is_repeat}, key=str)
            return sum(1 for p in self._waiting if not p.is_repeat), keys[:20]

    def _start_senders(self) -> None:
        """Start the sender threads on first use (caller holds the lock): one
        for the results due later when calls start without waiting, else
        ``senders`` threads making blocking calls."""
        if self._call_async is not None:
            thread = threading.Thread(target=self._run_due, name="snailjob-results", daemon=True)
            thread.start()
            self._threads.append(thread)
            return
        for n in range(self._senders):
            thread = threading.Thread(target=self._run, name=f"snailjob-results-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _restore(self, store: OutboxStore) -> None:
        now = time.time()
        for row, key, uri, body, expires, describe in store.load():
            if expires <= now:
                store.remove(row)
                self.dropped += 1
                logger.error("dropped stored %s: older than its task's timeout allows", describe)
                self.on_problem(f"dropped the stored {describe}: older than its task's timeout allows")
                continue
            self._enqueue(_Pending(time.monotonic(), 0, key, uri, body, expires, describe=describe, row=row))
            self.restored += 1
        if self.restored:
            logger.info("restored %d undelivered result(s) from %s", self.restored, store.path)

    def offer(self, key: Any, uri: str, body: str, expires: float, describe: str = "",
              repeat: bool = False, delay: float = 0.0, wait: bool = False) -> None:
        """Queue a result; ``expires`` is the wall-clock time to give up (and,
        with ``repeat``, to stop sending it again); ``delay`` seconds before
        it is first sent.  Never refused: when full, the oldest is dropped.

        ``wait``: the calling thread may deliver the result itself when no
        other result is in flight, with one blocking call (at most the RPC
        timeout; a failure goes the usual way of backoff and retry).  Sent
        alone on grpcio, that is cheaper and quicker than a call started in
        the background, and the result is at the server when ``offer``
        returns.  A transport with ``lone_call_blocking = False`` (the native
        one, where the call on the loop is the cheaper) never takes that path.
        Only for a thread that may block: never an event loop's."""
        row = self._store.add(key, uri, body, expires, describe) if self._store is not None else None
        self._enqueue(_Pending(time.monotonic() + delay, 0, key, uri, body, expires, describe=describe, row=row,
                               repeats=0 if repeat else None), wait)

    def _enqueue(self, item: _Pending, wait: bool = False) -> None:
        with self._cond:
            if not self._threads and not self._closed:
                self._start_senders()
            self._seq += 1
            item.seq = self._seq
            delayed = item.not_before > time.monotonic()
            if delayed:
                heapq.heappush(self._waiting, item)
            else:
                self._queue.append(item)
            while len(self._queue) + len(self._waiting) > self._max_pending and self._queue:
                oldest = self._queue.popleft()
                self._forget(oldest)
                self.dropped += 1
                logger.error("dropped %s: more than %d results waiting for the server",
                             oldest.describe or oldest.uri, self._max_pending)
                self.on_problem(f"dropped the {oldest.describe or oldest.uri}: more than {self._max_pending} "
                                "results waiting for the server")
            if self._call_async is not None:
                starts = self._take_ready()
                alone = (self._alone_blocking and wait and self._in_flight == 1 and len(starts) == 1
                         and starts[0] is item)
                if delayed or self._flushing:
                    self._cond.notify_all()
            elif self._flushing:  # a flush() waiter must not take the wake-up meant for a sender
                self._cond.notify_all()
            else:
                self._cond.notify()
        if self._call_async is not None:
            if alone:
                self._deliver_here(item)
            else:
                self._start(starts)

    def _deliver_here(self, item: _Pending) -> None:
        """Deliver ``item`` (counted as in flight) with a blocking call on
        this thread; what is ready after it is started without waiting."""
        self._done(item, *self._call(item))

    def _call(self, item: _Pending) -> Tuple[Optional[Reply], Optional[TransportError]]:
        """One blocking call for ``item``: ``(reply, None)`` or ``(None, error)``."""
        try:
            return self._transport.call(item.uri, item.body, self._rpc_timeout), None
        except TransportError as exc:
            return None, exc
        except Exception as exc:  # a broken transport must not lose the result
            return None, TransportError(repr(exc))

    def _take_ready(self) -> List[_Pending]:
        """The results to send now, within the limit of calls in flight
        (caller holds the lock; they count as in flight from here)."""
        items: List[_Pending] = []
        while self._in_flight < self._max_in_flight and not self._closed:
            item = self._next_ready()
            if item is None:
                break
            self._in_flight += 1
            items.append(item)
        return items

    def _start(self, items: List[_Pending]) -> None:
        """Start the calls of ``items`` without waiting for them (no lock held)."""
        assert self._call_async is not None
        for item in items:
            try:
                self._call_async(item.uri, item.body, self._rpc_timeout, functools.partial(self._done, item))
            except Exception as exc:  # a broken transport must not lose the result
                self._done(item, None, TransportError(repr(exc)))

    def _done(self, item: _Pending, reply: Optional[Reply], error: Optional[TransportError]) -> None:
        """A call started by ``_start`` ended (on gRPC's thread): account for
        it, then start what is ready and was waiting for a free slot."""
        try:
            self._start(self._finished(item, reply, error))
        except Exception:  # never raise into gRPC's callback thread
            logger.exception("internal error after delivering %s", item.describe or item.uri)

    def _until_due(self) -> float:
        """Seconds until the next delayed result is due, at most 0.5 (caller holds the lock)."""
        wait = 0.5
        for heap in (self._waiting, self._repeats):
            if heap:
                wait = min(wait, heap[0].not_before - time.monotonic())
        return max(wait, 0.001)

    def _run_due(self) -> None:
        """Start results whose time has come (backoff, delay, repeat), and
        queued ones no call has taken (calls start without waiting)."""
        while True:
            with self._cond:
                starts: List[_Pending] = []
                while not self._closed:
                    starts = self._take_ready()
                    if starts:
                        break
                    self._cond.wait(self._until_due())
                if not starts:
                    return
            self._start(starts)

    def _forget(self, item: _Pending) -> None:
        if item.row is not None and self._store is not None:
            try:
                self._store.remove(item.row)
            except Exception:  # sqlite3.Error; the result was handled, the file is stale
                logger.exception("could not update the outbox file")

    def discard_batch(self, key: Any) -> int:
        """Drop undelivered items of ``key``; the number dropped."""
        with self._cond:
            gone = [p for p in self._queue if p.key == key] + [p for p in self._waiting if p.key == key]
            if gone:
                self._queue = collections.deque(p for p in self._queue if p.key != key)
                self._waiting = [p for p in self._waiting if p.key != key]
                heapq.heapify(self._waiting)
            if any(p.key == key for p in self._repeats):
                self._repeats = [p for p in self._repeats if p.key != key]
                heapq.heapify(self._repeats)
        for item in gone:
            self._forget(item)
        return len(gone)

    def end_repeats(self, key: Any) -> int:
        """Send no more repeats of the delivered results of ``key`` (its
        batch is known to be over); one not delivered yet is still sent
        once.  The number of scheduled repeats dropped."""
        with self._cond:
            self._repeats_ended[key] = None
            while len(self._repeats_ended) > 4096:
                self._repeats_ended.popitem(last=False)
            ended = sum(1 for p in self._repeats if p.key == key)
            if ended:
                self._repeats = [p for p in self._repeats if p.key != key]
                heapq.heapify(self._repeats)
        return ended

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._waiting) + self._in_flight

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            self._flushing += 1
            try:
                while self._queue or self._waiting or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(min(remaining, 0.05))
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float) -> bool:
        """Flush for up to ``timeout`` seconds, then stop; False if items
        remained (they stay in the outbox file, when there is one)."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            left = len(self._queue) + len(self._waiting)
            self._repeats = []
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=2)
        if left:
            kept = f"; kept in {self._store.path}" if self._store is not None else ""
            logger.error("%d task result(s) not delivered before shutdown%s", left, kept)
            self.on_problem(f"{left} task result(s) not delivered before shutdown{kept}")
        if self._store is not None:
            self._store.close()
        return flushed

    def _next_ready(self) -> Optional[_Pending]:
        now = time.monotonic()
        for heap in (self._waiting, self._repeats):
            if heap and heap[0].not_before <= now:
                return heapq.heappop(heap)
        if self._queue:
            return self._queue.popleft()
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                item = None
                while not self._closed:
                    item = self._next_ready()
                    if item is not None:
                        break
                    self._cond.wait(self._until_due())
                if item is None:
                    return
                self._in_flight += 1
            self._finished(item, *self._call(item))

    def _finished(self, item: _Pending, reply: Optional[Reply],
                  error: Optional[TransportError]) -> List[_Pending]:
        """Account for one call's end; what to send next when calls start
        without waiting (else [])."""
        forget = True
        with self._cond:
            timed = len(self._waiting) + len(self._repeats)
            self._in_flight -= 1
            if reply is not None:
                if reply.accepted:
                    if item.is_repeat:
                        self.repeated += 1
                    else:
                        self.delivered += 1
                        if item.held_since is not None:
                            self.late += 1
                            logger.info("delivered %s %.1fs late, after %d failed attempt(s)",
                                        item.describe or item.uri, time.monotonic() - item.held_since,
                                        item.attempts)
                    if item.repeats is not None:
                        self._repeat_later(item)
                elif item.is_repeat:
                    logger.warning("server refused a repeat of %s (not sent again): %s",
                                   item.describe or item.uri, clean(reply.message))
                else:
                    self.refused += 1
                    logger.error("server refused %s: %s", item.describe or item.uri, clean(reply.message))
                    self.on_problem(f"the server refused the {item.describe or item.uri}: "
                                    f"{clean(reply.message) or 'no reason given'}")
            else:
                item.attempts += 1
                self.retries += 1
                if item.held_since is None:
                    item.held_since = time.monotonic()
                left = item.expires - time.time()
                item.not_before = time.monotonic() + min(backoff(item.attempts), max(left, 0.0))
                if item.is_repeat:
                    if left > 0 and not self._closed:
                        heapq.heappush(self._repeats, item)
                elif left <= 0:
                    self.dropped += 1
                    logger.error("gave up delivering %s after %d attempts (its task's timeout has "
                                 "passed): %s", item.describe or item.uri, item.attempts, error)
                    self.on_problem(f"gave up delivering the {item.describe or item.uri} after {item.attempts} "
                                    f"attempts (its task's timeout has passed): {clean(str(error))}")
                elif self._closed:
                    forget = False  # stays in the outbox file, if any
                else:
                    heapq.heappush(self._waiting, item)
                    forget = False
            self._log_holding(error)
            # Wake the others only when it matters to them: a new deadline in
            # the heaps (senders), or nothing left pending (``flush``).  A
            # wake-up of every idle sender after every delivery costs more
            # than the delivery's own bookkeeping.
            if len(self._waiting) + len(self._repeats) != timed or self._closed or \
                    (self._flushing and not (self._queue or self._waiting or self._in_flight)):
                self._cond.notify_all()
            starts = self._take_ready() if self._call_async is not None else []
        if forget:
            self._forget(item)
        return starts

    def _log_holding(self, error: Optional[TransportError]) -> None:
        """Once per outage: how many results are held, for which batches, and
        when they are all through (caller holds the lock)."""
        held = [p for p in self._waiting if not p.is_repeat]
        if held and not self._holding:
            self._holding = True
            batches = sorted({p.key for p in held}, key=str)
            shown = ", ".join(map(str, batches[:10])) + (" ..." if len(batches) > 10 else "")
            logger.warning("holding %d task result(s) until the server takes them (batches %s): %s",
                           len(held), shown, clean(str(error)))
            self.on_problem(f"could not deliver {len(held)} task result(s) (batches {shown}): {clean(str(error))}; "
                            "held and tried again until their task's timeout")
        elif not held and self._holding and self._in_flight == 0 and \
                not any(p.held_since is not None for p in self._queue):
            self._holding = False
            logger.info("every held task result has been delivered or given up")

    def _repeat_later(self, item: _Pending) -> None:
        """Schedule the next repeat of a delivered result (caller holds the lock)."""
        assert item.repeats is not None
        delay = REPEAT_DELAYS[min(item.repeats, len(REPEAT_DELAYS) - 1)]
        if self._closed or time.time() + delay >= item.expires or item.key in self._repeats_ended:
            return
        self._seq += 1
        heapq.heappush(self._repeats, _Pending(time.monotonic() + delay, self._seq, item.key, item.uri, item.body,
                                               item.expires, describe=item.describe, repeats=item.repeats + 1))
