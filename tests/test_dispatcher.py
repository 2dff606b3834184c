"""Per-batch pools, parallelNum, stop, timeout and thread hygiene."""

import json
import threading
import time

import snailjob as sj
from snailjob.dispatcher import Dispatcher
from snailjob.work import Work

from .conftest import call_inbound, dispatch, dispatch_body, wait_for

REPORT = "/report/dispatch/result"


def stop(port, batch_id):
    reply = call_inbound(port, "/job/stop/v1",
                         json.dumps([{"jobId": 1, "taskBatchId": batch_id, "groupName": "g"}]))
    assert (reply.status, reply.data) == (1, "true")


def test_parallel_num_limits_concurrency_per_batch(make_client):
    lock, active, peak = threading.Lock(), [0], [0]

    @sj.job("busy")
    def busy(args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.15)
        with lock:
            active[0] -= 1
        return args.sharding_index

    client, transport = make_client([busy])
    for i in range(6):
        dispatch(client.host_port, dispatch_body("busy", 3, taskBatchId=900, parallelNum=2,
                                                 shardingIndex=i, shardingTotal=6,
                                                 taskName="SHARDING_TASK"))
    reports = wait_for(lambda: len(transport.bodies(REPORT)) == 6 and transport.bodies(REPORT))
    assert peak[0] == 2
    assert sorted(r[0]["executeResult"]["result"] for r in reports) == list(range(6))


def test_stop_sets_event_and_suppresses_report(make_client):
    seen_stop = threading.Event()

    @sj.job("coop")
    def coop(args):
        while not sj.ThreadPoolCache.event_is_set(args.task_batch_id):
            time.sleep(0.01)
        seen_stop.set()
        return "finished after stop"

    client, transport = make_client([coop])
    dispatch(client.host_port, dispatch_body("coop", taskBatchId=901))
    time.sleep(0.1)
    stop(client.host_port, 901)
    assert seen_stop.wait(5)
    time.sleep(0.3)
    assert transport.bodies(REPORT) == []
    assert sj.ThreadPoolCache.event_is_set(901)


def test_stop_interrupts_code_that_never_checks(make_client):
    state = {}
    interrupted = threading.Event()

    @sj.job("stubborn")
    def stubborn(args):
        try:
            n = 0
            while True:  # never looks at the stop event
                n += 1
                if n % 1000 == 0:
                    time.sleep(0.001)
        except sj.TaskInterrupted:
            state["caught"] = True
            interrupted.set()
            raise

    client, transport = make_client([stubborn], snail_interrupt_delay=0.3)
    dispatch(client.host_port, dispatch_body("stubborn", taskBatchId=902))
    time.sleep(0.2)
    stopped_at = time.monotonic()
    stop(client.host_port, 902)
    assert interrupted.wait(5)
    assert time.monotonic() - stopped_at >= 0.3  # the job had the delay to return on its own
    time.sleep(0.3)
    assert transport.bodies(REPORT) == []
    wait_for(lambda: client.dispatcher.batch_count() == 0)


def test_stop_drops_queued_tasks_of_the_batch(make_client):
    ran = []

    @sj.job("queued")
    def queued(args):
        ran.append(args.sharding_index)
        while not sj.ThreadPoolCache.event_is_set(args.task_batch_id):
            time.sleep(0.01)

    client, transport = make_client([queued])
    for i in range(3):
        dispatch(client.host_port, dispatch_body("queued", 3, taskBatchId=903, parallelNum=1,
                                                 shardingIndex=i, taskName="SHARDING_TASK"))
    wait_for(lambda: ran)
    stop(client.host_port, 903)
    time.sleep(0.3)
    assert ran == [0] and transport.bodies(REPORT) == []


def test_executor_timeout_interrupts_and_does_not_report(make_client):
    interrupted = threading.Event()

    @sj.job("sleepy")
    def sleepy(args):
        try:
            for _ in range(1000):
                time.sleep(0.01)
        except sj.TaskInterrupted:
            interrupted.set()
            raise
        return "too late"

    client, transport = make_client([sleepy])
    started = time.monotonic()
    dispatch(client.host_port, dispatch_body("sleepy", taskBatchId=904, executorTimeout=1))
    assert interrupted.wait(5)
    assert 0.9 <= time.monotonic() - started < 4
    assert sj.ThreadPoolCache.event_is_set(904)
    time.sleep(0.2)
    assert transport.bodies(REPORT) == []


def test_timeout_does_not_fire_for_finished_tasks(make_client):
    client, transport = make_client([sj.job("quick")(lambda args: "ok")])
    dispatch(client.host_port, dispatch_body("quick", taskBatchId=905, executorTimeout=1))
    wait_for(lambda: transport.bodies(REPORT))
    time.sleep(1.3)
    assert not sj.ThreadPoolCache.event_is_set(905)


