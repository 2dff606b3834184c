"""ServerEmulator driven by a tiny raw fake client.

The fake client below is written directly on ``snailjob.wire`` (the gRPC
stubs' message types and the payload models): a gRPC server that answers
``/job/dispatch/v1`` with ``status=1, data="true"`` and runs a per-executor
behaviour in a thread, and a channel to the emulator for beats and reports.
It does not use the real client package, so these tests pin the emulator
alone.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import grpc
import pytest

from snailjob.testing import ServerEmulator
from snailjob.testing.pytest_plugin import snailjob_emulator  # noqa: F401  (the plugin's fixture)
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps
from snailjob.wire.models import DispatchJobResultRequest, MapTaskRequest, WireExecuteResult

from .raw_node import RawNode, eventually

Behaviour = Callable[["FakeClient", Dict[str, Any]], Any]
MakeClient = Callable[..., "FakeClient"]


class FakeClient(RawNode):
    """A minimal job client: one gRPC server for the emulator's calls, one
    channel to the emulator."""

    def __init__(self, emu: ServerEmulator, behaviours: Optional[Dict[str, Behaviour]] = None,
                 host_id: str = "py-fake-1", labels: Optional[Dict[str, str]] = None,
                 refuse: Optional[str] = None) -> None:
        self.behaviours = behaviours or {}
        self.refuse = refuse
        self.dispatches: List[Dict[str, Any]] = []
        self.dispatch_headers: List[Dict[str, str]] = []
        self.stops: List[Dict[str, Any]] = []
        self.other: List[Tuple[str, str]] = []
        super().__init__(emu, host_id, labels)

    def report(self, req: Dict[str, Any], task_status: int, result: Any = None, message: str = "",
               wf_context: Optional[Dict[str, Any]] = None) -> pb2.GrpcResult:
        body = DispatchJobResultRequest(
            jobId=req["jobId"], taskBatchId=req["taskBatchId"],
            workflowTaskBatchId=req.get("workflowTaskBatchId"), workflowNodeId=req.get("workflowNodeId"),
            taskId=req["taskId"], taskType=req["taskType"], groupName=req.get("groupName"),
            taskStatus=task_status,
            executeResult=WireExecuteResult(status=1 if task_status == 3 else 0, result=result,
                                            message=message),
            retryScene=req.get("retryScene"), retry=req.get("retry", False),
            retryStatus=req.get("retryStatus", False),
            wfContext=dumps(wf_context) if wf_context is not None else None)
        reply = self.send_args(enums.URI_REPORT_RESULT, body.to_wire())
        assert (reply.status, reply.data) == (1, "true"), reply.message
        return reply

    def map(self, req: Dict[str, Any], task_name: str, sub_tasks: List[Any]) -> pb2.GrpcResult:
        body = MapTaskRequest(jobId=req["jobId"], taskBatchId=req["taskBatchId"], parentId=req["taskId"],
                              workflowTaskBatchId=req.get("workflowTaskBatchId"),
                              workflowNodeId=req.get("workflowNodeId"), taskName=task_name,
                              subTask=sub_tasks)
        return self.send_args(enums.URI_REPORT_MAP, body.to_wire())

    # -- server -> client -----------------------------------------------------

    def _serve(self, request: pb2.GrpcSnailJobRequest, context: grpc.ServicerContext) -> pb2.GrpcResult:
        uri = request.metadata.uri
        args = json.loads(request.body)
        if uri == enums.URI_DISPATCH:
            req = args[0]
            with self._lock:
                self.dispatches.append(req)
                self.dispatch_headers.append(dict(request.metadata.headers))
            if self.refuse is not None:
                return pb2.GrpcResult(reqId=0, status=1, message=self.refuse, data="false")
            behaviour = self.behaviours.get(req["executorInfo"])
            if behaviour is None:
                return pb2.GrpcResult(reqId=0, status=1, message="executor not found", data="false")
            self._workers.submit(self._run, behaviour, req)
            return pb2.GrpcResult(reqId=0, status=1, message="", data="true")
        if uri == enums.URI_STOP:
            with self._lock:
                self.stops.append(args[0])
            return pb2.GrpcResult(reqId=0, status=1, message="", data="true")
        with self._lock:
            self.other.append((uri, request.body))
        return pb2.GrpcResult(reqId=0, status=1, message="", data="null")



def succeed(result: Any) -> Behaviour:
    return lambda client, req: client.report(req, 3, result)


def fail(message: str) -> Behaviour:
    return lambda client, req: client.report(req, 4, None, message)


def hang(client: FakeClient, req: Dict[str, Any]) -> None:
    """Never reports (the task only ends by timeout or stop)."""


def job_params(req: Dict[str, Any]) -> Any:
    return json.loads(req["argsStr"]).get("jobParams")


@pytest.fixture
def make_client(emu: ServerEmulator) -> Iterator[Callable[..., FakeClient]]:
    clients: List[FakeClient] = []

    def make(**kwargs: Any) -> FakeClient:
        client = FakeClient(emu, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
        assert not client.errors, client.errors


def ready(emu: ServerEmulator, make_client: Callable[..., FakeClient], **kwargs: Any) -> FakeClient:
    client = make_client(**kwargs)
    assert client.beat().status == 1
    emu.wait_for_clients(1, timeout=2)
    return client


# --------------------------------------------------------------------------
# transport and inbound URIs
# --------------------------------------------------------------------------


def test_beat_registers_node(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client(labels={"state": "up", "env": "test"})
    reply = client.send(enums.URI_BEAT, dumps(["PING"]), req_id=4242)
    assert (reply.status, reply.message, reply.data, reply.reqId) == (1, "", '"PONG"', 4242)
    nodes = emu.wait_for_clients(1, timeout=2)
    assert [(n.host_id, n.host_ip, n.host_port) for n in nodes] == [("py-fake-1", "127.0.0.1", client.port)]
    assert nodes[0].labels == {"state": "up", "env": "test"}
    assert nodes[0].executor_type == "2"
    client.beat()
    assert len(emu.beats) == 2 and emu.nodes[0].beat_count == 2
    reply = client.send_args(enums.URI_REGISTER_EXECUTORS, [{"executorInfo": "a"}, {"executorInfo": "b"}])
    assert (reply.status, reply.message, reply.data) == (
        1, "Batch Register Job Executors Processed Successfully", "true")
    assert emu.registered_executors == {"a", "b"}
    assert [r.uri for r in emu.requests] == ["/beat", "/beat", "/register/job/executors"]
    assert emu.problems == []


def test_beat_without_host_port_is_refused(emu: ServerEmulator,
                                           make_client: MakeClient) -> None:
    client = make_client()
    headers = client.headers()
    del headers["host-port"]
    reply = client.send(enums.URI_BEAT, "[]", headers=headers)
    assert (reply.status, reply.message, reply.data) == (0, "Cannot parse null string: null", "null")
    assert emu.nodes == []


def test_token_mismatch_is_refused(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    reply = client.send(enums.URI_BEAT, '["PING"]', headers=client.headers(token="WRONG"), req_id=77)
    assert reply.status == 0
    assert reply.reqId == 77
    assert reply.message == (f"Token authentication failed. [namespace:{emu.namespace} "
                             f"groupName:{emu.group} token:WRONG]")
    assert reply.data == "null"
    other_group = client.send(enums.URI_BEAT, "[]", headers=client.headers(**{"group-name": "other"}))
    assert other_group.status == 0 and "groupName:other" in other_group.message
    assert emu.nodes == [] and emu.beats == []


def test_unknown_path(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    reply = client.send("/no/such/path?x=1", "[]")
    assert reply.status == 0
    assert reply.message.startswith("No matching handler found. Path:[/no/such/path]")
    assert reply.data == "null"
    # the query string is ignored when routing
    assert client.send("/beat?x=1", "[]").status == 1


def test_non_array_body(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    for body in ('{"a": 1}', "", "[1] junk", '"PING"'):
        reply = client.send(enums.URI_BEAT, body)
        assert reply.status == 0, body
        assert reply.message.startswith("Json to object conversion failed Parameters:"), body
    assert emu.beats == []


def test_blank_uri_is_never_answered(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        client.send("  ", "[]", timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started >= 0.25
    assert emu.exchanges[0].answered is False


def test_sync_version_and_null_primitives(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    reply = client.send(enums.URI_SYNC_VERSION, "[]")
    assert reply.status == 1 and json.loads(reply.data) == {"version": 1, "sceneList": [], "notifyList": []}
    body = {"jobId": 1, "taskBatchId": 2, "taskId": 3, "taskType": 1, "taskStatus": 3,
            "executeResult": {"status": 1, "result": None, "message": ""}, "retry": None}
    reply = client.send_args(enums.URI_REPORT_RESULT, body)
    assert reply.status == 0 and "null" in reply.message and "boolean" in reply.message
    body["retry"] = False
    body["executeResult"] = {"status": None, "result": None, "message": ""}
    reply = client.send_args(enums.URI_REPORT_RESULT, body)
    assert reply.status == 0 and "`int`" in reply.message
    assert len(emu.results) == 2  # recorded even when rejected


def test_map_report_errors(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client(behaviours={"hang": hang})
    reply = client.send_args(enums.URI_REPORT_MAP, {"jobId": 999, "taskBatchId": 1, "parentId": 1,
                                                    "taskName": "X", "subTask": ["a"]})
    assert (reply.status, reply.message, reply.data) == (0, "Job config not existed", "false")
    client.beat()
    emu.wait_for_clients(1, timeout=2)
    batch = emu.trigger("hang", task_type=4, executor_timeout=1)
    reply = client.send_args(enums.URI_REPORT_MAP, {"jobId": batch.job_id, "taskBatchId": batch.id,
                                                    "parentId": batch.tasks[0].task_id,
                                                    "taskName": "X", "subTask": []})
    assert (reply.status, reply.message, reply.data) == (0, "Job task is empty", "false")
    batch.stop()


# --------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------


def test_cluster_batch_success(emu: ServerEmulator, make_client: MakeClient) -> None:
    echo: Behaviour = lambda c, r: c.report(r, 3, {"echo": job_params(r)})  # noqa: E731
    client = ready(emu, make_client, behaviours={"echo": echo})
    batch = emu.trigger("echo", args_str="hello")
    assert batch.wait(3) == 3
    (task,) = batch.tasks
    assert task.status == 3
    assert task.result == '{"echo":"hello"}'
    assert task.execute_result == {"status": 1, "result": {"echo": "hello"}, "message": ""}
    assert task.node == "py-fake-1"
    (sent,) = client.dispatches
    assert sent["argsStr"] == '{"jobParams":"hello"}'
    assert sent["taskName"] == "CLUSTER_TASK" and sent["taskType"] == 1
    assert sent["retry"] is False and sent["retryStatus"] is False and sent["retryCount"] == 0
    assert "mrStage" not in sent and "wfContext" not in sent  # null fields omitted
    headers = client.dispatch_headers[0]
    assert headers["SJ-TOKEN"] == emu.token and headers["group-name"] == "DEFAULT_SERVER"
    assert headers["token"] == emu.server_token and headers["host-port"] == str(emu.port)
    assert emu.results[0]["taskId"] == task.task_id
    time.sleep(0.1)
    assert client.stops == []  # no stop after a CLUSTER batch


def test_no_live_client_cancels(emu: ServerEmulator) -> None:
    batch = emu.trigger("echo")
    assert batch.wait(1) == 6 and batch.tasks == []


def test_sharding_three_shards(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"shard": lambda c, r: c.report(
        r, 3, f"{r['shardingIndex']}/{r['shardingTotal']}:{job_params(r)}")})
    batch = emu.trigger("shard", task_type=3, args_str='["a","b","c"]')
    assert batch.wait(3) == 3
    assert [(t.sharding_index, t.sharding_total, t.result) for t in batch.tasks] == [
        (0, 3, "0/3:a"), (1, 3, "1/3:b"), (2, 3, "2/3:c")]
    assert all(t.task_name == "SHARDING_TASK" for t in batch.tasks)
    eventually(lambda: len(client.stops) == 3)  # stop per task row after completion
    assert {s["taskBatchId"] for s in client.stops} == {batch.id}


def test_broadcast_one_task_per_address(emu: ServerEmulator, make_client: MakeClient) -> None:
    first = ready(emu, make_client, host_id="py-a", behaviours={"b": succeed("ok")})
    second = make_client(host_id="py-b", behaviours={"b": succeed("ok")})
    second.beat()
    emu.wait_for_clients(2, timeout=2)
    batch = emu.trigger("b", task_type=2)
    assert batch.wait(3) == 3
    assert sorted(t.node or "" for t in batch.tasks) == ["py-a", "py-b"]
    assert len(first.dispatches) == 1 and len(second.dispatches) == 1


def test_map_with_300_children(emu: ServerEmulator, make_client: MakeClient) -> None:
    def behaviour(client: FakeClient, req: Dict[str, Any]) -> None:
        if req["taskName"] == "ROOT_MAP":
            assert json.loads(req["argsStr"]) == {"jobParams": "p", "maps": ""}
            reply = client.map(req, "CHILD", [f"item-{i}" for i in range(300)])
            assert (reply.status, reply.message) == (1, "Report Map Task Processed Successfully")
            client.report(req, 3, "root")
        else:
            client.report(req, 3, json.loads(req["argsStr"])["maps"])

    client = ready(emu, make_client, behaviours={"m": behaviour})
    batch = emu.trigger("m", task_type=4, args_str="p")
    assert batch.wait(5) == 3
    tasks = batch.tasks
    root, children = tasks[0], tasks[1:]
    assert root.task_name == "ROOT_MAP" and root.mr_stage == 1 and root.leaf is False
    assert len(children) == 300
    assert all(c.parent_id == root.task_id and c.leaf and c.task_name == "CHILD" for c in children)
    assert all(c.status == 3 for c in tasks)
    assert sorted(c.result for c in children) == sorted(f"item-{i}" for i in range(300))
    assert json.loads(children[7].args_str) == {"jobParams": "p", "maps": "item-7"}
    assert len(client.dispatches) == 301


def test_map_reduce_two_reduces_and_merge(emu: ServerEmulator, make_client: MakeClient) -> None:
    def behaviour(client: FakeClient, req: Dict[str, Any]) -> None:
        args = json.loads(req["argsStr"])
        if req["taskName"] == "ROOT_MAP":
            client.map(req, "NUMS", [1, 2, 3, 4, 5])
            client.report(req, 3, None)
        elif req["mrStage"] == 1:
            client.report(req, 3, args["maps"] * 10)
        elif req["mrStage"] == 2:
            client.report(req, 3, sum(int(x) for x in args["maps"]))
        else:
            client.report(req, 3, args["reduces"])

    ready(emu, make_client, behaviours={"mr": behaviour})
    batch = emu.trigger("mr", task_type=5, args_str="user-params", shard_num=2)
    assert batch.wait(3) == 3
    reduces = batch.tasks_in_stage(2)
    assert [t.task_name for t in reduces] == ["REDUCE_TASK", "REDUCE_TASK"]
    assert [json.loads(t.args_str) for t in reduces] == [
        {"jobParams": "user-params", "maps": ["10", "20", "30"]},
        {"jobParams": "user-params", "maps": ["40", "50"]}]
    (merge,) = batch.tasks_in_stage(3)
    assert merge.task_name == "MERGE_REDUCE_TASK"
    assert json.loads(merge.args_str) == {"jobParams": "user-params", "reduces": [t.result for t in reduces]}
    assert [t.result for t in reduces] == ["60", "90"]
    assert merge.result == '["60","90"]' and merge.status == 3


def test_failed_task_retried_then_fail(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"boom": fail("kaput")})
    batch = emu.trigger("boom", max_retry_times=2, retry_interval=0.05)
    assert batch.wait(3) == 4
    assert len(client.dispatches) == 3
    flags = [(d["retry"], d["retryStatus"], d.get("retryScene"), d["retryCount"]) for d in client.dispatches]
    assert flags == [(False, False, None, 0), (True, True, 1, 1), (True, True, 1, 2)]
    (task,) = batch.tasks
    assert task.retry_count == 2 and task.status == 4
    assert task.execute_result is not None and task.execute_result["message"] == "kaput"


def test_timeout_stops_batch(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"slow": hang})
    started = time.monotonic()
    batch = emu.trigger("slow", executor_timeout=1)
    assert batch.wait(3) == 5
    assert time.monotonic() - started >= 1.4
    assert batch.operation_reason == 1
    assert batch.tasks[0].status == 5
    eventually(lambda: len(client.stops) == 1)
    assert client.stops[0] == {"jobId": batch.job_id, "taskBatchId": batch.id, "groupName": emu.group}


def test_manual_stop(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"slow": hang})
    batch = emu.trigger("slow", executor_timeout=30)
    eventually(lambda: len(client.dispatches) == 1)
    batch.stop()
    assert batch.wait(1) == 5 and batch.tasks[0].status == 5
    eventually(lambda: len(client.stops) == 1)


def test_workflow_of_three_nodes(emu: ServerEmulator, make_client: MakeClient) -> None:
    def behaviour(client: FakeClient, req: Dict[str, Any]) -> None:
        context = json.loads(req["wfContext"])
        key = job_params(req)
        # a null value never deletes a key
        client.report(req, 3, sorted(context), wf_context={key: len(context), "start": None})

    client = ready(emu, make_client, behaviours={"ctx": behaviour})
    workflow = emu.trigger_workflow([{"executor": "ctx", "args_str": f"k{i}"} for i in (1, 2, 3)],
                                    wf_context={"start": 0})
    assert workflow.wait(5) == 3
    assert [b.status for b in workflow.batches] == [3, 3, 3]
    seen = [json.loads(d["wfContext"]) for d in client.dispatches]
    assert seen == [{"start": 0}, {"start": 0, "k1": 1}, {"start": 0, "k1": 1, "k2": 2}]
    assert all(d["workflowTaskBatchId"] == workflow.id for d in client.dispatches)
    assert [d["workflowNodeId"] for d in client.dispatches] == workflow.node_ids
    # like the server, the last node's changes are not merged (it has no successor)
    assert workflow.context == {"start": 0, "k1": 1, "k2": 2}
    assert workflow.batches[2].tasks[0].wf_context_changes == {"k3": 3, "start": None}


def test_dispatch_refusal_fails_task(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, refuse="executor type 1 is not supported")
    batch = emu.trigger("anything")
    assert batch.wait(3) == 4
    (task,) = batch.tasks
    assert task.status == 4
    assert task.execute_result == {"status": 0, "result": None, "message": "executor type 1 is not supported"}
    assert [(r.status, r.data, r.error) for r in task.dispatch_replies] == [(1, "false", None)]
    assert len(client.dispatches) == 1 and emu.results == []


def test_dispatch_to_dead_node_fails(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client)
    client.close()
    batch = emu.trigger("echo")
    assert batch.wait(4) == 4
    (reply,) = batch.tasks[0].dispatch_replies
    assert reply.error is not None and reply.status is None
    assert emu.live_nodes == []  # a failed call marks the node not alive


def test_log_batch_dropped_on_null_task_id(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()

    def entry(task_id: Optional[int], message: str) -> Dict[str, Any]:
        return {"logType": "JOB", "namespaceId": emu.namespace, "groupName": emu.group, "jobId": 1,
                "taskBatchId": 2, "taskId": task_id, "realTime": 1732770000123,
                "fieldList": [{"name": "time_stamp", "value": "1732770000123"},
                              {"name": "level", "value": "INFO"},
                              {"name": "message", "value": message},
                              {"name": "throwable", "value": None}]}

    reply = client.send_args(enums.URI_REPORT_LOG, [entry(5, "kept?"), entry(None, "bad")])
    assert (reply.status, reply.message, reply.data) == (
        1, "Batch Log Retry Data Upload Processed Successfully", "true")
    assert emu.logs == []
    (dropped,) = emu.dropped_logs
    assert "taskId" in dropped.reason and len(dropped.entries) == 2

    duplicate = entry(6, "dup")
    duplicate["fieldList"].append({"name": "level", "value": "WARN"})
    client.send_args(enums.URI_REPORT_LOG, [duplicate])
    assert len(emu.dropped_logs) == 2 and "level" in emu.dropped_logs[1].reason

    client.send_args(enums.URI_REPORT_LOG, [entry(5, "one"), entry(5, "two"), entry(6, "three")])
    assert len(emu.logs) == 3
    rows = emu.log_rows
    assert [(r["taskId"], r["logNum"]) for r in rows] == [(5, 2), (6, 1)]
    assert rows[0]["message"][1] == {"time_stamp": "1732770000123", "level": "INFO", "message": "two"}
    assert emu.problems == []


def test_call_client_raw(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client)
    assert emu.call_client("/sync/version", "[]") == (1, "", "null")
    assert client.other == [("/sync/version", "[]")]


def test_plugin_fixture(snailjob_emulator: ServerEmulator) -> None:  # noqa: F811
    assert snailjob_emulator.port > 0
    assert snailjob_emulator.client_env()["SNAIL_SERVER_PORT"] == str(snailjob_emulator.port)
    assert snailjob_emulator.nodes == []
