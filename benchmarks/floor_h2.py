"""A floor without grpcio: the same answers as ``floor_client.py``, over
HTTP/2 frames written and read by hand on asyncio (prior-knowledge h2c,
the way gRPC talks without TLS), with ``hpack`` for header decoding.

An experiment for issue 29: how much CPU per task is grpcio's own, i.e.
whether a Python client on another transport could use less CPU than the
Go client. Not a client: it trusts its peer, handles only unary calls
with one message each, and has none of the defences of the inbound server.

    SNAIL_SERVER_PORT=... SNAIL_HOST_PORT=... SNAIL_TOKEN=... python benchmarks/floor_h2.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from hpack import Decoder  # type: ignore[import-not-found]  # only in benchmarks/.venv-h2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floor_base import FloorBase  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
BIG_WINDOW = 1 << 30


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def literal(name_index: int, value: bytes) -> bytes:
    """A header 'literal without indexing' with a static-table name (index < 15)."""
    return bytes((name_index,)) + bytes((len(value),)) + value


def literal_new(name: bytes, value: bytes) -> bytes:
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


CONTENT_TYPE = b"\x0f\x10\x10" + b"application/grpc"  # static name 31, literal without indexing
RESPONSE_HEADERS = b"\x88" + CONTENT_TYPE  # :status 200
TRAILERS = literal_new(b"grpc-status", b"0")
OUR_SETTINGS = frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 24))  # INITIAL_WINDOW_SIZE
OPEN_WINDOW = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", BIG_WINDOW - 65535))


class Connection(asyncio.Protocol):
    """The frame layer both sides share: reads frames, answers SETTINGS and
    PING, keeps the receive window open, and hands complete streams on."""

    def __init__(self, server: bool) -> None:
        self.server = server
        self.buf = bytearray()
        self.preface = server
        self.decoder = Decoder()
        self.streams: Dict[int, List[Any]] = {}  # id -> [headers, body bytearray]
        self.pending_block: Optional[Tuple[int, int, bytearray]] = None
        self.received = 0
        self.transport: Any = None
        # what the peer lets us send (RFC 9113 section 6.9): on the connection and per stream
        self.send_window = 65535
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.stream_windows: Dict[int, int] = {}
        self.blocked: List[Tuple[int, bytes, bytes]] = []  # (stream, message, frames after it)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        out = OUR_SETTINGS + OPEN_WINDOW
        if not self.server:
            out = PREFACE + out
        transport.write(out)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        if self.preface:
            if len(buf) < 24:
                return
            if bytes(buf[:24]) != PREFACE:
                self.transport.close()
                return
            self.preface = False
            pos = 24
        end = len(buf)
        while end - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if end - pos - 9 < length:
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            self.on_frame(kind, flags, stream, payload)
        del buf[:pos]

    def on_frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == DATA:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            entry = self.streams.get(stream)
            if entry is not None:
                entry[1] += payload
            self.received += len(payload)
            if self.received > BIG_WINDOW // 2:
                self.transport.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received)))
                self.received = 0
            if flags & END_STREAM and entry is not None:
                del self.streams[stream]
                self.on_stream(stream, entry[0], bytes(entry[1]), None)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIO:
                payload = payload[5:]
            if flags & END_HEADERS:
                self.on_headers(stream, flags, payload)
            else:
                self.pending_block = (stream, flags, bytearray(payload))
        elif kind == CONTINUATION:
            assert self.pending_block is not None and self.pending_block[0] == stream
            self.pending_block[2].extend(payload)
            if flags & END_HEADERS:
                sid, first_flags, block = self.pending_block
                self.pending_block = None
                self.on_headers(sid, first_flags, bytes(block))
        elif kind == SETTINGS:
            if not flags & ACK:
                self.on_settings(payload)
                self.transport.write(frame(SETTINGS, ACK, 0, b""))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.send_window += increment
            elif stream in self.stream_windows:
                self.stream_windows[stream] += increment
            if self.blocked:
                blocked, self.blocked = self.blocked, []
                for sid, message, after in blocked:
                    self.send_message(sid, message, after)
        elif kind == PING:
            if not flags & ACK:
                self.transport.write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self.streams.pop(stream, None)
        elif kind == GOAWAY:
            self.transport.close()

    def on_settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == 4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for sid in self.stream_windows:
                    self.stream_windows[sid] += delta
            elif key == 5:
                self.peer_max_frame = value

    def send_message(self, stream: int, message: bytes, after: bytes = b"") -> None:
        """One gRPC message as DATA frames within the peer's windows, then ``after``."""
        data = grpc_message(message)
        window = min(self.send_window, self.stream_windows.get(stream, self.peer_initial_window))
        if len(data) > window:
            self.blocked.append((stream, message, after))
            return
        self.send_window -= len(data)
        end = END_STREAM if not after and not self.server else 0
        out = bytearray()
        step = self.peer_max_frame
        for at in range(0, len(data), step):
            last = at + step >= len(data)
            out += frame(DATA, end if last else 0, stream, data[at:at + step])
        self.transport.write(bytes(out) + after)
        if self.server:
            self.stream_windows.pop(stream, None)
        else:
            self.stream_windows[stream] = window - len(data)

    def on_headers(self, stream: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block, raw=True)
        entry = self.streams.get(stream)
        if entry is None:
            entry = [headers, bytearray()]
            self.streams[stream] = entry
        else:
            entry[0] = entry[0] + headers  # trailers
        if flags & END_STREAM:
            del self.streams[stream]
            self.on_stream(stream, entry[0], bytes(entry[1]), headers)

    def on_stream(self, stream: int, headers: List[Tuple[bytes, bytes]], body: bytes,
                  trailers: Optional[List[Tuple[bytes, bytes]]]) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.transport = None


