"""The client-wide cap on running thread tasks (SNAIL_MAX_RUNNING), the
fair ring of waiting batches, the queue limit (SNAIL_MAX_QUEUED) and the
``refuse`` policy (SNAIL_WHEN_BUSY), through the real inbound gRPC server."""

import asyncio
import threading
import time
from collections import Counter

import pytest

import snailjob as sj
from snailjob.errors import ConfigurationError
from snailjob.settings import Settings

from .conftest import dispatch, dispatch_body, wait_for

REPORT = "/report/dispatch/result"


class Gauge:
    """Counts jobs running at once, in total and per batch, and the order they started in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = Counter()
        self.peak = Counter()
        self.started = []

    def enter(self, batch):
        with self.lock:
            self.started.append(batch)
            self.active[batch] += 1
            self.active["all"] += 1
            for key in (batch, "all"):
                self.peak[key] = max(self.peak[key], self.active[key])

    def leave(self, batch):
        with self.lock:
            self.active[batch] -= 1
            self.active["all"] -= 1


def sleeper(gauge, seconds, name="nap"):
    @sj.job(name)
    def nap(args):
        gauge.enter(args.task_batch_id)
        try:
            time.sleep(seconds)
        finally:
            gauge.leave(args.task_batch_id)
        return args.task_id

    return nap


def blocker(release, gauge=None, name="hold"):
    @sj.job(name)
    def hold(args):
        if gauge is not None:
            gauge.enter(args.task_batch_id)
        try:
            assert release.wait(10), "never released"
        finally:
            if gauge is not None:
                gauge.leave(args.task_batch_id)
        return args.task_id

    return hold


def reported(transport):
    return Counter(r[0]["taskId"] for r in transport.bodies(REPORT))


def send(client, executor, batch, parallel=1, **fields):
    body = dispatch_body(executor, 3, taskBatchId=batch, parallelNum=parallel, taskName="SHARDING_TASK", **fields)
    return body["taskId"], dispatch(client.host_port, body)


def test_the_cap_bounds_running_tasks_across_batches_and_each_batch_keeps_parallel_num(make_client):
    gauge = Gauge()
    client, transport = make_client([sleeper(gauge, 0.1)], snail_max_running=4)
    ids = []
    for batch in range(2000, 2006):  # 6 batches x 3 tasks, parallelNum 2: 12 could run at once without the cap
        for _ in range(3):
            task_id, reply = send(client, "nap", batch, parallel=2)
            assert (reply.status, reply.data) == (1, "true")
            ids.append(task_id)
    wait_for(lambda: len(reported(transport)) == len(ids), timeout=10)
    assert reported(transport) == Counter(ids)  # every task reported once
    assert gauge.peak["all"] == 4
    assert max(gauge.peak[b] for b in range(2000, 2006)) == 2
    wait_for(lambda: client.stats()["threads_busy"] == 0, what="threads given back")
    assert client.stats()["tasks_queued"] == 0


def test_a_small_batch_does_not_wait_for_a_big_one_to_drain(make_client):
    gauge, gate = Gauge(), threading.Event()

    @sj.job("gated")
    def gated(args):
        gauge.enter(args.task_batch_id)
        gate.wait(10)
        time.sleep(0.02)
        gauge.leave(args.task_batch_id)

    client, transport = make_client([gated], snail_max_running=2)
    big = [send(client, "gated", 2100, parallel=2)[0] for _ in range(30)]
    small, _ = send(client, "gated", 2101)
    gate.set()
    wait_for(lambda: len(reported(transport)) == 31, timeout=10)
    # The two threads run the big batch's first two tasks; the first of them to
    # finish hands its thread to the small batch, which waits in the ring.
    assert gauge.started.index(2101) == 2, gauge.started
    assert reported(transport) == Counter(big + [small])


def test_threads_go_round_the_waiting_batches(make_client):
    gauge = Gauge()
    release = threading.Event()
    client, transport = make_client([sleeper(gauge, 0.03), blocker(release)], snail_max_running=1)
    send(client, "hold", 2199)  # takes the only thread while the queues fill
    for batch in (2200, 2201, 2202):
        for _ in range(4):
            send(client, "nap", batch, parallel=4)
    release.set()
    wait_for(lambda: len(reported(transport)) == 13, timeout=10)
    assert gauge.started == [2200, 2201, 2202] * 4


def test_beyond_the_queue_limit_a_dispatch_is_refused_and_nothing_accepted_is_lost(make_client):
    release = threading.Event()
    client, transport = make_client([blocker(release)], snail_max_running=1, snail_max_queued=2)
    accepted = [send(client, "hold", 2300)[0]]
    wait_for(lambda: client.stats()["threads_busy"] == 1 and client.stats()["tasks_queued"] == 0)
    accepted += [send(client, "hold", 2301)[0], send(client, "hold", 2302)[0]]
    refused_id, reply = send(client, "hold", 2303)
    assert (reply.status, reply.data) == (1, "false")
    assert "SNAIL_MAX_QUEUED=2" in reply.message and "another node" in reply.message
    assert client.stats()["tasks_refused"] == 1
    release.set()
    wait_for(lambda: len(reported(transport)) == 3, timeout=10)
    time.sleep(0.2)
    assert reported(transport) == Counter(accepted)
    assert refused_id not in reported(transport)


def test_beyond_the_queued_bytes_a_dispatch_is_refused_and_nothing_accepted_is_lost(make_client):
    """Arguments of waiting tasks are bounded in characters (SNAIL_MAX_QUEUED_BYTES); a
    stopped batch and a started task give theirs back."""
    release = threading.Event()
    client, transport = make_client([blocker(release)], snail_max_running=1, snail_max_queued_bytes=1_000_000)
    big = {"argsStr": '{"jobParams": "' + "x" * 400_000 + '"}'}
    accepted = [send(client, "hold", 2350, **big)[0]]  # runs: holds no queue budget
    wait_for(lambda: client.stats()["threads_busy"] == 1 and client.stats()["tasks_queued"] == 0)
    assert client.stats()["queued_bytes"] == 0
    accepted += [send(client, "hold", 2351, **big)[0], send(client, "hold", 2352, **big)[0]]
    assert client.stats()["queued_bytes"] == 2 * len(big["argsStr"])
    refused_id, reply = send(client, "hold", 2353, **big)
    assert (reply.status, reply.data) == (1, "false")
    assert "SNAIL_MAX_QUEUED_BYTES=1000000" in reply.message and "another node" in reply.message
    small_id, reply = send(client, "hold", 2353)  # a small one still fits
    assert reply.data == "true"
    accepted.append(small_id)
    client.dispatcher.stop_batch(2352)
    dropped = accepted.pop(2)
    assert client.stats()["queued_bytes"] == len(big["argsStr"]) + len(dispatch_body("hold")["argsStr"])
    release.set()
    wait_for(lambda: len(reported(transport)) == 3, timeout=10)
    time.sleep(0.2)
    assert reported(transport) == Counter(accepted)
    assert refused_id not in reported(transport) and dropped not in reported(transport)
    assert client.stats()["queued_bytes"] == 0


def test_refuse_policy_refuses_a_batch_without_a_thread_but_queues_within_a_running_batch(make_client):
    release = threading.Event()
    client, transport = make_client([blocker(release)], snail_max_running=1, snail_when_busy="refuse")
    first, _ = send(client, "hold", 2400)
    wait_for(lambda: client.stats()["threads_busy"] == 1)
    _, reply = send(client, "hold", 2401)
    assert (reply.status, reply.data) == (1, "false")
    assert "SNAIL_MAX_RUNNING=1" in reply.message and "SNAIL_WHEN_BUSY=refuse" in reply.message
    second, reply = send(client, "hold", 2400)  # its batch already runs here: waits for its own thread
    assert (reply.status, reply.data) == (1, "true")
    release.set()
    wait_for(lambda: len(reported(transport)) == 2, timeout=10)
    assert reported(transport) == Counter([first, second])


def test_a_waiting_batch_that_is_stopped_never_runs_and_frees_its_place(make_client):
    release = threading.Event()
    gauge = Gauge()
    client, transport = make_client([blocker(release, gauge)], snail_max_running=1)
    first, _ = send(client, "hold", 2500)
    send(client, "hold", 2501)
    wait_for(lambda: client.stats()["threads_busy"] == 1 and client.stats()["tasks_queued"] == 1)
    assert client.dispatcher.stop_batch(2501) == 1
    # the first batch's task may still be on its way to its thread on a loaded machine
    wait_for(lambda: client.stats()["tasks_queued"] == 0, what="the stopped batch's place freed")
    release.set()
    later, _ = send(client, "hold", 2502)
    wait_for(lambda: len(reported(transport)) == 2, timeout=10)
    assert reported(transport) == Counter([first, later])
    assert 2501 not in gauge.started
    wait_for(lambda: client.stats()["threads_busy"] == 0)


def test_a_waiting_task_times_out_from_its_arrival(make_client):
    release = threading.Event()
    gauge = Gauge()
    client, transport = make_client([blocker(release, gauge)], snail_max_running=1)
    first, _ = send(client, "hold", 2600)
    send(client, "hold", 2601, executorTimeout=1)
    wait_for(lambda: client.stats()["batches_active"] == 1, timeout=5, what="the waiting batch timed out")
    release.set()
    wait_for(lambda: len(reported(transport)) == 1, timeout=5)
    time.sleep(0.2)
    assert reported(transport) == Counter([first])
    assert gauge.started == [2600]


def test_coroutine_jobs_take_no_thread_and_are_not_capped(make_client):
    lock, active, peak = threading.Lock(), [0], [0]

    @sj.job("nap_async")
    async def nap_async(args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.3)
        with lock:
            active[0] -= 1

    client, transport = make_client([nap_async], snail_max_running=1)
    for batch in range(2700, 2705):
        send(client, "nap_async", batch)
    wait_for(lambda: len(reported(transport)) == 5, timeout=10)
    assert peak[0] == 5
    assert client.stats()["threads_busy"] == 0


def test_the_settings_are_checked_and_named():
    defaults = Settings.load(env_file=None)
    assert (defaults.snail_max_running, defaults.snail_max_queued, defaults.snail_when_busy) == (512, 100_000, "queue")
    settings = Settings.load(env_file=None, snail_max_running=0, snail_when_busy=" Refuse ")
    assert (settings.snail_max_running, settings.snail_when_busy) == (0, "refuse")
    with pytest.raises(ConfigurationError, match="SNAIL_WHEN_BUSY='drop'"):
        Settings.load(env_file=None, snail_when_busy="drop")
    with pytest.raises(ConfigurationError, match="SNAIL_MAX_QUEUED"):
        Settings.load(env_file=None, snail_max_queued=-1)
