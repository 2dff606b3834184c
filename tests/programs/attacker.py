"""A stranger on the network, for tests/test_attacks.py: holds connections
and streams open against a node's ports until its standard input closes.

    python tests/programs/attacker.py idle-streams HOST:PORT COUNT
        COUNT gRPC streams on the inbound method that send their headers and
        never a message (spread over connections of at most 50 streams)
    python tests/programs/attacker.py half-http HOST:PORT COUNT
        COUNT TCP connections that each send half an HTTP request line
    python tests/programs/attacker.py bodies HOST:PORT COUNT MIB
        COUNT complete calls, all at once, of MIB MiB each with no token

It prints ``ready N`` once N of them are open (or sent), then waits for its
standard input to close.  Every target is the address given, on this host.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any, List

import grpc
import grpc.aio

METHOD = "/UnaryRequest/unaryRequest"
PER_CONNECTION = 50


def _identity(data: bytes) -> bytes:
    return data


async def _wait_stdin() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def idle_streams(target: str, count: int) -> None:
    channels: List[Any] = []
    calls: List[Any] = []
    for n in range(0, count, PER_CONNECTION):
        # a channel argument of its own: a connection of its own
        channel = grpc.aio.insecure_channel(target, options=[("attacker.connection", n)])
        await channel.channel_ready()
        channels.append(channel)
        method = channel.stream_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)
        for _ in range(min(PER_CONNECTION, count - n)):
            calls.append(method(wait_for_ready=True))  # started: headers go out, no message follows
    await asyncio.sleep(0.5)
    open_calls = sum(1 for call in calls if not call.done())
    print(f"ready {open_calls}", flush=True)
    await _wait_stdin()
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()


def half_http(target: str, count: int) -> None:
    host, port = target.rsplit(":", 1)
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /readyz HT")
        socks.append(sock)
    print(f"ready {len(socks)}", flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()


async def bodies(target: str, count: int, mib: float) -> None:
    from snailjob.wire import snailjob_pb2 as pb

    request = pb.GrpcSnailJobRequest(reqId=1, body="x" * int(mib * 1024 * 1024),
                                     metadata=pb.Metadata(uri="/job/dispatch/v1", headers={"SJ-TOKEN": "wrong"}))
    data = request.SerializeToString()
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
        method = channel.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)
        results = await asyncio.gather(*(method(data, timeout=30) for _ in range(count)), return_exceptions=True)
    codes = sorted({getattr(r, "code", lambda: "OK")().__str__() if isinstance(r, grpc.RpcError) else "answered"
                    for r in results})
    print(f"ready {count} {','.join(codes)}", flush=True)
    await _wait_stdin()


def main(argv: List[str]) -> None:
    kind, target, count = argv[0], argv[1], int(argv[2])
    if kind == "idle-streams":
        asyncio.run(idle_streams(target, count))
    elif kind == "half-http":
        half_http(target, count)
    elif kind == "bodies":
        asyncio.run(bodies(target, count, float(argv[3])))
    else:
        raise SystemExit(f"unknown attack {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
