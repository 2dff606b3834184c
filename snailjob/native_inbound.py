"""The native inbound server (``SNAIL_INBOUND=native``, the default): the port the
SnailJob server calls back into, as gRPC over HTTP/2 this module serves
itself (``snailjob.http2``) on one asyncio event loop, instead of grpcio's
server.  What a call does once its request is in is shared with the grpcio
server (``snailjob.inbound_calls``); so are the limits (``InboundLimits``).

It holds nothing for a caller that has not proved who it is, and keeps
what a stranger can hold bounded:

* The HTTP/2 layer ends a connection that breaks the protocol or floods
  control frames or stream resets (``snailjob.http2``).
* At most ``max_streams`` calls per connection (advertised in SETTINGS;
  beyond it a stream is refused with ``REFUSED_STREAM``) and at most
  ``max_connections`` connections (beyond it a new one is closed at once).
* At most ``pending_calls`` calls, over all connections, may wait for
  their request message; a new one beyond that ends the one that has
  waited longest with ``RESOURCE_EXHAUSTED``, and one whose message has not
  come within ``receive_timeout`` is ended with ``DEADLINE_EXCEEDED``.  The
  bytes of the messages still coming in are capped at ``buffered_bytes``
  over all calls: beyond it, the longest-waiting calls are ended the same way.
* A message declared over ``message_bytes``, compressed, or not followed
  by the end of the stream ends its call (``RESOURCE_EXHAUSTED``,
  ``UNIMPLEMENTED``, ``INVALID_ARGUMENT``) before it is read further; any
  path but the SnailJob method is ``UNIMPLEMENTED``; a content type that is
  not gRPC's is answered with HTTP 415.
* A connection that does not take this side's replies (its flow-control
  window stays shut, or the socket stops draining) for ``receive_timeout``
  is closed, so replies cannot pile up for a peer that never reads.
* A connection that has not sent its preface, or has left a header block
  unfinished, for ``receive_timeout`` is closed; one without calls for
  ``connection_idle`` is closed; one older than ``connection_age`` gets a
  GOAWAY and ``connection_age_grace`` to finish its calls.

Limits: plain TCP only (as the grpcio server here); no keepalive pings of
its own (a dead peer's calls end by ``receive_timeout``, then the
connection by ``connection_idle``); timers are checked twice a second, so
the timeouts are kept within half a second.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import quote

from snailjob import http2
from snailjob.address import join_host_port
from snailjob.errors import TransportError
from snailjob.inbound import InboundLimits
from snailjob.inbound_calls import Abort, Calls, InboundHandler, LoopServer, Work
from snailjob.transport import METHOD

logger = logging.getLogger(__name__)

_SWEEP = 0.5  # seconds between checks of the timers
_STATUS = {"OK": 0, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "RESOURCE_EXHAUSTED": 8,
           "UNIMPLEMENTED": 12, "INTERNAL": 13}
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class _Stream:
    """One call: its request message as it comes in."""

    __slots__ = ("conn", "id", "opened", "buffer", "length")

    def __init__(self, conn: _ServerConnection, stream_id: int) -> None:
        self.conn, self.id = conn, stream_id
        self.opened = time.monotonic()
        self.buffer = bytearray()
        self.length: Optional[int] = None  # the message's length, once its 5-byte prefix is in


class _ServerConnection(http2.Connection):
    """The server side of one connection: a stream per call."""

    is_client = False

    def __init__(self, server: NativeInboundServer) -> None:
        limits = server.limits
        super().__init__(receive_window=limits.message_bytes + 1024, max_streams=limits.max_streams)
        self.server = server
        self.limits = limits
        self.streams: Dict[int, _Stream] = {}  # calls not answered yet
        self.peer = "unknown"
        self.started = self.active = time.monotonic()
        self.draining_since: Optional[float] = None  # GOAWAY sent for its age
        self.stalled: Optional[Tuple[int, float]] = None  # (the reply that waits for the window, since when)
        self.paused_since: Optional[float] = None  # the socket stopped draining
        self.block_since: Optional[Tuple[Any, float]] = None  # (a header block awaiting CONTINUATION, since when)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.server.opened(self)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.paused_since = None

    # --- frames in ----------------------------------------------------------

    def on_headers(self, stream: int, headers: http2.Headers, end_stream: bool) -> None:
        call = self.streams.get(stream)
        if call is not None:  # trailers from the client: only the end of its stream is allowed
            if not end_stream:
                raise http2.H2Error(http2.PROTOCOL_ERROR, f"a second header block on stream {stream}")
            self._complete(call)
            return
        self.active = time.monotonic()
        if len(self.streams) >= self.limits.max_streams or self.draining_since is not None:
            self.reset(stream, http2.REFUSED_STREAM)
            return
        self.open_stream(stream)
        if end_stream:
            self._stream_receive.pop(stream, None)
        fields = dict(reversed(headers))  # the first of a repeated name counts
        path, content_type = fields.get(":path", ""), fields.get("content-type", "")
        if fields.get(":method") != "POST" or not content_type.startswith("application/grpc"):
            self._http_error(stream, "415")
        elif path != METHOD:
            self.respond_error(stream, "UNIMPLEMENTED", f"no method {path[:200]!r} here")
        elif end_stream:
            self.respond_error(stream, "INVALID_ARGUMENT", "no request message")
        else:
            call = _Stream(self, stream)
            self.streams[stream] = call
            self.server.waiting_for(call)

    def on_data(self, stream: int, data: bytes, end_stream: bool) -> None:
        call = self.streams.get(stream)
        if call is None:
            return  # answered already (an error, an eviction): the rest is dropped
        buffer = call.buffer
        buffer += data
        self.server.buffered(len(data))
        if call.length is None and len(buffer) >= 5:
            if buffer[0]:
                self.server.end_call(call, "UNIMPLEMENTED", "compressed messages are not accepted")
                return
            call.length = int.from_bytes(buffer[1:5], "big")
            if call.length > self.limits.message_bytes:
                self.server.end_call(call, "RESOURCE_EXHAUSTED",
                                     f"a message of {call.length} bytes (at most {self.limits.message_bytes})")
                return
        if call.length is not None and len(buffer) > 5 + call.length:
            self.server.end_call(call, "INVALID_ARGUMENT", "more than one request message")
        elif end_stream:
            self._complete(call)
        else:
            self.server.over_budget()

    def _complete(self, call: _Stream) -> None:
        if call.length is None or len(call.buffer) != 5 + call.length:
            what = "no request message" if not call.buffer else "a truncated request message"
            self.server.end_call(call, "INVALID_ARGUMENT", what)
        else:
            self.server.serve(call)

    def on_reset(self, stream: int, code: int) -> None:
        call = self.streams.pop(stream, None)
        if call is not None:
            self.server.forget(call)

    def on_goaway(self, last_stream: int, code: int, debug: str) -> None:
        pass  # the peer opens no more streams; its calls here are still answered

    def on_closed(self, reason: str) -> None:
        for call in self.streams.values():
            self.server.forget(call)
        self.streams.clear()
        self.server.closed(self)

    # --- frames out ---------------------------------------------------------

    def respond(self, stream: int, message: bytes) -> None:
        """A call's reply: headers, the message, trailers with status OK."""
        if self.streams.pop(stream, None) is None or self.closed:
            return  # reset by the peer, or the connection is gone
        self.active = time.monotonic()
        self.send_message(stream, _REPLY_HEADERS, b"\x00" + len(message).to_bytes(4, "big") + message,
                          end_stream=False, trailer=_ok_trailers(stream))
        self._stop_receiving(stream)

    def respond_error(self, stream: int, code: str, message: str) -> None:
        """End a call with a gRPC error (trailers only)."""
        self.streams.pop(stream, None)
        if self.closed:
            return
        block = http2.encode_headers([(":status", "200"), ("content-type", "application/grpc"),
                                      ("grpc-status", str(_STATUS[code])),
                                      ("grpc-message", quote(message, safe=_MESSAGE_SAFE))])
        self.send_headers(stream, block, end_stream=True)
        self._stop_receiving(stream)

    def _http_error(self, stream: int, status: str) -> None:
        self.send_headers(stream, http2.encode_headers([(":status", status)]), end_stream=True)
        self._stop_receiving(stream)

    def _stop_receiving(self, stream: int) -> None:
        """After the answer: a client still sending is told to stop (RFC 9113, 8.1)."""
        if stream in self._stream_receive:
            self._stream_receive.pop(stream)
            if not self.closed:
                self.transport.write(http2.frame(http2.RST_STREAM, 0, stream, b"\x00\x00\x00\x00"))

    def _unfinished_block(self, now: float) -> bool:
        block = self._block
        if block is None:
            self.block_since = None
        elif self.block_since is None or self.block_since[0] is not block:
            self.block_since = (block, now)
        return self.block_since is not None and now - self.block_since[1] > self.limits.receive_timeout

    def go_away(self) -> None:
        """GOAWAY without error: no new calls; those open are still answered."""
        if self.draining_since is None and not self.closed:
            self.draining_since = time.monotonic()
            self.transport.write(http2.frame(http2.GOAWAY, 0, 0, struct.pack(">II", self.last_peer_stream, 0)))

    # --- for the timers -----------------------------------------------------

    def check(self, now: float) -> None:
        """Idle, age and a peer that does not take replies (twice a second)."""
        if self.closed:
            return
        limits = self.limits
        if not self.streams and not self._pending and now - self.active > limits.connection_idle:
            self.close()
        elif self._awaiting_preface and now - self.started > limits.receive_timeout:
            self.fail(http2.PROTOCOL_ERROR, f"no connection preface within {limits.receive_timeout:g} s")
        elif self._unfinished_block(now):
            self.fail(http2.PROTOCOL_ERROR, f"a header block not finished within {limits.receive_timeout:g} s")
        elif self.draining_since is None and now - self.started > limits.connection_age:
            self.go_away()
        elif self.draining_since is not None and (not self.streams and not self._pending
                                                  or now - self.draining_since > limits.connection_age_grace):
            self.close()
        if self.closed:
            return
        stuck = self._pending[0][0] if self._pending else None
        if stuck is None:
            self.stalled = None
        elif self.stalled is None or self.stalled[0] != stuck:
            self.stalled = (stuck, now)
        since = min(self.stalled[1] if self.stalled else now, self.paused_since or now)
        if now - since > limits.receive_timeout:
            self.fail(http2.ENHANCE_YOUR_CALM, f"replies not taken for {limits.receive_timeout:g} s")
            self.transport.abort()  # what is still buffered for it would never drain


