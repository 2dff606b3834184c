"""The inbound gRPC server: token check, URIs, dispatch validation and the
outcome reported for each kind of executor behaviour (real gRPC calls)."""

import json
import threading
import time

import pytest

import snailjob as sj

from .conftest import TOKEN, call_inbound, dispatch, dispatch_body, wait_for

pytestmark = pytest.mark.usefixtures("inbound_kind")  # each test against both inbound servers

REPORT = "/report/dispatch/result"


def make_executors():
    calls = []

    @sj.job("echo")
    def echo(args):
        calls.append(args)
        return sj.ExecuteResult.success(args.job_params)

    return calls, [echo]


def test_token_is_checked_before_anything_runs(make_client):
    calls, executors = make_executors()
    client, _ = make_client(executors)
    for token, fragment in [(None, "SJ-TOKEN header missing"), ("wrong", "does not match")]:
        reply = dispatch(client.host_port, dispatch_body("echo"), token=token)
        assert reply.status == 0 and fragment in reply.message
        assert TOKEN not in reply.message and "wrong" not in reply.message
    time.sleep(0.2)
    assert calls == []
    assert dispatch(client.host_port, dispatch_body("echo")).data == "true"
    wait_for(lambda: calls)


def test_only_the_exact_token_is_accepted(make_client):
    """The whole token is compared: the right one is accepted, and anything
    else (another token, a prefix, a longer one, another case, empty) is
    refused before the job runs."""
    calls, executors = make_executors()
    client, _ = make_client(executors)
    for token in ["SJ_other_token_9876543210", TOKEN[:-1], TOKEN + "0", TOKEN.upper(), ""]:
        reply = dispatch(client.host_port, dispatch_body("echo"), token=token)
        assert reply.status == 0 and "does not match" in reply.message, token
    assert calls == []
    reply = dispatch(client.host_port, dispatch_body("echo"))
    assert (reply.status, reply.data) == (1, "true"), reply.message
    wait_for(lambda: calls)


def test_token_never_logged(make_client, caplog):
    _, executors = make_executors()
    client, _ = make_client(executors)
    with caplog.at_level("DEBUG", logger="snailjob"):
        dispatch(client.host_port, dispatch_body("echo"), token="SJ_guess_123")
    assert "refused" in caplog.text
    assert "SJ_guess_123" not in caplog.text and TOKEN not in caplog.text


def test_unknown_uri_and_sync_version(make_client):
    client, _ = make_client()
    for uri in ["/nope", "", "/sync/version?x=1"]:
        reply = call_inbound(client.host_port, uri, "[]")
        assert (reply.status, reply.data) == (1, "null"), uri
    reply = call_inbound(client.host_port, "/retry/dispatch/v1", "[]")
    assert (reply.status, reply.data) == (0, "false")
    assert "invalid retry dispatch request" in reply.message
    reply = call_inbound(client.host_port, "/job/stop/v1", json.dumps([{"taskBatchId": 123456}]))
    assert (reply.status, reply.data) == (1, "true")  # unknown batch: success


BAD_DISPATCHES = [
    ("not json", "not valid JSON"),
    ('{"jobId":1}', "expected a JSON array"),
    ("[]", "empty array"),
    ('["x"]', "first element is a JSON str"),
    ("", "body is empty"),
    (json.dumps([{k: v for k, v in dispatch_body("echo").items() if k != "jobId"}]), "jobId: Field required"),
    (json.dumps([dispatch_body("echo", taskId="abc")]), "taskId: Input should be a valid integer"),
    (json.dumps([dispatch_body("   ")]), "executorInfo"),
    (json.dumps([dispatch_body("missing")]), "no executor named 'missing'"),
    (json.dumps([dispatch_body("echo", executorType=1)]), "executorType 1 is not Python"),
    (json.dumps([dispatch_body("echo", taskType=4, mrStage=1, taskName="ROOT_MAP")]), "not a map executor"),
]


@pytest.mark.parametrize("body,fragment", BAD_DISPATCHES)
def test_bad_dispatch_is_refused_with_reason(make_client, body, fragment):
    calls, executors = make_executors()
    client, transport = make_client(executors)
    reply = call_inbound(client.host_port, "/job/dispatch/v1", body)
    assert reply.data == "false", reply
    assert fragment in reply.message
    # the server keeps working and nothing ran
    assert dispatch(client.host_port, dispatch_body("echo")).data == "true"
    wait_for(lambda: len(transport.bodies(REPORT)) == 1)
    assert len(calls) == 1


def test_dispatch_is_answered_before_the_job_runs(make_client):
    started, release = threading.Event(), threading.Event()

    @sj.job("slow")
    def slow(args):
        started.set()
        release.wait(10)
        return "done"

    client, transport = make_client([slow])
    reply = dispatch(client.host_port, dispatch_body("slow"))
    assert reply.data == "true"
    assert started.wait(5)
    assert transport.bodies(REPORT) == []  # the job is still running after the reply
    release.set()
    wait_for(lambda: transport.bodies(REPORT))


