"""What ``@retryable`` costs the caller, and how fast failing calls reach
the server.  Standalone: ``.venv/bin/python benchmarks/bench_retry.py``.

1. Call overhead on the success path: a ``@retryable`` function against the
   same plain function (sync and ``async def``), in ns per call.
2. Hand-over cost: ``Retryable.report()`` (argument JSON, MD5 idempotent id,
   queueing) on the caller's thread, in µs per call.
3. Delivery: calls handed over and delivered per second, end to end, to a
   bare gRPC sink that accepts every ``/batch/report`` at once (real gRPC on
   127.0.0.1; 50 reports per call).

Each figure is the median of 7 rounds, with the spread (min-max).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import snailjob as sj  # noqa: E402
from snailjob.inbound import InboundServer  # noqa: E402
from snailjob.transport import Reply  # noqa: E402

ROUNDS = 7


def rounds(measure: Callable[[], float]) -> str:
    values = sorted(measure() for _ in range(ROUNDS))
    return f"{statistics.median(values):,.2f} (spread {values[0]:,.2f}-{values[-1]:,.2f})"


def per_call_ns(fn: Callable[[], Any], n: int = 200_000) -> Callable[[], float]:
    def measure() -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return (time.perf_counter_ns() - start) / n
    return measure


def plain(order: int, amount: float) -> float:
    return order * amount


async def plain_async(order: int, amount: float) -> float:
    return order * amount


def main() -> None:
    wrapped = sj.retryable("bench")(plain)
    wrapped_async = sj.retryable("bench")(plain_async)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s); median of {ROUNDS} rounds (spread)")
    print(f"success path, plain function        ns/call {rounds(per_call_ns(lambda: plain(7, 1.5)))}")
    print(f"success path, @retryable            ns/call {rounds(per_call_ns(lambda: wrapped(7, 1.5)))}")

    async def loop(fn: Callable[..., Any], n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            await fn(7, 1.5)
        return (time.perf_counter_ns() - start) / n

    print(f"success path, async plain           ns/call {rounds(lambda: asyncio.run(loop(plain_async, 50_000)))}")
    print(f"success path, async @retryable      ns/call {rounds(lambda: asyncio.run(loop(wrapped_async, 50_000)))}")

    # a bare gRPC sink that accepts every call at once, so the figures are the client's
    received = [0]

    def sink(uri: str, headers: Dict[str, str], body: str) -> Reply:
        if uri == "/batch/report":
            received[0] += len(json.loads(body)[0])
        return Reply(1, "", "PONG" if uri == "/beat" else True)

    server = InboundServer("127.0.0.1", 0, sink)
    server.start()
    settings = sj.Settings.load(env_file=None, snail_server_port=server.port, snail_host_port=0,
                                snail_bind_host="127.0.0.1", snail_retry_report_interval=0.05,
                                snail_retry_report_max_buffer=100_000)
    try:
        with sj.Client(settings, executors=[wrapped]) as client:
            counter = [0]

            def report_cost() -> float:
                n = 2_000
                start = time.perf_counter_ns()
                for _ in range(n):
                    counter[0] += 1
                    wrapped.report(counter[0], 1.5)
                return (time.perf_counter_ns() - start) / n / 1000

            print(f"report() on the caller's thread     µs/call {rounds(report_cost)}")
            client.flush(60)

            def delivery() -> float:
                n = 5_000
                start = time.perf_counter()
                for _ in range(n):
                    counter[0] += 1
                    wrapped.report(counter[0], 1.5)
                client.flush(60)
                return n / (time.perf_counter() - start)

            print(f"reported and delivered (end to end) per s   {rounds(delivery)}")
            print(f"reports the sink received: {received[0]} of {counter[0]}")
    finally:
        server.stop(grace=0)


if __name__ == "__main__":
    main()
