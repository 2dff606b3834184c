"""``GrpcTransport.call_async`` over real gRPC (the emulator as server):
without a loop, calls go over grpcio's synchronous channel as futures; with
``use_loop``, over a ``grpc.aio`` channel on that loop (cheaper per call).
A result sent alone goes by ``call`` from its own thread instead
(``ResultOutbox.offer(wait=True)``, tested in ``test_delivery.py``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator, List, Optional, Tuple

import pytest

from snailjob.errors import TransportError
from snailjob.testing import ServerEmulator
from snailjob.transport import GrpcTransport, Reply


@pytest.fixture()
def server() -> Iterator[ServerEmulator]:
    emu = ServerEmulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture()
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="test-loop")
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def headers(server: ServerEmulator) -> dict:
    return {"token": server.token, "group-name": server.group, "namespace": server.namespace,
            "host-id": "t", "host-ip": "127.0.0.1", "host-port": "1", "executor-type": "2"}


def beat_one(transport: GrpcTransport) -> Tuple[Optional[Reply], Optional[TransportError], str]:
    done = threading.Event()
    got: List[Any] = []

    def ended(reply: Optional[Reply], error: Optional[TransportError]) -> None:
        got.extend([reply, error, threading.current_thread().name])
        done.set()

    transport.call_async("/beat", '["PING"]', 5.0, ended)
    assert done.wait(10)
    return got[0], got[1], got[2]


def make(server: ServerEmulator) -> GrpcTransport:
    return GrpcTransport(server.address, lambda: headers(server))


def test_with_a_loop_every_call_goes_over_it(server, loop):
    transport = make(server)
    transport.use_loop(loop)
    try:
        for _ in range(5):
            reply, error, thread = beat_one(transport)
            assert error is None and reply is not None and reply.ok
            assert thread == "test-loop"
    finally:
        transport.detach_loop()
        transport.close()


@pytest.mark.parametrize("on_loop", [True, False])
def test_calls_in_flight_together(server, loop, on_loop):
    transport = make(server)
    if on_loop:
        transport.use_loop(loop)
    try:
        beat_one(transport)  # connected
        ended: List[Tuple[Optional[Reply], Optional[TransportError], str]] = []
        all_done = threading.Event()

        def done(reply: Optional[Reply], error: Optional[TransportError]) -> None:
            ended.append((reply, error, threading.current_thread().name))
            if len(ended) == 20:
                all_done.set()

        for _ in range(20):
            transport.call_async("/beat", '["PING"]', 5.0, done)
        assert all_done.wait(10)
        assert all(error is None and reply is not None and reply.ok for reply, error, _ in ended)
        on_the_loop = sum(thread == "test-loop" for _, _, thread in ended)
        assert on_the_loop == (20 if on_loop else 0)
    finally:
        transport.detach_loop()
        transport.close()


def test_after_detach_calls_go_over_the_synchronous_channel(server, loop):
    transport = GrpcTransport(server.address, lambda: headers(server))
    transport.use_loop(loop)
    try:
        assert beat_one(transport)[1] is None
        transport.detach_loop()
        loop.call_soon_threadsafe(loop.stop)  # the loop is gone: calls must not need it
        reply, error, _ = beat_one(transport)
        assert error is None and reply is not None
    finally:
        transport.close()
