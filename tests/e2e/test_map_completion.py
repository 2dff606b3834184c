# mypy: allow-untyped-defs
"""Map and map-reduce batches always end: many small batches, none left RUNNING.

The server checks whether a batch is complete only when a *leaf* task reports
(``JobExecutorResultActor``: a result of a task with children returns before the
check). When a ROOT_MAP's own result is stored after its last child's result
was checked, nothing completes the batch: it stays RUNNING for good with every
task final. The client closes that window with a sentinel: the node that runs
a map task's first sub-task sends its success again until the batch ends, and
holds its failure back 2 s (docs/e2e.md, "A map batch that never ends"). These
tests run the shape that hit it (a ROOT_MAP fanning out a few items that finish
at once, two nodes) many times.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest

from tests.e2e import harness
from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_real_server import describe, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# SNAILJOB_E2E_MAP_RUNS: batches per test (200 by default on 2.x, 100 on 1.x)
RUNS = os.environ.get("SNAILJOB_E2E_MAP_RUNS")
CONCURRENCY = 8
STUCK_AFTER = 15.0  # seconds a batch may stay RUNNING with every task final


def runs_for(version, share=1.0):
    runs = int(RUNS) if RUNS else (200 if harness.vtuple(version) >= (2,) else 100)
    return max(CONCURRENCY, int(runs * share))


def wait_batch_or_stuck(srv, batch_id, timeout=120):
    """(final status, None), or (None, why) when the batch stays RUNNING with all its tasks final."""
    deadline = time.monotonic() + timeout
    all_final_since = None
    while time.monotonic() < deadline:
        rows = srv.pg.query_json(f"SELECT task_batch_status FROM sj_job_task_batch WHERE id = {int(batch_id)}",
                                 db=srv.DB)
        status = int(rows[0]["task_batch_status"]) if rows else 0
        if status in BatchStatus.FINAL:
            return status, None
        tasks = srv.task_rows(batch_id)
        if tasks and all(int(t["task_status"]) in BatchStatus.FINAL for t in tasks):
            all_final_since = all_final_since or time.monotonic()
            if time.monotonic() - all_final_since > STUCK_AFTER:
                return None, f"batch {batch_id} still {BatchStatus.NAMES.get(status)} {STUCK_AFTER:.0f}s after " \
                             f"its {len(tasks)} tasks all ended"
        else:
            all_final_since = None
        time.sleep(0.3)
    return None, f"batch {batch_id} not final after {timeout}s: {describe(srv, batch_id)}"


def run_many(run, executor, task_type, runs, expected_tasks, expect=BatchStatus.SUCCESS, **job_kw):
    """Trigger ``runs`` batches over CONCURRENCY jobs; returns (stuck, wrong) lists of messages."""
    srv = run.srv
    jobs = [srv.create_job(f"many-{executor}-{uid()}", executor, task_type, **job_kw) for _ in range(CONCURRENCY)]

    def one_job(job_id, count):
        stuck, wrong = [], []
        for _ in range(count):
            batch = srv.trigger_job(job_id)
            status, why = wait_batch_or_stuck(srv, batch)
            if why:
                stuck.append(why)
                continue
            rows = srv.task_rows(batch)
            if status != expect or not expected_tasks(rows):
                wrong.append(f"batch {batch}: {BatchStatus.NAMES.get(status)} with {len(rows)} tasks: "
                             f"{describe(srv, batch)[:600]}")
        return stuck, wrong

    shares = [runs // CONCURRENCY + (1 if i < runs % CONCURRENCY else 0) for i in range(CONCURRENCY)]
    stuck, wrong = [], []
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        for s, w in pool.map(one_job, jobs, shares):
            stuck += s
            wrong += w
    run.note(f"{executor}: {runs} batches in {time.monotonic() - started:.0f}s, {len(stuck)} stuck, "
             f"{len(wrong)} wrong")
    return stuck, wrong


def test_map_batches_always_end(run, srv, nodes):
    def four_squares(rows):
        children = sorted(int(t["result_message"]) for t in rows if t["task_name"] == "SQUARE")
        return children == [0, 1, 4, 9] and len(rows) == 5

    stuck, wrong = run_many(run, "e2eMap", TaskType.MAP, runs_for(srv.version), four_squares,
                            args_str="4", parallel_num=4)
    assert not stuck, f"{len(stuck)} map batch(es) never ended: {stuck[:5]}"
    assert not wrong, wrong[:3]


def test_map_reduce_batches_always_end(run, srv, nodes):
    duplicated = []

    def merged(rows):
        merges = [t for t in rows if int(t["mr_stage"] or 0) == 3]
        reduces = [t for t in rows if int(t["mr_stage"] or 0) == 2]
        maps = [t for t in rows if t["task_name"] == "DOUBLE"]
        if len(reduces) != 2 or len(merges) != 1:
            duplicated.append((len(reduces), len(merges)))
        # the server's duplicate-reduce race (docs/e2e.md) multiplies the merge; the maps are exact
        return len(maps) == 10 and merges and all(int(t["result_message"]) % 110 == 0 for t in merges)

    runs = runs_for(srv.version)
    stuck, wrong = run_many(run, "e2eMapReduce", TaskType.MAP_REDUCE, runs, merged,
                            args_str="mr", shard_num=2, parallel_num=4)
    run.note(f"e2eMapReduce: {len(duplicated)} of {runs} batches had a duplicated reduce stage "
             f"(REDUCE, MERGE tasks: {duplicated[:10]})")
    assert not stuck, f"{len(stuck)} map-reduce batch(es) never ended: {stuck[:5]}"
    assert not wrong, wrong[:3]


def test_map_batches_whose_sub_tasks_all_fail_end_failed(run, srv, nodes):
    """The sentinel's failure cannot be repeated (the server would retry the
    task for each copy); it is held back 2 s instead (mr_do_map)."""
    def all_failed(rows):
        children = [t for t in rows if t["task_name"] == "BROKEN"]
        return len(children) == 3 and all(int(t["task_status"]) == 4 for t in children)

    stuck, wrong = run_many(run, "e2eMapFail", TaskType.MAP, runs_for(srv.version, 0.25), all_failed,
                            expect=BatchStatus.FAIL, args_str="3", parallel_num=4)
    assert not stuck, f"{len(stuck)} failing map batch(es) never ended: {stuck[:5]}"
    assert not wrong, wrong[:3]
