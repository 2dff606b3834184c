# mypy: allow-untyped-defs
"""What 1.10.0 and 2.0.2 do differently (or alike, against what a reading of their
source suggested), checked with a stand-in node that sends what the product client
never would.  Each test asserts the behaviour of the version it runs against;
docs/e2e.md lists the differences.

The stand-in (``probe_client.ProbeClient``) runs in a group of its own, so that
no task of the other tests is sent to it.
"""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.e2e import harness
from tests.e2e.harness import BatchStatus, RetryStatus, RetryTaskStatus, TaskType
from tests.e2e.probe_client import ProbeClient
from tests.e2e.test_real_server import uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PROBE_GROUP = "py_e2e_probe"


@pytest.fixture(scope="module")
def probe_group(run):
    token = "SJ_probe_" + uid()
    run.srv.create_group(PROBE_GROUP, token)
    return token


def start_probe(srv, token, **kw):
    probe = ProbeClient(srv.grpc_port, srv.namespace, PROBE_GROUP, token, harness.free_port(), **kw).start()
    srv.wait_node_online(f"127.0.0.1:{probe.host_port}", group=PROBE_GROUP)
    return probe


def test_an_explicit_null_for_a_primitive_field(run, probe_group):
    """2.x parses with Jackson 3, which refuses an explicit null for a Java
    primitive (``executeResult.status`` is an ``int``); 1.10 reads it as 0.
    The client never sends null there (its models give every primitive a
    value); the emulator's ``strict_primitives`` copies the 2.x behaviour."""
    srv = run.srv

    def null_status(report):
        report["executeResult"]["status"] = None
        return report

    probe = start_probe(srv, probe_group, shape_report=null_status)
    try:
        job = srv.create_job(f"null-{uid()}", "probeExecutor", TaskType.CLUSTER, group=PROBE_GROUP,
                             executor_timeout=8)
        batch = srv.trigger_job(job)
        reply = wait_for(lambda: next((r for u, r in probe.replies if u == "/report/dispatch/result"), None),
                         30, 0.3, "the stand-in's result report")
        final = srv.wait_batch(batch, timeout=60)
        status = int(final["taskBatchStatus"])
        run.note(f"explicit null executeResult.status: reply status {reply['status']} ({reply['message'][:60]}), "
                 f"batch {BatchStatus.NAMES[status]} (reason {final.get('operationReason')})")
        if harness.vtuple(srv.version) >= (2,):
            assert reply["status"] == 0, reply  # refused: the report could not be read
            assert status != BatchStatus.SUCCESS, final  # the task ends by its timeout instead
        else:
            assert reply["status"] == 1, reply
            assert status == BatchStatus.SUCCESS, final  # status null taken as 0, taskStatus 3 decides
    finally:
        probe.stop()


def test_a_retry_result_with_status_stop_is_not_applied(run, probe_group):
    """``/report/retry/dispatch/result`` with ``taskStatus`` 5 (STOP) is what the
    protocol offers for "stop retrying"; neither version applies it (the
    handler fails on the retry it builds), so the attempt ends by the scene's
    timeout, and no ``/retry/stop/v1`` reaches the node when it does.  That is
    why the client reports ``StopRetry`` as a failure and enforces a replay's
    timeout itself."""
    srv = run.srv
    scene = f"probe_stop_{uid()}"
    srv.create_retry_scene(scene, group=PROBE_GROUP, max_retry_count=2, executor_timeout=3, callback=False)
    probe = start_probe(srv, probe_group)
    try:
        idem = f"stop-{uid()}"
        reply = probe.call("/batch/report", [[{
            "groupName": PROBE_GROUP, "sceneName": scene, "idempotentId": idem, "executorName": "probeRetry",
            "bizNo": "", "argsStr": "[1]", "extAttrs": "", "serializerName": "jackson"}]])
        assert reply["status"] == 1, reply
        retry = wait_for(lambda: srv.find_retry(idem, scene, group=PROBE_GROUP), 30, 0.3, "the reported retry")
        dispatch = wait_for(lambda: next((a[0] for u, a in probe.calls if u == "/retry/dispatch/v1"
                                          and a and a[0].get("idempotentId", idem) == idem), None),
                            90, 0.3, "the server's first replay")
        stop = probe.call("/report/retry/dispatch/result", [{
            "namespaceId": srv.namespace, "groupName": PROBE_GROUP, "sceneName": scene,
            "retryId": dispatch["retryId"], "retryTaskId": dispatch["retryTaskId"], "taskStatus": 5}])
        attempt = wait_for(lambda: next((t for t in srv.retry_tasks(retry["id"])
                                         if int(t["id"]) == int(dispatch["retryTaskId"])
                                         and int(t["task_status"]) in RetryTaskStatus.FINAL), None),
                           60, 0.3, "the replayed attempt to end")
        row = srv.retry(retry["id"])
        run.note(f"retry result STOP: reply {stop['status']} ({stop['message']}); the attempt ended "
                 f"{RetryTaskStatus.NAMES[int(attempt['task_status'])]} reason {attempt['operation_reason']}, "
                 f"the retry {RetryStatus.NAMES[int(row['retry_status'])]} with retry_count {row['retry_count']}")
        # not STOP, and the retry was not suspended: the attempt ended as a timed-out failure
        assert int(attempt["task_status"]) == RetryTaskStatus.FAIL, attempt
        assert int(row["retry_status"]) in (RetryStatus.RUNNING, RetryStatus.MAX_COUNT), row
        # and the server did not tell the node to stop the timed-out replay (the client enforces the timeout)
        assert not [u for u, _ in probe.calls if u == "/retry/stop/v1"], probe.calls
    finally:
        probe.stop()
