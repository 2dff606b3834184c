"""Golden tests: the JSON the client sends, and parsing what the server
sends, against hand-written fixtures in ``tests/golden`` (protocol.md)."""

import json
import pathlib
import threading
from decimal import Decimal

import snailjob as sj
from snailjob.args import build_args
from snailjob.wire.models import DispatchJobRequest, StopJobRequest

from .conftest import TOKEN, call_inbound, dispatch, dispatch_body, wait_for

GOLDEN = pathlib.Path(__file__).parent / "golden"
CLIENT = json.loads((GOLDEN / "client_messages.json").read_text())
SERVER = json.loads((GOLDEN / "server_messages.json").read_text())


def matches(actual, expected, port=None):
    """Structural equality where ``<...>`` placeholders check the type only."""
    if isinstance(expected, str) and expected.startswith("<") and expected.endswith(">"):
        kind = expected[1:-1]
        if kind == "int":
            return isinstance(actual, int)
        if kind == "digits":
            return isinstance(actual, str) and actual.isdigit()
        if kind == "port":
            return actual == str(port)
        if kind == "token":
            return actual == TOKEN
        return isinstance(actual, str) and actual != ""
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(matches(actual[k], v, port) for k, v in expected.items()))
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(matches(a, e, port) for a, e in zip(actual, expected)))
    return type(actual) is type(expected) and actual == expected


def test_beat_registration_and_headers(make_client):
    client, transport = make_client([sj.job("alpha")(lambda a: None), sj.job("beta")(lambda a: None)],
                                    snail_labels="env:dev,app:demo")
    wait_for(lambda: transport.bodies("/register/job/executors"))
    uri, body, headers = transport.calls[0]
    assert uri == CLIENT["beat"]["uri"] and body == CLIENT["beat"]["body"]
    assert matches(transport.bodies("/register/job/executors")[0], CLIENT["register"]["body"])
    assert matches(headers, CLIENT["headers"], client.host_port), headers
    assert all(headers == h for _, _, h in transport.calls)  # host-id stable


def run_one(make_client, func, executor="x", **fields):
    client, transport = make_client([sj.job(executor)(func)])
    dispatch(client.host_port, dispatch_body(executor, **fields))
    return client, transport, wait_for(lambda: transport.bodies("/report/dispatch/result"))


def test_result_reports(make_client):
    *_, reports = run_one(make_client, lambda a: {"rows": 10}, jobId=12, taskBatchId=3456, taskId=7890)
    assert matches(reports[0], CLIENT["result_success"]["body"]), reports[0]

    def fail(args):
        args.append_context("k2", "v2")
        raise RuntimeError("boom")

    *_, reports = run_one(make_client, fail, jobId=12, taskBatchId=3456, taskId=7891, taskType=3,
                          workflowTaskBatchId=55, workflowNodeId=66, retryScene=1, retry=True,
                          retryStatus=True, retryCount=1, taskName="SHARDING_TASK")
    assert matches(reports[0], CLIENT["result_failure_in_workflow_retry"]["body"]), reports[0]
    assert reports[0][0]["executeResult"]["result"]["location"] == (
        "tests.test_wire_golden.test_result_reports.<locals>.fail(test_wire_golden.py:65)")


def test_map_report(make_client):
    mapper = sj.MapExecutor("mapper")

    @mapper.map()
    def root(args):
        args.append_context("m", 1)
        return sj.mr_do_map([1, "two", {"three": 3}], "SECOND")

    client, transport = make_client([mapper])
    dispatch(client.host_port, dispatch_body("mapper", 4, jobId=12, taskBatchId=3456, taskId=7892,
                                             mrStage=1, taskName="ROOT_MAP"))
    wait_for(lambda: transport.bodies("/report/dispatch/result"))
    assert matches(transport.bodies("/batch/report/job/map/task/v1")[0], CLIENT["map"]["body"])
    # the map report goes out before the parent's own result
    uris = [u for u, _, _ in transport.calls if u != "/beat" and u != "/register/job/executors"]
    assert uris.index("/batch/report/job/map/task/v1") < uris.index("/report/dispatch/result")


