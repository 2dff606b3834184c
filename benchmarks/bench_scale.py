"""Thousands of long tasks at once: what one client process costs, and that
it loses none.

    .venv/bin/python benchmarks/bench_scale.py                       # 10,000 tasks of 30 s, 100 batches
    .venv/bin/python benchmarks/bench_scale.py --variants thread:0,async --tasks 2000 --sleep 5   # smaller
    .venv/bin/python benchmarks/bench_scale.py --pythonpath /tmp/old  # measure another copy of snailjob/

A variant is ``thread:<SNAIL_MAX_RUNNING>`` (a plain ``def`` job that calls
``time.sleep``; ``thread:0`` is no cap) or ``async`` (an ``async def`` job
that awaits ``asyncio.sleep``).  For each variant a fresh client process
(``scale_jobs.py``) is started against a small in-process stand-in of the
server, which sends ``--batches`` sharding batches of ``tasks / batches``
shards each (``parallelNum`` = shards, ``executorTimeout`` 3600 s), 64
dispatches in flight, and counts the result reports by ``taskId``.  It
samples the client's ``VmRSS`` and ``Threads`` every 0.25 s and prints:

- idle RSS and threads (1 s after start), peak RSS and threads;
- RSS per running task: (peak RSS - idle RSS) / the most tasks that ran at
  once (the jobs count themselves and the job program reports the peak);
- dispatch seconds (first to last dispatch answered) and drain seconds
  (first dispatch to last report);
- reports received, tasks never reported, tasks reported more than once,
  and dispatches refused.  Every variant must end with 0 lost, 0 repeated.

With a cap of C and sleeps of S seconds, draining N tasks takes at least
ceil(N / C) * S seconds: 600 s for 10,000 tasks of 30 s at the default
cap of 512, which is the price of a bounded thread count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_DIR,
    GROUP,
    MAX_MESSAGE,
    METHOD,
    NAMESPACE,
    REPO_DIR,
    TOKEN,
    env_without_snail,
    free_port,
    load_pb2,
    proc_cpu_seconds,
    proc_status,
)

OK = {"/beat": '"PONG"'}


class StandIn:
    """Plays the server for one client process."""

    def __init__(self) -> None:
        self.pb = load_pb2()
        self.port = free_port()
        self.reports: Counter[int] = Counter()
        self.last_report = 0.0
        self.beat = asyncio.Event()
        self.server: Any = None

    async def serve(self, request: Any, context: Any) -> Any:
        uri = request.metadata.uri
        if uri == "/report/dispatch/result":
            self.reports[int(json.loads(request.body)[0]["taskId"])] += 1
            self.last_report = time.perf_counter()
        elif uri == "/beat":
            self.beat.set()
        return self.pb.GrpcResult(reqId=request.reqId, status=1, message="", data=OK.get(uri, "true"))

    async def start(self) -> None:
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
        handler = grpc.unary_unary_rpc_method_handler(
            self.serve, request_deserializer=self.pb.GrpcSnailJobRequest.FromString,
            response_serializer=self.pb.GrpcResult.SerializeToString)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": handler}),))
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()


def dispatch_body(pb: Any, task_id: int, batch: int, index: int, shards: int, executor: str, sleep: float) -> Any:
    request = {
        "namespaceId": NAMESPACE, "jobId": 1, "taskBatchId": batch, "taskId": task_id, "taskType": 3,
        "groupName": GROUP, "parallelNum": shards, "executorType": 2, "executorInfo": executor,
        "executorTimeout": 3600, "taskName": "SHARDING_TASK", "shardingIndex": index, "shardingTotal": shards,
        "argsStr": json.dumps({"jobParams": str(sleep)}), "retry": False, "retryStatus": False,
    }
    return pb.GrpcSnailJobRequest(reqId=task_id, metadata=pb.Metadata(uri="/job/dispatch/v1",
                                                                      headers={"SJ-TOKEN": TOKEN}),
                                  body=json.dumps([request]))


async def run_variant(variant: str, opts: argparse.Namespace) -> Dict[str, Any]:
    kind, _, cap = variant.partition(":")
    stand_in = StandIn()
    await stand_in.start()
    client_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sj-scale-"))
    env = env_without_snail()
    env.update({"SNAIL_SERVER_HOST": "127.0.0.1", "SNAIL_SERVER_PORT": str(stand_in.port),
                "SNAIL_HOST_IP": "127.0.0.1", "SNAIL_HOST_PORT": str(client_port), "SNAIL_BIND_HOST": "127.0.0.1",
                "SNAIL_TOKEN": TOKEN, "SNAIL_GROUP_NAME": GROUP, "SNAIL_NAMESPACE": NAMESPACE,
                "SNAIL_LOG_LEVEL": "WARNING", "PYTHONPATH": opts.pythonpath,
                "SCALE_PEAK_FILE": str(workdir / "peak")})
    if cap:
        env["SNAIL_MAX_RUNNING"] = cap
    with open(workdir / "client.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "scale_jobs.py")], env=env, cwd=str(workdir),
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        await asyncio.wait_for(stand_in.beat.wait(), 30)
        await asyncio.sleep(1.0)
        idle = proc_status(proc.pid)
        cpu0 = proc_cpu_seconds(proc.pid)
        peak = dict(idle)
        sampling = True

        async def sample() -> None:
            while sampling:
                now = proc_status(proc.pid)
                for key in ("rss_kb", "threads"):
                    peak[key] = max(peak.get(key, 0), now.get(key, 0))
                await asyncio.sleep(0.25)

        sampler = asyncio.ensure_future(sample())
        executor = "scaleAsync" if kind == "async" else "scaleSleep"
        shards = opts.tasks // opts.batches
        jobs = [(1_000_000 + b * shards + i, 5000 + b, i) for b in range(opts.batches) for i in range(shards)]
        refused: List[str] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{client_port}") as channel:
            call = channel.unary_unary(METHOD, request_serializer=stand_in.pb.GrpcSnailJobRequest.SerializeToString,
                                       response_deserializer=stand_in.pb.GrpcResult.FromString)
            window = asyncio.Semaphore(64)

            async def one(task_id: int, batch: int, index: int) -> None:
                async with window:
                    reply = await call(dispatch_body(stand_in.pb, task_id, batch, index, shards, executor,
                                                     opts.sleep), timeout=10)
                if reply.data != "true":
                    refused.append(reply.message)

            started = time.perf_counter()
            await asyncio.gather(*(one(*job) for job in jobs))
            dispatched = time.perf_counter() - started
            deadline = started + opts.timeout
            while len(stand_in.reports) < len(jobs) - len(refused) and time.perf_counter() < deadline:
                await asyncio.sleep(0.25)
            await asyncio.sleep(1.0)  # a late repeat would show now
        sampling = False
        await sampler
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        try:
            most_running = int((workdir / "peak").read_text())
        except (OSError, ValueError):
            most_running = 0
        ids = {task_id for task_id, _, _ in jobs}
        return {
            "variant": variant, "tasks": len(jobs), "batches": opts.batches, "sleep_s": opts.sleep,
            "idle_rss_mb": idle.get("rss_kb", 0) / 1024, "idle_threads": idle.get("threads", 0),
            "peak_rss_mb": peak.get("rss_kb", 0) / 1024, "peak_threads": peak.get("threads", 0),
            "most_running": most_running,
            "rss_per_running_task_kb": ((peak.get("rss_kb", 0) - idle.get("rss_kb", 0)) / most_running
                                        if most_running else None),
            "dispatch_s": dispatched, "drain_s": (stand_in.last_report - started) if stand_in.reports else None,
            "client_cpu_s": cpu, "reported": sum(stand_in.reports.values()),
            "lost": len(ids - set(stand_in.reports)) - len(refused),
            "repeated": sum(1 for n in stand_in.reports.values() if n > 1), "refused": len(refused),
            "refusal": refused[0] if refused else None,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await stand_in.server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="thread:0,thread:512,async",
                        help="comma-separated: thread:<SNAIL_MAX_RUNNING> or async (default %(default)s)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=30.0, help="seconds each task sleeps")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on a variant after this long")
    parser.add_argument("--pythonpath", default=str(REPO_DIR), help="where the snailjob package is imported from")
    opts = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    results = []
    for variant in opts.variants.split(","):
        result = asyncio.run(run_variant(variant.strip(), opts))
        results.append(result)
        print(json.dumps(result), flush=True)
    print()
    print(f"{'variant':<12} {'idle MB/thr':>12} {'peak MB/thr':>13} {'most running':>12} {'KB/task':>8} "
          f"{'dispatch s':>10} {'drain s':>8} {'CPU s':>6} {'lost':>5} {'twice':>5} {'refused':>7}")
    for r in results:
        per_task = f"{r['rss_per_running_task_kb']:.0f}" if r["rss_per_running_task_kb"] is not None else "-"
        drain = f"{r['drain_s']:.1f}" if r["drain_s"] is not None else "-"
        print(f"{r['variant']:<12} {r['idle_rss_mb']:>7.1f}/{r['idle_threads']:<4} {r['peak_rss_mb']:>8.1f}/"
              f"{r['peak_threads']:<5} {r['most_running']:>12} {per_task:>8} {r['dispatch_s']:>10.1f} {drain:>8} "
              f"{r['client_cpu_s']:>6.1f} {r['lost']:>5} {r['repeated']:>5} {r['refused']:>7}")
    out = BENCH_DIR / "results" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"options": vars(opts), "results": results}, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
