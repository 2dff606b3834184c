"""The benchmarks' floor without grpcio (``benchmarks/floor_h2.py``): it must
speak HTTP/2 and gRPC framing that grpcio accepts on both sides, or its
column measures nothing.  Real grpcio server and channel, real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, List, Tuple

import grpc
import grpc.aio
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from common import METHOD, free_port, load_pb2  # noqa: E402

pb = load_pb2()
pytest.importorskip("hpack", reason="the floor without grpcio decodes headers with hpack (a test extra)")


def _dispatch(task_id: int, params: str = "") -> Any:
    body = json.dumps([{"jobId": 1, "taskBatchId": 100 + task_id, "taskId": task_id, "taskType": 1,
                        "groupName": "bench_group", "argsStr": params}])
    return pb.GrpcSnailJobRequest(reqId=task_id, metadata=pb.Metadata(uri="/job/dispatch/v1",
                                                                      headers={"SJ-TOKEN": "t"}), body=body)


class FakeServer:
    """Plays the SnailJob server: records what the floor calls, answers ``status=1``."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, str]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: Any, context: Any) -> Any:
        self.calls.append((request.metadata.uri, request.body))
        self.arrived.set()
        return pb.GrpcResult(reqId=request.reqId, status=1, message="", data="true")

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async def enough() -> None:
            while len(self.calls) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout)


@contextlib.asynccontextmanager
async def floor() -> AsyncIterator[Tuple[FakeServer, Any]]:
    """The floor started against a fake server: (the fake, a call to the floor's port)."""
    fake = FakeServer()
    method = grpc.unary_unary_rpc_method_handler(fake.handle, request_deserializer=pb.GrpcSnailJobRequest.FromString,
                                                 response_serializer=pb.GrpcResult.SerializeToString)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": method}),))
    server_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    node_port = free_port()
    env = dict(os.environ, SNAIL_SERVER_PORT=str(server_port), SNAIL_HOST_PORT=str(node_port), SNAIL_TOKEN="t")
    proc = subprocess.Popen([sys.executable, str(BENCH / "floor_h2.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{node_port}")
    call = channel.unary_unary(METHOD, request_serializer=pb.GrpcSnailJobRequest.SerializeToString,
                               response_deserializer=pb.GrpcResult.FromString)
    try:
        await fake.wait_for(1)  # its beat: the node is up
        yield fake, call
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        await channel.close()
        await server.stop(None)
        assert b"Traceback" not in out, out.decode(errors="replace")


def test_beats_then_answers_a_dispatch_and_reports_its_task() -> None:
    asyncio.run(_with_floor(_one_dispatch))


def test_a_large_dispatch_split_over_frames_and_many_at_once() -> None:
    asyncio.run(_with_floor(_large_and_many))


async def _with_floor(check: Callable[[FakeServer, Any], Awaitable[None]]) -> None:
    async with floor() as (fake, call):
        await check(fake, call)


async def _one_dispatch(fake: FakeServer, call: Any) -> None:
    assert fake.calls[0] == ("/beat", '["PING"]')
    reply = await call(_dispatch(7), timeout=5)
    assert (reply.reqId, reply.status, reply.data) == (7, 1, "true")
    await fake.wait_for(2)
    uri, body = fake.calls[1]
    assert uri == "/report/dispatch/result"
    report = json.loads(body)[0]
    assert (report["taskId"], report["taskBatchId"], report["taskStatus"]) == (7, 107, 3)


async def _large_and_many(fake: FakeServer, call: Any) -> None:
    # 300 KB: the grpcio channel splits it over many DATA frames
    big = await call(_dispatch(1, "x" * 300_000), timeout=5)
    assert big.status == 1
    replies = await asyncio.gather(*(call(_dispatch(i), timeout=5) for i in range(2, 402)))
    assert sorted(r.reqId for r in replies) == list(range(2, 402))
    await fake.wait_for(1 + 401)
    reported = sorted(json.loads(body)[0]["taskId"] for uri, body in fake.calls if uri == "/report/dispatch/result")
    assert reported == list(range(1, 402))