def test_log_report(make_client):
    client, transport = make_client([sj.job("x")(lambda a: sj.SnailLog.REMOTE.info("processed %d rows", 10))],
                                    snail_log_remote_interval=0.1)
    dispatch(client.host_port, dispatch_body("x", jobId=12, taskBatchId=3456, taskId=7890))
    logs = wait_for(lambda: transport.bodies("/batch/server/report/log"))
    assert matches(logs[0], CLIENT["log"]["body"], client.host_port), logs[0]


def test_parse_every_dispatch_the_server_sends():
    for name, body in SERVER.items():
        if not name.startswith("dispatch"):
            continue
        request = DispatchJobRequest.model_validate(body[0])
        args, warnings, _ = build_args(request)
        assert warnings == [] and args.job_id == body[0]["jobId"], name
    shard = build_args(DispatchJobRequest.model_validate(SERVER["dispatch_sharding_workflow_1_10"][0])).args
    assert (shard.sharding_index, shard.sharding_total, shard.wf_context) == (1, 3, {"a": 1})
    assert (shard.workflow_task_batch_id, shard.workflow_node_id, shard.job_params) == (88, 99, "b")
    reduce = build_args(DispatchJobRequest.model_validate(SERVER["dispatch_reduce"][0])).args
    assert reduce.map_result == ["1", '{"a":2}', ""] and reduce.retry_count == 1
    merge = build_args(DispatchJobRequest.model_validate(SERVER["dispatch_merge"][0])).args
    assert merge.reduces == ["3", "4"]
    root = build_args(DispatchJobRequest.model_validate(SERVER["dispatch_root_map"][0])).args
    assert root.task_name == "ROOT_MAP" and root.map_result == ""
    assert StopJobRequest.model_validate(SERVER["stop"][0]).taskBatchId == 3456


def test_server_messages_over_grpc(make_client):
    got = threading.Event()
    client, transport = make_client([sj.job("testJobExecutor")(lambda a: got.set())])
    reply = call_inbound(client.host_port, "/job/dispatch/v1", json.dumps(SERVER["dispatch_cluster"]))
    assert (reply.status, reply.data, reply.reqId) == (1, "true", 7)
    assert got.wait(5)
    for uri, key in [("/job/stop/v1", "stop"), ("/sync/version", "sync_version")]:
        reply = call_inbound(client.host_port, uri, json.dumps(SERVER[key]))
        assert reply.status == 1, uri


# --- retry module -------------------------------------------------------------------


def golden_charge(order: int, amount: Decimal, meta: dict) -> dict:
    sj.SnailLog.REMOTE.info("paying %s", order)
    if meta.get("fail"):
        raise ConnectionError("gateway down")
    return {"paid": order}


def test_retry_report_and_results(make_client):
    charge = sj.retryable("payment", executor_name="golden.charge", biz_no=lambda o, a, m: f"A-{o}",
                          strategy="remote_only")(golden_charge)
    client, transport = make_client([charge])
    charge.report(17, Decimal("9.50"), {"currency": "EUR"})
    assert client.flush(5)
    assert transport.calls[-1][0] == CLIENT["retry_report"]["uri"]
    assert matches(transport.bodies("/batch/report")[0], CLIENT["retry_report"]["body"])

    for key in ("retry_dispatch_2_0", "retry_dispatch_1_4"):
        reply = call_inbound(client.host_port, SERVER[key]["uri"], json.dumps(SERVER[key]["body"]))
        assert (reply.status, reply.data) == (1, "true"), (key, reply.message)
    got = wait_for(lambda: len(transport.bodies("/report/retry/dispatch/result")) == 2
                   and transport.bodies("/report/retry/dispatch/result"))
    assert sorted(got, key=lambda b: b[0]["retryTaskId"])[0] == CLIENT["retry_result_success"]["body"]
    failing = dict(SERVER["retry_dispatch_2_0"]["body"][0], retryTaskId=3,
                   argsStr='[17, "9.50", {"fail": true}]')
    call_inbound(client.host_port, "/retry/dispatch/v1", json.dumps([failing]))
    got = wait_for(lambda: [b for b in transport.bodies("/report/retry/dispatch/result")
                            if b[0]["retryTaskId"] == 3 and b[0]["taskStatus"] == 4])
    assert got[0] == CLIENT["retry_result_failure"]["body"]
    entry = wait_for(lambda: [e for b in transport.bodies("/batch/server/report/log") for e in b[0]
                              if e["logType"] == "RETRY" and e["retryTaskId"] == 2])[0]
    assert matches(entry, CLIENT["retry_log"]["body"], client.host_port), entry


