"""The client against the server emulator (real gRPC both ways): every task
type, workflow context, stop, timeout, retries, logs, registration, token."""

import json
import threading
import time

import pytest

import snailjob as sj

from .conftest import client_for

SUCCESS, FAIL, STOP = 3, 4, 5


@sj.job("echoJob")
def echo_job(args):
    sj.SnailLog.REMOTE.info("echo %s", args.job_params)
    return {"echo": args.job_params}


def test_cluster(snailjob_emulator, run_client):
    run_client([echo_job])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("echoJob", 1, args_str="hi")
    assert batch.wait(10) == SUCCESS
    assert json.loads(batch.tasks[0].result) == {"echo": "hi"}
    snailjob_emulator.wait_until(lambda: snailjob_emulator.logs)
    entry = snailjob_emulator.logs[0]
    assert entry["taskId"] == batch.tasks[0].task_id


def test_broadcast_runs_once_per_node(snailjob_emulator, run_client):
    seen = []
    job = sj.job("bc")(lambda args: seen.append(args.task_id) or "done")
    run_client([job])
    run_client([job])
    snailjob_emulator.wait_for_clients(2)
    batch = snailjob_emulator.trigger("bc", 2)
    assert batch.wait(10) == SUCCESS
    assert len(batch.tasks) == 2 and len(set(seen)) == 2
    assert {t.node for t in batch.tasks} == {n.host_id for n in snailjob_emulator.nodes}


def test_sharding_three_shards(snailjob_emulator, run_client):
    @sj.job("shard")
    def shard(args: sj.ShardingJobArgs):
        return f"{args.sharding_index}/{args.sharding_total}:{args.job_params}"

    run_client([shard])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("shard", 3, args_str='["a","b","c"]', parallel_num=2)
    assert batch.wait(10) == SUCCESS
    assert sorted(t.result for t in batch.tasks) == ["0/3:a", "1/3:b", "2/3:c"]


def test_map_fans_out_to_300(snailjob_emulator, run_client):
    mapper = sj.MapExecutor("mapper")

    @mapper.map()
    def root(args):
        return sj.mr_do_map([{"n": i} for i in range(300)], "LEAF")

    @mapper.map("LEAF")
    def leaf(args):
        return args.map_result["n"] * 2

    run_client([mapper])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("mapper", 4, parallel_num=8)
    assert batch.wait(20) == SUCCESS
    leaves = batch.tasks_named("LEAF")
    assert len(leaves) == 300
    assert sorted(int(t.result) for t in leaves) == [2 * i for i in range(300)]


def test_map_reduce_with_merge(snailjob_emulator, run_client):
    mr = sj.MapReduceExecutor("mr")

    @mr.map()
    def root(args):
        return sj.mr_do_map(list(range(1, 11)), "DOUBLE")

    @mr.map("DOUBLE")
    def double(args):
        return int(args.map_result) * 2

    @mr.reduce()
    def reduce(args):
        assert all(isinstance(x, str) for x in args.map_result)
        return sum(int(x) for x in args.map_result)

    @mr.merge()
    def merge(args):
        return sum(int(x) for x in args.reduces)

    run_client([mr])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("mr", 5, shard_num=2, parallel_num=4)
    assert batch.wait(20) == SUCCESS
    reduces = batch.tasks_in_stage(2)
    merges = batch.tasks_in_stage(3)
    assert len(reduces) == 2 and len(merges) == 1
    assert sum(int(t.result) for t in reduces) == 110
    assert merges[0].result == "110"


def test_workflow_passes_context(snailjob_emulator, run_client):
    @sj.job("wf1")
    def wf1(args):
        args.append_context("from_node_1", "hello")
        return "one"

    @sj.job("wf2")
    def wf2(args):
        args.append_context("from_node_2", args.get_wf_context("from_node_1") + "!")
        return "two"

    seen = {}

    @sj.job("wf3")
    def wf3(args):
        seen.update(args.wf_context)
        return "three"

    run_client([wf1, wf2, wf3])
    snailjob_emulator.wait_for_clients(1)
    wf = snailjob_emulator.trigger_workflow([{"executor": "wf1"}, {"executor": "wf2"}, {"executor": "wf3"}],
                                            wf_context={"initial": 1})
    assert wf.wait(15) == SUCCESS
    assert seen == {"initial": 1, "from_node_1": "hello", "from_node_2": "hello!"}


