"""``BufferedShipper``: entries buffered without blocking and shipped in
parcels (a group of entries sent together) on a thread of its own; the base
of ``LogShipper`` and ``RetryReporter``, which say where a parcel goes and
what happens to the entries once done with.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional

from snailjob.delivery.backoff import backoff
from snailjob.errors import TransportError
from snailjob.transport import Reply, Transport
from snailjob.wire.codec import clean, encode_body

logger = logging.getLogger("snailjob.delivery")  # the name its lines have always had

ALARM_AFTER_ATTEMPTS = 3
"""Failed sends of one parcel in a row before ``on_problem`` is told (once per outage)."""


def _no_alarm(problem: str) -> None:
    """The default ``on_problem``: nobody listens."""


class BufferedShipper:
    """Buffers entries and ships them in parcels on its own thread
    (``parcel_size`` entries or every ``interval`` seconds).

    ``offer`` never blocks and does no I/O.  The buffer holds at most
    ``max_buffer`` entries; beyond that the oldest are dropped and counted,
    and the count is logged once the server accepts entries again.  A parcel
    that cannot be sent (no connection) goes back to the buffer and is
    retried with backoff; one the server refuses is dropped and counted.
    """

    uri = ""
    what = "entries"
    thread_name = "snailjob-parcels"

    def __init__(self, transport: Transport, rpc_timeout: float, parcel_size: int = 50,
                 interval: float = 5.0, max_buffer: int = 10000) -> None:
        self._transport = transport
        self._rpc_timeout = rpc_timeout
        self.parcel_size = parcel_size
        self.interval = interval
        self._buffer: Deque[Dict[str, Any]] = collections.deque(maxlen=max_buffer)
        self._cond = threading.Condition()
        self._closed = False
        self._first_at: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self._sending = 0
        self.dropped = 0
        self._dropped_reported = 0
        self.shipped = 0
        self.refused = 0
        self.calls = 0  # calls the server answered
        self.on_problem: Callable[[str], None] = _no_alarm
        """Told (without blocking) when entries are refused, dropped, or
        could not be sent for a while: the client's alarms."""
        self._last_error = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def offer(self, entry: Dict[str, Any]) -> bool:
        """Queue ``entry``; False once closed (the entry is not taken)."""
        with self._cond:
            if self._closed:
                return False
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
                self.forget([self._buffer[0]])
            self._buffer.append(entry)
            if self._first_at is None:
                self._first_at = time.monotonic()
            if len(self._buffer) >= self.parcel_size:
                self._cond.notify()
            return True

    def buffered(self) -> int:
        with self._cond:
            return len(self._buffer) + self._sending

    def flush(self, timeout: float) -> bool:
        """Send what is buffered now; wait up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._buffer:
                self._first_at = time.monotonic() - self.interval  # due now
                self._cond.notify_all()
            while self._buffer or self._sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def _take(self, force: bool) -> List[Dict[str, Any]]:
        """A parcel to send now, or [] (caller holds the lock)."""
        if not self._buffer:
            return []
        due = self._first_at is not None and time.monotonic() - self._first_at >= self.interval
        if not (force or due or len(self._buffer) >= self.parcel_size):
            return []
        n = min(self.parcel_size, len(self._buffer))
        parcel = [self._buffer.popleft() for _ in range(n)]
        self._first_at = time.monotonic() if self._buffer else None
        self._sending = len(parcel)
        return parcel

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                parcel = self._take(force=self._closed)
                while not parcel:
                    if self._closed:
                        return
                    wait = self.interval
                    if self._first_at is not None:
                        wait = max(0.001, self._first_at + self.interval - time.monotonic())
                    self._cond.wait(wait)
                    parcel = self._take(force=self._closed)
            unsent = self._send_all(parcel)
            if not unsent:
                attempt = 0
                continue
            attempt += 1
            with self._cond:
                if self._closed:
                    self.dropped += len(unsent)
                    self._sending = 0
                    self._cond.notify_all()
                    logger.error("%d %s not delivered before shutdown%s", len(unsent), self.what, self.kept_note())
                    self.on_problem(f"{len(unsent)} {self.what} not delivered before shutdown{self.kept_note()}")
                    continue
                if attempt == ALARM_AFTER_ATTEMPTS:
                    self.on_problem(f"{len(unsent)} {self.what} could not be sent ({attempt} attempts): "
                                    f"{self._last_error or 'no answer'}; kept and tried again")
                self._requeue(unsent)
                self._cond.wait(backoff(attempt))

    def _requeue(self, parcel: List[Dict[str, Any]]) -> None:
        room = (self._buffer.maxlen or 0) - len(self._buffer)
        keep = parcel[-room:] if room > 0 else []
        self.dropped += len(parcel) - len(keep)
        self.forget(parcel[:len(parcel) - len(keep)])
        self._buffer.extendleft(reversed(keep))
        self._first_at = self._first_at or time.monotonic()
        self._sending = 0

    def split(self, parcel: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
        """The calls one parcel is sent in (one by default)."""
        return [parcel]

    def _send_all(self, parcel: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Send ``parcel``; what could not be sent (to retry)."""
        unsent: List[Dict[str, Any]] = []
        for part in self.split(parcel):
            if unsent or not self._send(part):
                unsent.extend(part)
        lost = 0
        with self._cond:
            if not unsent:
                self._sending = 0
                lost = self.dropped - self._dropped_reported
                self._dropped_reported = self.dropped
            self._cond.notify_all()
        if lost:
            logger.warning("%d %s were dropped while the server could not take them", lost, self.what)
            self.on_problem(f"{lost} {self.what} were dropped while the server could not take them "
                            "(buffer full)")
        return unsent

    def _send(self, part: List[Dict[str, Any]]) -> bool:
        """One call; False when it should be retried."""
        try:
            reply = self._transport.call(self.uri, encode_body(part), self._rpc_timeout)
        except TransportError as exc:
            logger.debug("sending %s failed: %s", self.what, clean(str(exc)))
            self._last_error = clean(str(exc))
            return False
        except Exception:
            logger.exception("sending %s failed", self.what)
            return False
        with self._cond:
            self.calls += 1
            accepted = self.accepted(reply)
            if accepted:
                self.shipped += len(part)
            else:
                self.refused += len(part)
        if not accepted:
            self.on_refused(part, reply)
        self.forget(part)
        return True

    def forget(self, entries: List[Dict[str, Any]]) -> None:
        """``entries`` are done with (delivered, refused or dropped)."""

    def kept_note(self) -> str:
        """Where undelivered entries stay after shutdown, for the error log."""
        return ""

    def accepted(self, reply: Reply) -> bool:
        return reply.ok

    def on_refused(self, part: List[Dict[str, Any]], reply: Reply) -> None:
        logger.warning("server refused %d %s: %s", len(part), self.what, clean(reply.message))

    def close(self, timeout: float) -> None:
        """Ship what is buffered (up to ``timeout`` seconds), then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
