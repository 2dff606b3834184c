# mypy: allow-untyped-defs
"""The client program the end-to-end suite runs as a separate process.

It registers its executors with ``sj.ExecutorManager.register`` and runs
``sj.client_main()`` exactly as a user's ``main.py`` would.  Everything is
configured through the environment:

- ``SNAIL_*``             the client settings (server port, group, token, ...), from
                          ``RealServer.client_env()`` plus the suite's overrides;
- ``E2E_MARKER_DIR``      directory where jobs append marker lines (what the job saw:
                          a stop event, an interruption, each run of a failing job);
- ``E2E_NODE``            a name for this node, only used in marker lines;
- ``E2E_WITHOUT``         executor names (comma separated) this node does not register.

Executor names all start with ``e2e``; results are deterministic functions of the
job's input so the suite can check the task tree against them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import snailjob as sj

MARKER_DIR = Path(os.environ.get("E2E_MARKER_DIR") or ".")
NODE = os.environ.get("E2E_NODE", "node")
PORT = os.environ.get("SNAIL_HOST_PORT", "?")


def mark(name: str, text: str) -> None:
    """Append one line to ``<E2E_MARKER_DIR>/<name>`` (atomic for short lines)."""
    line = (text.replace("\n", " ") + "\n").encode()
    fd = os.open(MARKER_DIR / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _item(value):
    """A map item as the job gets it: a JSON value, or its text."""
    return json.loads(value) if isinstance(value, str) else value


# --- cluster / broadcast / sharding -------------------------------------------


@sj.job("e2eCluster")
def cluster(args: sj.JobArgs) -> sj.ExecuteResult:
    sj.SnailLog.REMOTE.info("cluster job got %s", args.job_params)
    return sj.ExecuteResult.success({"echo": args.job_params, "kind": "cluster"})


@sj.job("e2eBizId")
def biz_id(args: sj.JobArgs) -> dict:
    ctx = sj.current_task()
    return {"args": args.job_biz_id, "context": ctx.job_biz_id, "namespace": ctx.namespace_id,
            "group": ctx.group_name, "timeout": ctx.executor_timeout, "parallel": ctx.parallel_num}


@sj.job("e2eBroadcast")
def broadcast(args: sj.JobArgs) -> str:
    return f"broadcast {args.job_params} on port {PORT}"


@sj.job("e2eSharding")
def sharding(args: sj.ShardingJobArgs) -> sj.ExecuteResult:
    return sj.ExecuteResult.success(f"shard {args.sharding_index}/{args.sharding_total}: {args.job_params}")


# --- map: ROOT_MAP fans out to job_params items ----------------------------------

e2e_map = sj.MapExecutor("e2eMap")


@e2e_map.map()
def map_root(args: sj.MapArgs) -> sj.ExecuteResult:
    count = int(args.job_params)
    return sj.mr_do_map([{"i": i} for i in range(count)], "SQUARE")


@e2e_map.map("SQUARE")
def map_square(args: sj.MapArgs) -> int:
    i = int(_item(args.map_result)["i"])
    return i * i


# --- map whose sub-tasks all fail ----------------------------------------------------

e2e_map_fail = sj.MapExecutor("e2eMapFail")


@e2e_map_fail.map()
def map_fail_root(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.mr_do_map(list(range(int(args.job_params))), "BROKEN")


@e2e_map_fail.map("BROKEN")
def map_broken(args: sj.MapArgs) -> None:
    raise ValueError(f"broken item {args.map_result}")


# --- map-reduce: 1..10 doubled, summed per reduce shard, merged ---------------------

e2e_mr = sj.MapReduceExecutor("e2eMapReduce")


@e2e_mr.map()
def mr_root(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.mr_do_map(list(range(1, 11)), "DOUBLE")


@e2e_mr.map("DOUBLE")
def mr_double(args: sj.MapArgs) -> int:
    return int(_item(args.map_result)) * 2


@e2e_mr.reduce()
def mr_reduce(args: sj.ReduceArgs) -> int:
    return sum(int(x) for x in args.map_result)


@e2e_mr.merge()
def mr_merge(args: sj.MergeReduceArgs) -> int:
    return sum(int(x) for x in args.reduces)


# --- workflow: node 1 writes the context, node 2 adds to it, node 3 reads it --------


@sj.job("e2eWfWrite")
def wf_write(args: sj.JobArgs) -> str:
    seed = args.get_wf_context("seed")
    args.append_context("written_by_1", f"n1<{seed}>")
    args.append_context("rows", 40)
    return "node 1 wrote the context"


@sj.job("e2eWfMiddle")
def wf_middle(args: sj.JobArgs) -> str:
    rows = args.get_wf_context("rows")
    args.append_context("rows_after_2", (rows or 0) + 2)
    return f"node 2 saw rows={rows}"


@sj.job("e2eWfRead")
def wf_read(args: sj.JobArgs) -> sj.ExecuteResult:
    seen = {key: args.get_wf_context(key) for key in ("seed", "written_by_1", "rows", "rows_after_2")}
    return sj.ExecuteResult.success(seen)


# --- logs -------------------------------------------------------------------------


def _raise_for_log(tag: str) -> None:
    raise ValueError(f"log probe failure {tag}")


@sj.job("e2eLog")
def log_job(args: sj.JobArgs) -> str:
    tag = args.job_params
    sj.SnailLog.REMOTE.info("log probe info %s", tag)
    sj.SnailLog.REMOTE.warning("log probe warning %s", tag)
    try:
        _raise_for_log(tag)
    except ValueError:
        sj.SnailLog.REMOTE.exception("log probe caught %s", tag)
    sj.SnailLog.LOCAL.info("log probe local-only %s", tag)
    return f"logged {tag}"


# --- stop, timeout, failure ------------------------------------------------------------


@sj.job("e2eStopAware")
def stop_aware(args: sj.JobArgs) -> sj.ExecuteResult:
    batch = args.task_batch_id
    mark("started", f"{batch} {NODE}")
    try:
        for step in range(1200):
            if sj.ThreadPoolCache.event_is_set(batch):
                mark("stop-seen", f"{batch} {NODE} step={step}")
                sj.SnailLog.REMOTE.info("stop event seen at step %d", step)
                # a report of this would flip the STOP task to SUCCESS
                return sj.ExecuteResult.success("finished after the stop")
            time.sleep(0.1)
    except sj.TaskInterrupted:
        mark("stop-interrupted", f"{batch} {NODE}")
        raise
    return sj.ExecuteResult.success("never stopped")


@sj.job("e2eSleeper")
def sleeper(args: sj.JobArgs) -> str:
    """Ignores its stop event: sleeps in short sleeps until interrupted."""
    batch = args.task_batch_id
    started = time.monotonic()
    mark("sleeper-started", f"{batch} {NODE}")
    try:
        while time.monotonic() - started < float(args.job_params or 120):
            time.sleep(0.2)
    except sj.TaskInterrupted:
        mark("sleeper-interrupted", f"{batch} {NODE} after={time.monotonic() - started:.1f}")
        raise
    finally:
        mark("sleeper-finally", f"{batch} {NODE}")
    return "slept to the end"


@sj.job("e2eFail")
def failing(args: sj.JobArgs) -> None:
    mark("fail-runs", f"{args.task_batch_id} {NODE} retry_count={args.retry_count}")
    raise ValueError(f"deliberate e2e failure ({args.job_params})")


# --- distributed retry -----------------------------------------------------------

RETRY_SCENE = "py_e2e_charge"


def _charged(call: sj.RetryCall) -> None:
    sj.SnailLog.REMOTE.info("callback: charge %s finished", call.args[0])
    mark("charge-callback", f"{call.args[0]} {NODE} status={call.retry_status} kwargs={json.dumps(call.kwargs)}")


def _gave_up(call: sj.RetryCall) -> None:
    mark("charge-callback", f"{call.args[0]} {NODE} status={call.retry_status}")


@sj.retryable(RETRY_SCENE, executor_name="e2eCharge", local_times=1, local_interval=0.2,
              biz_no="tag", on_success=_charged, on_max_count=_gave_up)
def charge(tag: str, amount: int, *, currency: str = "EUR") -> dict:
    """Fails its first three calls (two local, one replayed by the server), then succeeds."""
    path = MARKER_DIR / f"charge-{tag}"
    calls = len(path.read_text().splitlines()) + 1 if path.exists() else 1
    replay = sj.current_retry().retry_task_id if _in_replay() else None
    mark(f"charge-{tag}", f"call={calls} node={NODE} replay={replay}")
    sj.SnailLog.REMOTE.info("charging %s, call %d", tag, calls)
    if calls <= 3:
        raise ConnectionError(f"payment gateway down (call {calls} of {tag})")
    return {"charged": amount, "currency": currency, "tag": tag}


def _in_replay() -> bool:
    try:
        sj.current_retry()
        return True
    except sj.NotInJobError:
        return False


BUSY_SCENE = "py_e2e_busy"


@sj.retryable(BUSY_SCENE, executor_name="e2eBusyQuote", local_times=1, local_interval=0.2,
              retry_if_result=lambda quote: quote.get("code") == "BUSY")
def busy_quote(tag: str) -> dict:
    """Answers BUSY to its first three calls (two local, one replayed by the server), then OK."""
    path = MARKER_DIR / f"busy-{tag}"
    calls = len(path.read_text().splitlines()) + 1 if path.exists() else 1
    mark(f"busy-{tag}", f"call={calls} node={NODE}")
    return {"code": "BUSY" if calls <= 3 else "OK", "tag": tag, "call": calls}


@sj.job("e2eBusyTrigger")
def busy_trigger(args: sj.JobArgs) -> dict:
    return busy_quote(str(args.job_params))


STOP_SCENE = "py_e2e_stop"


@sj.retryable(STOP_SCENE, executor_name="e2eStopCharge", strategy="remote_only")
def stop_charge(tag: str) -> None:
    """Every replay asks the server to stop retrying."""
    mark(f"stop-{tag}", f"replay={sj.current_retry().retry_task_id} node={NODE}")
    raise sj.StopRetry(f"order {tag} was cancelled")


@sj.job("e2eRetryTrigger")
def retry_trigger(args: sj.JobArgs) -> str:
    """Calls the retryable function; it fails locally and is handed to the
    server.  ``stop:<tag>`` hands ``stop_charge`` over instead."""
    if str(args.job_params).startswith("stop:"):
        return f"reported {stop_charge.report(str(args.job_params)[5:])}"
    try:
        return json.dumps(charge(args.job_params, 42, currency="USD"))
    except ConnectionError as exc:
        return f"handed to the server after: {exc}"


# --- many nodes and faults: which node ran what ----------------------------------


@sj.job("e2eWhere")
def where(args: sj.JobArgs) -> str:
    """Marks ``where-start``, sleeps ``job_params`` seconds (default 0), marks ``where``; returns the node."""
    mark("where-start", f"{args.task_batch_id} {NODE} task={args.task_id}")
    time.sleep(float(args.job_params or 0))
    mark("where", f"{args.task_batch_id} {NODE} task={args.task_id}")
    return NODE


e2e_each = sj.MapExecutor("e2eEach")


@e2e_each.map()
def each_root(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.mr_do_map(list(range(int(args.job_params))), "ITEM")


@e2e_each.map("ITEM")
def each_item(args: sj.MapArgs) -> str:
    """One line per run in ``each``: the batch, the item and the node that ran it."""
    mark("each", f"{args.task_batch_id} {_item(args.map_result)} {NODE}")
    return NODE


# --- isolation="process": a tight loop only a signal ends ------------------------------


@sj.job("e2eProcSpin", isolation="process")
def proc_spin(args: sj.ShardingJobArgs) -> None:
    """Marks ``proc-spin`` with its worker's pid, then spins in pure Python forever."""
    mark("proc-spin", f"{args.task_batch_id} {NODE} shard={args.sharding_index} pid={os.getpid()}")
    while True:
        pass


ALL = [cluster, biz_id, broadcast, sharding, e2e_map, e2e_map_fail, e2e_mr, wf_write, wf_middle, wf_read, log_job,
       stop_aware, sleeper, failing, retry_trigger, charge, stop_charge, busy_quote, busy_trigger, where, e2e_each,
       proc_spin]


if __name__ == "__main__":
    without = set(filter(None, os.environ.get("E2E_WITHOUT", "").split(",")))
    for executor in ALL:
        if getattr(executor, "executor_name", None) not in without:
            sj.ExecutorManager.register(executor)
    sj.client_main()
