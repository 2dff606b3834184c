# mypy: allow-untyped-defs
"""Real faults on the real server: what the client guarantees, and where the server's own limits are.

Each test has its own group and client nodes, so that the session's nodes never mix in.
What the server does in each case was read in its source first; the test asserts our side
(nothing that finished is lost) and records the server's side as a finding. docs/reliability.md,
"Real server", sums both up. Tests that cut a network link need namespaces (netns.py) and say
why they skip where they cannot have them.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from tests.e2e import harness, netns
from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_real_server import REASON_TIMEOUT, describe, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

BLOCK_PARALLEL = 3  # job block strategy: a trigger while a batch runs starts another batch


def new_group(srv, stem):
    group, token = f"py_e2e_{stem}_{uid()}", "SJ_" + uid() * 4
    srv.create_group(group, token)
    return group, token


def start_node(run, name, group, token, host=None, **env):
    return run.start_online(name, host, SNAIL_GROUP_NAME=group, SNAIL_TOKEN=token,
                            SNAIL_HOST_ID=f"py-e2e-{name}-{uid()}", **env)


def needs_hosts():
    why = netns.unavailable()
    if why:
        pytest.skip(f"needs a network namespace to cut a link: {why}")


def wait_started(run, batches, timeout=60):
    """Until every batch's e2eWhere task has started on a node."""
    for batch in batches:
        assert run.wait_marker("where-start", batch, timeout=timeout), f"batch {batch} never started"


def wait_finished(run, batches, timeout=60):
    for batch in batches:
        assert run.wait_marker("where", batch, timeout=timeout), f"batch {batch} never finished"


def assert_success(srv, batches, timeout=180):
    finals = {b: int(srv.wait_batch(b, timeout=timeout)["taskBatchStatus"]) for b in batches}
    bad = {b: describe(srv, b) for b, status in finals.items() if status != BatchStatus.SUCCESS}
    assert not bad, bad


def wait_for_text(node, text, timeout=20):
    deadline = time.monotonic() + timeout
    while text not in node.output():
        assert time.monotonic() < deadline, f"{text!r} not in the output of {node.name}:\n{node.output()[-3000:]}"
        time.sleep(0.2)


def task_results(srv, batch):
    return [t["result_message"] for t in srv.task_rows(batch)]


# ---------------------------------------------------------------------------------------------


def test_server_killed_and_restarted_while_tasks_run(run):
    """SIGKILL the server while four tasks run; they finish while it is down; after the restart
    their results are delivered and the batches end SUCCESS. (The server keeps no state the
    result needs outside its database; its executorTimeout timers are lost with it.)"""
    srv = run.srv
    group, token = new_group(srv, "restart")
    node = start_node(run, "restart", group, token)
    job_id = srv.create_job(f"restart-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="4",
                            block_strategy=BLOCK_PARALLEL, executor_timeout=300)
    batches = [srv.trigger_job(job_id) for _ in range(4)]
    wait_started(run, batches)
    srv.kill()
    killed = time.monotonic()
    wait_finished(run, batches)  # all four finish while the server is down
    seconds = srv.restart()
    restarted = time.monotonic()
    assert_success(srv, batches)
    delivered = time.monotonic() - restarted
    assert all(task_results(srv, b) == [node.name] for b in batches)
    assert node.alive(), node.output()[-3000:]
    # what an operator reads meanwhile: one warning naming the held results, then each late delivery
    wait_for_text(node, "every held task result has been delivered")
    out = node.output()
    assert out.count("until the server takes them") == 1, out[-3000:]
    assert all(f"(batch {b}) " in out and " late, after " in out for b in batches), out[-3000:]
    srv.wait_node_online(node.address, group=group, timeout=60)
    run.note(f"server SIGKILL: down {restarted - killed:.0f}s (restart {seconds:.0f}s); the 4 results "
             f"finished meanwhile were delivered {delivered:.1f}s after the restart, batches SUCCESS")


