"""ServerEmulator's retry module driven by a raw fake retry client.

The fake client below speaks the wire protocol directly (the generated gRPC
message types and ``snailjob.wire.codec.encode_body``): a gRPC server that
answers the retry URIs the emulator calls (``/retry/dispatch/v1``,
``/retry/callback/v1``, ``/retry/stop/v1``,
``/retry/generate/idempotent-id/v1``, ``/retry/deserialize/args/v1``) and
runs a per-executor behaviour in a thread, and a channel to the emulator for
beats, reports and results.  It does not use ``snailjob.Client``, so these
tests pin the emulator alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import grpc
import pytest

from snailjob.testing import EmulatedRetry, ServerEmulator
from snailjob.testing.emulator import DEFAULT_NAMESPACE
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import encode_body

from .raw_node import RawNode, eventually

Behaviour = Callable[["FakeRetryClient", Dict[str, Any]], None]
MakeClient = Callable[..., "FakeRetryClient"]
Call = Tuple[List[Any], Dict[str, str]]
_OK_REPORT = "Batch Retry Data Upload Processed Successfully"
_OK_RESULT = "Report dispatch result processed successfully"


def idempotent_of(scene: str, executor: str, args_str: str) -> str:
    """What the fake client answers to ``/retry/generate/idempotent-id/v1``."""
    return hashlib.md5(f"{scene}_{executor}_{args_str}".encode()).hexdigest()


class FakeRetryClient(RawNode):
    """A minimal retry client: one gRPC server for the emulator's calls, one
    channel to the emulator."""

    def __init__(self, emu: ServerEmulator, behaviours: Optional[Dict[str, Behaviour]] = None,
                 callbacks: Optional[Dict[str, Behaviour]] = None, refuse: Optional[str] = None,
                 host_id: str = "py-retry-1") -> None:
        self.behaviours = behaviours or {}
        self.callbacks = callbacks or {}
        self.refuse = refuse
        self.deserialize_status = 1
        self.calls: List[Tuple[str, List[Any], Dict[str, str]]] = []
        super().__init__(emu, host_id, labels={"state": "up"})

    def calls_to(self, uri: str) -> List[Call]:
        with self._lock:
            return [(args, headers) for u, args, headers in self.calls if u == uri]

    # -- client -> server ---------------------------------------------------

    def report_retries(self, rows: List[Dict[str, Any]]) -> pb2.GrpcResult:
        return self.send_args(enums.URI_RETRY_REPORT, rows)

    def result(self, req: Dict[str, Any], status: Optional[int], result: Optional[str] = None,
               exc: Optional[str] = None, uri: str = enums.URI_RETRY_RESULT, drop: Sequence[str] = (),
               **override: Any) -> pb2.GrpcResult:
        """Report a result for the dispatch (or callback) request ``req``."""
        body: Dict[str, Any] = {key: req[key] for key in ("namespaceId", "groupName", "sceneName",
                                                          "retryId", "retryTaskId")}
        body["taskStatus"] = status
        if result is not None:
            body["result"] = result
        if exc is not None:
            body["exceptionMsg"] = exc
        body.update(override)
        for key in drop:
            body.pop(key, None)
        return self.send(uri, json.dumps([body]))

    def callback_result(self, req: Dict[str, Any], status: int, exc: Optional[str] = None) -> pb2.GrpcResult:
        return self.result(req, status, exc=exc, uri=enums.URI_RETRY_CALLBACK_RESULT)

    # -- server -> client -----------------------------------------------------

    def _serve(self, request: pb2.GrpcSnailJobRequest, context: grpc.ServicerContext) -> pb2.GrpcResult:
        uri = request.metadata.uri
        args = json.loads(request.body)
        with self._lock:
            self.calls.append((uri, args, dict(request.metadata.headers)))
        req = args[0]
        if uri == enums.URI_RETRY_DISPATCH:
            if self.refuse is not None:
                return pb2.GrpcResult(reqId=0, status=1, message=self.refuse, data="false")
            behaviour = self.behaviours.get(req["executorName"])
            if behaviour is not None:
                self._workers.submit(self._run, behaviour, req)
            return pb2.GrpcResult(reqId=0, status=1, message="", data="true")
        if uri == enums.URI_RETRY_CALLBACK:
            callback = self.callbacks.get(req["executorName"], callback_success)
            self._workers.submit(self._run, callback, req)
            return pb2.GrpcResult(reqId=0, status=1, message="", data="true")
        if uri == enums.URI_RETRY_IDEMPOTENT_ID:
            answer = idempotent_of(req["scene"], req["executorName"], req["argsStr"])
            return pb2.GrpcResult(reqId=0, status=1, message="", data=json.dumps(answer))
        if uri == enums.URI_RETRY_DESERIALIZE:
            decoded = {"decoded": json.loads(req["argsStr"])}
            return pb2.GrpcResult(reqId=0, status=self.deserialize_status, message="",
                                  data=json.dumps(decoded))
        return pb2.GrpcResult(reqId=0, status=1, message="", data="true")



def succeed(result: str) -> Behaviour:
    def run(client: FakeRetryClient, req: Dict[str, Any]) -> None:
        reply = client.result(req, 3, result)
        assert (reply.status, reply.message, reply.data) == (1, _OK_RESULT, "true")
    return run


def fail(message: str) -> Behaviour:
    def run(client: FakeRetryClient, req: Dict[str, Any]) -> None:
        reply = client.result(req, 4, exc=message)
        assert (reply.status, reply.data) == (1, "true")
    return run


def hang(client: FakeRetryClient, req: Dict[str, Any]) -> None:
    """Never reports."""


def callback_success(client: FakeRetryClient, req: Dict[str, Any]) -> None:
    reply = client.callback_result(req, 3)
    assert (reply.status, reply.message, reply.data) == (1, _OK_RESULT, "true")


def row(emu: ServerEmulator, **fields: Any) -> Dict[str, Any]:
    """One ``RetryTaskRequest`` of ``/batch/report``."""
    value: Dict[str, Any] = {"groupName": emu.group, "sceneName": "orders", "idempotentId": "i-1",
                             "executorName": "pay", "bizNo": "", "argsStr": "[1]", "extAttrs": "",
                             "serializerName": "jackson"}
    value.update(fields)
    return value


@pytest.fixture
def make_client(emu: ServerEmulator) -> Iterator[MakeClient]:
    clients: List[FakeRetryClient] = []

    def make(**kwargs: Any) -> FakeRetryClient:
        client = FakeRetryClient(emu, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
        assert not client.errors, client.errors


def ready(emu: ServerEmulator, make_client: MakeClient, **kwargs: Any) -> FakeRetryClient:
    client = make_client(**kwargs)
    assert client.beat().status == 1
    emu.wait_for_clients(1, timeout=2)
    return client


def only_retry(emu: ServerEmulator) -> EmulatedRetry:
    (retry,) = emu.retries
    return retry


# --------------------------------------------------------------------------
# /batch/report
# --------------------------------------------------------------------------


def test_report_accepted_and_deduplicated(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    emu.add_retry_scene("orders", interval=30)
    rows = [row(emu, idempotentId="b", argsStr="[2]"),
            row(emu, idempotentId="a", bizNo="B-1", extAttrs=None),
            row(emu, idempotentId="b", argsStr="[3]")]
    reply = client.report_retries(rows)
    assert (reply.status, reply.message, reply.data) == (1, _OK_REPORT, "true")
    # one retry per idempotent id, the first row wins, created in id order
    a, b = emu.retries
    assert (a.idempotent_id, b.idempotent_id) == ("a", "b")
    assert b.args_str == "[2]" and a.args_str == "[1]"
    assert a.biz_no == "B-1" and re.fullmatch(r"[0-9a-f]{32}", b.biz_no)  # blank bizNo -> UUID
    assert a.ext_attrs == ""  # a null extAttrs is stored as ""
    assert (a.status, a.retry_count, a.tasks, a.source) == (0, 0, [], "report")
    assert (a.scene, a.group, a.namespace, a.executor_name, a.serializer_name) == (
        "orders", emu.group, emu.namespace, "pay", "jackson")

    # a RUNNING retry of the scene already has "a": only "c" is created
    second = [row(emu, idempotentId="a"), row(emu, idempotentId="c")]
    reply = client.report_retries(second)
    assert (reply.status, reply.data) == (1, "true")
    assert [r.idempotent_id for r in emu.retries] == ["a", "b", "c"]
    assert emu.retry_reports == rows + second
    assert emu.retries_for("orders") == emu.retries and emu.retries_for("other") == []
    assert emu.retry(a.id) is a

    # a suspended retry still holds the unique key; a finished one does not
    emu.update_retry_status(a.id, EmulatedRetry.SUSPEND)
    reply = client.report_retries([row(emu, idempotentId="a")])
    assert (reply.status, reply.data) == (1, "false")
    assert "Duplicate entry 'a'" in reply.message
    emu.update_retry_status(a.id, EmulatedRetry.FINISH)
    assert client.report_retries([row(emu, idempotentId="a")]).data == "true"
    assert [r.idempotent_id for r in emu.retries] == ["a", "b", "c", "a"]
    assert [r.uri for r in emu.retry_requests] == ["/batch/report"] * 4
    assert emu.problems == []


def test_unknown_scene_refused_or_created(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    reply = client.report_retries([row(emu, sceneName="unknown")])
    assert (reply.status, reply.message, reply.data) == (
        1, "com.aizuda.snailjob.server.common.exception.SnailJobServerException: failed to report data, "
           f"no scene configuration found. groupName:[{emu.group}] sceneName:[unknown]", "false")
    assert emu.retries == [] and emu.retry_reports == [] and emu.retry_scenes == {}

    emu.init_scene = True
    reply = client.report_retries([row(emu, sceneName="unknown")])
    assert (reply.status, reply.message, reply.data) == (1, _OK_REPORT, "true")
    scene = emu.retry_scenes["unknown"]
    assert scene.auto_created and scene.enabled and not scene.callback
    assert (scene.max_retry_count, scene.cb_max_count, scene.executor_timeout) == (21, 16, 5)
    assert only_retry(emu).scene == "unknown"
    assert emu.problems == []


def test_report_validation(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()
    emu.add_retry_scene("orders", interval=30)

    reply = client.send(enums.URI_RETRY_REPORT, encode_body([row(emu), row(emu, groupName="other")]), req_id=77)
    assert (reply.status, reply.message, reply.data) == (
        1, "Batch report data, the same batch can only be the same group. ReqId:[77]", "false")
    reply = client.report_retries([row(emu, sceneName=None)])
    assert (reply.status, reply.message, reply.data) == (1, "element cannot be mapped to a null key", "false")
    reply = client.report_retries([row(emu, idempotentId="x" * 65)])
    assert (reply.status, reply.data) == (1, "false") and "idempotent_id" in reply.message
    reply = client.report_retries([row(emu, argsStr=None)])
    assert (reply.status, reply.data) == (1, "false") and "'args_str' cannot be null" in reply.message
    assert emu.retries == [] and emu.retry_reports == []

    # accepted by the server, but wrong: an empty list, a body group that is not the caller's
    assert client.report_retries([]).data == "true"
    assert client.report_retries([row(emu, groupName="elsewhere")]).data == "true"
    assert only_retry(emu).group == emu.group  # filed under the header's group

    problems = emu.problems
    assert len(problems) == 6, problems
    for index, text in enumerate(("same group", "null key", "idempotent_id is VARCHAR(64)",
                                  "no argsStr", "empty list", "'elsewhere'")):
        assert text in problems[index], (text, problems[index])


# --------------------------------------------------------------------------
# dispatch, results, max count
# --------------------------------------------------------------------------


def test_dispatch_body_and_headers(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"pay": succeed("done")})
    emu.add_retry_scene("orders", interval=0.05, executor_timeout=7)
    assert client.report_retries([row(emu, argsStr='[{"id":1}]')]).data == "true"
    retry = only_retry(emu)
    assert retry.wait(2) == EmulatedRetry.FINISH
    ((args, headers),) = client.calls_to(enums.URI_RETRY_DISPATCH)
    (task,) = retry.tasks
    assert args == [
        {"namespaceId": emu.namespace, "groupName": emu.group, "sceneName": "orders", "argsStr": '[{"id":1}]',
         "executorName": "pay", "retryCount": 0, "retryTaskId": task.id, "retryId": retry.id,
         "executorTimeout": 7, "serializerName": "jackson"},
        {"retry": True, "retryId": str(retry.id), "ddl": 7}]
    assert json.loads(headers["snail-job"]) == args[1]
    assert headers["SJ-TOKEN"] == emu.token and headers["token"] == emu.server_token
    assert (headers["group-name"], headers["namespace"]) == ("DEFAULT_SERVER", DEFAULT_NAMESPACE)
    assert (task.kind, task.status, task.result, task.node, task.retry_count) == ("retry", 3, "done", "py-retry-1", 0)
    assert task.request == args[0] and task.snail_job_header == args[1]
    eventually(lambda: task.dispatch_replies)  # the result may come before the reply is recorded
    assert [(r.status, r.data) for r in task.dispatch_replies] == [(1, "true")]
    assert (retry.retry_count, retry.callback_status) == (1, None)
    assert [c.body_args for c in emu.retry_dispatch_calls] == [args]
    assert [r.uri for r in emu.retry_requests] == ["/batch/report", "/report/retry/dispatch/result"]
    assert emu.problems == []


def test_fail_redispatch_success(emu: ServerEmulator, make_client: MakeClient) -> None:
    seen: List[Dict[str, Any]] = []

    def flaky(client: FakeRetryClient, req: Dict[str, Any]) -> None:
        seen.append(req)
        (fail("boom") if len(seen) == 1 else succeed("ok"))(client, req)

    client = ready(emu, make_client, behaviours={"pay": flaky})
    emu.add_retry_scene("orders", interval=0.05, max_retry_count=3)
    assert client.report_retries([row(emu)]).data == "true"
    retry = only_retry(emu)
    assert retry.wait(2) == EmulatedRetry.FINISH
    assert [r["retryCount"] for r in seen] == [0, 1]
    first, second = retry.tasks
    assert (first.status, first.exception_msg, first.operation_reason) == (4, "boom", 10)
    assert (second.status, second.result) == (3, "ok")
    assert retry.retry_count == 2
    assert emu.problems == []


def test_max_count(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"pay": fail("boom")})
    emu.add_retry_scene("orders", interval=0.05, max_retry_count=2)
    client.report_retries([row(emu)])
    retry = only_retry(emu)
    assert retry.wait(2) == EmulatedRetry.MAX_COUNT
    assert retry.retry_count == 2
    assert [t.status for t in retry.tasks] == [4, 4]
    time.sleep(0.2)
    assert len(client.calls_to(enums.URI_RETRY_DISPATCH)) == 2  # nothing after MAX_COUNT
    assert retry.callback_status is None and client.calls_to(enums.URI_RETRY_CALLBACK) == []
    assert emu.problems == []


def test_refused_dispatch_fails_without_counting(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, refuse="no such executor")
    emu.add_retry_scene("orders", interval=0.05, max_retry_count=3)
    emu.add_retry_scene("once", interval=0.05, max_retry_count=1)
    client.report_retries([row(emu)])
    retry = only_retry(emu)
    eventually(lambda: len(retry.tasks) >= 3 and retry.tasks[2].done)
    emu.update_retry_status(retry.id, EmulatedRetry.SUSPEND)  # it would run forever
    tasks = retry.tasks[:3]
    assert [(t.status, t.exception_msg) for t in tasks] == [(4, "no such executor")] * 3
    assert [t.retry_count for t in tasks] == [0, 0, 0] and retry.retry_count == 0
    assert [(r.status, r.message, r.data) for r in tasks[0].dispatch_replies] == [(1, "no such executor", "false")]

    # unless the next count reaches the limit
    client.report_retries([row(emu, sceneName="once")])
    once = emu.retries_for("once")[0]
    assert once.wait(2) == EmulatedRetry.MAX_COUNT and once.retry_count == 1
    assert emu.problems == []


# --------------------------------------------------------------------------
# callbacks
# --------------------------------------------------------------------------


def test_callback_after_finish_and_max_count(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"pay": succeed("ok"), "boom": fail("bad")})
    emu.add_retry_scene("orders", interval=0.05, callback=True, cb_interval=0.05, max_retry_count=1)
    client.report_retries([row(emu, idempotentId="a"), row(emu, idempotentId="b", executorName="boom")])
    finished, failed = emu.retries
    assert finished.wait_callback(2) == 3 and failed.wait_callback(2) == 3
    assert (finished.status, failed.status) == (EmulatedRetry.FINISH, EmulatedRetry.MAX_COUNT)
    calls = {args[0]["retryStatus"]: (args, headers) for args, headers in client.calls_to(enums.URI_RETRY_CALLBACK)}
    assert sorted(calls) == [1, 2]
    args, headers = calls[1]
    (cb_task,) = finished.callback_tasks
    assert args == [{"namespaceId": emu.namespace, "groupName": emu.group, "sceneName": "orders", "argsStr": "[1]",
                     "executorName": "pay", "retryStatus": 1, "retryTaskId": cb_task.id,
                     "retryId": finished.callback_id, "executorTimeout": 5, "serializerName": "jackson"}]
    assert finished.callback_id not in (None, finished.id)  # the callback row's own id
    assert "snail-job" not in headers and headers["SJ-TOKEN"] == emu.token
    assert calls[2][0][0]["executorName"] == "boom" and calls[2][0][0]["retryId"] == failed.callback_id
    assert (cb_task.kind, cb_task.status, finished.callback_count) == ("callback", 3, 1)
    assert len(emu.retry_callback_calls) == 2
    assert emu.problems == []


def test_callback_failure_resent_up_to_cb_max_count(emu: ServerEmulator, make_client: MakeClient) -> None:
    def refuse_callback(client: FakeRetryClient, req: Dict[str, Any]) -> None:
        assert client.callback_result(req, 4, exc="cb failed").data == "true"

    client = ready(emu, make_client, behaviours={"pay": succeed("ok")}, callbacks={"pay": refuse_callback})
    emu.add_retry_scene("orders", interval=0.05, callback=True, cb_interval=0.05, cb_max_count=3)
    client.report_retries([row(emu)])
    retry = only_retry(emu)
    assert retry.wait_callback(2) == 4
    assert retry.status == EmulatedRetry.FINISH
    assert [(t.status, t.exception_msg) for t in retry.callback_tasks] == [(4, "cb failed")] * 3
    assert retry.callback_count == 3
    time.sleep(0.2)
    sent = client.calls_to(enums.URI_RETRY_CALLBACK)
    assert len(sent) == 3 and {args[0]["retryId"] for args, _ in sent} == {retry.callback_id}
    assert emu.problems == []


# --------------------------------------------------------------------------
# timeout, stop
# --------------------------------------------------------------------------


def test_timeout_fails_attempt_and_sends_stop(emu: ServerEmulator, make_client: MakeClient) -> None:
    emu.retry_stop_quirk = False  # the server's intended behaviour
    client = ready(emu, make_client, behaviours={"pay": hang})
    emu.add_retry_scene("orders", interval=0.05, executor_timeout=1, max_retry_count=1)
    started = time.monotonic()
    client.report_retries([row(emu)])
    retry = only_retry(emu)
    assert retry.wait(3) == EmulatedRetry.MAX_COUNT
    assert time.monotonic() - started >= 1.4
    (task,) = retry.tasks
    assert (task.status, task.timed_out, task.operation_reason, retry.retry_count) == (4, True, 1, 1)
    eventually(lambda: client.calls_to(enums.URI_RETRY_STOP))
    ((stop_args, _),) = client.calls_to(enums.URI_RETRY_STOP)
    assert stop_args == [{"namespaceId": emu.namespace, "groupName": emu.group, "scene": "orders",
                          "retryTaskId": task.id, "retryId": retry.id}]
    (dispatched, _), = client.calls_to(enums.URI_RETRY_DISPATCH)
    # a late FAIL is ignored by the server's guard (a problem), a late SUCCESS is applied
    assert client.result(dispatched[0], 4, exc="late").data == "true"
    assert (retry.status, retry.retry_count) == (EmulatedRetry.MAX_COUNT, 1)
    assert len(emu.problems) == 1 and "ignores it" in emu.problems[0]
    assert client.result(dispatched[0], 3, "late ok").data == "true"
    assert (retry.status, retry.retry_count, task.status) == (EmulatedRetry.FINISH, 2, 3)
    assert len(emu.problems) == 1


def test_stop_retry(emu: ServerEmulator, make_client: MakeClient) -> None:
    emu.retry_stop_quirk = False  # the server's intended behaviour
    client = ready(emu, make_client, behaviours={"pay": hang})
    emu.add_retry_scene("orders", interval=0.05, executor_timeout=30, max_retry_count=5)
    client.report_retries([row(emu)])
    retry = only_retry(emu)
    eventually(lambda: len(client.calls_to(enums.URI_RETRY_DISPATCH)) == 1)
    assert emu.stop_retry(retry.id) == (1, "", "true")
    first = retry.tasks[0]
    ((stop_args, stop_headers),) = client.calls_to(enums.URI_RETRY_STOP)
    assert stop_args == [{"namespaceId": emu.namespace, "groupName": emu.group, "scene": "orders",
                          "retryTaskId": first.id, "retryId": retry.id}]
    assert stop_headers["SJ-TOKEN"] == emu.token
    assert (first.status, first.operation_reason, first.exception_msg) == (4, 7, "User manually triggered stop")
    assert (retry.status, retry.retry_count) == (EmulatedRetry.RUNNING, 1)
    # still RUNNING: it runs again after its interval, with the new count
    eventually(lambda: len(client.calls_to(enums.URI_RETRY_DISPATCH)) == 2)
    assert client.calls_to(enums.URI_RETRY_DISPATCH)[1][0][0]["retryCount"] == 1
    eventually(lambda: len(retry.tasks) == 2)
    assert retry.stop(suspend=True) == (1, "", "true")
    assert (retry.status, retry.retry_count) == (EmulatedRetry.SUSPEND, 2)
    time.sleep(0.2)
    assert len(client.calls_to(enums.URI_RETRY_DISPATCH)) == 2 and len(emu.retry_stop_calls) == 2
    assert emu.stop_retry(retry.id) is None  # nothing running: nothing sent
    assert emu.problems == []


def test_client_stop_suspends_retry(emu: ServerEmulator, make_client: MakeClient) -> None:
    emu.retry_stop_quirk = False  # the server's intended behaviour
    def stop(client: FakeRetryClient, req: Dict[str, Any]) -> None:
        assert client.result(req, 5, exc="do not retry").data == "true"

    client = ready(emu, make_client, behaviours={"pay": stop})
    emu.add_retry_scene("orders", interval=0.05)
    client.report_retries([row(emu)])
    retry = only_retry(emu)
    assert retry.wait(2) == EmulatedRetry.SUSPEND
    (task,) = retry.tasks
    assert (task.status, task.operation_reason, task.exception_msg, retry.retry_count) == (5, 11, "do not retry", 1)

    # vsj2.0.2 as it is: the stop handler throws, nothing changes
    emu.retry_stop_quirk = True
    client.report_retries([row(emu, idempotentId="i-2")])
    quirky = emu.retries[1]
    eventually(lambda: bool(quirky.tasks) and bool(quirky.tasks[0].reports))
    assert (quirky.tasks[0].status, quirky.status, quirky.retry_count) == (2, EmulatedRetry.RUNNING, 0)
    assert emu.stop_retry(quirky.id) is None and client.calls_to(enums.URI_RETRY_STOP) == []
    assert (quirky.tasks[0].status, quirky.status) == (2, EmulatedRetry.RUNNING)
    assert emu.stop_retry(quirky.id, suspend=True) is None  # the status switch itself works
    assert (quirky.tasks[0].status, quirky.status) == (2, EmulatedRetry.SUSPEND)
    assert client.calls_to(enums.URI_RETRY_STOP) == []
    assert emu.problems == []


# --------------------------------------------------------------------------
# console operations, scenes
# --------------------------------------------------------------------------


def test_console_operations(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"pay": succeed("ok")})
    emu.add_retry_scene("orders", interval=0.05)
    emu.add_retry_scene("slow", interval=30)

    assert emu.generate_idempotent_id("orders", "pay", "[1]") == idempotent_of("orders", "pay", "[1]")
    ((args, headers),) = client.calls_to(enums.URI_RETRY_IDEMPOTENT_ID)
    assert args == [{"group": emu.group, "scene": "orders", "argsStr": "[1]", "executorName": "pay",
                     "serializerName": "jackson"}]
    assert headers["SJ-TOKEN"] == emu.token
    with pytest.raises(RuntimeError, match="RetrySceneConfig"):
        emu.generate_idempotent_id("nope", "pay", "[1]")

    assert emu.deserialize_args("orders", "pay", '[1, "x"]', serializer_name="fory") == {"decoded": [1, "x"]}
    ((args, _),) = client.calls_to(enums.URI_RETRY_DESERIALIZE)
    assert args == [{"namespaceId": emu.namespace, "group": emu.group, "scene": "orders", "argsStr": '[1, "x"]',
                     "executorName": "pay", "serializerName": "fory"}]
    client.deserialize_status = 0
    assert emu.deserialize_args("orders", "pay", "[2]") == "[2]"  # the server falls back to argsStr
    assert emu.deserialize_args("nope", "pay", "[3]") == "[3]"  # unknown scene: no call
    assert len(client.calls_to(enums.URI_RETRY_DESERIALIZE)) == 2

    # "add retry" asks the client for the idempotent id, then runs the retry
    added = emu.add_retry("orders", "pay", "[4]", biz_no="B-4")
    assert added is not None and added.source == "console"
    assert (added.idempotent_id, added.biz_no) == (idempotent_of("orders", "pay", "[4]"), "B-4")
    assert added.wait(2) == EmulatedRetry.FINISH
    # de-duplicated against a running retry of the scene: nothing created
    assert emu.add_retry("slow", "pay", "[5]", idempotent_id="fixed") is not None
    assert emu.add_retry("slow", "pay", "[6]", idempotent_id="fixed") is None
    with pytest.raises(RuntimeError, match="NullPointerException"):
        emu.add_retry("nope", "pay", "[7]", idempotent_id="x")
    assert len(emu.retries) == 2 and emu.retry_reports == []
    assert emu.problems == []


def test_closed_scene_and_manual_trigger(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"pay": succeed("ok")})
    emu.add_retry_scene("orders", interval=0.05, enabled=False)
    assert client.report_retries([row(emu)]).data == "true"  # a closed scene still takes reports
    retry = only_retry(emu)
    time.sleep(0.2)
    assert (retry.tasks, retry.status) == ([], EmulatedRetry.RUNNING)
    cancelled = emu.trigger_retry(retry.id)
    assert (cancelled.status, cancelled.operation_reason, cancelled.manual) == (6, 9, True)

    emu.set_retry_scene_enabled("orders", True)
    assert retry.wait(2) == EmulatedRetry.FINISH and retry.retry_count == 1
    # the console's trigger runs a finished retry again
    again = retry.trigger()
    eventually(lambda: again.status == 3)
    assert (retry.status, retry.retry_count) == (EmulatedRetry.FINISH, 2)
    dispatches = client.calls_to(enums.URI_RETRY_DISPATCH)
    assert [args[0]["retryCount"] for args, _ in dispatches] == [0, 1]
    assert emu.problems == []


# --------------------------------------------------------------------------
# problems
# --------------------------------------------------------------------------


def test_result_problems(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = ready(emu, make_client, behaviours={"pay": hang})
    emu.add_retry_scene("orders", interval=0.05, executor_timeout=30)
    client.report_retries([row(emu)])
    retry = only_retry(emu)
    eventually(lambda: client.calls_to(enums.URI_RETRY_DISPATCH))
    req = client.calls_to(enums.URI_RETRY_DISPATCH)[0][0][0]

    reply = client.result(req, 3, retryTaskId=987654321)
    assert (reply.status, reply.message, reply.data) == (1, _OK_RESULT, "true")
    reply = client.result(req, 9)
    assert (reply.status, reply.message, reply.data) == (1, "task status code is invalid", "false")
    reply = client.result(req, None)
    assert (reply.status, reply.message, reply.data) == (1, "status is marked non-null but is null", "false")
    reply = client.result(req, 3, drop=("namespaceId",))
    assert (reply.status, reply.data) == (1, "true")
    assert retry.status == EmulatedRetry.RUNNING  # the server's scene lookup fails: ignored
    assert client.result(req, 3, "ok").data == "true"
    assert (retry.status, retry.retry_count) == (EmulatedRetry.FINISH, 1)
    assert client.result(req, 4, exc="again").data == "true"
    assert (retry.status, retry.retry_count, retry.tasks[0].status) == (EmulatedRetry.FINISH, 1, 3)

    problems = emu.problems
    assert len(problems) == 5, problems
    for index, text in enumerate(("unknown retry task 987654321", "taskStatus 9", "non-null",
                                  "namespaceId None", "duplicate result")):
        assert text in problems[index], (text, problems[index])


def test_retry_log_without_retry_task_id_is_dropped(emu: ServerEmulator, make_client: MakeClient) -> None:
    client = make_client()

    def entry(retry_task_id: Optional[int]) -> Dict[str, Any]:
        return {"logType": "RETRY", "namespaceId": emu.namespace, "groupName": emu.group,
                "retryTaskId": retry_task_id, "retryId": 1, "realTime": 1732770000123,
                "fieldList": [{"name": "time_stamp", "value": "1732770000123"},
                              {"name": "message", "value": "retrying"}]}

    reply = client.send_args(enums.URI_REPORT_LOG, [entry(7), entry(None)])
    assert (reply.status, reply.data) == (1, "true")
    assert emu.retry_logs == []
    (dropped,) = emu.dropped_logs
    assert "retryTaskId" in dropped.reason and len(dropped.entries) == 2
    (problem,) = emu.problems
    assert "RETRY log batch of 2 entries dropped" in problem
    client.send_args(enums.URI_REPORT_LOG, [entry(7)])
    assert [e["retryTaskId"] for e in emu.retry_logs] == [7]
    assert len(emu.problems) == 1
