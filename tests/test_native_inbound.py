"""The native inbound server (``SNAIL_INBOUND=native``) against attacks on
its HTTP/2 and gRPC layers, over real sockets: frames written by hand for
what a well-behaved client never sends, grpcio's channel for the rest.
The attacks both servers share run against both in test_attacks.py,
test_inbound.py and test_inbound_hostile.py."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import types
from concurrent import futures
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import grpc
import pytest

from snailjob import http2
from snailjob.http2_headers import HeaderDecoder, encode_headers
from snailjob.inbound import InboundLimits
from snailjob.native_inbound import NativeInboundServer
from snailjob.transport import METHOD, Reply
from snailjob.wire import snailjob_pb2 as pb

from .conftest import TOKEN, wait_for

Frame = Tuple[int, int, int, bytes]  # kind, flags, stream, payload (headers decoded into .headers)


def request(req_id: int = 7, token: str = TOKEN, body: str = "[]") -> bytes:
    message = pb.GrpcSnailJobRequest(reqId=req_id, body=body, metadata=pb.Metadata(
        uri="/job/dispatch/v1", headers={"SJ-TOKEN": token})).SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


class Raw:
    """A client that writes HTTP/2 frames by hand."""

    def __init__(self, port: int, settings: bytes = b"", window: int = 0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        opening = http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0, settings)
        if window:
            opening += http2.frame(http2.WINDOW_UPDATE, 0, 0, struct.pack(">I", window))
        self.sock.sendall(opening)
        self.buffer = b""
        self.decoder = HeaderDecoder()
        self.headers: Dict[int, List[List[Tuple[str, str]]]] = {}
        self.eof = False

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def call(self, stream: int, message: bytes, path: str = METHOD, content_type: str = "application/grpc",
             end: bool = True) -> None:
        block = encode_headers([(":method", "POST"), (":scheme", "http"), (":path", path),
                                (":authority", "node"), ("content-type", content_type)])
        frames = [http2.frame(http2.HEADERS, http2.END_HEADERS | (0 if message or not end else http2.END_STREAM),
                              stream, block)]
        self.send(*frames)
        if message:
            self.data(stream, message, end)

    def data(self, stream: int, message: bytes, end: bool = True) -> None:
        """``message`` in DATA frames of at most 16 KiB."""
        chunks = [message[at:at + http2.MAX_FRAME] for at in range(0, len(message), http2.MAX_FRAME)]
        self.send(*(http2.frame(http2.DATA, http2.END_STREAM if end and i == len(chunks) - 1 else 0, stream, chunk)
                    for i, chunk in enumerate(chunks)))

    def read(self, until: Callable[[Frame], bool], timeout: float = 5.0) -> List[Frame]:
        """Frames until one passes ``until`` (or the connection closes)."""
        seen: List[Frame] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) < 9 + length:
                    break
                kind, flags = self.buffer[3], self.buffer[4]
                stream = int.from_bytes(self.buffer[5:9], "big")
                payload, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
                if kind == http2.HEADERS:
                    self.headers.setdefault(stream, []).append(self.decoder.decode(payload))
                item = (kind, flags, stream, payload)
                seen.append(item)
                if until(item):
                    return seen
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                break
            self.buffer += data
        return seen

    def goaway(self, timeout: float = 5.0) -> Optional[Tuple[int, str]]:
        """The GOAWAY's error code and text, or None."""
        frames = self.read(lambda f: f[0] == http2.GOAWAY, timeout)
        for kind, _, _, payload in frames:
            if kind == http2.GOAWAY:
                return struct.unpack(">I", payload[4:8])[0], payload[8:].decode()
        return None

    def status(self, stream: int, timeout: float = 5.0) -> Dict[str, str]:
        """The last header block of ``stream`` (its trailers, or its only block)."""
        self.read(lambda f: f[0] == http2.HEADERS and f[2] == stream and bool(f[1] & http2.END_STREAM), timeout)
        return dict(self.headers.get(stream, [[]])[-1])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., NativeInboundServer]]:
    started: List[NativeInboundServer] = []

    def start(handler: Optional[Callable[..., Reply]] = None, **limits: Any) -> NativeInboundServer:
        server = NativeInboundServer("127.0.0.1", 0, handler or (lambda uri, headers, body: Reply(1, "", body)),
                                     token=TOKEN, inline=lambda path: True, limits=InboundLimits(**limits))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(0)


