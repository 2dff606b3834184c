"""isolation="process": jobs in worker processes, through the emulator."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Iterator

import pytest

import snailjob as sj
from snailjob.errors import ExecutorRegistrationError
from snailjob.testing import ServerEmulator
from tests import process_jobs as jobs

from .conftest import client_for, wait_for

SUCCESS, FAIL, STOP = 3, 4, 5
ALL = [jobs.echo, jobs.typed, jobs.async_job, jobs.fail, jobs.spin, jobs.cooperative, jobs.exits, jobs.segfault,
       jobs.allocate, jobs.pid, jobs.squares, jobs.bad_map, jobs.leak, jobs.unpicklable, jobs.killed, jobs.span]


@pytest.fixture
def emu() -> Iterator[ServerEmulator]:
    with ServerEmulator() as emulator:
        yield emulator


def start(emu: ServerEmulator, executors: Any = ALL, **settings: Any) -> sj.Client:
    values = dict(snail_interrupt_delay=0.2, snail_process_kill_grace=1.0, snail_process_pool_size=2)
    values.update(settings)
    client = client_for(emu, executors, **values).start()
    emu.wait_for_clients(1)
    return client


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_same_contract_as_a_thread_job(emu: ServerEmulator) -> None:
    client = start(emu)
    try:
        batch = emu.trigger("procEcho", args_str="hello", wf_context={"seed": 41})
        assert batch.wait(30) == SUCCESS
        task = batch.tasks[0]
        result = json.loads(task.result)
        assert result["pid"] != os.getpid() and result["params"] == "hello"
        assert result["task"] == task.task_id and result["wf"] == 41
        report = task.reports[-1]
        assert json.loads(report["wfContext"])["seen_by"] == result["pid"]  # append_context travelled back
        emu.wait_until(lambda: any(e["taskId"] == task.task_id for e in emu.logs), timeout=10)
        [entry] = [e for e in emu.logs if e["taskId"] == task.task_id]
        fields = {f["name"]: f["value"] for f in entry["fieldList"]}
        assert fields["message"] == f"echo in pid {result['pid']}" and fields["level"] == "INFO"
        assert fields["location"].startswith("tests.process_jobs.echo(process_jobs.py:")

        typed = emu.trigger("procTyped", args_str=json.dumps({"customer": "acme", "amount": 3}))
        assert typed.wait(30) == SUCCESS and typed.tasks[0].result == "acme pays 3"
        bad = emu.trigger("procTyped", args_str=json.dumps({"customer": "acme"}))
        assert bad.wait(30) == FAIL and "amount" in bad.tasks[0].result

        coroutine = emu.trigger("procAsync")
        assert coroutine.wait(30) == SUCCESS and coroutine.tasks[0].result.startswith("async in ")
        assert int(coroutine.tasks[0].result.split()[-1]) != os.getpid()

        failed = emu.trigger("procFail")
        assert failed.wait(30) == FAIL
        assert json.loads(failed.tasks[0].result)["message"] == "fails in the worker"
        assert failed.tasks[0].execute_result["message"] == "ValueError: fails in the worker"
        emu.wait_until(lambda: any(e["taskId"] == failed.tasks[0].task_id for e in emu.logs), timeout=10)
        [error] = [e for e in emu.logs if e["taskId"] == failed.tasks[0].task_id]
        throwable = {f["name"]: f["value"] for f in error["fieldList"]}["throwable"]
        assert throwable.startswith("ValueError: fails in the worker") and "process_jobs.py" in throwable
    finally:
        client.stop(grace=0)


def test_map_reduce_stages_in_worker_processes(emu: ServerEmulator) -> None:
    client = start(emu)
    try:
        batch = emu.trigger("procMapReduce", task_type=5, shard_num=2)
        assert batch.wait(30) == SUCCESS
        merge = [t for t in batch.tasks if t.mr_stage == 3]
        assert merge and merge[0].result == str(sum(i * i for i in range(1, 6)))
        assert len([t for t in batch.tasks if t.task_name == "SQUARE"]) == 5
        refused = emu.trigger("procMapFromJob")
        assert refused.wait(30) == FAIL and "mr_do_map can only be called from a map task" in refused.tasks[0].result
    finally:
        client.stop(grace=0)


def test_a_stop_ends_a_tight_loop_and_the_pool_heals(emu: ServerEmulator, tmp_path: Any) -> None:
    client = start(emu)
    try:
        marker = tmp_path / "spin.pid"
        batch = emu.trigger("procSpin", args_str=str(marker), executor_timeout=300)
        wait_for(lambda: marker.exists() and marker.read_text(), timeout=30)
        spinning = int(marker.read_text())
        assert alive(spinning)
        stopped = time.monotonic()
        batch.stop()
        wait_for(lambda: not alive(spinning), timeout=10)
        # stop event, interrupt delay (0.2 s), SIGTERM ignored by the loop, SIGKILL after the grace (1 s)
        assert time.monotonic() - stopped < 5
        assert batch.wait(10) == STOP
        time.sleep(0.5)
        assert batch.tasks[0].reports == []  # a stopped task is not reported
        after = emu.trigger("procPid")
        assert after.wait(30) == SUCCESS and int(after.tasks[0].result) != spinning
        assert client.stats()["process_workers_started"] >= 2
    finally:
        client.stop(grace=0)


def test_an_executor_timeout_ends_a_tight_loop(emu: ServerEmulator, tmp_path: Any) -> None:
    client = start(emu)
    try:
        marker = tmp_path / "spin.pid"
        batch = emu.trigger("procSpin", args_str=str(marker), executor_timeout=2)
        wait_for(lambda: marker.exists() and marker.read_text(), timeout=30)
        spinning = int(marker.read_text())
        assert batch.wait(15) == STOP
        wait_for(lambda: not alive(spinning), timeout=10)
    finally:
        client.stop(grace=0)


def test_a_cooperative_job_sees_the_stop_in_its_worker(emu: ServerEmulator) -> None:
    client = start(emu, snail_interrupt_delay=5.0)
    try:
        batch = emu.trigger("procCooperative", executor_timeout=300)
        emu.wait_until(lambda: bool(batch.tasks) and bool(batch.tasks[0].dispatch_replies), timeout=20)
        time.sleep(1.0)  # the worker runs it
        batch.stop()
        assert batch.wait(10) == STOP
        # it returned on its own within the interrupt delay: its worker is kept for the next task
        # the batch thread serving the worker is done (tasks_active drops to 0 at the stop itself)
        wait_for(lambda: client.stats()["threads_busy"] == 0, timeout=10)
        stats = client.stats()
        assert stats["process_workers_died"] == 0
        # the worker that ran it is still there: not ended by the interruption after the delay
        assert (stats["process_workers"], stats["process_workers_started"]) == (1, 1), stats
    finally:
        client.stop(grace=0)


@pytest.mark.parametrize("executor,reason", [("procExit", "it exited with code 7"),
                                             ("procSegfault", "killed by SIGSEGV"),
                                             ("procKilled", "killed by SIGKILL (the kernel's OOM killer")])
def test_a_worker_that_dies_fails_only_its_task(emu: ServerEmulator, executor: str, reason: str) -> None:
    client = start(emu)
    try:
        batch = emu.trigger(executor)
        assert batch.wait(30) == FAIL
        result = json.loads(batch.tasks[0].result)
        assert result["exception"] == "WorkerDied" and reason in result["message"], result
        assert client.stats()["process_workers_died"] == 1
        healed = emu.trigger("procPid")
        assert healed.wait(30) == SUCCESS
    finally:
        client.stop(grace=0)


def test_an_idle_worker_killed_is_replaced_for_the_next_task(emu: ServerEmulator) -> None:
    """A worker that dies while idle (the OOM killer, an operator's kill) is
    not handed the next task: a new one runs it."""
    client = start(emu, [jobs.pid], snail_process_pool_size=1)
    try:
        first = emu.trigger("procPid")
        assert first.wait(30) == SUCCESS
        idle = int(first.tasks[0].result)
        os.kill(idle, signal.SIGKILL)
        wait_for(lambda: not alive(idle), timeout=10)
        second = emu.trigger("procPid")
        assert second.wait(30) == SUCCESS, second.tasks[0].result
        assert int(second.tasks[0].result) not in (idle, os.getpid())
    finally:
        client.stop(grace=0)


def test_a_dead_worker_that_still_looks_alive_does_not_fail_the_task(emu: ServerEmulator) -> None:
    """Under forkserver ``is_alive()`` can say yes for a moment after the
    worker died (the fork server has not reaped it yet): the task that meets
    the broken pipe goes to a fresh worker instead of failing."""
    client = start(emu, [jobs.pid], snail_process_pool_size=1)
    try:
        first = emu.trigger("procPid")
        assert first.wait(30) == SUCCESS
        idle = int(first.tasks[0].result)
        pool = client._pool
        assert pool is not None
        (worker,) = pool._idle
        os.kill(idle, signal.SIGKILL)
        wait_for(lambda: not alive(idle), timeout=10)
        worker.alive = lambda: True  # type: ignore[method-assign]  # the lag, made to last
        second = emu.trigger("procPid")
        assert second.wait(30) == SUCCESS, second.tasks[0].result
        assert int(second.tasks[0].result) not in (idle, os.getpid())
        assert client.stats()["process_workers_started"] == 2
    finally:
        client.stop(grace=0)


def _spans(batch: Any) -> list:
    return sorted((tuple(float(x) for x in t.result.split()) for t in batch.tasks), key=lambda s: s[1])


def test_shards_run_in_parallel_processes_within_parallel_num(emu: ServerEmulator) -> None:
    client = start(emu, snail_process_pool_size=2)
    try:
        assert client.stats()["process_workers"] == 0  # started lazily
        both = emu.trigger("procSpan", task_type=3, args_str=json.dumps(["a", "b", "c", "d"]), parallel_num=2)
        assert both.wait(30) == SUCCESS
        spans = _spans(both)
        assert len({pid for pid, _, _ in spans}) == 2
        assert any(a[1] < b[2] and b[1] < a[2] for a in spans for b in spans if a is not b)  # two at once
        one = emu.trigger("procSpan", task_type=3, args_str=json.dumps(["a", "b", "c"]), parallel_num=1)
        assert one.wait(30) == SUCCESS
        spans = _spans(one)
        assert all(spans[i][2] <= spans[i + 1][1] for i in range(len(spans) - 1))  # one at a time
        assert client._pool is not None and client._pool.start_method == "forkserver"
    finally:
        client.stop(grace=0)


def test_workers_are_recycled_after_n_tasks(emu: ServerEmulator) -> None:
    client = start(emu, snail_process_max_tasks=2, snail_process_pool_size=1)
    try:
        pids = []
        for _ in range(4):
            batch = emu.trigger("procPid")
            assert batch.wait(30) == SUCCESS
            pids.append(int(batch.tasks[0].result))
        assert pids[0] == pids[1] != pids[2] == pids[3]
    finally:
        client.stop(grace=0)


def test_workers_are_recycled_when_their_rss_grows(emu: ServerEmulator) -> None:
    client = start(emu, snail_process_max_rss_mb=150, snail_process_pool_size=1)
    try:
        first = emu.trigger("procPid")
        assert first.wait(30) == SUCCESS
        grow = emu.trigger("procLeak", args_str="10")
        assert grow.wait(30) == SUCCESS
        same = emu.trigger("procPid")
        assert same.wait(30) == SUCCESS and same.tasks[0].result == first.tasks[0].result
        big = emu.trigger("procLeak", args_str="200")  # now over 150 MB: recycled after this task
        assert big.wait(30) == SUCCESS and big.tasks[0].result == first.tasks[0].result
        other = emu.trigger("procPid")
        assert other.wait(30) == SUCCESS
        assert other.tasks[0].result != first.tasks[0].result
    finally:
        client.stop(grace=0)


def test_a_memory_limit_fails_the_job_with_memory_error(emu: ServerEmulator) -> None:
    client = start(emu, snail_process_memory_limit_mb=400, snail_process_pool_size=1)
    try:
        small = emu.trigger("procAllocate", args_str="20")
        assert small.wait(30) == SUCCESS
        huge = emu.trigger("procAllocate", args_str="2000")
        assert huge.wait(30) == FAIL
        assert json.loads(huge.tasks[0].result)["exception"] == "MemoryError"
        again = emu.trigger("procAllocate", args_str="20")
        assert again.wait(30) == SUCCESS  # the same worker goes on
    finally:
        client.stop(grace=0)


def test_a_job_the_worker_cannot_import_fails_with_the_reason(emu: ServerEmulator) -> None:
    @sj.job("procLocal", isolation="process")
    def local(args: sj.JobArgs) -> str:
        return "never"

    client = start(emu, [local])
    try:
        batch = emu.trigger("procLocal")
        assert batch.wait(30) == FAIL
        assert "define the job at module level" in batch.tasks[0].result
    finally:
        client.stop(grace=0)


def test_a_result_that_cannot_cross_the_pipe_fails_the_task(emu: ServerEmulator) -> None:
    client = start(emu)
    try:
        batch = emu.trigger("procUnpicklable")
        assert batch.wait(30) == FAIL
        assert "the job's result cannot be sent to the client" in batch.tasks[0].result
        assert emu.trigger("procPid").wait(30) == SUCCESS
        assert client.stats()["process_workers_died"] == 0
    finally:
        client.stop(grace=0)


def test_the_client_wide_default(emu: ServerEmulator) -> None:
    @sj.job("plainPid")
    def plain(args: sj.JobArgs) -> int:
        return os.getpid()

    client = start(emu, [plain, jobs.trivial_thread], snail_isolation="process")
    try:
        # a local function cannot go to a process; a module-level one without its own choice can
        assert emu.trigger("plainPid").wait(30) == FAIL
        batch = emu.trigger("threadTrivial")
        assert batch.wait(30) == SUCCESS and client.stats()["process_workers"] == 1
    finally:
        client.stop(grace=0)


def test_isolation_is_checked_where_it_is_declared() -> None:
    with pytest.raises(ExecutorRegistrationError, match="isolation must be 'thread' or 'process'"):
        sj.job("x", isolation="fork")
    with pytest.raises(ExecutorRegistrationError, match="isolation"):
        sj.MapExecutor("y", isolation="cores")
    with pytest.raises(sj.ConfigurationError, match="SNAIL_ISOLATION"):
        sj.Settings.load(env_file=None, snail_isolation="fork")


def test_shutdown_ends_the_workers(emu: ServerEmulator) -> None:
    client = start(emu)
    batch = emu.trigger("procPid")
    assert batch.wait(30) == SUCCESS
    worker = int(batch.tasks[0].result)
    assert alive(worker)
    client.stop(grace=0)
    wait_for(lambda: not alive(worker), timeout=10)


def test_a_sigterm_to_the_client_process_group_does_not_fail_a_worker_job(emu: ServerEmulator) -> None:
    """Workers ignore SIGINT (Ctrl-C reaches the whole group; the client decides)."""
    client = start(emu)
    try:
        batch = emu.trigger("procPid")
        assert batch.wait(30) == SUCCESS
        worker = int(batch.tasks[0].result)
        os.kill(worker, signal.SIGINT)
        time.sleep(0.3)
        assert alive(worker)
    finally:
        client.stop(grace=0)
