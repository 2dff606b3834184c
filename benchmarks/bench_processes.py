"""Process isolation against threads, side by side in one run.

Standalone: ``.venv/bin/python benchmarks/bench_processes.py [--shards 8] [--seconds 1.0] [--trivial 200]``.

1. Throughput of a CPU-bound sharding job: ``--shards`` shards of pure Python
   work of about ``--seconds`` each (measured in the worker's own CPU time),
   ``parallelNum`` = shards, on the emulator; the thread executor and the
   ``isolation="process"`` executor (pool size = CPU count) one after the
   other, three rounds each, alternating. Figures: wall time trigger to batch
   end, shards per second, and the ratio.
2. Per-task overhead of a trivial job: ``--trivial`` sequential one-task
   batches of a job returning at once, thread against process (warm pool):
   median and p95 latency from trigger to batch end, and the CPU time per task
   of this process (the client and the emulator) plus the workers; the
   difference between the two modes is what the process adds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import snailjob as sj  # noqa: E402
from snailjob.testing import ServerEmulator  # noqa: E402
from tests import process_jobs as jobs  # noqa: E402

SHARDING = 3


def client_for(emu: ServerEmulator) -> sj.Client:
    env = emu.client_env()
    settings = sj.Settings.load(
        env_file=None, snail_server_host=env["SNAIL_SERVER_HOST"], snail_server_port=int(env["SNAIL_SERVER_PORT"]),
        snail_namespace=env["SNAIL_NAMESPACE"], snail_group_name=env["SNAIL_GROUP_NAME"],
        snail_token=env["SNAIL_TOKEN"], snail_host_port=0, snail_bind_host="127.0.0.1",
        snail_heartbeat_interval=1, snail_shutdown_grace=0)
    return sj.Client(settings, executors=[jobs.burn, jobs.thread_burn, jobs.trivial_process, jobs.trivial_thread])


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended workers only
    live = 0.0
    for pid in _worker_pids():
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            live += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + live


_CLIENT: List[sj.Client] = []


def _worker_pids() -> List[int]:
    pool = _CLIENT[0]._pool if _CLIENT else None
    return pool.pids() if pool is not None else []


def sharding_round(emu: ServerEmulator, executor: str, shards: int, seconds: float) -> float:
    started = time.perf_counter()
    batch = emu.trigger(executor, SHARDING, json.dumps([str(seconds)] * shards), parallel_num=shards,
                        executor_timeout=600)
    status = batch.wait(600)
    elapsed = time.perf_counter() - started
    if status != 3:
        raise SystemExit(f"{executor} batch ended {status}: {[t.result for t in batch.tasks]}")
    return elapsed


def trivial(emu: ServerEmulator, executor: str, n: int) -> Dict[str, float]:
    for _ in range(5):  # warm: the pool's worker is started
        emu.trigger(executor).wait(30)
    latencies = []
    cpu_before = cpu_seconds()
    for _ in range(n):
        started = time.perf_counter()
        if emu.trigger(executor).wait(30) != 3:
            raise SystemExit(f"{executor} failed")
        latencies.append(time.perf_counter() - started)
    cpu = cpu_seconds() - cpu_before
    latencies.sort()
    return {"median_ms": statistics.median(latencies) * 1000, "p95_ms": latencies[int(0.95 * (n - 1))] * 1000,
            "cpu_ms_per_task": cpu / n * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--trivial", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; pool size {os.cpu_count()}; python {sys.version.split()[0]}")
    with ServerEmulator() as emu:
        client = client_for(emu).start()
        _CLIENT.append(client)
        try:
            emu.wait_for_clients(1)
            emu.wait_until(lambda: {"procBurn", "threadBurn"} <= emu.registered_executors, timeout=10)
            emu.trigger("procBurn", SHARDING, json.dumps(["0.05"] * (os.cpu_count() or 1)),
                        parallel_num=os.cpu_count() or 1).wait(60)  # start the workers
            walls: Dict[str, List[float]] = {"thread": [], "process": []}
            for _ in range(options.rounds):
                walls["thread"].append(sharding_round(emu, "threadBurn", options.shards, options.seconds))
                walls["process"].append(sharding_round(emu, "procBurn", options.shards, options.seconds))
            print(f"\nCPU-bound sharding: {options.shards} shards x {options.seconds:g} s of CPU, "
                  f"{options.rounds} rounds each, alternating")
            medians = {}
            for mode, values in walls.items():
                medians[mode] = statistics.median(values)
                print(f"  {mode:8} wall median {medians[mode]:6.2f} s (spread {min(values):.2f}-{max(values):.2f}), "
                      f"{options.shards / medians[mode]:5.2f} shards/s")
            print(f"  process / thread throughput: {medians['thread'] / medians['process']:.2f}x")
            print(f"\ntrivial job, {options.trivial} one-task batches one after another (warm pool)")
            for mode, executor in (("thread", "threadTrivial"), ("process", "procTrivial")):
                figures = trivial(emu, executor, options.trivial)
                print(f"  {mode:8} latency median {figures['median_ms']:6.2f} ms, p95 {figures['p95_ms']:6.2f} ms, "
                      f"CPU {figures['cpu_ms_per_task']:5.2f} ms/task (client + emulator + workers)")
        finally:
            client.stop(grace=0)


if __name__ == "__main__":
    main()
