"""HTTP/2 (RFC 9113) on an asyncio protocol, as much of it as gRPC's unary
calls need: frames, settings, both directions of flow control, header
blocks, PING, RST_STREAM and GOAWAY.  The native transport
(``snailjob.native_transport``) builds its calls on ``Connection``.

Header blocks are encoded and decoded by ``snailjob.http2_headers``; the
blocks this side sends do not use the dynamic table, so what the peer must
remember never depends on us.

What a peer cannot make a connection do (each is a connection error: a
GOAWAY naming it, then the connection is closed):

- hold more than one frame of at most ``MAX_FRAME`` bytes of unread input,
  or a header block over ``MAX_HEADER_BLOCK`` bytes (CONTINUATION floods);
- send DATA beyond the window this side gave it;
- grow a send window past 2^31-1, or open a window by zero;
- send more than ``MAX_CONTROL_FRAMES`` SETTINGS and PING frames in one
  second (each of them makes this side write an answer);
- push streams (this side turns server push off);
- as a server (``is_client = False``): open a stream with an even id or
  one not above the last it opened, send DATA on a stream it never opened,
  or reset more than ``MAX_PEER_RESETS`` streams in one second (the
  "rapid reset" attack).  Streams beyond ``max_streams`` are refused
  with ``REFUSED_STREAM`` by the subclass.

Frames of unknown types are ignored, as the RFC says.  This module knows
nothing of gRPC: message framing and status are the caller's.

A connection is driven by its event loop, with one exception: ``send_now``
lets another thread write a whole message straight to the socket (a
result, from the worker that made it, without waking the loop).  Every
write and every change to the send windows and to ``closed`` holds
``send_lock``, so the bytes of both keep their order.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

from snailjob.http2_headers import HeaderDecoder, HeaderError, Headers, encode_headers  # noqa: F401

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 6, 7, 8, 9, 11

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
MAX_WINDOW = 2 ** 31 - 1
MAX_FRAME = 16384  # the default SETTINGS_MAX_FRAME_SIZE; this side never raises it
MAX_HEADER_BLOCK = 64 * 1024
MAX_CONTROL_FRAMES = 200  # SETTINGS and PING frames a peer may send in one second
MAX_PEER_RESETS = 1000  # RST_STREAM frames a client may send a server in one second


class H2Error(Exception):
    """A connection error: ``code`` goes into the GOAWAY."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header and ``payload``."""
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


# --- the connection ---------------------------------------------------------