def test_map_context_travels_with_sub_tasks(snailjob_emulator, run_client):
    mapper = sj.MapExecutor("wfmap")
    seen = []

    @mapper.map()
    def root(args):
        args.append_context("root_key", 7)
        return sj.mr_do_map([1, 2], "CHILD")

    @mapper.map("CHILD")
    def child(args):
        seen.append(args.get_wf_context("root_key"))
        return "ok"

    @sj.job("after")
    def after(args):
        seen.append(("after", args.get_wf_context("root_key")))

    run_client([mapper, after])
    snailjob_emulator.wait_for_clients(1)
    wf = snailjob_emulator.trigger_workflow([{"executor": "wfmap", "task_type": 4}, {"executor": "after"}])
    assert wf.wait(15) == SUCCESS
    assert ("after", 7) in seen
    children = wf.batches[0].tasks_named("CHILD")
    assert all(t.wf_context_changes == {"root_key": 7} for t in children)


def test_stop_from_console(snailjob_emulator, run_client):
    saw_stop = threading.Event()

    @sj.job("long")
    def long_job(args):
        while not sj.ThreadPoolCache.event_is_set(args.task_batch_id):
            time.sleep(0.02)
        saw_stop.set()
        return "late result"

    client = run_client([long_job])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("long", 1, executor_timeout=60)
    snailjob_emulator.wait_until(lambda: batch.tasks and batch.tasks[0].dispatch_count == 1)
    time.sleep(0.2)
    batch.stop()
    assert batch.wait(5) == STOP
    assert saw_stop.wait(5)
    time.sleep(0.5)
    assert batch.tasks[0].status == STOP  # no late report flipped it
    assert snailjob_emulator.results == []
    assert client.stats()["results_delivered"] == 0


def test_timeout_interrupts_on_the_client(snailjob_emulator, run_client):
    interrupted = threading.Event()

    @sj.job("sleeper")
    def sleeper(args):
        try:
            for _ in range(1000):
                time.sleep(0.01)
        except sj.TaskInterrupted:
            interrupted.set()
            raise

    run_client([sleeper])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("sleeper", 1, executor_timeout=1)
    assert batch.wait(5) == STOP
    assert interrupted.wait(3)
    time.sleep(0.3)
    assert snailjob_emulator.results == []


def test_failing_job_retried_then_fails_with_reason(snailjob_emulator, run_client):
    attempts = []

    @sj.job("flaky")
    def flaky(args):
        attempts.append(args.retry_count)
        raise RuntimeError("upstream said no")

    run_client([flaky])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("flaky", 1, max_retry_times=2, retry_interval=0.1)
    assert batch.wait(10) == FAIL
    assert attempts == [0, 1, 2]
    task = batch.tasks[0]
    assert task.dispatch_count == 3
    assert task.execute_result["message"] == "RuntimeError: upstream said no"


def test_unknown_executor_refused_and_failed(snailjob_emulator, run_client):
    run_client([echo_job])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("notHere", 1)
    assert batch.wait(5) == FAIL
    reply = batch.tasks[0].dispatch_replies[0]
    assert "no executor named 'notHere'" in reply.message


def test_executors_registered(snailjob_emulator, run_client):
    run_client([echo_job, sj.MapExecutor("m2")])
    snailjob_emulator.wait_until(lambda: snailjob_emulator.registered_executors == {"echoJob", "m2"})
    node = snailjob_emulator.wait_for_clients(1)[0]
    assert node.executor_type == "2" and node.labels.get("state") == "up"


def test_wrong_token_never_online_and_says_why(snailjob_emulator, caplog):
    client = client_for(snailjob_emulator, [echo_job], snail_token="SJ_wrong_token_value")
    with caplog.at_level("WARNING", logger="snailjob"):
        client.start()
        try:
            time.sleep(1.0)
            assert snailjob_emulator.nodes == []
            assert not client.server_up
        finally:
            client.stop(grace=0)
    assert "Token authentication failed" in caplog.text
    assert "SJ_wrong_token_value" not in caplog.text
    assert caplog.text.count("refused the heartbeat") == 1  # the server answered: refused, once a minute at most


def test_stop_after_completion_is_answered(snailjob_emulator, run_client):
    run_client([sj.job("s")(lambda args: "x")])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("s", 3, args_str='["1","2"]')
    assert batch.wait(10) == SUCCESS
    snailjob_emulator.wait_until(lambda: len(snailjob_emulator.stop_calls) >= 2
                                 and all(c.finished for c in snailjob_emulator.stop_calls))
    assert [(c.status, c.data) for c in snailjob_emulator.stop_calls] == [(1, "true")] * 2


