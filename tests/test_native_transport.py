"""The native transport (``SNAIL_TRANSPORT=native``): gRPC calls over the
client's own HTTP/2 connection, against grpcio's server on real sockets,
and a whole client driven by the server emulator over it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from concurrent import futures
from typing import Any, Callable, Dict, Iterator, List, Optional

import grpc
import pytest

import snailjob as sj
from snailjob import Settings
from snailjob.errors import TransportError
from snailjob.native_transport import NativeTransport
from snailjob.transport import FailoverTransport, Reply
from snailjob.wire import snailjob_pb2 as pb

BATCH_SUCCESS = 3
HEADERS = {"host-id": "node-1", "token": "SJ_token", "namespace": "ns"}
Behaviour = Callable[[Any, Any], Any]


class FakeServer:
    """grpcio's server playing the SnailJob server; ``behaviour(request,
    context)`` answers (by default ``status=1``, ``data`` = ``"true"``)."""

    def __init__(self, port: int = 0, behaviour: Optional[Behaviour] = None, **options: int) -> None:
        self.requests: List[Any] = []
        self.peers: List[str] = []
        self.behaviour = behaviour
        method = grpc.unary_unary_rpc_method_handler(
            self._handle, request_deserializer=pb.GrpcSnailJobRequest.FromString,
            response_serializer=pb.GrpcResult.SerializeToString)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                                  options=[("grpc.max_receive_message_length", 16 * 1024 * 1024),
                                           ("grpc.max_send_message_length", 16 * 1024 * 1024),
                                           *options.items()])
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": method}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _handle(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        self.peers.append(context.peer())
        if self.behaviour is not None:
            return self.behaviour(request, context)
        return pb.GrpcResult(reqId=request.reqId, status=1, message="", data="true")

    def stop(self) -> None:
        self.server.stop(0).wait(5)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.stop()


@pytest.fixture
def transports() -> Iterator[Callable[[str], NativeTransport]]:
    made: List[NativeTransport] = []

    def make(target: str) -> NativeTransport:
        transport = NativeTransport(target, lambda: HEADERS)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_call_carries_uri_headers_and_body_and_returns_the_reply(server: FakeServer, transports: Any) -> None:
    server.behaviour = lambda req, ctx: pb.GrpcResult(reqId=req.reqId, status=1, message="fine", data='"PONG"')
    reply = transports(server.target).call("/beat", '["PING"]', 5)
    assert reply == Reply(1, "fine", "PONG")
    request = server.requests[0]
    assert (request.metadata.uri, dict(request.metadata.headers), request.body) == ("/beat", HEADERS, '["PING"]')
    assert request.reqId > 0


def test_a_deadline_ends_the_call_and_the_connection_serves_the_next(server: FakeServer, transports: Any) -> None:
    release = threading.Event()

    def slow(req: Any, ctx: Any) -> Any:
        if req.metadata.uri == "/slow":
            release.wait(5)
        return pb.GrpcResult(reqId=req.reqId, status=1, data="true")

    server.behaviour = slow
    transport = transports(server.target)
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        transport.call("/slow", "[]", 0.3)
    elapsed = time.monotonic() - started
    release.set()
    assert caught.value.code == "DEADLINE_EXCEEDED" and "/slow" in str(caught.value)
    assert 0.25 < elapsed < 1.0
    assert transport.call("/quick", "[]", 5).status == 1


def test_an_unreachable_server_is_unavailable_at_once_and_marked_failing(transports: Any) -> None:
    transport = transports(f"127.0.0.1:{_unused_port()}")
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        transport.call("/beat", "[]", 5)
    assert caught.value.code == "UNAVAILABLE" and "cannot connect" in str(caught.value)
    assert time.monotonic() - started < 2.0
    assert transport.failing


def test_a_grpc_error_status_keeps_its_name_and_message(server: FakeServer, transports: Any) -> None:
    def refuse(req: Any, ctx: Any) -> Any:
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such thing: ü 100%")

    server.behaviour = refuse
    with pytest.raises(TransportError) as caught:
        transports(server.target).call("/x", "[]", 5)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "no such thing: ü 100%" in str(caught.value)


def test_a_restarted_server_is_reached_again(transports: Any) -> None:
    first = FakeServer()
    port = first.port
    transport = transports(first.target)
    assert transport.call("/beat", "[]", 5).ok
    first.stop()
    with pytest.raises(TransportError) as caught:
        transport.call("/beat", "[]", 2)
    assert caught.value.code == "UNAVAILABLE"
    second = FakeServer(port)
    try:
        assert transport.call("/beat", "[]", 5).ok
        assert not transport.failing
    finally:
        second.stop()


def test_a_server_that_retires_connections_loses_no_call(transports: Any) -> None:
    # grpcio sends GOAWAY when a connection reaches its age; calls go on over new connections
    server = FakeServer(**{"grpc.max_connection_age_ms": 300, "grpc.max_connection_age_grace_ms": 2000})
    try:
        transport = transports(server.target)
        outcomes = []
        for _ in range(30):
            outcomes.append(_outcome(transport, "/beat"))
            time.sleep(0.05)
        assert [o for o in outcomes if not isinstance(o, Reply)] == []
        assert len(set(server.peers)) >= 3  # about 1.5 s of calls, connections of 0.3 s
    finally:
        server.stop()


def test_a_deadline_on_a_retiring_connection_cancels_only_its_own_call(transports: Any) -> None:
    # A (stream 1 of the first connection) is still running when GOAWAY retires that connection;
    # B goes over a new connection, as its stream 1 too. A's deadline must end A, not B.
    def slow(req: Any, ctx: Any) -> Any:
        time.sleep({"/a": 2.0, "/b": 1.0}.get(req.metadata.uri, 0))
        return pb.GrpcResult(reqId=req.reqId, status=1, data="true")

    # the first connection retires at about 0.5 s, B's at about 1.2 s; A's deadline falls between
    server = FakeServer(behaviour=slow, **{"grpc.max_connection_age_ms": 500,
                                           "grpc.max_connection_age_grace_ms": 5000})
    try:
        transport = transports(server.target)
        outcomes: Dict[str, Any] = {}
        a = threading.Thread(target=lambda: outcomes.update(a=_outcome(transport, "/a", 0.9)))
        a.start()
        time.sleep(0.7)  # past the first connection's age: GOAWAY has come
        outcomes["b"] = _outcome(transport, "/b", 5.0)
        a.join(5)
        assert isinstance(outcomes["a"], TransportError) and outcomes["a"].code == "DEADLINE_EXCEEDED"
        assert isinstance(outcomes["b"], Reply) and outcomes["b"].ok, outcomes["b"]
        assert len(set(server.peers)) == 2
    finally:
        server.stop()


def test_large_messages_both_ways_keep_to_the_windows(server: FakeServer, transports: Any) -> None:
    # 5 MB up, 3 MB down: far beyond the 64 KB windows both sides start with
    server.behaviour = lambda req, ctx: pb.GrpcResult(reqId=req.reqId, status=1,
                                                     data=json.dumps("y" * 3_000_000))
    reply = transports(server.target).call("/big", json.dumps(["x" * 5_000_000]), 10)
    assert reply.data == "y" * 3_000_000
    assert len(server.requests[0].body) == 5_000_004


def test_many_calls_at_once_each_end_once(server: FakeServer, transports: Any) -> None:
    server.behaviour = lambda req, ctx: pb.GrpcResult(reqId=req.reqId, status=1, message=req.body, data="true")
    transport = transports(server.target)
    ended: Dict[str, List[Any]] = {}
    lock = threading.Lock()
    all_done = threading.Event()

    def done_for(body: str) -> Callable[[Optional[Reply], Optional[TransportError]], None]:
        def done(reply: Optional[Reply], error: Optional[TransportError]) -> None:
            with lock:
                ended.setdefault(body, []).append(reply.message if reply else error)
                if len(ended) == 600:
                    all_done.set()
        return done

    for i in range(500):
        body = json.dumps([i])
        transport.call_async("/async", body, 10, done_for(body))
    threads = [threading.Thread(target=lambda n=n: done_for(f"[{1000 + n}]")(
        transport.call("/sync", f"[{1000 + n}]", 10), None)) for n in range(100)]
    for thread in threads:
        thread.start()
    assert all_done.wait(15)
    for thread in threads:
        thread.join(5)
    assert sorted(ended) == sorted([json.dumps([i]) for i in range(500)] + [f"[{1000 + n}]" for n in range(100)])
    assert all(values == [body] for body, values in ended.items())


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


class RawServer:
    """A TCP server that answers every connection with ``answer`` bytes."""

    def __init__(self, answer: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(self.answer)
            time.sleep(0.2)
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("answer, why", [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "protocol error"),
    (b"\x00\x40\x01\x00\x00\x00\x00\x00\x00" + b"\x00" * 64, "a frame of 16385 bytes"),  # over the frame size
    (b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x04\x80\x00\x00\x00", "initial window over"),  # 2^31
    (b"", "connection"),  # closed without a word
    (_frame(1, 0, 1, b"\x88") + _frame(9, 0, 1, b"\x00" * 16384) * 5, "a header block over 65536 bytes"),
    (_frame(6, 0, 0, b"\x00" * 8) * 300, "more than 200 SETTINGS and PING frames"),
    (_frame(5, 4, 1, b"\x00\x00\x00\x02"), "server push is off"),
], ids=["http1", "oversized-frame", "window-overflow", "closed", "continuation-flood", "ping-flood", "push"])
def test_a_server_that_breaks_the_protocol_fails_the_call_not_the_client(transports: Any, answer: bytes,
                                                                          why: str) -> None:
    raw = RawServer(answer)
    try:
        transport = transports(f"127.0.0.1:{raw.port}")
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            transport.call("/beat", "[]", 3)
        assert caught.value.code == "UNAVAILABLE", caught.value
        assert why in str(caught.value)
        assert time.monotonic() - started < 2.0
    finally:
        raw.close()


def test_close_ends_calls_in_flight_and_its_own_loop_thread(server: FakeServer) -> None:
    release = threading.Event()
    server.behaviour = lambda req, ctx: (release.wait(5), pb.GrpcResult(status=1, data="true"))[1]
    transport = NativeTransport(server.target, lambda: HEADERS)
    outcome: List[Any] = []
    caller = threading.Thread(target=lambda: outcome.append(_outcome(transport, "/hang")))
    caller.start()
    time.sleep(0.3)
    transport.close()
    caller.join(3)
    release.set()
    assert not caller.is_alive()
    assert isinstance(outcome[0], TransportError) and outcome[0].code in ("UNAVAILABLE", "CANCELLED")
    assert not any(t.name == "snailjob-transport" for t in threading.enumerate())


def test_a_blocking_call_from_its_loop_is_made_and_from_its_own_loop_refused(
        server: FakeServer, given_loop: asyncio.AbstractEventLoop) -> None:
    """A coroutine job calling a blocking API runs on the loop of ``use_loop``:
    its call must be made (over the transport's own loop), not deadlock."""
    loop = given_loop
    transport = NativeTransport(server.target, lambda: HEADERS)
    try:
        transport.use_loop(loop)
        inner = asyncio.run_coroutine_threadsafe(_call_on_loop(transport, "/from-the-loop"), loop).result(10)
        assert isinstance(inner, Reply) and inner.ok
        transport.detach_loop()  # from now on its calls run on its own loop
        seen: List[Any] = []
        ended = threading.Event()
        transport.call_async("/outer", "[]", 5, lambda reply, error: (seen.append(_outcome(transport, "/inner")),
                                                                      ended.set()))
        assert ended.wait(5)
        assert isinstance(seen[0], TransportError) and seen[0].code == "INTERNAL"
        assert transport.call("/after", "[]", 5).ok
    finally:
        transport.close()


async def _call_on_loop(transport: NativeTransport, uri: str) -> Any:
    return _outcome(transport, uri)


def _outcome(transport: NativeTransport, uri: str, timeout: float = 10.0) -> Any:
    """The reply of a blocking call, or its ``TransportError``."""
    try:
        return transport.call(uri, "[]", timeout)
    except TransportError as exc:
        return exc


def test_failover_moves_to_the_live_server(server: FakeServer) -> None:
    dead = f"127.0.0.1:{_unused_port()}"
    failover = FailoverTransport([dead, server.target], lambda: HEADERS, NativeTransport)
    try:
        with pytest.raises(TransportError):
            failover.call("/beat", "[]", 2)
        assert failover.call("/beat", "[]", 2).ok
        assert failover.target == server.target
    finally:
        failover.close()


def test_calls_without_waiting_run_on_the_given_loop_blocking_ones_on_its_own(
        server: FakeServer, given_loop: asyncio.AbstractEventLoop) -> None:
    loop = given_loop
    transport = NativeTransport(server.target, lambda: HEADERS)
    try:
        transport.use_loop(loop)
        seen: List[str] = []
        done = threading.Event()
        transport.call_async("/x", "[]", 5, lambda reply, error: (seen.append(threading.current_thread().name),
                                                                  done.set()))
        assert done.wait(5) and seen == ["given-loop"]
        assert not any(t.name == "snailjob-transport" for t in threading.enumerate())
        # a blocking call runs on a loop of the transport's own: it never waits for the given one
        blocked = threading.Event()
        loop.call_soon_threadsafe(lambda: blocked.wait(5))
        assert transport.call("/while-that-loop-is-blocked", "[]", 2).ok
        blocked.set()
        assert any(t.name == "snailjob-transport" for t in threading.enumerate())
        transport.detach_loop()
        done.clear()
        transport.call_async("/z", "[]", 5, lambda reply, error: (seen.append(threading.current_thread().name),
                                                                  done.set()))
        assert done.wait(5) and seen[-1] == "snailjob-transport"  # now on its own loop
    finally:
        transport.close()


def test_the_setting_names_its_values() -> None:
    assert Settings.load(env_file=None, snail_transport=" Native ").snail_transport == "native"
    with pytest.raises(Exception, match="'grpc' or 'native'"):
        Settings.load(env_file=None, snail_transport="quic")


def test_a_client_on_the_native_transport_runs_jobs_for_the_emulator(run_client: Any, snailjob_emulator: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    @sj.job("native")
    def native(args: Any) -> str:
        sj.SnailLog.REMOTE.info("ran %s", args.job_params)
        return "ran"

    client = run_client([native], snail_transport="native", snail_inbound="grpc")
    assert isinstance(client._transport, NativeTransport)
    assert any("(native transport)" in r.getMessage() for r in caplog.records if "listening on" in r.getMessage())
    snailjob_emulator.wait_for_clients(1)
    batches = [snailjob_emulator.trigger("native", args_str=str(i)) for i in range(20)]
    assert [batch.wait(timeout=10) for batch in batches] == [BATCH_SUCCESS] * 20
    snailjob_emulator.wait_until(lambda: sum("ran " in str(log) for log in snailjob_emulator.logs) >= 20,
                                 timeout=5, message="the 20 jobs' remote logs")


def test_a_lone_result_is_sent_without_blocking_its_thread(transports: Any) -> None:
    """On the native transport a call on the loop is the cheaper path, so
    ``offer(wait=True)`` returns before the server has answered."""
    from snailjob.delivery import ResultOutbox

    def slow(request: Any, context: Any) -> Any:
        time.sleep(0.5)
        return pb.GrpcResult(reqId=request.reqId, status=1, message="", data="true")

    fake = FakeServer(behaviour=slow)
    try:
        outbox = ResultOutbox(transports(fake.target), rpc_timeout=5)
        started = time.monotonic()
        outbox.offer(1, "/report/dispatch/result", "[]", expires=time.time() + 60, wait=True)
        assert time.monotonic() - started < 0.3 and outbox.delivered == 0  # not waited for
        assert outbox.flush(5) and outbox.delivered == 1
        outbox.close(1)
    finally:
        fake.stop()