def test_retry_callback_stop_and_console_calls(make_client):
    charge = sj.retryable("payment", executor_name="golden.charge", on_success=lambda call: None)(golden_charge)
    client, transport = make_client([charge])
    reply = call_inbound(client.host_port, SERVER["retry_callback"]["uri"],
                         json.dumps(SERVER["retry_callback"]["body"]))
    assert (reply.status, reply.data) == (1, "true")
    got = wait_for(lambda: transport.bodies("/report/retry/callback/result"))
    assert got[0] == CLIENT["retry_callback_result"]["body"]
    reply = call_inbound(client.host_port, SERVER["retry_stop"]["uri"], json.dumps(SERVER["retry_stop"]["body"]))
    assert (reply.status, reply.data) == (1, "true")
    reply = call_inbound(client.host_port, SERVER["retry_idempotent_id"]["uri"],
                         json.dumps(SERVER["retry_idempotent_id"]["body"]))
    expected = charge.build_report((17, Decimal("9.50"), {}), {}).idempotentId
    assert reply.status == 1 and json.loads(reply.data) == expected
    reply = call_inbound(client.host_port, SERVER["retry_deserialize"]["uri"],
                         json.dumps(SERVER["retry_deserialize"]["body"]))
    assert reply.status == 1 and json.loads(reply.data) == [17, "9.50", {}]


def test_the_direct_result_body_is_the_models():
    """Results of plain JSON data skip the model; the body must be the one the model gives."""
    from snailjob.context import TaskContext
    from snailjob.reporting import result_body, result_body_from_model
    from snailjob.wire.models import ExecuteResult
    from snailjob.work import Task

    shapes = [
        {}, {"workflowTaskBatchId": 77, "workflowNodeId": 5}, {"retryScene": 2, "retry": True, "retryStatus": True},
        {"groupName": None}, {"taskType": 4, "mrStage": 1, "taskName": "ROOT_MAP"},
    ]
    results = [ExecuteResult.success(), ExecuteResult.success({"rows": [1, 2.5, None, True]}),
               ExecuteResult.success("text"), ExecuteResult.success(0, message=""),
               ExecuteResult.failure("not json", "Boom: x"), ExecuteResult.failure({"exception": "E"}, None),
               ExecuteResult.failure('{"already": "json"}', "m")]
    checked = 0
    for fields in shapes:
        for changes in ({}, {"k": [1, {"a": "b"}]}):
            for outcome in results:
                request = DispatchJobRequest.model_validate(dispatch_body("x", **fields))
                args, _, _ = build_args(request)
                for key, value in changes.items():
                    args.append_context(key, value)
                task = Task(request, lambda a: None, args, TaskContext(request, args, threading.Event(), None))  # type: ignore[arg-type]
                direct = json.loads(result_body(task, outcome, "group"))
                assert direct == json.loads(result_body_from_model(task, outcome, "group")), (fields, outcome)
                assert list(direct[0]) == list(json.loads(result_body_from_model(task, outcome, "group"))[0])
                checked += 1
    assert checked == len(shapes) * 2 * len(results)
