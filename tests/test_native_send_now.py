"""The native transport's calls made off its loop (a worker reporting a
result): written to the socket by the calling thread, without waking the
loop, yet keeping their deadlines, the order of the bytes on the wire, and
every call ending once."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from snailjob import http2
from snailjob.errors import TransportError
from snailjob.native_transport import NativeTransport
from snailjob.transport import Reply
from snailjob.wire import snailjob_pb2 as pb

from .test_native_transport import HEADERS, FakeServer, _frame

Outcome = Tuple[Optional[Reply], Optional[TransportError]]


@pytest.fixture
def loop(given_loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """An event loop on a thread of its own, as the inbound server's."""
    return given_loop


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.stop()


def _on(transport: NativeTransport, loop: asyncio.AbstractEventLoop) -> NativeTransport:
    """``transport`` on ``loop``, its connection made by a first call."""
    transport.use_loop(loop)
    assert _wait_call(transport, "/warm-up", 5)[0] is not None
    return transport


def _wait_call(transport: NativeTransport, uri: str, timeout: float, body: str = "[]") -> Outcome:
    """``call_async`` from this thread, and its outcome."""
    ended = threading.Event()
    got: List[Outcome] = []
    transport.call_async(uri, body, timeout, lambda reply, error: (got.append((reply, error)), ended.set()))
    assert ended.wait(timeout + 3), f"{uri} never ended"
    return got[0]


def _block(loop: asyncio.AbstractEventLoop) -> threading.Event:
    """Hold ``loop`` busy until the returned event is set."""
    busy, release = threading.Event(), threading.Event()
    loop.call_soon_threadsafe(lambda: (busy.set(), release.wait(10)))
    assert busy.wait(5)
    return release


def test_a_call_off_the_loop_reaches_the_server_while_the_loop_is_busy(
        server: FakeServer, loop: asyncio.AbstractEventLoop) -> None:
    transport = _on(NativeTransport(server.target, lambda: HEADERS), loop)
    try:
        release = _block(loop)
        ended = threading.Event()
        got: List[Any] = []
        transport.call_async("/report/dispatch/result", '["r"]', 5, lambda reply, error: (got.append(reply),
                                                                                          ended.set()))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(r.metadata.uri == "/report/dispatch/result"
                                                      for r in server.requests):
            time.sleep(0.01)
        reached = any(r.metadata.uri == "/report/dispatch/result" for r in server.requests)
        release.set()
        assert reached, "the request waited for the loop"
        assert ended.wait(5) and got[0] is not None and got[0].ok  # the answer is read on the loop
    finally:
        transport.close()


