# mypy: allow-untyped-defs
"""isolation="process" on the real server: a CPU-bound sharding job in a tight loop, stopped
from the web API. Only a signal ends such a loop; the worker processes must be gone and the
batch STOP, and the node goes on taking work."""

from __future__ import annotations

import os
import time

import pytest

from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_real_server import REASON_MANUAL_STOP, describe, run_job, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_process_job_in_a_tight_loop_is_stopped_from_the_web_api(srv, run):
    job_id = srv.create_job(f"procspin-{uid()}", "e2eProcSpin", TaskType.SHARDING, args_str=["a", "b"],
                            parallel_num=2, executor_timeout=300)
    batch = srv.trigger_job(job_id)
    lines = run.wait_marker("proc-spin", batch, count=2, timeout=60)
    assert len(lines) == 2, describe(srv, batch)
    pids = [int(line.rsplit("pid=", 1)[1]) for line in lines]
    assert all(alive(pid) for pid in pids) and os.getpid() not in pids
    time.sleep(1)
    stopped = time.monotonic()
    srv.stop_batch(batch)
    final = srv.wait_batch(batch, timeout=30)
    assert int(final["taskBatchStatus"]) == BatchStatus.STOP, describe(srv, batch)
    assert int(final.get("operationReason") or 0) == REASON_MANUAL_STOP, final
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"worker processes {pids} still alive 20s after the stop"
        time.sleep(0.2)
    ended = time.monotonic() - stopped
    run.note(f"isolation=process: 2 spinning shards stopped from the web API, workers gone {ended:.1f}s later")
    run_job(srv, "after-procspin", "e2eCluster", TaskType.CLUSTER, args_str="still working")