def test_a_call_over_raw_frames_is_answered(serve: Any) -> None:
    server = serve()
    raw = Raw(server.port)
    try:
        raw.call(1, request(req_id=42, body='["x"]'))
        trailers = raw.status(1)
        assert trailers == {"grpc-status": "0"}
        assert raw.headers[1][0] == [(":status", "200"), ("content-type", "application/grpc")]
        data = b"".join(p for kind, _, stream, p in raw.read(lambda f: False, 0.1) if kind == http2.DATA)
        assert data == b""  # the DATA came before the trailers: already read
    finally:
        raw.close()


def test_a_grpcio_channel_makes_many_concurrent_calls_each_answered_with_its_own(serve: Any) -> None:
    server = serve()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        method = channel.unary_unary(METHOD, request_serializer=pb.GrpcSnailJobRequest.SerializeToString,
                                     response_deserializer=pb.GrpcResult.FromString)
        calls = [method.future(pb.GrpcSnailJobRequest(reqId=i, body=f'["{i}"]', metadata=pb.Metadata(
            uri="/job/dispatch/v1", headers={"SJ-TOKEN": TOKEN})), timeout=20) for i in range(600)]
        replies = [call.result() for call in calls]
    assert [(r.reqId, r.status, json.loads(r.data)) for r in replies] == [(i, 1, f'["{i}"]') for i in range(600)]


def test_rapid_reset_ends_the_connection_and_others_are_served(serve: Any) -> None:
    server = serve()
    raw = Raw(server.port)
    try:
        block = encode_headers([(":method", "POST"), (":path", METHOD), ("content-type", "application/grpc")])
        burst = b"".join(http2.frame(http2.HEADERS, http2.END_HEADERS, sid, block)
                         + http2.frame(http2.RST_STREAM, 0, sid, struct.pack(">I", http2.CANCEL))
                         for sid in range(1, 4 * http2.MAX_PEER_RESETS, 2))  # twice the limit
        raw.send(burst)
        code, text = raw.goaway() or (None, "")
        assert code == http2.ENHANCE_YOUR_CALM and "reset in a second" in text
    finally:
        raw.close()
    other = Raw(server.port)
    try:
        other.call(1, request())
        assert other.status(1) == {"grpc-status": "0"}
    finally:
        other.close()


def test_streams_beyond_the_advertised_limit_are_refused(serve: Any) -> None:
    server = serve(max_streams=3)
    raw = Raw(server.port)
    try:
        settings = raw.read(lambda f: f[0] == http2.SETTINGS and not f[1] & http2.ACK)[-1][3]
        pairs = dict(struct.unpack(">HI", settings[at:at + 6]) for at in range(0, len(settings), 6))
        assert pairs[http2.MAX_CONCURRENT_STREAMS] == 3
        for sid in (1, 3, 5, 7):
            raw.call(sid, request()[:10], end=False)  # calls that wait for the rest of their message
        frames = raw.read(lambda f: f[0] == http2.RST_STREAM)
        assert [(f[2], struct.unpack(">I", f[3])[0]) for f in frames if f[0] == http2.RST_STREAM] == \
            [(7, http2.REFUSED_STREAM)]
    finally:
        raw.close()


@pytest.mark.parametrize("second,why", [(1, "opening stream 1 (after 1)"), (2, "opening stream 2"),
                                        (0, "HEADERS on stream 0")])
def test_stream_ids_must_be_new_odd_and_rising(serve: Any, second: int, why: str) -> None:
    server = serve()
    raw = Raw(server.port)
    try:
        raw.call(1, request())
        assert raw.status(1) == {"grpc-status": "0"}
        raw.call(second, request())
        code, text = raw.goaway() or (None, "")
        assert code == http2.PROTOCOL_ERROR and why in text, text
    finally:
        raw.close()


def test_data_on_a_stream_never_opened_ends_the_connection(serve: Any) -> None:
    server = serve()
    raw = Raw(server.port)
    try:
        raw.send(http2.frame(http2.DATA, 0, 9, request()))
        code, text = raw.goaway() or (None, "")
        assert code == http2.PROTOCOL_ERROR and "never opened" in text
    finally:
        raw.close()