def grpc_message(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(4, "big") + data


class ServerConnection(Connection):
    """One inbound connection: every complete call is answered at once."""

    def __init__(self, handle: Callable[[bytes], bytes]) -> None:
        super().__init__(server=True)
        self.handle = handle

    def on_stream(self, stream: int, headers: List[Tuple[bytes, bytes]], body: bytes,
                  trailers: Optional[List[Tuple[bytes, bytes]]]) -> None:
        reply = self.handle(body[5:])
        self.transport.write(frame(HEADERS, END_HEADERS, stream, RESPONSE_HEADERS))
        self.send_message(stream, reply, frame(HEADERS, END_HEADERS | END_STREAM, stream, TRAILERS))


class ClientConnection(Connection):
    """The one outbound connection: unary calls, each answered by a future."""

    def __init__(self, authority: bytes) -> None:
        super().__init__(server=False)
        self.next_id = 1
        self.waiting: Dict[int, asyncio.Future] = {}
        self.request_headers = (b"\x83\x86" + literal(4, b"/UnaryRequest/unaryRequest") + literal(1, authority)
                                + CONTENT_TYPE + literal_new(b"te", b"trailers"))

    def call(self, message: bytes) -> asyncio.Future[bytes]:
        stream = self.next_id
        self.next_id += 2
        fut = asyncio.get_running_loop().create_future()
        self.waiting[stream] = fut
        self.transport.write(frame(HEADERS, END_HEADERS, stream, self.request_headers))
        self.send_message(stream, message)
        return fut

    def on_stream(self, stream: int, headers: List[Tuple[bytes, bytes]], body: bytes,
                  trailers: Optional[List[Tuple[bytes, bytes]]]) -> None:
        self.stream_windows.pop(stream, None)
        fut = self.waiting.pop(stream, None)
        if fut is not None and not fut.done():
            fut.set_result(body[5:])


class H2Floor(FloorBase):
    """The floor's logic on the hand-written transport."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.target.rsplit(":", 1)
        _, self.out = await loop.create_connection(lambda: ClientConnection(self.target.encode()), host, int(port))
        bind_host, bind_port = self.bind.rsplit(":", 1)
        server = await loop.create_server(lambda: ServerConnection(self.serve), bind_host, int(bind_port))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.out.call(self.request("/beat", '["PING"]').SerializeToString())
        await stop.wait()
        server.close()

    def serve(self, message: bytes) -> bytes:
        request = self.pb.GrpcSnailJobRequest.FromString(message)
        if request.metadata.uri == "/job/dispatch/v1":
            self.out.call(self.report_for(request.body).SerializeToString())
        return self.pb.GrpcResult(reqId=request.reqId, status=1, message="", data="true").SerializeToString()


if __name__ == "__main__":
    asyncio.run(H2Floor().run())
