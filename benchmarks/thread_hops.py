"""What one thread hand-off costs in CPython here: a round trip between two
threads, woken through two ``threading.Event``s, through two plain locks,
and through an asyncio loop woken by ``call_soon_threadsafe`` (the other
side a lock).  A task at K=1 crosses such hand-offs twice (BENCHMARKS.md,
issue 29's targets), which is why the dispatcher parks workers on locks and
why a result is written by its worker's thread when it can be.

    .venv/bin/python benchmarks/thread_hops.py [--rounds 20000]

Prints the median of 5 runs of each, in microseconds per round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import Callable, Dict


def events(rounds: int) -> float:
    ping, pong = threading.Event(), threading.Event()

    def other() -> None:
        for _ in range(rounds):
            ping.wait()
            ping.clear()
            pong.set()

    thread = threading.Thread(target=other)
    thread.start()
    started = time.perf_counter()
    for _ in range(rounds):
        ping.set()
        pong.wait()
        pong.clear()
    elapsed = time.perf_counter() - started
    thread.join()
    return elapsed / rounds * 1e6


def locks(rounds: int) -> float:
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()

    def other() -> None:
        for _ in range(rounds):
            ping.acquire()
            pong.release()

    thread = threading.Thread(target=other)
    thread.start()
    started = time.perf_counter()
    for _ in range(rounds):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - started
    thread.join()
    return elapsed / rounds * 1e6


def loop_and_lock(rounds: int) -> float:
    loop = asyncio.new_event_loop()
    pong = threading.Lock()
    pong.acquire()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    started = time.perf_counter()
    for _ in range(rounds):
        loop.call_soon_threadsafe(pong.release)
        pong.acquire()
    elapsed = time.perf_counter() - started
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
    return elapsed / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20000)
    opts = parser.parse_args()
    ways: Dict[str, Callable[[int], float]] = {"two Events": events, "two locks": locks,
                                               "an asyncio loop and a lock": loop_and_lock}
    for name, way in ways.items():
        runs = [way(opts.rounds) for _ in range(5)]
        print(f"round trip through {name}: {statistics.median(runs):.1f} us "
              f"(min {min(runs):.1f}, max {max(runs):.1f})")


if __name__ == "__main__":
    main()