def test_server_cluster_failover(run):
    """Two servers on one database; the client is given both and uses the first. A job is
    triggered through that server, which is then SIGKILLed while the task runs: the client
    switches to the other server, the result in flight is delivered there, and jobs triggered
    afterwards run on the node."""
    srv = run.srv
    peer = srv.start_peer()
    try:
        group, token = new_group(srv, "cluster")
        node = start_node(run, "failover", group, token,
                          SNAIL_SERVER_HOST=f"127.0.0.1:{peer.grpc_port},127.0.0.1:{srv.grpc_port}")
        job_id = srv.create_job(f"failover-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="5",
                                block_strategy=BLOCK_PARALLEL, executor_timeout=300)
        in_flight = [srv.trigger_job(job_id, via=peer) for _ in range(2)]
        wait_started(run, in_flight)
        dispatched_by = {row["client_info"] for b in in_flight for row in srv.task_rows(b)}
        peer.kill()
        assert_success(srv, in_flight, timeout=120)
        after = [srv.trigger_job(job_id, tmp_args="0") for _ in range(3)]
        assert_success(srv, after, timeout=120)
        assert all(task_results(srv, b) == [node.name] for b in in_flight + after)
        out = node.output()
        assert f"switching to 127.0.0.1:{srv.grpc_port}" in out, out[-3000:]
        run.note(f"server cluster: first server SIGKILLed, {len(in_flight)} results in flight delivered to the "
                 f"second, {len(after)} later jobs ran ({sorted(dispatched_by)})")
    finally:
        peer.kill()


def test_network_partition(run):
    """The link between a client's host and the server goes down for longer than a heartbeat
    period (2 s here; 12 s down) while a task runs. The node recovers by itself: the result is
    delivered, the node is listed online again and takes new work."""
    needs_hosts()
    srv = run.srv
    group, token = new_group(srv, "partition")
    with netns.Host() as host:
        node = start_node(run, "partitioned", group, token, host)
        job_id = srv.create_job(f"partition-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="3",
                                block_strategy=BLOCK_PARALLEL, executor_timeout=300)
        batch = srv.trigger_job(job_id)
        wait_started(run, [batch])
        host.link_down()
        cut = time.monotonic()
        wait_finished(run, [batch])
        time.sleep(max(0.0, 12 - (time.monotonic() - cut)))
        assert int(srv.batch(batch)["taskBatchStatus"]) == BatchStatus.RUNNING  # the result cannot arrive
        host.link_up()
        healed = time.monotonic()
        assert_success(srv, [batch], timeout=120)
        delivered = time.monotonic() - healed
        srv.wait_node_online(node.address, group=group, timeout=60)
        later = srv.trigger_job(job_id, tmp_args="0")
        assert_success(srv, [later], timeout=60)
        assert task_results(srv, batch) == [node.name] == task_results(srv, later)
        run.note(f"partition of 12s: result delivered {delivered:.1f}s after the link came back; node online again")
        node.stop()


def test_rolling_restart_of_all_nodes(run):
    """Three nodes restarted one at a time (SIGTERM, same port, new process) while jobs are
    triggered continuously: every batch ends SUCCESS. The job allows retries
    (maxRetryTimes=3): the server re-routes a dispatch that a stopping node refuses or that
    finds its port closed only as a retry (docs/reliability.md)."""
    srv = run.srv
    group, token = new_group(srv, "rolling")
    ports = [harness.free_port() for _ in range(3)]
    nodes = [start_node(run, f"roll{i}", group, token, SNAIL_HOST_PORT=port) for i, port in enumerate(ports)]
    job_id = srv.create_job(f"rolling-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="0.3",
                            block_strategy=BLOCK_PARALLEL, route_key=4, max_retry_times=3, retry_interval=1,
                            executor_timeout=60)
    stop = threading.Event()
    triggered = [0]
    errors = []

    def trigger_continuously():
        while not stop.is_set() or triggered[0] < 200:
            try:
                srv.api("POST", "/job/trigger", {"jobId": job_id})
                triggered[0] += 1
            except harness.HarnessError as exc:
                errors.append(str(exc))
            time.sleep(0.1)

    trigger = threading.Thread(target=trigger_continuously, daemon=True)
    trigger.start()
    restarts = []
    try:
        time.sleep(3)
        for i, old in enumerate(nodes):
            t0 = time.monotonic()
            assert old.stop(timeout=30) == 0, old.output()[-3000:]
            nodes[i] = start_node(run, f"roll{i}-new", group, token, SNAIL_HOST_PORT=ports[i])
            restarts.append(time.monotonic() - t0)
            time.sleep(2)
    finally:
        stop.set()
        trigger.join(timeout=120)
    assert not errors, errors[:5]
    count = triggered[0]
    deadline = time.monotonic() + 180
    while True:
        rows = srv.pg.query_json(f"SELECT id, task_batch_status FROM sj_job_task_batch WHERE job_id = {job_id}",
                                 db=srv.DB)
        statuses = collections.Counter(int(r["task_batch_status"]) for r in rows)
        if len(rows) >= count and all(s in BatchStatus.FINAL for s in statuses) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(rows) == count, f"{count} triggers made {len(rows)} batches"
    bad = [int(r["id"]) for r in rows if int(r["task_batch_status"]) != BatchStatus.SUCCESS]
    assert not bad, {b: describe(srv, b) for b in bad[:5]}
    retried = srv.pg.query_json(f"SELECT count(*) AS n FROM sj_job_task t JOIN sj_job_task_batch b ON "
                                f"t.task_batch_id = b.id WHERE b.job_id = {job_id} AND t.retry_count > 0",
                                db=srv.DB)[0]["n"]
    run.note(f"rolling restart of 3 nodes ({', '.join(f'{s:.1f}s' for s in restarts)} each) under {count} "
             f"triggers: all SUCCESS, {retried} tasks needed a server retry")


