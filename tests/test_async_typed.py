"""asyncio executors, typed parameters and the job-context API (against the
emulator, real gRPC)."""

import asyncio
import dataclasses
import inspect
import json
import threading
import typing
from typing import Dict, List

import pytest
from pydantic import BaseModel

import snailjob as sj

SUCCESS, FAIL, STOP = 3, 4, 5


class Order(BaseModel):
    order_id: int
    qty: int = 1


@dataclasses.dataclass
class Window:
    start: str
    days: int


# --- async executors --------------------------------------------------------

def test_async_job_per_task_type(snailjob_emulator, run_client):
    loops = set()

    @sj.job("acluster")
    async def acluster(args: sj.JobArgs):
        loops.add(threading.current_thread().name)
        await asyncio.sleep(0.01)
        sj.SnailLog.REMOTE.info("async log %s", args.task_id)
        return f"async {args.job_params}"

    @sj.job("ashard")
    async def ashard(args: sj.ShardingJobArgs):
        return args.sharding_index

    amap = sj.MapReduceExecutor("amr")

    @amap.map()
    async def root(args):
        return await sj.mr_do_map_async([1, 2, 3, 4], "LEAF")

    @amap.map("LEAF")
    async def leaf(args):
        return int(args.map_result) * 10

    @amap.reduce()
    async def reduce(args):
        return sum(int(x) for x in args.map_result)

    @amap.merge()
    async def merge(args):
        return sum(int(x) for x in args.reduces)

    run_client([acluster, ashard, amap])
    snailjob_emulator.wait_for_clients(1)
    cluster = snailjob_emulator.trigger("acluster", 1, args_str="hi")
    assert cluster.wait(10) == SUCCESS and cluster.tasks[0].result == "async hi"
    broadcast = snailjob_emulator.trigger("acluster", 2, args_str="all")
    assert broadcast.wait(10) == SUCCESS
    shards = snailjob_emulator.trigger("ashard", 3, args_str='["a","b","c"]')
    assert shards.wait(10) == SUCCESS and sorted(t.result for t in shards.tasks) == ["0", "1", "2"]
    mr = snailjob_emulator.trigger("amr", 5, shard_num=2)
    assert mr.wait(15) == SUCCESS and mr.tasks_in_stage(3)[0].result == "100"
    mapped = snailjob_emulator.trigger("amr", 4)
    assert mapped.wait(15) == SUCCESS and len(mapped.tasks_named("LEAF")) == 4
    assert loops == {"snailjob-asyncio"}
    snailjob_emulator.wait_until(lambda: any(e["taskId"] == cluster.tasks[0].task_id
                                             for e in snailjob_emulator.logs))


def test_async_stop_cancels_and_sends_no_report(snailjob_emulator, run_client):
    cancelled = threading.Event()

    @sj.job("along")
    async def along(args):
        try:
            while True:  # never checks the stop event
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    run_client([along])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("along", 1)
    snailjob_emulator.wait_until(lambda: bool(batch.tasks) and bool(batch.tasks[0].dispatch_replies))
    batch.stop()
    assert batch.wait(5) == STOP
    assert cancelled.wait(5)
    assert snailjob_emulator.results == []


def test_async_timeout_cancels(snailjob_emulator, run_client):
    cancelled = threading.Event()

    @sj.job("aslow")
    async def aslow(args):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    run_client([aslow])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("aslow", 1, executor_timeout=1)
    assert batch.wait(5) == STOP
    assert cancelled.wait(3)
    assert snailjob_emulator.results == []


def test_async_cooperative_stop(snailjob_emulator, run_client):
    started, seen = threading.Event(), threading.Event()

    @sj.job("acoop")
    async def acoop(args):
        started.set()
        stopped = await sj.current_task().wait_stopped_async(30)
        if stopped:
            seen.set()
        return "after stop"

    run_client([acoop], snail_interrupt_delay=5)
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("acoop", 1)
    assert started.wait(5)  # a stop before the coroutine starts cancels it: nothing to cooperate with
    batch.stop()
    assert seen.wait(5)
    assert batch.wait(5) == STOP and snailjob_emulator.results == []


def test_parallel_num_limits_coroutines(snailjob_emulator, run_client):
    active, peak = [0], [0]

    @sj.job("apar")
    async def apar(args):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.1)
        active[0] -= 1
        return args.sharding_index

    run_client([apar])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("apar", 3, args_str=json.dumps([str(i) for i in range(8)]), parallel_num=3)
    assert batch.wait(10) == SUCCESS
    assert peak[0] == 3


# --- typed parameters -------------------------------------------------------

def test_typed_params_accepted_and_rejected(snailjob_emulator, run_client):
    @sj.job("typedModel")
    def typed_model(args: sj.JobArgs[Order]):
        assert isinstance(args.job_params, Order)
        return args.job_params.qty * 2

    @sj.job("typedDataclass", params=Window)
    def typed_dc(args):
        assert isinstance(args.job_params, Window)
        return args.job_params.days

    @sj.job("typedInt", params=int)
    async def typed_int(args):
        return args.job_params + 1

    @sj.job("typedDict", params=Dict[str, int])
    def typed_dict(args):
        return sorted(args.job_params.values())

    run_client([typed_model, typed_dc, typed_int, typed_dict])
    snailjob_emulator.wait_for_clients(1)
    cases = [
        ("typedModel", '{"order_id": 7, "qty": 3}', SUCCESS, "6"),
        ("typedDataclass", '{"start": "2026-01-01", "days": 5}', SUCCESS, "5"),
        ("typedInt", "41", SUCCESS, "42"),
        ("typedDict", '{"a": 2, "b": 1}', SUCCESS, "[1,2]"),
        ("typedModel", '{"order_id": "seven"}', FAIL, "order_id: Input should be a valid integer"),
        ("typedModel", '{"qty": 2}', FAIL, "order_id: Field required"),
        ("typedDataclass", '{"start": "x"}', FAIL, "days: Field required"),
        ("typedInt", "not a number", FAIL, "invalid job_params for int"),
        ("typedModel", "", FAIL, "invalid job_params: empty, expected Order"),
    ]
    for executor, params, status, fragment in cases:
        batch = snailjob_emulator.trigger(executor, 1, args_str=params)
        assert batch.wait(10) == status, (executor, params)
        task = batch.tasks[0]
        if status == SUCCESS:
            assert task.result == fragment
        else:
            assert fragment in task.execute_result["message"], task.execute_result


