"""The native transport (``SNAIL_TRANSPORT=native``, the default): the client's calls to
the server as gRPC unary calls over one HTTP/2 connection this module
writes itself (``snailjob.http2``), on an asyncio event loop, instead of
through grpcio's channel.  It does the same work with a fraction of the
CPU (BENCHMARKS.md, "What grpcio itself costs").

It keeps the ``Transport`` contract of ``GrpcTransport``: every call has a
deadline (sent as ``grpc-timeout`` and kept by a timer here); any failure
is a ``TransportError`` with a gRPC status name, ``UNAVAILABLE`` when the
connection cannot be made or is lost; a lost connection is made again by
the next call.  Blocking calls (``call``: heartbeats, registration, map
reports) run on a loop thread of this transport's own, so they do not
depend on any other loop, as grpcio's blocking calls do not; calls that do
not wait (``call_async``: results) run on the loop given by ``use_loop``
(the inbound server's), or on that own loop.  Each loop has its own
connection.

A ``call_async`` made off the given loop (a worker reporting its result)
is written to that loop's connection by the calling thread itself when
nothing waits to be written before it (``http2.Connection.send_now``):
the loop is not woken to send it, only to read the answer.  Such a call
has no timer; a sweep on the loop, every ``SWEEP_INTERVAL`` while any are
in flight, ends those whose deadline has passed, so their deadline may be
seen up to that much late.

Limits: plain TCP only (no TLS, as ``GrpcTransport``); one connection per
server; a reply over ``MAX_MESSAGE_BYTES`` ends its call with
``RESOURCE_EXHAUSTED``.  Calls beyond the server's
``SETTINGS_MAX_CONCURRENT_STREAMS`` wait for a stream to end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional
from urllib.parse import unquote

from snailjob import http2
from snailjob.address import split_target
from snailjob.errors import TransportError
from snailjob.transport import MAX_MESSAGE_BYTES, METHOD, Done, Reply, RequestEncoder, load_messages
from snailjob.wire.codec import clean, decode_data

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
SWEEP_INTERVAL = 0.25  # how late a call started off the loop may see its deadline pass
# A connection on which a call's deadline passed with nothing at all received meanwhile is sent a
# PING; without an answer in this many seconds it is given up, and the next call makes a new one.
PROBE_TIMEOUT = 10.0
_STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                 "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                 "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


class _Call:
    """One call: its request, its deadline, and what has come back."""

    __slots__ = ("uri", "request", "timeout", "done", "timer", "made", "deadline", "conn", "stream", "status",
                 "message", "body", "ended")

    def __init__(self, uri: str, request: bytes, timeout: float, done: Done) -> None:
        self.uri, self.request, self.timeout, self.done = uri, request, timeout, done
        self.timer: Optional[asyncio.TimerHandle] = None
        self.made = time.monotonic()
        self.deadline = self.made + timeout  # kept by a timer, or by the link's sweep (start_now)
        self.conn: Optional[_Connection] = None  # the connection it is on (stream ids repeat across them)
        self.stream = 0
        self.status: Optional[str] = None  # grpc-status, once the headers or trailers gave it
        self.message = ""
        self.body = bytearray()
        self.ended = False

    def end(self, reply: Optional[Reply], error: Optional[TransportError]) -> None:
        if self.ended:
            return
        self.ended = True
        self.conn = None
        if self.timer is not None:
            self.timer.cancel()
        self.done(reply, error)

    def fail(self, code: str, why: str) -> None:
        self.end(None, TransportError(f"{self.uri}: {code}: {why}", code=code))


class _Connection(http2.Connection):
    """The client side of one connection: a stream per call."""

    is_client = True

    def __init__(self, authority: str, lost: Callable[[_Connection, str], None]) -> None:
        super().__init__(receive_window=MAX_MESSAGE_BYTES + 1024)
        self._lost = lost
        self._next_stream = 1
        self.calls: Dict[int, _Call] = {}
        self.waiting: Deque[_Call] = deque()  # beyond the server's stream limit
        self.draining = False  # GOAWAY received: no new streams
        self.probing = False  # a PING is out to learn whether the server still answers
        self._request_headers = http2.encode_headers([
            (":method", "POST"), (":scheme", "http"), (":path", METHOD), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers")])

    @property
    def usable(self) -> bool:
        return not self.closed and not self.draining and self._next_stream < 2 ** 31 - 1

    def start(self, call: _Call) -> None:
        """Start ``call`` on this connection, or queue it for a free stream (on the loop)."""
        with self.send_lock:
            call.conn = self
            limit = self.peer_max_streams
            if limit is not None and len(self.calls) >= limit:
                self.waiting.append(call)
                return
            stream = self._take_stream(call)
            self.send_message(stream, self._call_headers(call), _message(call), end_stream=True)
            call.request = b""

    def start_now(self, call: _Call) -> bool:
        """Start ``call`` from the calling thread, writing its request to the
        socket itself (``send_now``); False, and nothing done, when it cannot
        go at once (then the loop must start it)."""
        with self.send_lock:
            limit = self.peer_max_streams
            if (not self.usable or self.waiting or (limit is not None and len(self.calls) >= limit)
                    or not self.can_send_now()):
                return False
            # registered before it is written: the loop may read the answer before send_now returns
            call.conn = self
            stream = self._take_stream(call)
            if not self.send_now(stream, self._call_headers(call), _message(call)):
                del self.calls[stream]
                self._forget(stream)
                self._next_stream = stream  # never sent: the id is still free
                call.conn = None
                return False
            call.request = b""
            return True

    def _take_stream(self, call: _Call) -> int:
        """The next stream id, for ``call`` (caller holds ``send_lock``)."""
        stream = self._next_stream
        self._next_stream += 2
        call.stream = stream
        self.calls[stream] = call
        self.open_stream(stream)
        return stream

    def _call_headers(self, call: _Call) -> bytes:
        timeout_ms = max(1, min(int(call.timeout * 1000), 99_999_999))
        return self._request_headers + http2.encode_headers([("grpc-timeout", f"{timeout_ms}m")])

    def cancel(self, call: _Call) -> None:
        """Stop waiting for ``call`` (its deadline passed)."""
        if self.calls.pop(call.stream, None) is not None:
            self.reset(call.stream, http2.CANCEL)
            self._stream_ended()
        elif call in self.waiting:
            self.waiting.remove(call)

    def _stream_ended(self) -> None:
        """A stream ended: after a GOAWAY the last one closes the connection,
        before it a call waiting for a stream may start."""
        if self.draining and not self.calls:
            self.close()
        else:
            self._start_waiting()

    def _start_waiting(self) -> None:
        while self.waiting and self.usable and (self.peer_max_streams is None
                                                or len(self.calls) < self.peer_max_streams):
            self.start(self.waiting.popleft())

    def on_headers(self, stream: int, headers: http2.Headers, end_stream: bool) -> None:
        call = self.calls.get(stream)
        if call is None:
            return
        for name, value in headers:
            if name == ":status" and value != "200":
                self._finish(stream, "UNAVAILABLE", f"HTTP status {clean(value)}")
                self.reset(stream, http2.CANCEL)
                return
            if name == "grpc-status":
                code = int(value) if value.isdigit() else 2
                call.status = _STATUS_NAMES[code] if code < len(_STATUS_NAMES) else "UNKNOWN"
            elif name == "grpc-message":
                call.message = unquote(value)
        if end_stream:
            self._finish(stream, call.status or "UNKNOWN", call.message or "the call ended without a status")

    def on_data(self, stream: int, data: bytes, end_stream: bool) -> None:
        call = self.calls.get(stream)
        if call is None:
            return
        call.body += data
        if len(call.body) > MAX_MESSAGE_BYTES + 5:
            self.reset(stream, http2.CANCEL)
            self._finish(stream, "RESOURCE_EXHAUSTED", f"a reply over {MAX_MESSAGE_BYTES} bytes")
        elif end_stream:
            self._finish(stream, "INTERNAL", "the reply ended without trailers")

    def _finish(self, stream: int, status: str, why: str) -> None:
        call = self.calls.pop(stream, None)
        if call is None:
            return
        self._stream_ended()
        if status != "OK":
            call.fail(status, clean(why))
            return
        body = call.body
        if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            call.fail("INTERNAL", "the reply is not one uncompressed gRPC message")
            return
        try:
            result = load_messages().GrpcResult.FromString(bytes(body[5:]))
        except Exception as exc:  # protobuf's DecodeError
            call.fail("INTERNAL", f"the reply does not decode: {type(exc).__name__}")
            return
        call.end(Reply(result.status, result.message, decode_data(result.data)), None)

    def on_reset(self, stream: int, code: int) -> None:
        self._finish(stream, "UNAVAILABLE" if code == http2.REFUSED_STREAM else "CANCELLED",
                     f"the server reset the stream (HTTP/2 error {code})")

    def on_goaway(self, last_stream: int, code: int, debug: str) -> None:
        with self.send_lock:
            self.draining = True
        why = f"the server is going away (GOAWAY {code} {clean(debug)})"
        self._lost(self, "GOAWAY")  # the next call makes a new connection
        waiting, self.waiting = self.waiting, deque()
        for call in waiting:
            call.fail("UNAVAILABLE", why)
        for stream in [s for s in self.calls if s > last_stream]:
            self._finish(stream, "UNAVAILABLE", why)
        if not self.calls:
            self.close()

    def on_closed(self, reason: str) -> None:
        for stream in list(self.calls):
            self._finish(stream, "UNAVAILABLE", reason)
        waiting, self.waiting = self.waiting, deque()
        for call in waiting:
            call.fail("UNAVAILABLE", reason)
        self._lost(self, reason)


class _Link:
    """The connection to the server from one event loop, and the calls
    waiting for it to be made.  Touched only on that loop's thread."""

    def __init__(self) -> None:
        self.conn: Optional[_Connection] = None
        self.connecting = False
        self.queued: List[_Call] = []
        # calls started off the loop (``start_now``) have no timer: a sweep on the loop keeps
        # their deadlines while any are in flight; ``started`` counts them, under ``lock``
        self.lock = threading.Lock()
        self.sweeping = False
        self.started = 0

    def fail_queued(self, why: str) -> None:
        queued, self.queued = self.queued, []
        for call in queued:
            call.fail("UNAVAILABLE", why)


