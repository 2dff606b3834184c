"""The job program of ``bench_scale.py``: two executors that sleep for
``jobParams`` seconds, one plain and one ``async def``; both count the tasks
running at once and, as each ends, write the most so far to
``SCALE_PEAK_FILE``."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import snailjob as sj

_lock = threading.Lock()
_running = [0, 0]  # now, most so far


def _enter() -> None:
    with _lock:
        _running[0] += 1
        _running[1] = max(_running)


def _leave() -> None:
    with _lock:
        _running[0] -= 1
        _write(_running[1])


def _write(peak: int) -> None:
    path = os.environ.get("SCALE_PEAK_FILE")
    if path:
        with open(path + ".tmp", "w") as fh:
            fh.write(str(peak))
        os.replace(path + ".tmp", path)


@sj.job("scaleSleep")
def scale_sleep(args: sj.JobArgs) -> None:
    _enter()
    try:
        time.sleep(float(args.job_params))
    finally:
        _leave()


@sj.job("scaleAsync")
async def scale_async(args: sj.JobArgs) -> None:
    _enter()
    try:
        await asyncio.sleep(float(args.job_params))
    finally:
        _leave()


if __name__ == "__main__":
    sj.ExecutorManager.register(scale_sleep)
    sj.ExecutorManager.register(scale_async)
    sj.client_main()