def test_typed_map_items_and_reduce_inputs(snailjob_emulator, run_client):
    mr = sj.MapReduceExecutor("typedMr")

    @mr.map()
    def root(args):
        return sj.mr_do_map([{"order_id": i, "qty": i} for i in range(1, 5)], "ORDER")

    @mr.map("ORDER", item=Order)
    def order(args):
        assert isinstance(args.map_result, Order)
        return args.map_result.qty

    @mr.reduce(item=int)
    def reduce(args):
        assert all(isinstance(x, int) for x in args.map_result)
        return sum(args.map_result)

    @mr.merge(item=int)
    def merge(args):
        return sum(args.reduces)

    bad = sj.MapExecutor("typedBad")
    bad.map()(lambda args: sj.mr_do_map([{"order_id": "x"}], "ORDER"))
    bad.map("ORDER", item=Order)(lambda args: "never")

    run_client([mr, bad])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("typedMr", 5, shard_num=2)
    assert batch.wait(15) == SUCCESS and batch.tasks_in_stage(3)[0].result == "10"
    failing = snailjob_emulator.trigger("typedBad", 4)
    assert failing.wait(15) == FAIL
    leaf = failing.tasks_named("ORDER")[0]
    assert "invalid map_result for Order: order_id: Input should be a valid integer" in leaf.execute_result["message"]


def test_untyped_executors_are_unchanged(snailjob_emulator, run_client):
    @sj.job("raw")
    def raw(args: sj.JobArgs):
        return [type(args.job_params).__name__, args.job_params]

    run_client([raw])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("raw", 1, args_str='{"a": 1}')
    assert batch.wait(10) == SUCCESS and json.loads(batch.tasks[0].result) == ["str", '{"a": 1}']


# --- context API ------------------------------------------------------------

def test_context_api_inside_and_outside(snailjob_emulator, run_client):
    seen = {}

    @sj.job("ctx1")
    def ctx1(args):
        ctx = sj.current_task()
        seen["ids"] = (ctx.job_id, ctx.task_batch_id, ctx.task_id, ctx.task_type, ctx.retry_count)
        seen["wf"] = (ctx.workflow_task_batch_id, ctx.workflow_node_id)
        seen["stopped"] = ctx.is_stopped()
        seen["compat"] = sj.SnailContextManager.get_job_context().taskId
        ctx.append_context("from_ctx_api", 1)
        seen["context"] = ctx.wf_context
        return "ok"

    @sj.job("ctx2")
    async def ctx2(args):
        ctx = sj.current_task()
        seen["async_read"] = ctx.get_wf_context("from_ctx_api")
        return "ok"

    run_client([ctx1, ctx2])
    snailjob_emulator.wait_for_clients(1)
    wf = snailjob_emulator.trigger_workflow([{"executor": "ctx1"}, {"executor": "ctx2"}], wf_context={"seed": 0})
    assert wf.wait(10) == SUCCESS
    batch = wf.batches[0]
    assert seen["ids"] == (batch.job_id, batch.id, batch.tasks[0].task_id, 1, 0)
    assert seen["wf"] == (wf.id, wf.node_ids[0])
    assert seen["stopped"] is False and seen["compat"] == batch.tasks[0].task_id
    assert seen["context"] == {"seed": 0, "from_ctx_api": 1}
    assert seen["async_read"] == 1
    with pytest.raises(sj.NotInJobError, match="no SnailJob task is running"):
        sj.current_task()


# --- decorated functions stay plain -----------------------------------------

def test_decorated_functions_keep_signature_and_hints():
    def original(args: sj.JobArgs[Order]) -> int:
        return args.job_params.qty

    async def coro(args: sj.MapArgs) -> str:
        return "x"

    decorated = sj.job("plainCall")(original)
    assert decorated is original
    assert inspect.signature(decorated) == inspect.signature(original)
    assert typing.get_type_hints(decorated)["args"] == sj.JobArgs[Order]
    ex = sj.MapExecutor("m")
    assert ex.map("X", item=Order)(coro) is coro and inspect.iscoroutinefunction(coro)
    # callable without a server, e.g. in a unit test
    assert decorated(sj.JobArgs(job_params=Order(order_id=1, qty=4))) == 4
    assert asyncio.run(coro(sj.MapArgs())) == "x"


def test_parallel_limit_type_list_for_reduce_items():
    from snailjob.args import ReduceArgs, prepare_args

    def reduce(args):
        return args

    sj.MapReduceExecutor("x").reduce(item=List[int])(reduce)
    args = prepare_args(reduce, ReduceArgs(map_result=["[1,2]", "[3]"]))
    assert args.map_result == [[1, 2], [3]]
