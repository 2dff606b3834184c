# mypy: allow-untyped-defs
"""A stranger on the network against a node the real server drives (issue 24).

1,000 gRPC streams held open on the node's inbound port that send their
headers and never a message (tests/programs/attacker.py, a process of its
own): the real server's dispatches still reach the node, every batch ends
SUCCESS on it, and the dispatch replies stay quick enough that the server never
marks the node dead.  Against the thread-per-call server this silenced the node
(16 such streams were enough).  Run on 2.0.2 only: the inbound side is the
client's, and 1.10.0 calls it the same way.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_faults import BLOCK_PARALLEL, new_group, start_node, task_results
from tests.e2e.test_real_server import describe, uid
from tests.test_attacks import Attacker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BATCHES = 40


def test_idle_streams_do_not_silence_a_node_the_real_server_drives(run):
    srv = run.srv
    if srv.version != "2.0.2":
        pytest.skip("the slow-stream attack is played against 2.0.2 (the inbound port is the client's own)")
    group, token = new_group(srv, "attack")
    node = start_node(run, "attacked", group, token)
    job_id = srv.create_job(f"attack-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="0",
                            block_strategy=BLOCK_PARALLEL, executor_timeout=60)
    warm = srv.trigger_job(job_id)
    assert int(srv.wait_batch(warm, timeout=60)["taskBatchStatus"]) == BatchStatus.SUCCESS, describe(srv, warm)
    with Attacker("idle-streams", f"127.0.0.1:{node.port}", 1000) as ready:
        assert ready == "ready 1000", ready
        started = time.monotonic()
        batches = [srv.trigger_job(job_id) for _ in range(BATCHES)]
        finals = {b: int(srv.wait_batch(b, timeout=120)["taskBatchStatus"]) for b in batches}
        took = time.monotonic() - started
        bad = {b: describe(srv, b) for b, status in finals.items() if status != BatchStatus.SUCCESS}
        assert not bad, bad
        assert all(task_results(srv, b) == [node.name] for b in batches)
        srv.wait_node_online(node.address, group=group, timeout=10)
    assert node.alive(), node.output()[-3000:]
    run.note(f"1,000 idle inbound streams held on the node: {BATCHES} batches triggered and all SUCCESS "
             f"in {took:.1f}s; the node stayed online")