def test_a_peer_that_keeps_its_window_shut_is_closed(serve: Any) -> None:
    server = serve(receive_timeout=0.5)
    raw = Raw(server.port, settings=struct.pack(">HI", http2.INITIAL_WINDOW_SIZE, 0))
    try:
        raw.call(1, request())
        started = time.monotonic()
        code, text = raw.goaway(timeout=5) or (None, "")
        assert code == http2.ENHANCE_YOUR_CALM and "replies not taken" in text
        assert time.monotonic() - started < 2.5
        wait_for(lambda: not server.connections(), timeout=3, what="the connection dropped")
    finally:
        raw.close()


def test_a_slow_reader_is_closed_without_waiting_for_it(serve: Any) -> None:
    big = "x" * 200_000
    server = serve(receive_timeout=0.5, handler=lambda uri, headers, body: Reply(1, "", big))
    raw = Raw(server.port, settings=struct.pack(">HI", http2.INITIAL_WINDOW_SIZE, 2 ** 31 - 1),
              window=2 ** 31 - 1 - 65535)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        for sid in range(1, 80, 2):  # 8 MB of replies, never read
            raw.call(sid, request())
        wait_for(lambda: not server.connections(), timeout=5, what="the connection dropped while unread")
    finally:
        raw.close()


def test_a_message_declared_over_the_limit_ends_its_call_at_the_prefix(serve: Any) -> None:
    server = serve(message_bytes=1000)
    raw = Raw(server.port)
    try:
        raw.call(1, b"\x00" + struct.pack(">I", 10_000_000), end=False)  # the prefix alone
        status = raw.status(1)
        assert status["grpc-status"] == "8" and "10000000 bytes" in status["grpc-message"], status
        frames = raw.read(lambda f: f[0] == http2.RST_STREAM, timeout=2)
        assert any(f[0] == http2.RST_STREAM and f[2] == 1 for f in frames)  # told to stop sending
        raw.call(3, request())
        assert raw.status(3) == {"grpc-status": "0"}
    finally:
        raw.close()


@pytest.mark.parametrize("path,content_type,message,expected", [
    (METHOD, "application/grpc", b"\x01" + request()[1:], {"grpc-status": "12"}),
    ("/grpc.health.v1.Health/Check", "application/grpc", request(), {"grpc-status": "12"}),
    (METHOD, "text/plain", request(), {":status": "415"}),
    (METHOD, "application/grpc", b"", {"grpc-status": "3"}),
    (METHOD, "application/grpc", request()[:20], {"grpc-status": "3"}),
    (METHOD, "application/grpc", request() + request(), {"grpc-status": "3"}),
])
def test_what_is_not_one_snailjob_call_gets_a_named_error(serve: Any, path: str, content_type: str, message: bytes,
                                                        expected: Dict[str, str]) -> None:
    server = serve()
    raw = Raw(server.port)
    try:
        raw.call(1, message, path=path, content_type=content_type)
        status = raw.status(1)
        assert {k: status.get(k) for k in expected} == expected, status
        raw.call(3, request())
        assert raw.status(3) == {"grpc-status": "0"}  # the connection still serves
    finally:
        raw.close()


def test_bytes_of_messages_still_coming_are_capped_oldest_call_ends_first(serve: Any) -> None:
    server = serve(buffered_bytes=100_000, handler=lambda uri, headers, body: Reply(1, "", True))
    raw = Raw(server.port)
    try:
        body = "y" * 70_000
        first, second = request(req_id=1, body=body), request(req_id=2, body=body)
        raw.call(1, first[:60_000], end=False)
        raw.call(3, second[:60_000], end=False)
        status = raw.status(1)
        assert status["grpc-status"] == "8" and "waited longest" in status["grpc-message"]
        assert server.evicted == 1
        raw.data(3, second[60_000:])
        assert raw.status(3) == {"grpc-status": "0"}
    finally:
        raw.close()


def test_connections_beyond_the_limit_are_closed_at_once(serve: Any) -> None:
    server = serve(max_connections=2)
    kept = [Raw(server.port), Raw(server.port)]
    for raw in kept:
        raw.read(lambda f: f[0] == http2.SETTINGS)
    extra = Raw(server.port)
    try:
        extra.read(lambda f: False, timeout=2)
        assert extra.eof and server.refused_connections == 1
        kept.pop().close()
        wait_for(lambda: len(server.connections()) == 1, timeout=3, what="the closed connection forgotten")
        again = Raw(server.port)
        again.call(1, request())
        assert again.status(1) == {"grpc-status": "0"}
        again.close()
    finally:
        extra.close()
        for raw in kept:
            raw.close()