def outcome_of(make_client, func, **fields):
    client, transport = make_client([sj.job("x")(func)])
    body = dispatch_body("x", **fields)
    assert dispatch(client.host_port, body).data == "true"
    reports = wait_for(lambda: transport.bodies(REPORT))
    return reports[0][0]


def test_outcomes(make_client):
    none = outcome_of(make_client, lambda args: None)
    assert none["taskStatus"] == 3 and none["executeResult"]["status"] == 1
    assert "result" not in none["executeResult"]

    value = outcome_of(make_client, lambda args: {"rows": 3})
    assert value["taskStatus"] == 3 and value["executeResult"]["result"] == {"rows": 3}

    def boom(args):
        raise ValueError("bad row 17")

    failed = outcome_of(make_client, boom)
    assert failed["taskStatus"] == 4 and failed["executeResult"]["status"] == 0
    assert failed["executeResult"]["message"] == "ValueError: bad row 17"
    # as the result too, an object: the console's result view shows only JSON
    line = boom.__code__.co_firstlineno + 1  # the raise
    assert failed["executeResult"]["result"] == {
        "exception": "ValueError", "message": "bad row 17",
        "location": f"tests.test_inbound.test_outcomes.<locals>.boom(test_inbound.py:{line})"}

    explicit = outcome_of(make_client, lambda args: sj.ExecuteResult.failure("quota"))
    assert explicit["taskStatus"] == 4 and explicit["executeResult"]["message"] == "quota"
    assert explicit["executeResult"]["result"] == '"quota"'  # text that is not JSON goes as a JSON string
    as_json = outcome_of(make_client, lambda args: sj.ExecuteResult.failure('{"code": 7}'))
    assert as_json["executeResult"]["result"] == '{"code": 7}'  # already JSON: unchanged

    class Custom(Exception):
        pass

    def raises_custom(args):
        raise Custom()

    custom = outcome_of(make_client, raises_custom)["executeResult"]
    assert custom["message"] == "Custom"
    assert custom["result"]["exception"] == "tests.test_inbound.test_outcomes.<locals>.Custom"

    odd = outcome_of(make_client, lambda args: {1, 2})
    assert odd["taskStatus"] == 3 and sorted(odd["executeResult"]["result"]) == [1, 2]

    def exits(args):
        raise SystemExit(3)

    assert outcome_of(make_client, exits)["executeResult"]["message"] == "SystemExit: 3"


@pytest.mark.parametrize("args_str,expected", [("", None), ("not json", "not json"), ("42", "42"),
                                               ('{"jobParams":"p"}', "p")])
def test_args_str_variants_reach_the_job(make_client, args_str, expected):
    report = outcome_of(make_client, lambda args: sj.ExecuteResult.success([args.job_params]),
                        argsStr=args_str)
    assert report["taskStatus"] == 3 and report["executeResult"]["result"] == [expected]


def test_report_echoes_dispatch_fields_and_sends_changed_context(make_client):
    def flow(args):
        assert args.get_wf_context("seen") == 1
        args.append_context("added", "v")
        return "ok"

    report = outcome_of(make_client, flow, workflowTaskBatchId=501, workflowNodeId=502, retry=True,
                        retryStatus=True, retryScene=2, retryCount=1, wfContext='{"seen":1}')
    assert report["workflowTaskBatchId"] == 501 and report["workflowNodeId"] == 502
    assert report["retry"] is True and report["retryStatus"] is True and report["retryScene"] == 2
    assert report["taskType"] == 1 and report["groupName"] == "snail_job_demo_group"
    assert json.loads(report["wfContext"]) == {"added": "v"}


def test_unusable_wf_context_runs_the_job_and_logs_a_warning(make_client):
    seen = []
    client, transport = make_client([sj.job("w")(lambda args: seen.append(args.wf_context))])
    dispatch(client.host_port, dispatch_body("w", wfContext="[1,2]"))
    wait_for(lambda: transport.bodies(REPORT))
    assert seen == [{}]
    logs = wait_for(lambda: transport.bodies("/batch/server/report/log"))
    messages = [f["value"] for entry in logs[0][0] for f in entry["fieldList"] if f["name"] == "message"]
    assert any("wfContext is a JSON list" in m for m in messages)


def test_ten_mebibyte_dispatch_is_received(make_client):
    @sj.job("big")
    def big(args):
        return len(args.map_result)

    mr = sj.MapReduceExecutor("bigmr")
    mr.reduce()(big)
    client, transport = make_client([mr])
    # just under the 10 MiB message limit (the Java client's too) of reduce input
    maps = ["x" * 1000] * 10_400
    body = dispatch_body("bigmr", 5, mrStage=2, taskName="REDUCE_TASK",
                         argsStr=json.dumps({"jobParams": "", "maps": maps}))
    reply = call_inbound(client.host_port, "/job/dispatch/v1", json.dumps([body]))
    assert len(reply.SerializeToString()) < 100 and reply.data == "true"
    report = wait_for(lambda: transport.bodies(REPORT))[0][0]
    assert report["executeResult"]["result"] == 10_400
