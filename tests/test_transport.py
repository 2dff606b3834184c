"""``GrpcTransport.call_async`` over real gRPC (the emulator as server):
with ``use_loop`` the calls run on an event loop of the caller's and no
thread is started per call; the synchronous channel's futures start a
completion thread each time no call was in flight (grpcio's design), which
is what results sent one at a time used to pay."""

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
    thread = threading.Thread(target=loop.run_forever, daemon=True)
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


def thread_starts_during(fn: Any) -> int:
    started: List[str] = []
    original = threading.Thread.start

    def counting(self: threading.Thread) -> None:
        started.append(self.name)
        original(self)

    threading.Thread.start = counting  # type: ignore[method-assign]
    try:
        fn()
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    return len(started)


@pytest.mark.parametrize("on_loop", [True, False])
def test_calls_one_at_a_time_start_threads_only_without_a_loop(server, loop, on_loop):
    transport = GrpcTransport(server.address, lambda: headers(server))
    if on_loop:
        transport.use_loop(loop)
    try:
        for _ in range(5):  # connect, and let the emulator's own pool threads start
            reply, error, _ = beat_one(transport)
            assert error is None and reply is not None and reply.ok
        starts = thread_starts_during(lambda: [beat_one(transport) for _ in range(20)])
        reply, error, thread = beat_one(transport)
        assert error is None and reply is not None and reply.ok
        if on_loop:
            assert starts <= 1 and thread != threading.current_thread().name
        else:
            assert starts >= 15  # a completion thread for nearly every call
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