def test_idle_connections_are_closed_and_old_ones_asked_to_go(serve: Any) -> None:
    server = serve(connection_idle=0.5, connection_age=30)
    idle = Raw(server.port)
    try:
        idle.call(1, request())
        assert idle.status(1) == {"grpc-status": "0"}
        assert idle.goaway(timeout=3) == (http2.NO_ERROR, "")
    finally:
        idle.close()
    server = serve(connection_age=0.5, connection_age_grace=0.5)
    old = Raw(server.port)
    try:
        old.call(1, request()[:10], end=False)  # a call still open when the age passes
        assert old.goaway(timeout=3) is not None
        old.read(lambda f: False, timeout=3)
        assert old.eof  # closed after the grace
    finally:
        old.close()


def test_a_node_on_the_native_server_serves_a_dual_stack_bind() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    server = NativeInboundServer("::", 0, lambda uri, headers, body: Reply(1, "", True), token=TOKEN)
    server.start()
    try:
        for host in ("127.0.0.1", "[::1]"):
            with grpc.insecure_channel(f"{host}:{server.port}") as channel:
                method = channel.unary_unary(METHOD, response_deserializer=pb.GrpcResult.FromString)
                assert method(request()[5:], timeout=5).status == 1
    finally:
        server.stop(0)


def test_stop_answers_calls_in_flight_within_the_grace(serve: Any) -> None:
    gate = threading.Event()

    def slow(uri: str, headers: Dict[str, str], body: str) -> Reply:
        gate.wait(5)
        return Reply(1, "", True)

    server = NativeInboundServer("127.0.0.1", 0, slow, token=TOKEN)  # on a worker thread
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        method = channel.unary_unary(METHOD, response_deserializer=pb.GrpcResult.FromString)
        call = method.future(request()[5:], timeout=10)
        wait_for(lambda: server.connections(), timeout=3, what="the call connected")
        time.sleep(0.2)
        with futures.ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(server.stop, 3.0)
            time.sleep(0.3)
            gate.set()
            stopping.result(10)
        assert call.result(5).status == 1


def test_a_connection_that_never_sends_the_preface_is_closed(serve: Any) -> None:
    server = serve(receive_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(http2.PREFACE[:10])  # a start, then nothing
        started = time.monotonic()
        received = b""
        while True:
            data = sock.recv(4096)
            if not data:
                break
            received += data
        assert time.monotonic() - started < 2.5
        assert b"no connection preface within 0.5 s" in received  # the GOAWAY's text
    assert not server.connections()


def test_stop_tells_peers_to_go_away_and_still_answers_their_open_calls(serve: Any) -> None:
    server = serve()
    raw = Raw(server.port)
    message = request()
    try:
        raw.call(1, message[:12], end=False)  # a call in progress when the node stops
        time.sleep(0.2)
        with futures.ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(server.stop, 5.0)
            started = time.monotonic()
            assert raw.goaway(timeout=3) == (http2.NO_ERROR, "")
            assert time.monotonic() - started < 1.0  # at once, not after the grace
            raw.data(1, message[12:])
            assert raw.status(1) == {"grpc-status": "0"}
            stopping.result(5)
        assert time.monotonic() - started < 3.0  # the stop ended with its last call, not at the grace
    finally:
        raw.close()


def test_a_header_block_left_unfinished_closes_the_connection(serve: Any) -> None:
    server = serve(receive_timeout=0.5)
    raw = Raw(server.port)
    try:
        block = encode_headers([(":method", "POST"), (":path", METHOD)])
        raw.send(http2.frame(http2.HEADERS, 0, 1, block))  # no END_HEADERS, and no CONTINUATION after it
        started = time.monotonic()
        code, text = raw.goaway(timeout=4) or (None, "")
        assert code == http2.PROTOCOL_ERROR and "header block not finished within 0.5 s" in text
        assert time.monotonic() - started < 2.5
    finally:
        raw.close()


def test_a_burst_straddling_the_turn_of_a_second_is_counted_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.99]
    monkeypatch.setattr(http2, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))  # http2's clock only
    resets = http2._PerSecond(1000, "streams reset")
    for _ in range(600):
        resets.count()
    clock[0] = 101.01  # the same burst, 20 ms later, in the next calendar second
    with pytest.raises(http2.H2Error, match="more than 1000 streams reset in a second"):
        for _ in range(600):
            resets.count()
    clock[0] = 103.5  # a quiet second later the count starts afresh
    for _ in range(1000):
        resets.count()