@pytest.mark.parametrize("outbox", [False, True], ids=["memory", "outbox"])
def test_host_lost_after_a_result_it_could_not_deliver(run, tmp_path, outbox):
    """A task finishes while its host's link is down; then the host dies (the client SIGKILLed
    and the namespace deleted, so the kernel cannot send what it still buffered either) and
    comes back with the same address, and the client is started again. With the durable
    outbox (SNAIL_OUTBOX_PATH, on a disk that survives) the new process delivers the result and
    the batch ends SUCCESS; without it the result died with the host, and the server ends the
    batch by its executorTimeout (STOP, reason timeout)."""
    needs_hosts()
    srv = run.srv
    group, token = new_group(srv, "killed")
    env = {"SNAIL_OUTBOX_PATH": str(tmp_path / "outbox.db")} if outbox else {}
    name = f"kill-{'outbox' if outbox else 'memory'}"
    with netns.Host() as host:
        port = harness.free_port()
        node = start_node(run, name, group, token, host, SNAIL_HOST_PORT=port, **env)
        job_id = srv.create_job(f"killed-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="1",
                                executor_timeout=25)
        batch = srv.trigger_job(job_id)
        wait_started(run, [batch])
        host.link_down()
        wait_finished(run, [batch])
        time.sleep(1.0)  # the result is queued (and, with the outbox, written) and its first send fails
        node.kill()
        host.power_off()
        host.create()
        again = start_node(run, f"{name}-again", group, token, host, SNAIL_HOST_PORT=port, **env)
        final = srv.wait_batch(batch, timeout=90)
        status = int(final["taskBatchStatus"])
        if outbox:
            assert status == BatchStatus.SUCCESS, describe(srv, batch)
            assert task_results(srv, batch) == [node.name]
            assert "restored 1 undelivered result(s)" in again.output(), again.output()[-2000:]
        else:
            assert status == BatchStatus.STOP and int(final["operationReason"]) == REASON_TIMEOUT, \
                describe(srv, batch)
        run.note(f"host lost after an undelivered result, {'with' if outbox else 'without'} the outbox: "
                 f"batch {BatchStatus.NAMES[status]}")
        again.stop()


def test_client_killed_in_the_middle_of_a_task(run):
    """SIGKILL while the task runs: nothing can report it. The server leaves the task RUNNING
    until the job's executorTimeout, then ends the batch STOP (reason timeout); it does not
    re-dispatch it, even with retries configured (maxRetryTimes applies to failures reported
    or dispatches refused, not to a node that vanished)."""
    srv = run.srv
    group, token = new_group(srv, "midtask")
    node = start_node(run, "midtask", group, token)
    other = start_node(run, "midtask-other", group, token)
    job_id = srv.create_job(f"midtask-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="60",
                            executor_timeout=12, max_retry_times=2, retry_interval=1, route_key=4)
    batch = srv.trigger_job(job_id)
    wait_started(run, [batch])
    victim = node if run.marker_lines("where-start", batch)[0].split()[1] == node.name else other
    victim.kill()
    t0 = time.monotonic()
    final = srv.wait_batch(batch, timeout=60)
    assert int(final["taskBatchStatus"]) == BatchStatus.STOP, describe(srv, batch)
    assert int(final["operationReason"]) == REASON_TIMEOUT, final
    assert len(run.marker_lines("where-start", batch)) == 1  # never re-dispatched
    run.note(f"client SIGKILL mid-task: batch STOP by timeout {time.monotonic() - t0:.0f}s after the kill, "
             f"not re-dispatched")
    (other if victim is node else node).stop()
