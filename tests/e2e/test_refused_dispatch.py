# mypy: allow-untyped-defs
"""A refused dispatch on the real server (issue 25, item 5): the reason is in the
task's log in the console; and what the server does with a failed result reported
for a task whose dispatch the node refused (``data=false``)."""

from __future__ import annotations

import json
import time

import pytest

from snailjob.transport import GrpcTransport
from snailjob.wire.codec import encode_body
from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_real_server import TASK_FAIL, describe, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TYPO = "e2eClustr"  # e2eCluster, misspelled


def refused_lines(lines):
    return [ln for ln in lines if f"no executor named '{TYPO}'" in (ln.get("message") or "")]


def test_misspelled_executor_reason_in_the_tasks_log(srv, run):
    job_id = srv.create_job(f"typo-{uid()}", TYPO, TaskType.CLUSTER, max_retry_times=0)
    batch = srv.trigger_job(job_id)
    final = srv.wait_batch(batch, timeout=60)
    assert int(final["taskBatchStatus"]) == BatchStatus.FAIL, describe(srv, batch)
    lines = refused_lines(srv.wait_logs(batch, lambda ls: bool(refused_lines(ls)), timeout=30))
    assert len(lines) == 1, (srv.job_logs(batch), describe(srv, batch))
    line = lines[0]
    task = srv.task_rows(batch)[0]
    assert int(line["task_id"]) == int(task["id"])
    assert line["level"] == "ERROR"
    assert "refused this task" in line["message"] and "(registered: " in line["message"]
    assert "e2eCluster" in line["message"] and "e2eMapReduce" in line["message"]
    assert int(task["task_status"]) == TASK_FAIL
    run.note(f"refused task {task['id']}: its log says {line['message'][:160]!r}; "
             f"its result_message is {task['result_message']!r}")


def _reporter(srv):
    env = srv.client_env()
    headers = {"host-id": "py-e2e-reporter", "host-ip": "127.0.0.1", "host-port": "1",
               "namespace": env["SNAIL_NAMESPACE"], "group-name": env["SNAIL_GROUP_NAME"],
               "token": env["SNAIL_TOKEN"], "executor-type": "2"}
    return GrpcTransport(f"127.0.0.1:{srv.grpc_port}", lambda: headers)


def _report_fail(transport, srv, job_id, batch, task_id, reason):
    entry = {"jobId": job_id, "taskBatchId": batch, "taskId": task_id, "taskType": 1,
             "groupName": srv.group, "taskStatus": TASK_FAIL,
             "executeResult": {"status": 0, "result": json.dumps(reason), "message": reason},
             "retry": False, "retryStatus": False}
    return transport.call("/report/dispatch/result", encode_body(entry), 10)


def test_a_failed_result_for_a_refused_task(srv, run):
    """A finding, not a feature: the client does not report a result for a task it refused.
    This checks the reason: without retries the server takes such a result and shows it;
    with retries every such report is one more failure, counted and retried."""
    reason = "no executor named 'x' on this client"
    transport = _reporter(srv)
    try:
        job_id = srv.create_job(f"typo-result-{uid()}", TYPO, TaskType.CLUSTER, max_retry_times=0)
        batch = srv.trigger_job(job_id)
        srv.wait_batch(batch, timeout=60)
        task = srv.task_rows(batch)[0]
        reply = _report_fail(transport, srv, job_id, batch, int(task["id"]), reason)
        assert reply.ok, reply
        deadline = time.monotonic() + 15
        while srv.task_rows(batch)[0]["result_message"] != json.dumps(reason) and time.monotonic() < deadline:
            time.sleep(0.3)
        after = srv.task_rows(batch)[0]
        assert after["result_message"] == json.dumps(reason) and int(after["task_status"]) == TASK_FAIL
        assert int(srv.batch(batch)["taskBatchStatus"]) == BatchStatus.FAIL
        run.note("maxRetryTimes=0: a FAIL result for a refused task was accepted and shown as its result")

        job_id = srv.create_job(f"typo-retry-{uid()}", TYPO, TaskType.CLUSTER, max_retry_times=3,
                                retry_interval=8)
        batch = srv.trigger_job(job_id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = srv.task_rows(batch)
            if rows and int(rows[0]["retry_count"]) >= 1:
                break
            time.sleep(0.2)
        first = srv.task_rows(batch)[0]
        assert int(first["retry_count"]) == 1, describe(srv, batch)  # the refusal, counted once
        reply = _report_fail(transport, srv, job_id, batch, int(first["id"]), reason)
        assert reply.ok, reply
        time.sleep(3)  # well inside the 8 s retry interval: only our report can have counted
        second = srv.task_rows(batch)[0]
        run.note(f"maxRetryTimes=3: retry_count {first['retry_count']} after the refusal, "
                 f"{second['retry_count']} 3 s after one FAIL result for it: {json.dumps(second)[:200]}")
        assert int(second["retry_count"]) == 2  # counted again: the client must not report it
        srv.stop_batch(batch)
    finally:
        transport.close()
