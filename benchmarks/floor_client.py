"""The floor: a bare grpcio process that answers ``/job/dispatch/v1`` and
sends one result report per task over one long-lived channel, with no job
logic, no validation, no worker threads of its own and no retries.

By default it uses the same threading model as both real clients (grpcio's
synchronous server on a ``ThreadPoolExecutor``, reports started with
``future``) and the same settings names::

    SNAIL_SERVER_PORT=... SNAIL_HOST_PORT=... SNAIL_TOKEN=... python benchmarks/floor_client.py [--aio]

It beats once at start (so the load generator knows it is up), answers every
dispatch with ``status=1, data=true`` after starting the report call
asynchronously, answers any other call with ``data=true``, and exits on
SIGTERM or SIGINT.

``--aio`` runs the same logic on ``grpc.aio`` (server and channel on one
event-loop thread): a reference for what grpcio's asyncio API costs on the
same machine, not a model of either client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import MAX_MESSAGE, METHOD  # noqa: E402
from floor_base import FloorBase  # noqa: E402

WORKERS = 16  # as this client's SNAIL_INBOUND_WORKERS default


def handler(floor: FloorBase, behaviour: Any) -> Any:
    """The generic handler of ``/UnaryRequest/unaryRequest`` calling ``behaviour``."""
    method = grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=floor.pb.GrpcSnailJobRequest.FromString,
        response_serializer=floor.pb.GrpcResult.SerializeToString)
    return grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": method})


class SyncFloor(FloorBase):
    """grpcio's synchronous server and channel, as both clients use them."""

    def serve(self, request: Any, context: Any) -> Any:
        """Answer a server call; for a dispatch, start its report first."""
        if request.metadata.uri == "/job/dispatch/v1":
            fut = self.call.future(self.report_for(request.body), timeout=5)
            with self.lock:
                self.in_flight.add(fut)
            fut.add_done_callback(self._done)
        return self.pb.GrpcResult(reqId=request.reqId, status=1, message="", data="true")

    def _done(self, fut: Any) -> None:
        with self.lock:
            self.in_flight.discard(fut)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT."""
        channel = grpc.insecure_channel(self.target)
        self.call = channel.unary_unary(METHOD, request_serializer=self.pb.GrpcSnailJobRequest.SerializeToString,
                                        response_deserializer=self.pb.GrpcResult.FromString)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS),
                             options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
        server.add_generic_rpc_handlers((handler(self, self.serve),))
        server.add_insecure_port(self.bind)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
        self.call(self.request("/beat", '["PING"]'), timeout=5)
        while not stop.wait(0.5):
            pass
        server.stop(0.5).wait(2)
        channel.close()


class AioFloor(FloorBase):
    """The same floor on ``grpc.aio``: server and channel on one event loop."""

    async def serve(self, request: Any, context: Any) -> Any:
        """Answer a server call; for a dispatch, start its report as a task."""
        if request.metadata.uri == "/job/dispatch/v1":
            call = asyncio.ensure_future(self.call(self.report_for(request.body), timeout=5))
            self.in_flight.add(call)
            call.add_done_callback(self.in_flight.discard)
        return self.pb.GrpcResult(reqId=request.reqId, status=1, message="", data="true")

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT."""
        channel = grpc.aio.insecure_channel(self.target)
        self.call = channel.unary_unary(METHOD, request_serializer=self.pb.GrpcSnailJobRequest.SerializeToString,
                                        response_deserializer=self.pb.GrpcResult.FromString)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
        server.add_generic_rpc_handlers((handler(self, self.serve),))
        server.add_insecure_port(self.bind)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        await self.call(self.request("/beat", '["PING"]'), timeout=5)
        await stop.wait()
        await server.stop(0.5)
        await channel.close()


if __name__ == "__main__":
    if "--aio" in sys.argv[1:]:
        asyncio.run(AioFloor().run())
    else:
        SyncFloor().run()