_REPLY_HEADERS = http2.encode_headers([(":status", "200"), ("content-type", "application/grpc")])
_OK_TRAILERS = http2.encode_headers([("grpc-status", "0")])


def _ok_trailers(stream: int) -> bytes:
    return http2.frame(http2.HEADERS, http2.END_HEADERS | http2.END_STREAM, stream, _OK_TRAILERS)


class NativeInboundServer(LoopServer):
    """The inbound port on ``snailjob.http2``; the interface of
    ``snailjob.inbound.InboundServer`` (``acceptors`` is always None)."""

    def __init__(self, bind_host: str, port: int, handler: InboundHandler, workers: int = 16, *,
                 token: Optional[str] = None, inline: Any = lambda path: False,
                 limits: Optional[InboundLimits] = None, acceptors: int = 0) -> None:
        super().__init__(Calls(handler, workers, token, inline, logging.getLogger("snailjob.inbound")))
        self.limits = limits or InboundLimits()
        self.acceptors = None
        self._waiting: OrderedDict[_Stream, None] = OrderedDict()  # calls waiting for their message
        self._buffered = 0  # bytes of the messages of the waiting calls
        self._connections: Set[_ServerConnection] = set()
        self.evicted = 0  # calls ended because newer ones needed their place
        self.timed_out = 0  # calls ended because their message did not come in time
        self.refused_connections = 0  # connections closed at once: max_connections
        self._sweeper: Optional[asyncio.TimerHandle] = None
        self._stopped = threading.Event()
        self.address = join_host_port(bind_host, port)
        try:
            self._server, self.port = self._on_loop(self._create(bind_host, port))
        except Exception:
            self._close_loop()
            raise

    async def _create(self, host: str, port: int) -> Tuple[asyncio.AbstractServer, int]:
        try:
            sock = _listening_socket(host, port)
        except OSError as exc:
            raise TransportError(f"cannot listen on {self.address}: {exc}") from None
        server = await self._loop.create_server(lambda: _ServerConnection(self), sock=sock,
                                                start_serving=False, backlog=1024)
        return server, int(sock.getsockname()[1])

    # --- connections --------------------------------------------------------

    def opened(self, conn: _ServerConnection) -> None:
        if len(self._connections) >= self.limits.max_connections:
            self.refused_connections += 1
            conn.closed = True
            conn.transport.abort()
            return
        self._connections.add(conn)

    def closed(self, conn: _ServerConnection) -> None:
        self._connections.discard(conn)

    # --- calls waiting for their message ------------------------------------

    def waiting_for(self, call: _Stream) -> None:
        waiting = self._waiting
        waiting[call] = None
        if len(waiting) > self.limits.pending_calls:
            self._evict()

    def buffered(self, size: int) -> None:
        self._buffered += size

    def over_budget(self) -> None:
        while self._buffered > self.limits.buffered_bytes and self._waiting:
            self._evict()

    def _evict(self) -> None:
        oldest = next(iter(self._waiting))
        self.evicted += 1
        self.end_call(oldest, "RESOURCE_EXHAUSTED", "too many calls wait for their request; this one waited longest")

    def forget(self, call: _Stream) -> None:
        if call in self._waiting:  # its bytes count against buffered_bytes only while it waits
            del self._waiting[call]
            self._buffered -= len(call.buffer)
        call.buffer = bytearray()

    def end_call(self, call: _Stream, code: str, message: str) -> None:
        self.forget(call)
        call.conn.respond_error(call.id, code, message)

    def serve(self, call: _Stream) -> None:
        """The message is in: answer it (at once, or from a worker thread)."""
        data = bytes(memoryview(call.buffer)[5:])
        self.forget(call)
        conn = call.conn
        step = self._calls.prepare(data, conn.peer)
        if isinstance(step, Abort):
            conn.respond_error(call.id, step.code, step.message)
        elif not isinstance(step, Work):
            conn.respond(call.id, step.SerializeToString())
        elif step.inline:
            conn.respond(call.id, self._calls.run(step).SerializeToString())
        else:  # on a worker thread, as the grpcio server's calls (Calls.answer)
            task = self._loop.create_task(self._calls.answer(step, self._loop))
            task.add_done_callback(lambda done: _answered(conn, call.id, done))

    def _sweep(self) -> None:
        try:
            self._expire(time.monotonic())
        except Exception:  # a bug here must not end the timers of every call
            logger.exception("inbound server timers")
        self._sweeper = self._loop.call_later(_SWEEP, self._sweep)

    def _expire(self, now: float) -> None:
        deadline = now - self.limits.receive_timeout
        while self._waiting:
            oldest = next(iter(self._waiting))
            if oldest.opened > deadline:
                break
            self.timed_out += 1
            self.end_call(oldest, "DEADLINE_EXCEEDED",
                          f"no request message within {self.limits.receive_timeout:g} s")
        for conn in list(self._connections):
            conn.check(now)

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._on_loop(self._start())

    async def _start(self) -> None:
        await self._server.start_serving()
        self._sweeper = self._loop.call_later(_SWEEP, self._sweep)

    def stop(self, grace: Optional[float] = None) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            self._on_loop(self._stop(grace or 0.0), timeout=(grace or 0) + 5)
        except Exception as exc:  # a loop that cannot stop in time still gets closed
            logger.debug("inbound server stop: %r", exc)
        self._close_loop()
        self._calls.close()

    async def _stop(self, grace: float) -> None:
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._connections):
            conn.go_away()
        until = time.monotonic() + grace
        while time.monotonic() < until and any(c.streams for c in self._connections):
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            conn.close()


    def connections(self) -> List[str]:
        """The peers connected now (for tests and diagnostics)."""
        return [conn.peer for conn in self._connections]


def _answered(conn: _ServerConnection, stream: int, done: Any) -> None:
    if done.cancelled():
        return
    if done.exception() is not None:  # Calls.run answers every Exception: this is a BaseException
        conn.respond_error(stream, "INTERNAL", f"the handler ended with {type(done.exception()).__name__}")
    else:
        conn.respond(stream, done.result().SerializeToString())


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket, not yet listening (no call is taken before ``start``);
    ``::`` takes IPv4 as well, as grpcio's ``[::]`` does."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