class Connection(asyncio.Protocol):
    """One HTTP/2 connection.  A subclass implements ``on_headers``,
    ``on_data``, ``on_reset``, ``on_goaway`` and ``on_closed``; it sends
    with ``send_headers`` and ``send_data`` (which keep to the peer's
    windows, queueing what does not fit yet).

    ``receive_window`` is what this side lets the peer send on each stream;
    the connection's own window is opened to the same size at once and
    given back as data arrives, so a peer can have at most that much in
    flight per stream and in all."""

    is_client = True

    def __init__(self, receive_window: int = 16 * 1024 * 1024 + 1024, max_streams: Optional[int] = None) -> None:
        self.transport: Any = None
        self.closed = False
        self.close_reason = ""
        self._input = bytearray()
        self._awaiting_preface = not self.is_client
        self._decoder = HeaderDecoder(max_table=4096, max_list=MAX_HEADER_BLOCK * 2)
        self._block: Optional[Tuple[int, int, bytearray]] = None  # a header block awaiting CONTINUATION
        self._receive_window = receive_window
        self._connection_receive = DEFAULT_WINDOW
        self._stream_receive: Dict[int, int] = {}
        self._consumed = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MAX_FRAME
        self.peer_max_streams: Optional[int] = None
        self._stream_send: Dict[int, int] = {}
        self._pending: Deque[Tuple[int, bytearray, bool, bytes]] = deque()  # (stream, data, end, trailer)
        self._controls = _PerSecond(MAX_CONTROL_FRAMES, "SETTINGS and PING frames")
        self._resets = _PerSecond(MAX_PEER_RESETS, "streams reset")
        self._max_streams = max_streams
        self.last_peer_stream = 0
        # Sending, from the loop and from ``send_now``'s threads: the send windows, the stream ids a
        # subclass hands out, ``closed``, and the order of the bytes on the socket.  Re-entrant: a
        # frame handler that holds it writes its answer.
        self.send_lock = threading.RLock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._fd = -1  # the socket's descriptor, for send_now; -1: not available
        self._backlog: Optional[bytearray] = None  # the rest of a send_now the socket did not take
        self.last_received = 0.0  # time.monotonic() of the last bytes from the peer

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        if isinstance(self._loop, asyncio.selector_events.BaseSelectorEventLoop) and sock is not None:
            self._fd = sock.fileno()
        settings = struct.pack(">HIHIHI", ENABLE_PUSH, 0, INITIAL_WINDOW_SIZE, self._receive_window,
                               HEADER_TABLE_SIZE, 4096)
        if self._max_streams is not None:
            settings += struct.pack(">HI", MAX_CONCURRENT_STREAMS, self._max_streams)
        opening = frame(SETTINGS, 0, 0, settings)
        if self._receive_window > DEFAULT_WINDOW:
            opening += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._receive_window - DEFAULT_WINDOW))
            self._connection_receive = self._receive_window
        transport.write((PREFACE if self.is_client else b"") + opening)

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        buf = self._input
        buf += data
        pos = 0
        try:
            if self._awaiting_preface:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if bytes(buf[:len(PREFACE)]) != PREFACE:
                    raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._awaiting_preface = False
                pos = len(PREFACE)
            end = len(buf)
            while end - pos >= 9 and not self.closed:
                length = buf[pos] << 16 | buf[pos + 1] << 8 | buf[pos + 2]
                if length > MAX_FRAME:
                    raise H2Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {MAX_FRAME})")
                if end - pos - 9 < length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9:pos + 9 + length])
                pos += 9 + length
                self._frame(kind, flags, stream, payload)
        except H2Error as exc:
            self.fail(exc.code, str(exc))
        finally:
            del buf[:pos]

    def pause_writing(self) -> None:
        # the peer does not read what this side writes: stop reading what it sends
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        with self.send_lock:  # the transport closes the descriptor after this returns
            was_closed = self.closed
            self.closed = True
            self._pending.clear()
            self._backlog = None
        if not was_closed:
            self.close_reason = f"connection lost: {exc}" if exc else "connection closed by the peer"
            self.on_closed(self.close_reason)

    # --- frames in ----------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise H2Error(PROTOCOL_ERROR, "a header block was not continued")
        if kind == DATA:
            self._data(flags, stream, payload)
        elif kind == HEADERS:
            self._headers(flags, stream, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, stream, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream, payload)
        elif kind == PING:
            if stream != 0 or len(payload) != 8:
                raise H2Error(PROTOCOL_ERROR if stream else FRAME_SIZE_ERROR, "a malformed PING")
            if not flags & ACK:
                self._controls.count()
                self._write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if stream == 0 or len(payload) != 4:
                raise H2Error(PROTOCOL_ERROR, "a malformed RST_STREAM")
            if not self.is_client:
                self._resets.count()
            self._forget(stream)
            self.on_reset(stream, int.from_bytes(payload, "big"))
        elif kind == GOAWAY:
            if stream != 0 or len(payload) < 8:
                raise H2Error(PROTOCOL_ERROR, "a malformed GOAWAY")
            last, code = struct.unpack(">II", payload[:8])
            self.on_goaway(last & 0x7FFFFFFF, code, payload[8:200].decode("utf-8", "replace"))
        elif kind == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "server push is off")
        # PRIORITY and unknown types: ignored

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        if not self.is_client and stream > self.last_peer_stream:
            raise H2Error(PROTOCOL_ERROR, f"DATA on stream {stream}, which was never opened")
        size = len(payload)
        self._connection_receive -= size
        if self._connection_receive < 0:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        self._consumed += size
        if self._consumed >= self._receive_window // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._consumed)))
            self._connection_receive += self._consumed
            self._consumed = 0
        window = self._stream_receive.get(stream)
        if window is None:
            return  # a stream this side has closed or reset: counted above, dropped
        window -= size
        if window < 0:
            raise H2Error(FLOW_CONTROL_ERROR, f"DATA beyond stream {stream}'s window")
        self._stream_receive[stream] = window
        if flags & PADDED:
            payload = _unpad(payload)
        end = bool(flags & END_STREAM)
        if end:
            self._stream_receive.pop(stream, None)
        self.on_data(stream, payload, end)

    def _headers(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        if not self.is_client and stream not in self._stream_receive:  # a new stream
            if not stream % 2 or stream <= self.last_peer_stream:
                raise H2Error(PROTOCOL_ERROR, f"HEADERS opening stream {stream} (after {self.last_peer_stream})")
            self.last_peer_stream = stream
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(stream, flags, payload)
        else:
            self._block = (stream, flags, bytearray(payload))

    def _continuation(self, flags: int, stream: int, payload: bytes) -> None:
        block = self._block
        if block is None or block[0] != stream:
            raise H2Error(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        block[2].extend(payload)
        if len(block[2]) > MAX_HEADER_BLOCK:
            raise H2Error(ENHANCE_YOUR_CALM, f"a header block over {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            self._block = None
            self._header_block(stream, block[1], bytes(block[2]))

    def _header_block(self, stream: int, flags: int, block: bytes) -> None:
        try:
            headers = self._decoder.decode(block)
        except HeaderError as exc:  # the decoder's state is lost, so is the connection
            raise H2Error(COMPRESSION_ERROR, f"a header block that does not decode: {exc}") from None
        end = bool(flags & END_STREAM)
        if end:
            self._stream_receive.pop(stream, None)
        self.on_headers(stream, headers, end)

    def _settings(self, flags: int, stream: int, payload: bytes) -> None:
        if stream != 0:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise H2Error(FRAME_SIZE_ERROR, "a SETTINGS frame of a bad size")
        self._controls.count()
        with self.send_lock:
            for at in range(0, len(payload), 6):
                key, value = struct.unpack_from(">HI", payload, at)
                if key == INITIAL_WINDOW_SIZE:
                    if value > MAX_WINDOW:
                        raise H2Error(FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                    delta = value - self._peer_initial_window
                    self._peer_initial_window = value
                    for sid in self._stream_send:
                        self._stream_send[sid] += delta
                elif key == MAX_FRAME_SIZE:
                    if not MAX_FRAME <= value <= 2 ** 24 - 1:
                        raise H2Error(PROTOCOL_ERROR, f"a max frame size of {value}")
                    self._peer_max_frame = value
                elif key == MAX_CONCURRENT_STREAMS:
                    self.peer_max_streams = value
            self._write(frame(SETTINGS, ACK, 0))
            self._flush()

    def _window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "a WINDOW_UPDATE of a bad size")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        broken = False
        with self.send_lock:
            if stream == 0:
                if increment == 0:
                    raise H2Error(PROTOCOL_ERROR, "a connection window opened by 0")
                self._send_window += increment
                if self._send_window > MAX_WINDOW:
                    raise H2Error(FLOW_CONTROL_ERROR, "the connection's window over 2^31-1")
            elif stream in self._stream_send:
                self._stream_send[stream] += increment
                if increment == 0 or self._stream_send[stream] > MAX_WINDOW:
                    self.reset(stream, PROTOCOL_ERROR if increment == 0 else FLOW_CONTROL_ERROR)
                    broken = True
            if not broken:
                self._flush()
        if broken:
            self.on_reset(stream, CANCEL)

    # --- frames out ---------------------------------------------------------

    def open_stream(self, stream: int) -> None:
        """Start keeping ``stream``'s windows (before its first frame); DATA
        on a stream never opened is counted against the connection and dropped."""
        self._stream_send[stream] = self._peer_initial_window
        self._stream_receive[stream] = self._receive_window

    def _write(self, data: bytes) -> None:
        """Hand ``data`` to the transport, after what ``send_now`` left over (on the loop)."""
        with self.send_lock:
            if self._backlog is not None:
                data, self._backlog = bytes(self._backlog) + data, None
            self.transport.write(data)

    def _write_backlog(self) -> None:
        if self._backlog is not None and not self.closed:
            self._write(b"")

    def send_headers(self, stream: int, block: bytes, end_stream: bool = False) -> None:
        """A header block (at most the peer's frame size: this side's blocks are small)."""
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        with self.send_lock:
            self._write(frame(HEADERS, flags, stream, block))
            if end_stream:
                self._stream_send.pop(stream, None)

    def _message_frames(self, stream: int, block: bytes, data: bytes, end_stream: bool,
                        trailer: bytes) -> Optional[bytes]:
        """A call's headers, one DATA frame and ``trailer``, taken from the
        windows; None when ``data`` does not fit in one frame and in the
        windows (caller holds ``send_lock``)."""
        window = self._stream_send.get(stream)
        size = len(data)
        if (window is None or self._pending or size > self._peer_max_frame or size > window
                or size > self._send_window or self.closed):
            return None
        self._send_window -= size
        if end_stream or trailer:
            del self._stream_send[stream]
        else:
            self._stream_send[stream] = window - size
        return (frame(HEADERS, END_HEADERS, stream, block)
                + frame(DATA, END_STREAM if end_stream else 0, stream, data) + trailer)

    def send_message(self, stream: int, block: bytes, data: bytes, end_stream: bool, trailer: bytes = b"") -> None:
        """``send_headers`` then ``send_data``, in one write when ``data`` fits
        in one frame and in the windows (a call's whole request or reply)."""
        with self.send_lock:
            out = self._message_frames(stream, block, data, end_stream, trailer)
            if out is not None:
                self._write(out)
                return
            self.send_headers(stream, block)
            self.send_data(stream, data, end_stream, trailer)

    def can_send_now(self) -> bool:
        """Whether ``send_now`` may write (caller holds ``send_lock``): the
        connection is open on a selector loop and nothing waits to be written
        before what it would write."""
        return (self._fd >= 0 and not self.closed and self._backlog is None and not self._pending
                and not self.transport.get_write_buffer_size())

    def send_now(self, stream: int, block: bytes, data: bytes) -> bool:
        """``send_message`` (the whole message, ending the stream) written to
        the socket by the calling thread, not the loop's: one thread hand-off
        less for a result.  The caller holds ``send_lock`` and has found
        ``can_send_now``; False (nothing sent) when the message does not fit
        in the windows.  What the socket does not take at once goes to the
        transport, on the loop, before anything written after it."""
        out = self._message_frames(stream, block, data, True, b"")
        if out is None:
            return False
        try:
            sent = os.write(self._fd, out)
        except BlockingIOError:
            sent = 0
        except OSError:
            # the connection is broken: the loop sees it, and its calls end as lost
            return True
        if sent < len(out):
            assert self._loop is not None
            self._backlog = bytearray(out[sent:])
            try:
                self._loop.call_soon_threadsafe(self._write_backlog)
            except RuntimeError:  # the loop is closed: so is the connection, and its calls end with it
                pass
        return True

    def send_data(self, stream: int, data: bytes, end_stream: bool, trailer: bytes = b"") -> None:
        """``data`` on ``stream`` within the windows, then ``trailer`` (already
        framed bytes, e.g. a trailing HEADERS); what does not fit waits for
        the peer's WINDOW_UPDATE."""
        with self.send_lock:
            self._pending.append((stream, bytearray(data), end_stream, trailer))
            if len(self._pending) == 1:
                self._flush()

    def _flush(self) -> None:
        """What waits in ``_pending`` that the windows now allow (caller holds ``send_lock``)."""
        pending = self._pending
        out = bytearray()
        while pending and not self.closed:
            stream, data, end, trailer = pending[0]
            window = self._stream_send.get(stream)
            if window is None:  # reset meanwhile
                pending.popleft()
                continue
            room = min(self._send_window, window)
            if room <= 0 and data:
                break
            size = max(0, min(len(data), room))  # a window can be negative after SETTINGS shrank it
            for at in range(0, size, self._peer_max_frame):
                chunk = bytes(data[at:min(size, at + self._peer_max_frame)])
                last = at + len(chunk) >= len(data)
                out += frame(DATA, END_STREAM if end and last else 0, stream, chunk)
            if not data and end:
                out += frame(DATA, END_STREAM, stream)
            self._send_window -= size
            self._stream_send[stream] = window - size
            del data[:size]
            if data:
                break
            pending.popleft()
            out += trailer
            if end or trailer:
                self._stream_send.pop(stream, None)
        if out:
            self._write(bytes(out))

    def reset(self, stream: int, code: int = CANCEL) -> None:
        """End ``stream`` from this side (RST_STREAM)."""
        with self.send_lock:
            self._forget(stream)
            if not self.closed:
                self._write(frame(RST_STREAM, 0, stream, struct.pack(">I", code)))

    def _forget(self, stream: int) -> None:
        self._stream_send.pop(stream, None)
        self._stream_receive.pop(stream, None)
        if self._pending:
            self._pending = deque(p for p in self._pending if p[0] != stream)

    def ping(self) -> None:
        """Ask the peer for a PING answer (any bytes it sends move ``last_received``)."""
        with self.send_lock:
            if not self.closed:
                self._write(frame(PING, 0, 0, b"\x00" * 8))

    def abandon(self, reason: str) -> None:
        """Give up on a peer that stopped answering: closed at once, without
        waiting for what is queued for it to drain (it never would)."""
        with self.send_lock:
            if self.closed:
                return
            self.closed = True
            self._pending.clear()
            self._backlog = None
            self.transport.abort()
        self.close_reason = reason
        self.on_closed(reason)

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with ``message``, then close."""
        detail = message.encode("utf-8", "replace")[:200]
        if self._end(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_peer_stream, code) + detail)):
            self.close_reason = f"protocol error: {message}"
            self.on_closed(self.close_reason)

    def close(self) -> None:
        """Close politely (GOAWAY, no error)."""
        if self._end(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_peer_stream, NO_ERROR))):
            self.close_reason = "closed by this side"
            self.on_closed(self.close_reason)

    def _end(self, goaway: bytes) -> bool:
        """Write ``goaway`` and close the transport; False if already closed."""
        with self.send_lock:
            if self.closed:
                return False
            self._write(goaway)  # after any backlog
            self.closed = True
            self._pending.clear()
            self.transport.close()
            return True

    # --- for subclasses -----------------------------------------------------

    def on_headers(self, stream: int, headers: Headers, end_stream: bool) -> None:
        raise NotImplementedError

    def on_data(self, stream: int, data: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def on_reset(self, stream: int, code: int) -> None:
        raise NotImplementedError

    def on_goaway(self, last_stream: int, code: int, debug: str) -> None:
        raise NotImplementedError

    def on_closed(self, reason: str) -> None:
        raise NotImplementedError


class _PerSecond:
    """A count of something a peer does, at most ``limit`` in any second:
    the last second's count weighs in by the part of it still inside the
    window, so a burst that straddles the turn of a second is not split
    into two that each pass."""

    __slots__ = ("limit", "what", "second", "seen", "before")

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what = limit, what
        self.second = self.seen = self.before = 0

    def count(self) -> None:
        now = time.monotonic()
        second = int(now)
        if second != self.second:
            self.before = self.seen if second == self.second + 1 else 0
            self.second, self.seen = second, 0
        self.seen += 1
        if self.seen + self.before * (1.0 - (now - second)) > self.limit:
            raise H2Error(ENHANCE_YOUR_CALM, f"more than {self.limit} {self.what} in a second")


def _unpad(payload: bytes) -> bytes:
    if not payload or payload[0] >= len(payload):
        raise H2Error(PROTOCOL_ERROR, "padding longer than its frame")
    return payload[1:len(payload) - payload[0]]
