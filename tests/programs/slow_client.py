"""A client program for lifecycle tests: one job that works for SLOW_SECONDS."""

import os
import time

import snailjob as sj


@sj.job("slowJob")
def slow_job(args: sj.JobArgs) -> str:
    deadline = time.monotonic() + float(os.environ.get("SLOW_SECONDS", "1.5"))
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "finished"


if __name__ == "__main__":
    sj.ExecutorManager.register(slow_job)
    sj.client_main()
