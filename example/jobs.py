"""Example executors, one per kind of SnailJob job.

``main.py`` registers all of them; ``run_examples.py`` runs each against the
embedded server emulator.  Create matching jobs in the console with executor
type "Python" and the executor names below.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import List

from pydantic import BaseModel

import snailjob as sj


# --8<-- [start:cluster]
@sj.job("demoClusterJob")
def cluster_job(args: sj.JobArgs) -> sj.ExecuteResult:
    """Cluster: one node runs it.  ``job_params`` is the text typed in the console."""
    sj.SnailLog.REMOTE.info("cluster job got params %r", args.job_params)
    return sj.ExecuteResult.success({"echo": args.job_params})
# --8<-- [end:cluster]


@sj.job("demoBroadcastJob")
def broadcast_job(args: sj.JobArgs) -> str:
    """Broadcast: every node runs it.  A plain return value means success."""
    sj.SnailLog.REMOTE.info("broadcast task %s", args.task_id)
    return "refreshed local cache"


# --8<-- [start:sharding]
@sj.job("demoShardingJob")
def sharding_job(args: sj.ShardingJobArgs) -> sj.ExecuteResult:
    """Sharding: the job's parameters are a JSON array; shard i gets element i."""
    sj.SnailLog.REMOTE.info("shard %s/%s: %s", args.sharding_index, args.sharding_total, args.job_params)
    return sj.ExecuteResult.success(f"shard {args.sharding_index} processed {args.job_params}")
# --8<-- [end:sharding]


# --8<-- [start:stop]
@sj.job("demoStopAwareJob")
def stop_aware_job(args: sj.JobArgs) -> sj.ExecuteResult:
    """Long work that checks the stop event between steps (stop it from the console)."""
    for step in range(600):
        if sj.ThreadPoolCache.event_is_set(args.task_batch_id):
            sj.SnailLog.REMOTE.info("stopped at step %d", step)
            return sj.ExecuteResult.failure("stopped")
        time.sleep(0.1)
    return sj.ExecuteResult.success()
# --8<-- [end:stop]


# --- asyncio and typed parameters -----------------------------------------

# --8<-- [start:async]
@sj.job("demoAsyncJob")
async def async_job(args: sj.JobArgs) -> str:
    """An ``async def`` executor runs on the client's event loop; a stop or
    ``executorTimeout`` cancels it (``asyncio.CancelledError``)."""
    urls = [f"https://example.invalid/page/{i}" for i in range(5)]
    pages = await asyncio.gather(*(fake_fetch(url) for url in urls))
    sj.SnailLog.REMOTE.info("fetched %d pages concurrently", len(pages))
    return f"fetched {sum(pages)} bytes"


async def fake_fetch(url: str) -> int:
    await asyncio.sleep(0.05)  # stands in for an HTTP call with an async client
    return len(url)
# --8<-- [end:async]


# --8<-- [start:typed]
class Invoice(BaseModel):
    """The job's parameters, as typed in the console: {"customer": "acme", "amounts": [10, 20]}."""

    customer: str
    amounts: List[int]
    currency: str = "EUR"


@sj.job("demoTypedJob")
def typed_job(args: sj.JobArgs[Invoice]) -> str:
    """``JobArgs[Invoice]`` makes the client decode and validate the
    parameters; a bad field fails the task with a message naming it."""
    invoice = args.job_params
    return f"{invoice.customer}: {sum(invoice.amounts)} {invoice.currency}"
# --8<-- [end:typed]


# --- map: ROOT_MAP fans out into one sub-task per item ---------------------

# --8<-- [start:map]
demo_map = sj.MapExecutor("demoMapJob")


@demo_map.map()
def map_root(args: sj.MapArgs) -> sj.ExecuteResult:
    count = int(args.job_params or 10)
    return sj.mr_do_map([{"page": page} for page in range(count)], "PAGE")


@demo_map.map("PAGE")
def map_page(args: sj.MapArgs) -> sj.ExecuteResult:
    item = args.map_result if isinstance(args.map_result, dict) else json.loads(args.map_result)
    return sj.ExecuteResult.success(item["page"] * 10)
# --8<-- [end:map]


# --- map-reduce: numbers are mapped, summed per shard, then merged ---------

# --8<-- [start:mapreduce]
demo_mr = sj.MapReduceExecutor("demoMapReduceJob")


@demo_mr.map()
def mr_root(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.mr_do_map(list(range(1, 11)), "DOUBLE")


@demo_mr.map("DOUBLE")
def mr_double(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.ExecuteResult.success(int(args.map_result) * 2)


@demo_mr.reduce()
def mr_reduce(args: sj.ReduceArgs) -> sj.ExecuteResult:
    # each element is the text of one map result
    return sj.ExecuteResult.success(sum(int(x) for x in args.map_result))


@demo_mr.merge()
def mr_merge(args: sj.MergeReduceArgs) -> sj.ExecuteResult:
    return sj.ExecuteResult.success(sum(int(x) for x in args.reduces))
# --8<-- [end:mapreduce]


# --- workflow: three nodes sharing context ---------------------------------

# --8<-- [start:workflow]
@sj.job("demoWorkflowExtract")
def wf_extract(args: sj.JobArgs) -> sj.ExecuteResult:
    args.append_context("rows", 42)
    args.append_context("source", "orders.csv")
    return sj.ExecuteResult.success("extracted")


@sj.job("demoWorkflowTransform")
def wf_transform(args: sj.JobArgs) -> sj.ExecuteResult:
    rows = args.get_wf_context("rows")
    args.append_context("clean_rows", rows - 2)
    return sj.ExecuteResult.success(f"cleaned {rows} rows")


@sj.job("demoWorkflowLoad")
def wf_load(args: sj.JobArgs) -> sj.ExecuteResult:
    loaded = f"loaded {args.get_wf_context('clean_rows')} rows from {args.get_wf_context('source')}"
    sj.SnailLog.REMOTE.info(loaded)
    return sj.ExecuteResult.success(loaded)


ALL: List[sj.Executor] = [cluster_job, broadcast_job, sharding_job, stop_aware_job, async_job, typed_job,
                          demo_map, demo_mr, wf_extract, wf_transform, wf_load]
# --8<-- [end:workflow]