@pytest.mark.snailjob_emulator(map_report_delay=1.5)
def test_slow_map_reports_create_each_sub_task_once(snailjob_emulator, run_client):
    mapper = sj.MapExecutor("slowmap")
    mapper.map()(lambda args: sj.mr_do_map(list(range(5)), "LEAF"))
    mapper.map("LEAF")(lambda args: args.map_result)
    run_client([mapper], snail_rpc_timeout=0.5, snail_map_batch_size=2)
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("slowmap", 4)
    assert batch.wait(20) == SUCCESS
    assert sorted(int(t.result) for t in batch.tasks_named("LEAF")) == [0, 1, 2, 3, 4]
    assert len(snailjob_emulator.map_reports) == 3


def test_results_and_logs_with_lone_surrogates_are_delivered(snailjob_emulator, run_client):
    @sj.job("surrogate")
    def surrogate(args):
        name = b"report-\xff.csv".decode("utf-8", "surrogateescape")  # an undecodable file name
        sj.SnailLog.REMOTE.info("processing %s", name)
        return {"file": name, "nan": float("nan")}

    run_client([surrogate])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("surrogate", 1)
    assert batch.wait(10) == SUCCESS
    assert json.loads(batch.tasks[0].result) == {"file": "report-\udcff.csv", "nan": "nan"}
    snailjob_emulator.wait_until(lambda: snailjob_emulator.logs)
    message = [f["value"] for f in snailjob_emulator.logs[0]["fieldList"] if f["name"] == "message"][0]
    assert message == "processing report-\udcff.csv"


@pytest.mark.parametrize("task_type", [4, 5])
def test_map_batch_ends_when_the_parent_reports_after_all_its_children(snailjob_emulator, run_client, task_type):
    """The servers check a batch only when a task without children reports
    (the emulator does the same by default): a ROOT_MAP that reports after
    all its children would leave the batch RUNNING.  The sentinel sub-task's
    repeated result ends it (``mr_do_map``)."""
    executor = sj.MapExecutor("late") if task_type == 4 else sj.MapReduceExecutor("late")
    batches = []

    @executor.map()
    def root(args):
        sj.mr_do_map([1, 2, 3], "LEAF")
        # report only once every child has reported
        snailjob_emulator.wait_until(lambda: batches and all(
            t.status == SUCCESS for t in batches[0].tasks_named("LEAF")) and len(batches[0].tasks_named("LEAF")) == 3)
        return "root done"

    @executor.map("LEAF")
    def leaf(args):
        return args.map_result * 10

    if task_type == 5:
        executor.reduce()(lambda args: sum(int(x) for x in args.map_result))
        executor.merge()(lambda args: sum(int(x) for x in args.reduces))

    client = run_client([executor])
    snailjob_emulator.wait_for_clients(1)
    batches.append(snailjob_emulator.trigger("late", task_type, parallel_num=4))
    assert batches[0].wait(10) == SUCCESS
    assert sorted(int(t.result) for t in batches[0].tasks_named("LEAF")) == [10, 20, 30]
    if task_type == 5:
        assert [t.result for t in batches[0].tasks_in_stage(3)] == ["60"]
    # what ended it (counted once its reply is in, which may come after the batch ended)
    snailjob_emulator.wait_until(lambda: client.stats()["results_repeated"] >= 1)


def test_a_single_sub_task_is_its_own_sentinel(snailjob_emulator, run_client):
    mapper = sj.MapExecutor("one")
    seen = []

    @mapper.map()
    def root(args):
        return sj.mr_do_map([{"only": True}], "LEAF")

    @mapper.map("LEAF")
    def leaf(args):
        seen.append(args.map_result)
        return "ok"

    run_client([mapper])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("one", 4)
    assert batch.wait(10) == SUCCESS
    assert seen == [{"only": True}]  # the job sees the item, not the envelope


def test_map_batch_fails_when_all_children_fail_before_the_parent_reports(snailjob_emulator, run_client):
    """A failed sentinel is not repeated (the server would retry the task
    for each copy) but held back ``SENTINEL_FAILURE_DELAY`` seconds, so that
    the parent's result is stored before the check its failure makes."""
    mapper = sj.MapExecutor("allFail")
    batches = []

    @mapper.map()
    def root(args):
        sj.mr_do_map([1, 2, 3], "LEAF")
        snailjob_emulator.wait_until(lambda: batches and sum(
            t.status == FAIL for t in batches[0].tasks_named("LEAF")) >= 2)
        time.sleep(0.3)  # the two that are not the sentinel have been checked
        return "root done"

    @mapper.map("LEAF")
    def leaf(args):
        raise ValueError(f"bad item {args.map_result}")

    run_client([mapper])
    snailjob_emulator.wait_for_clients(1)
    batches.append(snailjob_emulator.trigger("allFail", 4, parallel_num=4))
    assert batches[0].wait(10) == FAIL
    assert sorted(t.status for t in batches[0].tasks_named("LEAF")) == [FAIL] * 3