def test_calls_from_many_threads_and_the_loop_each_end_once(
        server: FakeServer, loop: asyncio.AbstractEventLoop) -> None:
    server.behaviour = lambda req, ctx: pb.GrpcResult(reqId=req.reqId, status=1, message=req.body, data="true")
    transport = _on(NativeTransport(server.target, lambda: HEADERS), loop)
    ended: Dict[str, List[Any]] = {}
    lock = threading.Lock()
    # 700 calls at once: grpcio's server cancels calls beyond 1,000 pending ones
    expected = {json.dumps([t, i]) for t in range(7) for i in range(100)}
    all_done = threading.Event()

    def done_for(body: str) -> Callable[[Optional[Reply], Optional[TransportError]], None]:
        def done(reply: Optional[Reply], error: Optional[TransportError]) -> None:
            with lock:
                ended.setdefault(body, []).append(reply.message if reply else error)
                if len(ended) == len(expected):
                    all_done.set()
        return done

    def send(t: int) -> None:
        for i in range(100):
            body = json.dumps([t, i])
            if t == 6:  # the last sender starts its calls on the loop itself
                loop.call_soon_threadsafe(transport.call_async, "/r", body, 10, done_for(body))
            else:
                transport.call_async("/r", body, 10, done_for(body))

    try:
        threads = [threading.Thread(target=send, args=(t,)) for t in range(7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert all_done.wait(20), f"{len(expected) - len(ended)} calls never ended"
        assert set(ended) == expected
        wrong = {body: values for body, values in ended.items() if values != [body]}
        assert not wrong, list(wrong.items())[:3]
        assert sorted(r.body for r in server.requests if r.metadata.uri == "/r") == sorted(expected)
    finally:
        transport.close()


class _Stalled:
    """A server that opens its windows wide, then reads nothing until told:
    the client's socket fills."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted one
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.conn: Optional[socket.socket] = None
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.sendall(_frame(http2.SETTINGS, 0, 0, b"")
                          + _frame(http2.WINDOW_UPDATE, 0, 0, struct.pack(">I", 2 ** 30)))
        self.accepted.set()

    def read_all(self, quiet: float = 0.5) -> bytes:
        assert self.conn is not None
        self.conn.settimeout(quiet)
        data = bytearray()
        while True:
            try:
                chunk = self.conn.recv(1 << 16)
            except socket.timeout:
                return bytes(data)
            if not chunk:
                return bytes(data)
            data += chunk

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def _requests(data: bytes) -> List[Tuple[int, Any]]:
    """(stream, request) of every call in what the client wrote, checking that
    each stream's frames are whole and come HEADERS first, DATA after."""
    assert data.startswith(http2.PREFACE)
    pos, opened, bodies = len(http2.PREFACE), [], {}
    while pos < len(data):
        assert len(data) - pos >= 9, "a frame cut short"
        length = int.from_bytes(data[pos:pos + 3], "big")
        kind, stream = data[pos + 3], int.from_bytes(data[pos + 5:pos + 9], "big")
        payload = data[pos + 9:pos + 9 + length]
        assert len(payload) == length, "a frame cut short"
        pos += 9 + length
        if kind == http2.HEADERS:
            assert stream not in opened and (not opened or stream > max(opened))
            opened.append(stream)
        elif kind == http2.DATA:
            assert stream in opened and stream not in bodies, f"DATA out of place on stream {stream}"
            assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == len(payload) - 5
            bodies[stream] = pb.GrpcSnailJobRequest.FromString(payload[5:])
    assert sorted(bodies) == sorted(opened)
    return [(s, bodies[s]) for s in opened]


def _connect(transport: NativeTransport, loop: asyncio.AbstractEventLoop, server: _Stalled) -> Any:
    """``transport`` on ``loop``, connected to ``server`` by a call ("/open")
    that is never answered; the loop's link."""
    transport.use_loop(loop)
    transport.call_async("/open", "[]", 30, lambda reply, error: None)
    assert server.accepted.wait(5)
    link = transport._links[loop]
    deadline = time.monotonic() + 5
    while link.conn is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert link.conn is not None
    return link


def _uris(requests: List[Tuple[int, Any]]) -> List[str]:
    return [request.metadata.uri for _, request in requests]


def test_a_request_the_socket_takes_only_in_part_is_finished_by_the_loop_in_order(
        loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    short_writes: List[int] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        try:
            sent = real_write(fd, data)
        except BlockingIOError:
            short_writes.append(0)
            raise
        if sent < len(data):
            short_writes.append(sent)
        return sent

    monkeypatch.setattr(http2, "os", type("os", (), {"write": staticmethod(write)}))
    stalled = _Stalled()
    transport = NativeTransport(stalled.target, lambda: HEADERS)
    try:
        link = _connect(transport, loop, stalled)
        link.conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent = []
        for i in range(400):  # 8 KB each: far more than the two socket buffers hold
            sent.append(json.dumps([i, "x" * 8000]))
            transport.call_async("/r", sent[-1], 30, lambda reply, error: None)
            if short_writes:
                break
        assert short_writes, "the socket took every request whole: the test proves nothing"
        time.sleep(0.2)
        data = stalled.read_all()  # the loop writes the rest of the cut request as the socket drains
        assert [r.body for _, r in _requests(data)][1:] == sent  # each whole, once, in the order sent
        for i in range(5):  # and what follows comes after it
            sent.append(json.dumps(["after", i]))
            transport.call_async("/r", sent[-1], 30, lambda reply, error: None)
        assert [r.body for _, r in _requests(data + stalled.read_all())][1:] == sent
    finally:
        transport.close()
        stalled.close()


def test_a_call_off_the_loop_keeps_its_deadline(loop: asyncio.AbstractEventLoop) -> None:
    silent = _Stalled()  # it never answers (and grpc-timeout is only advice to a server)
    transport = NativeTransport(silent.target, lambda: HEADERS)
    try:
        link = _connect(transport, loop, silent)
        started = time.monotonic()
        reply, error = _wait_call(transport, "/slow", 0.3)
        elapsed = time.monotonic() - started
        assert reply is None and error is not None and error.code == "DEADLINE_EXCEEDED", error
        assert 0.25 < elapsed < 0.3 + 0.25 + 0.5  # at most one sweep late
        assert link.conn is not None and [c.uri for c in link.conn.calls.values()] == ["/open"]  # given up
        assert [uri for uri in _uris(_requests(silent.read_all()))] == ["/open", "/slow"]
    finally:
        transport.close()
        silent.close()