def test_no_thread_growth_over_many_batches(make_client):
    @sj.job("t")
    def t(args):
        return 1

    mr = sj.MapReduceExecutor("mr")
    mr.map()(lambda args: 2)
    mr.reduce()(lambda args: 3)
    client, transport = make_client([t, mr])

    def threads():
        # the inbound gRPC pool grows up to SNAIL_INBOUND_WORKERS and is not per batch
        return [t.name for t in threading.enumerate() if not t.name.startswith("snailjob-inbound")]

    dispatch(client.host_port, dispatch_body("t"))  # warm up: starts the one timeout thread
    wait_for(lambda: len(transport.bodies(REPORT)) == 1 and client.dispatcher.batch_count() == 0)
    baseline = len(threads())
    count = 1
    for _ in range(150):
        for kind, extra in [(1, {}), (2, {"taskName": "BROADCAST_TASK"}),
                            (3, {"taskName": "SHARDING_TASK", "shardingIndex": 0, "parallelNum": 4}),
                            (4, {"taskName": "ROOT_MAP", "mrStage": 1, "parallelNum": 3}),
                            (5, {"taskName": "REDUCE_TASK", "mrStage": 2, "parallelNum": 2})]:
            executor = "t" if kind <= 3 else "mr"
            assert dispatch(client.host_port, dispatch_body(executor, kind, **extra)).data == "true"
            count += 1
    wait_for(lambda: len(transport.bodies(REPORT)) == count, timeout=30)
    # workers of non-cluster batches linger up to 1 s, then exit
    try:
        wait_for(lambda: len(threads()) <= baseline and client.dispatcher.batch_count() == 0, timeout=10)
    except AssertionError:
        raise AssertionError(f"baseline {baseline}, now {threads()}") from None


class _Note(Work):
    """The smallest work: calls ``func`` in batch ``batch`` (``parallel`` 1)."""

    def __init__(self, func, batch):
        super().__init__(func)
        self.batch = batch
        self.event = threading.Event()

    @property
    def key(self):
        return self.batch

    def describe(self):
        return f"note of {self.batch}"

    @property
    def stop_event(self):
        return self.event

    def enter(self):
        return None

    def leave(self, token):
        pass

    def run(self):
        return self.func()

    async def run_async(self):
        return await self.func()


def test_a_worker_with_nothing_queued_next_may_wait_to_deliver():
    """``Work.may_wait`` (a result may then be delivered by a blocking call
    on the worker's thread): only for the last thread task of its batch when
    no other batch waits for a thread, never for a coroutine."""
    dispatcher = Dispatcher()
    release = threading.Event()
    seen, all_done = {}, threading.Event()

    def done(work, outcome):
        seen[outcome] = work.may_wait
        if len(seen) == 3:
            all_done.set()

    async def third():
        return "coroutine"

    try:
        dispatcher.submit(_Note(lambda: release.wait(5) and "first", 1), done)
        dispatcher.submit(_Note(lambda: "second", 1), done)  # queued behind the first (parallel 1)
        release.set()
        wait_for(lambda: len(seen) == 2)
        dispatcher.submit(_Note(third, 2), done)
        assert all_done.wait(5)
        assert seen == {"first": False, "second": True, "coroutine": False}
    finally:
        dispatcher.close()


def test_a_parked_worker_is_woken_at_once_for_the_next_batch():
    """A worker with nothing left parks for ``linger`` seconds; a batch that
    comes meanwhile is run by it at once, not when its wait times out."""
    dispatcher = Dispatcher(linger=5.0)
    ran = []

    def note(batch):
        def record():
            ran.append((batch, threading.get_ident(), time.monotonic()))
        return _Note(record, batch)

    try:
        dispatcher.submit(note(1), lambda work, outcome: None)
        wait_for(lambda: len(ran) == 1 and len(dispatcher._idle) == 1)
        time.sleep(0.05)  # into its wait
        submitted = time.monotonic()
        dispatcher.submit(note(2), lambda work, outcome: None)
        wait_for(lambda: len(ran) == 2, timeout=8)
        assert ran[1][1] == ran[0][1]  # the same thread
        assert ran[1][2] - submitted < 1.0  # woken, not timed out (linger is 5 s)
        # and again once it has parked a second time
        wait_for(lambda: len(dispatcher._idle) == 1)
        dispatcher.submit(note(3), lambda work, outcome: None)
        wait_for(lambda: len(ran) == 3)
        assert ran[2][1] == ran[0][1]
    finally:
        dispatcher.close()
