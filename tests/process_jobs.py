"""Jobs for tests/test_processes.py: module level, so that worker processes can import them."""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from dataclasses import dataclass

import snailjob as sj


# --8<-- [start:process]
@sj.job("procEcho", isolation="process")
def echo(args: sj.JobArgs) -> dict:
    ctx = sj.current_task()
    sj.SnailLog.REMOTE.info("echo in pid %s", os.getpid())
    ctx.append_context("seen_by", os.getpid())
    return {"pid": os.getpid(), "params": args.job_params, "task": ctx.task_id,
            "wf": args.get_wf_context("seed")}
# --8<-- [end:process]


@dataclass
class Order:
    customer: str
    amount: int


@sj.job("procTyped", isolation="process")
def typed(args: sj.JobArgs[Order]) -> str:
    return f"{args.job_params.customer} pays {args.job_params.amount}"


@sj.job("procAsync", isolation="process")
async def async_job(args: sj.JobArgs) -> str:
    await asyncio.sleep(0.01)
    return f"async in {os.getpid()}"


@sj.job("procFail", isolation="process")
def fail(args: sj.JobArgs) -> None:
    raise ValueError("fails in the worker")


@sj.job("procSpin", isolation="process")
def spin(args: sj.JobArgs) -> None:
    """A tight loop: nothing but a signal can end it."""
    sj.SnailLog.REMOTE.info("spinning in pid %s", os.getpid())
    marker = args.job_params
    if marker:
        with open(marker, "w") as out:
            out.write(str(os.getpid()))
    while True:
        pass


@sj.job("procCooperative", isolation="process")
def cooperative(args: sj.JobArgs) -> str:
    """Sees the stop through its context and returns on its own."""
    ctx = sj.current_task()
    while not ctx.wait_stopped(0.05):
        pass
    return "saw the stop"


@sj.job("procExit", isolation="process")
def exits(args: sj.JobArgs) -> None:
    os._exit(7)


@sj.job("procSegfault", isolation="process")
def segfault(args: sj.JobArgs) -> None:
    ctypes.string_at(0)


@sj.job("procAllocate", isolation="process")
def allocate(args: sj.JobArgs) -> str:
    block = bytearray(int(args.job_params) * 1024 * 1024)
    return f"allocated {len(block) // 1024 // 1024} MB"


@sj.job("procPid", isolation="process")
def pid(args: sj.JobArgs) -> int:
    return os.getpid()


@sj.job("procBurn", isolation="process")
def burn(args: sj.JobArgs) -> str:
    """CPU-bound pure Python work of about ``job_params`` seconds on one core."""
    started = time.process_time()
    end = started + float(args.job_params or 0.3)
    count = 0
    while time.process_time() < end:
        count += sum(i * i for i in range(200))
    return f"{os.getpid()} {time.time()}"


@sj.job("threadBurn")
def thread_burn(args: sj.JobArgs) -> str:
    started = time.thread_time()
    end = started + float(args.job_params or 0.3)
    count = 0
    while time.thread_time() < end:
        count += sum(i * i for i in range(200))
    return f"{os.getpid()} {time.time()}"


@sj.job("procTrivial", isolation="process")
def trivial_process(args: sj.JobArgs) -> str:
    return "ok"


@sj.job("threadTrivial")
def trivial_thread(args: sj.JobArgs) -> str:
    return "ok"


squares = sj.MapReduceExecutor("procMapReduce", isolation="process")


@squares.map()
def squares_root(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.mr_do_map(list(range(1, 6)), "SQUARE")


@squares.map("SQUARE")
def squares_item(args: sj.MapArgs) -> int:
    return int(args.map_result) ** 2


@squares.reduce()
def squares_reduce(args: sj.ReduceArgs) -> int:
    return sum(int(x) for x in args.map_result)


@squares.merge()
def squares_merge(args: sj.MergeReduceArgs) -> int:
    return sum(int(x) for x in args.reduces)


@sj.job("procMapFromJob", isolation="process")
def bad_map(args: sj.JobArgs) -> sj.ExecuteResult:
    return sj.mr_do_map([1, 2], "NOPE")  # not a map task: MapError in the worker


_LEAKED = []


@sj.job("procLeak", isolation="process")
def leak(args: sj.JobArgs) -> int:
    """Keeps ``job_params`` MB alive in its worker (a leak), returns the pid."""
    _LEAKED.append(bytearray(int(args.job_params) * 1024 * 1024))
    return os.getpid()


@sj.job("procUnpicklable", isolation="process")
def unpicklable(args: sj.JobArgs) -> object:
    return (x for x in range(3))  # a generator cannot cross the pipe


@sj.job("procKilled", isolation="process")
def killed(args: sj.JobArgs) -> None:
    """What the kernel's OOM killer does to a process."""
    os.kill(os.getpid(), 9)


@sj.job("procSpan", isolation="process")
def span(args: sj.ShardingJobArgs) -> str:
    """Sleeps a little and returns ``pid start end``."""
    started = time.time()
    time.sleep(0.4)
    return f"{os.getpid()} {started} {time.time()}"