class NativeTransport:
    """Calls the server over one HTTP/2 connection of its own making;
    ``headers`` are sent on every call.  The same methods as
    ``GrpcTransport``: ``call`` (blocking, from any thread but the loop's),
    ``call_async``, ``use_loop``, ``detach_loop``, ``watch``, ``close``."""

    # A lone result goes by call_async too: a blocking call from the worker costs a second
    # thread hand-off here (to the own loop) and a wake-up of the worker for the answer;
    # measured at K=1 (BENCHMARKS.md, "The native inbound server").
    lone_call_blocking = False

    def __init__(self, target: str, headers: Callable[[], Dict[str, str]]) -> None:
        self._target = target
        self._host, self._port = split_target(target)
        self._request = RequestEncoder(headers)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._own: Optional[asyncio.AbstractEventLoop] = None
        self._own_thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._links: Dict[asyncio.AbstractEventLoop, _Link] = {}
        self._watching = False
        self._closed = False
        self.failing = False

    @property
    def target(self) -> str:
        return self._target

    # --- loops --------------------------------------------------------------

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``call_async`` run its calls on ``loop`` (running in another
        thread), over a connection of that loop's."""
        self._loop = loop
        if self._watching:
            loop.call_soon_threadsafe(self._keep_connected)

    def detach_loop(self) -> None:
        """Undo ``use_loop`` before that loop stops: the connection on it is
        closed (calls in flight end ``UNAVAILABLE``); later ``call_async``
        calls use this transport's own loop."""
        loop, self._loop = self._loop, None
        if loop is not None:
            self._drop(loop, "the transport left its loop")

    def _drop(self, loop: asyncio.AbstractEventLoop, why: str) -> None:
        """Close ``loop``'s connection, on that loop, and wait (at most 2 s)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def drop() -> None:
            link = self._links.pop(loop, None)
            if link is not None:
                if link.conn is not None:
                    link.conn.close()
                link.fail_queued(why)
            done.set_result(None)

        try:
            loop.call_soon_threadsafe(drop)
            done.result(2.0)
        except (RuntimeError, concurrent.futures.TimeoutError) as exc:  # closed, or not answering
            logger.debug("closing the connection to %s: %r", self._target, exc)

    def _loop_for_calls(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        return self._own_loop()

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._own is None:
                own = asyncio.new_event_loop()
                thread = threading.Thread(target=own.run_forever, name="snailjob-transport", daemon=True)
                thread.start()
                self._own, self._own_thread = own, thread
            return self._own

    # --- calls --------------------------------------------------------------

    def call(self, uri: str, body: str, timeout: float) -> Reply:
        """One call with a deadline, on this transport's own loop;
        ``TransportError`` on any failure.  Made on the loop of ``use_loop``
        (coroutine jobs run there) it blocks that loop, as grpcio's blocking
        call would; made on the own loop (from a ``call_async`` callback
        there) it fails ``INTERNAL`` instead of waiting for itself forever."""
        if _on_loop(self._own):
            raise TransportError(f"{uri}: INTERNAL: a blocking call on the transport's own loop", code="INTERNAL")
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._submit(uri, body, timeout, lambda reply, error: answer.set_result((reply, error)), self._own_loop())
        try:
            reply, error = answer.result(timeout + 1.0)  # the loop's timer ends it first
        except concurrent.futures.TimeoutError:
            raise TransportError(f"{uri}: DEADLINE_EXCEEDED: no answer in {timeout:g} s (the loop is stuck)",
                                 code="DEADLINE_EXCEEDED") from None
        if error is not None:
            raise error
        return reply

    def call_async(self, uri: str, body: str, timeout: float, done: Done) -> None:
        """Start one call and return at once; ``done`` is called on the loop
        when it ends (on this thread if it cannot start)."""
        self._submit(uri, body, timeout, done)

    def _submit(self, uri: str, body: str, timeout: float, done: Done,
                loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        call = _Call(uri, self._request(uri, body), timeout, done)
        if self._closed:
            call.fail("CANCELLED", "the transport is closed")
            return
        if loop is None and self._start_now(call):
            return
        try:
            (loop or self._loop_for_calls()).call_soon_threadsafe(self._start, call)
        except RuntimeError as exc:  # the loop is closed
            call.fail("CANCELLED", str(exc))

    def _start_now(self, call: _Call) -> bool:
        """Start ``call`` from this thread on the ``use_loop`` loop's open
        connection, without waking the loop (a result's report, from the
        worker that ran it); False when it must go through the loop."""
        loop = self._loop
        if loop is None or _on_loop(loop):
            return False
        link = self._links.get(loop)
        conn = link.conn if link is not None else None
        if link is None or conn is None:
            return False
        if not conn.start_now(call):
            return False
        with link.lock:
            link.started += 1
            arm, link.sweeping = not link.sweeping, True
        if arm:
            try:
                loop.call_soon_threadsafe(self._sweep, link)
            except RuntimeError:  # the loop is closed, and the connection's calls ended with it
                pass
        return True

    def _sweep(self, link: _Link) -> None:
        """End the calls started off the loop whose deadline has passed; again
        in ``SWEEP_INTERVAL`` while any are in flight."""
        with link.lock:
            seen = link.started
        conn = link.conn
        untimed = [c for c in list(conn.calls.values()) if c.timer is None] if conn is not None else []
        now = time.monotonic()
        for call in untimed:
            if call.deadline <= now:
                self._expire(link, call)
        with link.lock:
            again = not self._closed and (link.started != seen or any(not c.ended for c in untimed))
            link.sweeping = again
        if again:
            asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep, link)

    def _link(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is None:
            link = self._links[loop] = _Link()
        return link

    def _start(self, call: _Call) -> None:
        if self._closed:
            call.fail("CANCELLED", "the transport is closed")
            return
        link = self._link()
        call.timer = asyncio.get_running_loop().call_later(call.timeout, self._expire, link, call)
        if link.conn is not None and link.conn.usable:
            link.conn.start(call)
            return
        link.queued.append(call)
        self._connect(link)

    def _expire(self, link: _Link, call: _Call) -> None:
        call.timer = None
        conn = call.conn
        if conn is not None:  # its own connection: another may use the same stream id
            conn.cancel(call)
            if not conn.closed and conn.last_received < call.made:  # not a byte since the call was made
                self._probe(conn)
        elif call in link.queued:
            link.queued.remove(call)
        call.fail("DEADLINE_EXCEEDED", f"no answer in {call.timeout:g} s")

    def _probe(self, conn: _Connection) -> None:
        """The server let a call's deadline pass without sending anything:
        PING it, and give the connection up if that is not answered either
        (a silent dead peer would otherwise hold it until TCP gives up)."""
        if conn.probing:
            return
        conn.probing = True
        asked = time.monotonic()
        conn.ping()

        def judge() -> None:
            conn.probing = False
            if not conn.closed and conn.last_received < asked:
                logger.warning("the connection to %s is given up: no answer to a call or a PING in %g s",
                               self._target, PROBE_TIMEOUT)
                conn.abandon(f"no answer from {self._target} to a call or a PING")

        asyncio.get_running_loop().call_later(PROBE_TIMEOUT, judge)

    # --- the connection -----------------------------------------------------

    def _connect(self, link: _Link) -> None:
        if not link.connecting:
            link.connecting = True
            asyncio.get_running_loop().create_task(self._open(link))

    async def _open(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        authority = self._target
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(authority, self._lost_from(link)), self._host, self._port),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            self.failing = True
            link.fail_queued(f"cannot connect to {self._target}: {clean(str(exc)) or type(exc).__name__}")
            return
        finally:
            link.connecting = False
        if conn.closed:  # the server broke the protocol before this coroutine went on
            self.failing = True
            link.fail_queued(f"{self._target}: {conn.close_reason}")
            return
        self.failing = False
        if self._closed or self._links.get(loop) is not link:  # closed, or detached, meanwhile
            conn.close()
            link.fail_queued("the transport is closed")
            return
        link.conn = conn
        queued, link.queued = link.queued, []
        for call in queued:
            if not call.ended:
                conn.start(call)

    def _lost_from(self, link: _Link) -> Callable[[_Connection, str], None]:
        def lost(conn: _Connection, reason: str) -> None:
            if link.conn is conn:
                link.conn = None
                logger.debug("connection to %s ended: %s", self._target, reason)
                if self._watching and not self._closed:
                    asyncio.get_running_loop().call_later(1.0, self._keep_connected)
        return lost

    def watch(self) -> None:
        """Keep a connection open in the background (standby servers are
        health-checked this way): ``failing`` tells whether it can be made."""
        self._watching = True
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._keep_connected)

    def _keep_connected(self) -> None:
        if self._closed:
            return
        link = self._link()
        if link.conn is not None and link.conn.usable:
            return
        self._connect(link)
        asyncio.get_running_loop().call_later(5.0, self._keep_connected)

    def close(self) -> None:
        """Close the connections; calls in flight end ``UNAVAILABLE`` or ``CANCELLED``."""
        if self._closed:
            return
        self._closed = True
        self.detach_loop()
        with self._lock:
            own, thread = self._own, self._own_thread
        if own is not None and thread is not None:
            self._drop(own, "the transport is closed")
            own.call_soon_threadsafe(own.stop)
            thread.join(2.0)
            if not thread.is_alive():
                own.close()


def _message(call: _Call) -> bytes:
    """The call's request as one uncompressed gRPC message."""
    return b"\x00" + len(call.request).to_bytes(4, "big") + call.request


def _on_loop(loop: Optional[asyncio.AbstractEventLoop]) -> bool:
    try:
        return loop is not None and asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