def _reported(batches, task_ids):
    """Whether the emulator has a report of the task whose id a job recorded first."""
    return bool(batches and task_ids and batches[0].task(task_ids[0]).reports)


def test_a_failed_sentinel_is_reported_once(snailjob_emulator, run_client):
    """The server counts each copy of a failure as a failed attempt: a
    sentinel's failure is held back, never repeated (only a success is)."""
    mapper = sj.MapExecutor("sentinelFails")
    batches, sentinel_ids = [], []

    @mapper.map()
    def root(args):
        return sj.mr_do_map([1, 2], "LEAF")

    @mapper.map("LEAF")
    def leaf(args):
        if args.map_result == 1:  # the first item: the sentinel
            sentinel_ids.append(args.task_id)
            raise ValueError("the sentinel fails")
        # the batch stays running well past the time a repeat would come (1 s after delivery)
        snailjob_emulator.wait_until(lambda: _reported(batches, sentinel_ids), timeout=15)
        time.sleep(2.0)
        return "ok"

    run_client([mapper])
    snailjob_emulator.wait_for_clients(1)
    batches.append(snailjob_emulator.trigger("sentinelFails", 4, parallel_num=4))
    assert batches[0].wait(20) == FAIL
    sentinel = batches[0].task(sentinel_ids[0])
    assert sentinel.status == FAIL
    assert len(sentinel.reports) == 1, sentinel.reports


def test_a_sentinel_with_sub_tasks_of_its_own_is_reported_once(snailjob_emulator, run_client):
    """The server checks the batch only on the result of a task without
    children: a sentinel that made sub-tasks is not a check, so its success
    is not repeated (its own first sub-task is the sentinel of those)."""
    mapper = sj.MapExecutor("sentinelMaps")
    batches, sentinel_ids = [], []

    @mapper.map()
    def root(args):
        return sj.mr_do_map([1, 2], "LEAF")

    @mapper.map("LEAF")
    def leaf(args):
        if args.map_result == 1:
            sentinel_ids.append(args.task_id)
            return sj.mr_do_map(["deep"], "DEEP")
        snailjob_emulator.wait_until(lambda: _reported(batches, sentinel_ids), timeout=15)
        time.sleep(2.0)
        return "ok"

    @mapper.map("DEEP")
    def deep(args):
        return args.map_result

    run_client([mapper])
    snailjob_emulator.wait_for_clients(1)
    batches.append(snailjob_emulator.trigger("sentinelMaps", 4, parallel_num=4))
    assert batches[0].wait(20) == SUCCESS
    sentinel = batches[0].task(sentinel_ids[0])
    assert [t.parent_id for t in batches[0].tasks_named("DEEP")] == [sentinel.task_id]
    assert len(sentinel.reports) == 1, sentinel.reports


def test_a_lone_result_is_delivered_by_its_worker_and_a_busy_node_uses_the_loop(snailjob_emulator, run_client):
    """A thread job's result sent when no other is in flight goes out from
    the job's own thread with one blocking call (no hop, no gRPC completion
    thread started for it); results in flight together go over the loop."""
    ran_on = []
    together = threading.Barrier(8)

    @sj.job("whereJob")
    def where(args):
        ran_on.append(threading.current_thread().name)
        if args.job_params == "together":
            together.wait(10)
        return "ok"

    client = run_client([where], snail_transport="grpc")  # on the native transport: test_native_transport.py
    snailjob_emulator.wait_for_clients(1)
    blocking = []
    plain_call = client._transport.call

    def call(uri, body, timeout):
        blocking.append((uri, threading.current_thread().name))
        return plain_call(uri, body, timeout)

    client._transport.call = call
    batch = snailjob_emulator.trigger("whereJob", 1, args_str="x")
    assert batch.wait(10) == SUCCESS
    assert ("/report/dispatch/result", ran_on[0]) in blocking
    blocking.clear()
    batches = [snailjob_emulator.trigger("whereJob", 1, args_str="together") for _ in range(8)]
    assert [b.wait(10) for b in batches] == [SUCCESS] * 8
    reported_here = sum(uri == "/report/dispatch/result" for uri, _ in blocking)
    assert reported_here < 8  # the ones finishing together did not each wait
