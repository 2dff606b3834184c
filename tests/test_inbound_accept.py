"""The inbound server's extra requests for new calls (snailjob/inbound_accept.py),
over real gRPC on 127.0.0.1: calls they take in are served like any other, other
paths stay UNIMPLEMENTED, stop ends them, and a grpcio without the parts they
need (or with changed ones) leaves grpcio's own single request in charge."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import types
from concurrent import futures
from typing import Any, Dict, Iterator, List

import grpc
import pytest

from snailjob import inbound_accept
from snailjob.inbound import InboundServer
from snailjob.transport import Reply
from snailjob.wire import snailjob_pb2 as pb

from .conftest import TOKEN

METHOD = "/UnaryRequest/unaryRequest"


def _grpcio_has_the_parts() -> bool:
    from grpc._cython import cygrpc

    return hasattr(cygrpc, "_MethodResolver") and hasattr(cygrpc.AioServer, "_request_registered_call")


# grpcio 1.84 and later; an older one keeps its own single request (the fallback tests below)
needs_the_parts = pytest.mark.skipif(not _grpcio_has_the_parts(),
                                     reason=f"grpcio {grpc.__version__} has no registered methods' accept parts")


def serve(acceptors: int = 16) -> InboundServer:
    """An inbound server whose handler answers each call with its body, a number."""
    def handler(uri: str, headers: Dict[str, str], body: str) -> Reply:
        return Reply(1, "", int(body))

    server = InboundServer("127.0.0.1", 0, handler, token=TOKEN, inline=lambda path: True, acceptors=acceptors)
    server.start()
    return server


@pytest.fixture
def channel() -> Iterator[Any]:
    channels: List[grpc.Channel] = []

    def open_to(server: InboundServer) -> Any:
        channels.append(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        return channels[-1]

    yield open_to
    for ch in channels:
        ch.close()


def call_many(channel: grpc.Channel, n: int) -> List[str]:
    """``n`` calls at once; the ``data`` of each reply, in order."""
    method = channel.unary_unary(METHOD, request_serializer=pb.GrpcSnailJobRequest.SerializeToString,
                                 response_deserializer=pb.GrpcResult.FromString)
    calls = [method.future(pb.GrpcSnailJobRequest(reqId=i, metadata=pb.Metadata(uri="/job/dispatch/v1",
                                                                                  headers={"SJ-TOKEN": TOKEN}),
                                                  body=str(i)), timeout=10)
             for i in range(n)]
    replies = [call.result() for call in calls]
    assert [r.reqId for r in replies] == list(range(n))
    return [r.data for r in replies]


@needs_the_parts
def test_calls_taken_in_by_the_extra_requests_are_served_like_any_other(channel: Any) -> None:
    server = serve(acceptors=16)
    try:
        assert server.acceptors is not None and server.acceptors.count == 16
        for _ in range(5):
            assert call_many(channel(server), 64) == [str(i) for i in range(64)]
        # the extra requests outnumber grpcio's own one: most calls come in through them
        assert server.acceptors.accepted > 160, server.acceptors.accepted
    finally:
        server.stop(0)


@needs_the_parts
def test_the_defences_hold_for_calls_they_take_in(channel: Any) -> None:
    """The token check runs on every call, whichever request took it in."""
    server = serve()
    try:
        method = channel(server).unary_unary(METHOD, request_serializer=pb.GrpcSnailJobRequest.SerializeToString,
                                             response_deserializer=pb.GrpcResult.FromString)
        replies = [method.future(pb.GrpcSnailJobRequest(reqId=i, metadata=pb.Metadata(
            uri="/job/dispatch/v1", headers={"SJ-TOKEN": "wrong"}), body="[]"), timeout=10) for i in range(40)]
        assert {(r.result().status, r.result().message) for r in replies} == {
            (0, "SJ-TOKEN does not match this client's token")}
        assert server.refused == 40
        assert server.acceptors is not None and server.acceptors.accepted > 0
    finally:
        server.stop(0)


def test_other_paths_are_still_unimplemented(channel: Any) -> None:
    server = serve()
    try:
        other = channel(server).unary_unary("/UnaryRequest/other")
        with pytest.raises(grpc.RpcError) as caught:
            other(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(0)


def test_zero_leaves_grpcio_s_own_request_alone(channel: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="snailjob.inbound"):
        server = serve(acceptors=0)
    try:
        assert server.acceptors is None
        assert "one new call at a time: off (SNAIL_INBOUND_ACCEPTORS=0)" in caplog.text
        assert call_many(channel(server), 32) == [str(i) for i in range(32)]
    finally:
        server.stop(0)


def grpcio_parts(**changed: Any) -> types.SimpleNamespace:
    """The parts of grpcio's cygrpc the acceptors use, some ``changed``
    (``None``: missing); grpcio's own module is left as it is, since its
    accept loop uses the same names."""
    from grpc._cython import cygrpc

    parts = {name: getattr(cygrpc, name) for name in ("_handle_rpc", "_schedule_rpc_coro", "_MethodResolver",
                                                       "RPCState")}
    parts.update(changed)
    return types.SimpleNamespace(**{k: v for k, v in parts.items() if v is not None})


def _one_fewer(name: str, resolver: Any, state: Any, loop: Any, busy: bool) -> None:
    raise AssertionError("never called with these arguments")


@needs_the_parts
@pytest.mark.parametrize("changed, why", [
    ({"_schedule_rpc_coro": None}, "this grpcio has no cygrpc._schedule_rpc_coro"),
    # a signature that no longer fits shows in the dry run at start, so no
    # caller's call is taken in by a request that could not serve it
    ({"_handle_rpc": _one_fewer}, "grpcio's call handling has changed (TypeError"),
], ids=["a-part-missing", "a-signature-changed"])
def test_a_grpcio_without_the_parts_or_with_changed_ones_keeps_its_own_request(
        changed: Dict[str, Any], why: str, channel: Any, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbound_accept, "_cygrpc", lambda: grpcio_parts(**changed))
    with caplog.at_level(logging.DEBUG, logger="snailjob.inbound"):
        server = serve()
    try:
        assert server.acceptors is None
        assert why in caplog.text
        assert call_many(channel(server), 32) == [str(i) for i in range(32)]
    finally:
        server.stop(0)


@needs_the_parts
def test_stop_ends_every_request_and_leaves_no_task_behind(channel: Any) -> None:
    destroyed: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: destroyed.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("asyncio").addHandler(handler)
    try:
        server = serve()
        assert call_many(channel(server), 16)
        acceptors = server.acceptors
        assert acceptors is not None
        started = time.monotonic()
        server.stop(0)
        assert time.monotonic() - started < 3
        assert not acceptors._tasks
        assert not [t for t in threading.enumerate() if t.name == "snailjob-inbound"]
        gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert not [m for m in destroyed if "destroyed but it is pending" in m], destroyed


def test_a_server_with_them_answers_a_crowd_of_callers_over_separate_connections() -> None:
    """Eight channels, 32 calls each, at once."""
    server = serve()
    channels = [grpc.insecure_channel(f"127.0.0.1:{server.port}") for _ in range(8)]
    try:
        with futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda ch: call_many(ch, 32), channels))
        assert results == [[str(i) for i in range(32)]] * 8
    finally:
        for ch in channels:
            ch.close()
        server.stop(0)


def test_a_failed_request_ends_only_its_own_acceptor() -> None:
    """When the core refuses a request (a server shutting down), that
    acceptor returns quietly; it is not retried in a loop."""
    class Core:
        calls = 0

        async def _request_registered_call(self, method: bytes) -> Any:
            Core.calls += 1
            raise RuntimeError("shutting down")

    class Server:
        _server = Core()

    acceptors = inbound_accept.Acceptors(Server(), "S", "m", object(), 1)

    async def run() -> None:
        acceptors._running = True
        await acceptors._accept(None, Server._server, None, asyncio.get_running_loop())

    asyncio.run(run())
    assert Core.calls == 1 and acceptors.accepted == 0


@needs_the_parts
@pytest.mark.parametrize("setting", [16, 3, 0])
def test_the_client_takes_the_setting_and_reports_it(setting: int) -> None:
    from snailjob.testing import ServerEmulator

    from .conftest import client_for

    with ServerEmulator() as emu:
        client = client_for(emu, [], snail_inbound="grpc", snail_inbound_acceptors=setting).start()
        try:
            assert client.stats()["inbound_acceptors"] == setting
            inbound = client._inbound
            assert inbound is not None
            assert (inbound.acceptors is None) == (setting == 0)
        finally:
            client.stop(grace=0)
