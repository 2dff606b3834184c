"""The OpenAPI client (snailjob.openapi) against FakeOpenApiServer, a real HTTP server
on a local socket that records every request (method, path, query, headers, body)."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator

import pytest

from snailjob.errors import ConfigurationError, SnailJobError
from snailjob.openapi import (
    AsyncOpenApiClient,
    BatchStatus,
    BatchWaitTimeout,
    BlockStrategy,
    ExecutorType,
    JobBatch,
    JobDetail,
    JobExists,
    JobRequest,
    JobSpec,
    JobStatus,
    OpenApiAuthError,
    OpenApiClient,
    OpenApiError,
    OpenApiHTTPError,
    OpenApiNotFoundError,
    OpenApiResponseError,
    OpenApiServerError,
    OpenApiTimeout,
    OpenApiTransportError,
    OpenApiValidationError,
    OperationReason,
    RetryStatus,
    RetryTask,
    RouteStrategy,
    SyncJobsError,
    TaskType,
    Trigger,
    TriggerType,
    WorkflowBatch,
    WorkflowExists,
    map_reduce_args,
    sharding_args,
)
from snailjob.openapi.fake import FakeOpenApiServer
from snailjob.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "SJ_secret_token_never_shown_42"


@pytest.fixture
def fake() -> Iterator[FakeOpenApiServer]:
    with FakeOpenApiServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenApiServer) -> OpenApiClient:
    return fake.client()


def cluster_spec(**changes: Any) -> JobSpec:
    spec = JobSpec.cluster("demo", "demoJob", Trigger.cron("0 0 2 * * ?"), args="hello", biz_id="demo_1")
    return spec.replace(**changes) if changes else spec


CLUSTER_BODY = {
    "groupName": "snail_job_demo_group", "bizId": "demo_1", "jobName": "demo", "jobStatus": 1, "argsStr": "hello",
    "argsType": 1, "routeKey": 4, "executorType": 2, "executorInfo": "demoJob", "triggerType": 3,
    "triggerInterval": "0 0 2 * * ?", "blockStrategy": 1, "executorTimeout": 60, "maxRetryTimes": 0,
    "retryInterval": 1, "taskType": 1, "parallelNum": 1, "description": "", "notifyIds": [], "labels": "",
}
JOB_REPLY = {"id": 42, "bizId": "demo_1", "groupName": "snail_job_demo_group", "jobName": "demo", "argsStr": "x",
             "argsType": "1", "jobStatus": 1, "taskType": 3, "triggerType": 2, "triggerInterval": "60",
             "createDt": "2025-07-01 10:20:30", "notifyIds": [3], "somethingNew": "kept"}
BATCH_REPLY = {"id": 77, "jobId": 42, "jobName": "demo", "groupName": "g", "taskType": "1", "taskBatchStatus": 4,
               "operationReason": 1, "executionAt": "2025-07-01 10:20:30", "executorInfo": "demoJob"}
WF_BATCH_REPLY = {
    "id": 7, "bizId": "w", "workflowName": "wf", "workflowBatchStatus": 3, "wfContext": '{"a":1}',
    "nodeConfig": {"nodeType": 1, "conditionNodes": [
        {"id": 11, "nodeName": "n1", "taskBatchStatus": 3, "jobTask": {"jobId": 42},
         "jobBatchList": [{"id": 101, "jobId": 42, "taskBatchStatus": 3}]},
        {"id": 12, "nodeName": "n2", "jobBatchList": [{"jobId": 43}]}],
        "childNode": {"nodeType": 1, "conditionNodes": [
            {"id": 13, "nodeName": "n3", "jobBatchList": [{"id": 102, "jobId": 44, "taskBatchStatus": 3}]}]}}}
RETRY_REPLY = {"id": 5, "groupName": "g", "sceneName": "pay", "retryStatus": 2, "retryCount": 3,
               "nextTriggerAt": "2025-07-01 10:20:30"}

# (name, call, method, api path, query, body, reply data, check of the result)
Call = Callable[[OpenApiClient], Any]
ENDPOINTS = [
    ("add_job", lambda c: c.add_job(cluster_spec()), "POST", "/api/job/add", {}, CLUSTER_BODY, 42,
     lambda r: r == 42),
    ("update_job", lambda c: c.update_job(42, cluster_spec()), "PUT", "/api/job/update", {},
     {**CLUSTER_BODY, "id": 42}, True, lambda r: r is True),
    ("job_detail", lambda c: c.job_detail(42), "GET", "/api/job/detail/id", {"id": "42"}, None, JOB_REPLY,
     lambda r: isinstance(r, JobDetail) and r.id == 42 and r.args_type == 1 and r.task_type == 3
     and r.create_dt == datetime(2025, 7, 1, 10, 20, 30) and r.notify_ids == [3]
     and r.model_extra == {"somethingNew": "kept"}),
    ("job_exists", lambda c: c.job_exists(42), "GET", "/api/job/exists", {"id": "42"}, None,
     {"groupName": "g", "id": 42, "bizId": "b", "jobStatus": 0},
     lambda r: isinstance(r, JobExists) and (r.id, r.biz_id, r.group_name, r.job_status) == (42, "b", "g", 0)),
    ("trigger_job", lambda c: c.trigger_job(42, "tmp"), "POST", "/api/job/trigger", {},
     {"jobId": 42, "tmpArgsStr": "tmp"}, True, lambda r: r is True),
    ("update_job_status", lambda c: c.update_job_status(42, False), "PUT", "/api/job/update/status", {},
     {"id": 42, "status": 0}, True, lambda r: r is True),
    ("delete_jobs", lambda c: c.delete_jobs([42, 43, 42]), "DELETE", "/api/job/delete", {}, [42, 43], True,
     lambda r: r is True),
    ("add_job_by_biz_id", lambda c: c.add_job_by_biz_id(cluster_spec()), "POST", "/api/job/bizId/add", {},
     CLUSTER_BODY, "42", lambda r: r == 42),
    ("update_job_by_biz_id", lambda c: c.update_job_by_biz_id(cluster_spec()), "PUT", "/api/job/bizId/update", {},
     CLUSTER_BODY, True, lambda r: r is True),
    ("job_detail_by_biz_id", lambda c: c.job_detail_by_biz_id("demo_1"), "GET", "/api/job/bizId/detail",
     {"bizId": "demo_1"}, None, JOB_REPLY, lambda r: isinstance(r, JobDetail) and r.biz_id == "demo_1"),
    ("job_exists_by_biz_id", lambda c: c.job_exists_by_biz_id("demo_1"), "GET", "/api/job/bizId/exists",
     {"bizId": "demo_1"}, None, {"id": 42, "bizId": "demo_1"}, lambda r: isinstance(r, JobExists) and r.id == 42),
    ("trigger_job_by_biz_id", lambda c: c.trigger_job_by_biz_id("demo_1", {"k": 1}), "POST",
     "/api/job/bizId/trigger", {}, {"bizId": "demo_1", "tmpArgsStr": '{"k":1}'}, True, lambda r: r is True),
    ("update_job_status_by_biz_id", lambda c: c.update_job_status_by_biz_id("demo_1", JobStatus.ENABLED), "PUT",
     "/api/job/bizId/updateStatus", {}, {"bizId": "demo_1", "status": 1}, True, lambda r: r is True),
    ("delete_jobs_by_biz_id", lambda c: c.delete_jobs_by_biz_id(["a", "b"]), "DELETE", "/api/job/bizId/delete",
     {}, {"bizIds": ["a", "b"]}, True, lambda r: r is True),
    ("trigger_workflow", lambda c: c.trigger_workflow(7, {"a": 1}), "POST", "/api/workflow/trigger", {},
     {"workflowId": 7, "jobId": 7, "tmpWfContext": '{"a":1}'}, True, lambda r: r is True),
    ("update_workflow_status", lambda c: c.update_workflow_status(7, True), "PUT", "/api/workflow/update/status",
     {}, {"id": 7, "status": 1}, True, lambda r: r is True),
    ("delete_workflows", lambda c: c.delete_workflows([7]), "DELETE", "/api/workflow/delete", {}, [7], True,
     lambda r: r is True),
    ("workflow_exists", lambda c: c.workflow_exists(7), "GET", "/api/workflow/exists", {"id": "7"}, None,
     {"id": 7, "bizId": "w", "workflowStatus": 1, "version": 3},
     lambda r: isinstance(r, WorkflowExists) and (r.id, r.workflow_status, r.version) == (7, 1, 3)),
    ("trigger_workflow_by_biz_id", lambda c: c.trigger_workflow_by_biz_id("w", workflow_id=7), "POST",
     "/api/workflow/bizId/trigger", {}, {"bizId": "w", "workflowId": 7}, True, lambda r: r is True),
    ("update_workflow_status_by_biz_id", lambda c: c.update_workflow_status_by_biz_id("w", 0), "PUT",
     "/api/workflow/bizId/updateStatus", {}, {"bizId": "w", "status": 0}, True, lambda r: r is True),
    ("delete_workflows_by_biz_id", lambda c: c.delete_workflows_by_biz_id(["w"]), "DELETE",
     "/api/workflow/bizId/delete", {}, ["w"], True, lambda r: r is True),
    ("workflow_exists_by_biz_id", lambda c: c.workflow_exists_by_biz_id("w"), "GET",
     "/api/workflow/bizId/exists", {"bizId": "w"}, None, {"id": 7, "bizId": "w"},
     lambda r: isinstance(r, WorkflowExists) and r.biz_id == "w"),
    ("job_batch_detail", lambda c: c.job_batch_detail(77), "GET", "/api/job-batch/detail/77", {"id": "77"}, None,
     BATCH_REPLY, lambda r: isinstance(r, JobBatch) and r.status is BatchStatus.FAIL
     and r.reason is OperationReason.TASK_EXECUTION_TIMEOUT and r.task_type == 1 and r.is_final
     and not r.succeeded and r.execution_at == datetime(2025, 7, 1, 10, 20, 30)),
    ("workflow_batch_detail", lambda c: c.workflow_batch_detail(88), "GET", "/api/workflow-batch/detail/id",
     {"id": "88"}, None, WF_BATCH_REPLY, lambda r: isinstance(r, WorkflowBatch) and r.status is BatchStatus.SUCCESS
     and [n.node_name for n in r.nodes()] == ["n1", "n2", "n3"] and [b.id for b in r.job_batches()] == [101, 102]),
    ("retry_detail", lambda c: c.retry_detail(5), "GET", "/api/retry/query", {"id": "5"}, None, RETRY_REPLY,
     lambda r: isinstance(r, RetryTask) and (r.scene_name, r.retry_status, r.retry_count) == ("pay", 2, 3)),
    ("trigger_retry", lambda c: c.trigger_retry(5), "POST", "/api/retry/trigger", {}, {"id": 5}, True,
     lambda r: r is True),
    ("update_retry_status", lambda c: c.update_retry_status(5, RetryStatus.FINISH), "PUT",
     "/api/retry/update/status", {}, {"id": 5, "status": 1}, True, lambda r: r is True),
]
HELPERS = {"wait_job_batch", "wait_workflow_batch", "sync_jobs", "from_settings"}


def test_the_table_covers_every_endpoint_method() -> None:
    public = {name for name in dir(OpenApiClient)
              if not name.startswith("_") and callable(getattr(OpenApiClient, name))}
    assert public - HELPERS == {e[0] for e in ENDPOINTS}
    assert len(ENDPOINTS) == 27  # the server's OpenAPI (1.10 / 2.0) has 27 endpoints
    asynchronous = {n for n in dir(AsyncOpenApiClient) if not n.startswith("_") and n != "sync"}
    assert public <= asynchronous


@pytest.mark.parametrize("name,call,method,path,query,body,data,check", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_endpoint_request_shape_and_reply(fake: FakeOpenApiServer, client: OpenApiClient, name: str, call: Call,
                                          method: str, path: str, query: Dict[str, str], body: Any, data: Any,
                                          check: Callable[[Any], bool]) -> None:
    fake.reply(method, path, data)
    result = call(client)
    assert len(fake.requests) == 1, [r.api_path for r in fake.requests]
    request = fake.requests[0]
    assert (request.method, request.path, request.api_path) == (method, "/snail-job" + path, path)
    assert request.query == query
    assert request.body == body
    if body is None:
        assert request.raw == b""
    assert check(result), result


def test_every_request_carries_the_group_headers(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    client.add_job(cluster_spec())
    client.job_exists(1001)
    for request in fake.requests:
        h = request.headers
        assert h["namespace"] == fake.namespace and h["group-name"] == fake.group and h["token"] == TOKEN
        assert h["executor-type"] == "2" and h["system-version"]
        assert h["content-type"] == "application/json"
    assert [r.api_path for r in fake.requests] == ["/api/job/add", "/api/job/exists"]


# ----------------------------------------------------------------------------- replies


def test_absent_objects_are_none(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    assert client.job_exists(1) is None
    assert client.job_exists_by_biz_id("nope") is None
    assert client.workflow_exists(1) is None
    assert client.workflow_exists_by_biz_id("nope") is None
    assert client.job_detail(1) is None  # the server answers {} for an unknown id
    assert fake.last().api_path == "/api/job/detail/id"
    assert client.job_detail_by_biz_id("nope") is None
    assert client.job_batch_detail(1) is None
    assert client.workflow_batch_detail(1) is None
    fake.reply("GET", "/api/retry/query", None)
    with pytest.raises(OpenApiNotFoundError):
        client.retry_detail(1)


@pytest.mark.parametrize("method,path,call,data", [
    ("POST", "/api/job/add", lambda c: c.add_job(cluster_spec()), "abc"),
    ("POST", "/api/job/add", lambda c: c.add_job(cluster_spec()), True),
    ("POST", "/api/job/trigger", lambda c: c.trigger_job(1), "yes"),
    ("POST", "/api/job/trigger", lambda c: c.trigger_job(1), None),
    ("GET", "/api/job/exists", lambda c: c.job_exists(1), [1, 2]),
    ("GET", "/api/job-batch/detail/3", lambda c: c.job_batch_detail(3), {"taskBatchStatus": "not a number"}),
])
def test_unexpected_data_is_a_response_error(fake: FakeOpenApiServer, client: OpenApiClient, method: str,
                                             path: str, call: Call, data: Any) -> None:
    fake.reply(method, path, data)
    with pytest.raises(OpenApiResponseError) as info:
        call(client)
    assert info.value.path == path


def test_models_use_the_servers_field_names() -> None:
    # JobRequest.java (1.10.1 / 2.0.2), in declaration order
    server_fields = ["id", "groupName", "bizId", "jobName", "jobStatus", "argsStr", "argsType", "routeKey",
                     "executorType", "executorInfo", "triggerType", "triggerInterval", "blockStrategy",
                     "executorTimeout", "maxRetryTimes", "retryInterval", "taskType", "parallelNum", "description",
                     "notifyIds", "ownerId", "labels"]
    assert [f.alias for f in JobRequest.model_fields.values()] == server_fields
    batch_fields = {"id", "groupName", "jobName", "taskType", "nodeName", "jobId", "taskBatchStatus", "createDt",
                    "updateDt", "executionAt", "operationReason", "executorType", "executorInfo", "decision",
                    "workflowTaskBatchId", "workflowNodeId"}
    assert {f.alias for f in JobBatch.model_fields.values()} == batch_fields
    assert JobRequest(groupName="g", bizId="b").wire() == JobRequest(group_name="g", biz_id="b").wire() == \
        {"groupName": "g", "bizId": "b"}


def test_dates_in_other_shapes_do_not_break_a_reply() -> None:
    batch = JobBatch.model_validate({"id": 1, "createDt": 1751365230000, "updateDt": [2025, 7, 1, 10, 20],
                                     "executionAt": "not a date"})
    assert batch.create_dt == datetime.fromtimestamp(1751365230)
    assert batch.update_dt == datetime(2025, 7, 1, 10, 20)
    assert batch.execution_at is None
    assert JobBatch(task_batch_status=99).status is None and not JobBatch().is_final


# ------------------------------------------------------------------------------ errors


def assert_no_token(*texts: Any) -> None:
    for text in texts:
        assert TOKEN not in str(text), text
        assert "never_shown" not in str(text), text


def test_server_error_carries_status_message_and_path(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    fake.reply("POST", "/api/job/trigger", status=0, message="Group [g] is closed, manual execution is not supported.")
    with pytest.raises(OpenApiServerError) as info:
        client.trigger_job(9)
    err = info.value
    assert not isinstance(err, OpenApiAuthError)
    assert (err.status, err.path) == (0, "/api/job/trigger")
    assert err.message == "Group [g] is closed, manual execution is not supported."
    assert "manual execution is not supported" in str(err) and "/api/job/trigger" in str(err)
    assert isinstance(err, OpenApiError) and isinstance(err, SnailJobError)


def test_the_model_reports_business_errors(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    job_id = client.add_job(cluster_spec())  # enabled
    with pytest.raises(OpenApiServerError, match="Ensure the task is closed"):
        client.delete_jobs([job_id])
    assert client.update_job_status(job_id, JobStatus.DISABLED) is True
    assert client.delete_jobs([job_id]) is True
    assert client.job_exists(job_id) is None
    with pytest.raises(OpenApiServerError, match="job can not be null"):
        client.trigger_job(job_id)
    client.add_job_by_biz_id(cluster_spec(biz_id="dup"))
    with pytest.raises(OpenApiServerError, match="bizId already exists"):
        client.add_job_by_biz_id(cluster_spec(biz_id="dup"))


def test_refused_token_is_an_auth_error_without_the_token(fake: FakeOpenApiServer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="snailjob")
    wrong = OpenApiClient(fake.base_url, namespace=fake.namespace, group=fake.group,
                          token="SJ_wrong_but_secret_never_shown", timeout=5)
    with pytest.raises(OpenApiAuthError) as info:
        wrong.job_exists(1)
    err = info.value
    # the fake, like the real server, quoted the token it received in its message
    reply_token = fake.last().headers["token"]
    assert reply_token == "SJ_wrong_but_secret_never_shown"
    assert "Token authentication failed" in err.message and "token:***" in err.message
    for text in (str(err), repr(err), err.message, err.args, repr(wrong), caplog.text):
        assert "SJ_wrong_but_secret_never_shown" not in str(text)
    fake.reply("GET", "/api/job/exists", status=5001, message="login expired")
    with pytest.raises(OpenApiAuthError) as info:
        wrong.job_exists(1)
    assert info.value.status == 5001


def test_token_is_redacted_from_every_error_and_log(fake: FakeOpenApiServer, client: OpenApiClient,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="snailjob")
    errors = []
    fake.reply("GET", "/api/job/exists", status=0, message=f"bad request from {TOKEN}", times=1)
    fake.reply("GET", "/api/job/exists", http_status=500, raw=f"<html>boom token={TOKEN}</html>".encode(), times=1)
    fake.reply("GET", "/api/job/exists", raw=f"not json {TOKEN}".encode(), times=1)
    fake.reply("GET", "/api/job/exists", data=None, delay=2.0, times=1)
    slow = fake.client(timeout=0.2)
    for c in (client, client, client, slow):
        with pytest.raises(OpenApiError) as info:
            c.job_exists(1)
        errors.append(info.value)
    assert [type(e) for e in errors] == [OpenApiServerError, OpenApiHTTPError, OpenApiResponseError, OpenApiTimeout]
    for err in errors:
        assert_no_token(str(err), repr(err), err.message, err.args, pickle.loads(pickle.dumps(err)))
    assert_no_token(repr(client), repr(AsyncOpenApiClient(client=client)), caplog.text,
                    *[r.getMessage() for r in caplog.records])
    assert "***" in errors[0].message and "***" in errors[1].message


def test_http_500_is_an_http_error(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    fake.reply("POST", "/api/job/add", http_status=500, raw=b'{"error":"Internal Server Error"}')
    with pytest.raises(OpenApiHTTPError) as info:
        client.add_job(cluster_spec())
    assert info.value.http_status == 500 and info.value.path == "/api/job/add"
    assert "500" in str(info.value) and "Internal Server Error" in str(info.value)


def test_wrong_prefix_is_an_http_404(fake: FakeOpenApiServer) -> None:
    wrong = OpenApiClient(f"http://127.0.0.1:{fake.port}/other-prefix", namespace=fake.namespace, group=fake.group,
                          token=TOKEN, timeout=5)
    with pytest.raises(OpenApiHTTPError) as info:
        wrong.job_exists(1)
    assert info.value.http_status == 404
    assert fake.last().path == "/other-prefix/api/job/exists"


@pytest.mark.parametrize("raw", [b"<html>gateway</html>", b"[1, 2]", b'{"data": 1}', b"\xff\xfe"])
def test_non_json_or_non_envelope_reply(fake: FakeOpenApiServer, client: OpenApiClient, raw: bytes) -> None:
    fake.reply("GET", "/api/job/exists", raw=raw)
    with pytest.raises(OpenApiResponseError) as info:
        client.job_exists(1)
    assert info.value.path == "/api/job/exists"


def test_timeout_is_fast_and_typed(fake: FakeOpenApiServer) -> None:
    fake.reply("POST", "/api/job/trigger", data=True, delay=3.0)
    slow = fake.client(timeout=0.25)
    started = time.monotonic()
    with pytest.raises(OpenApiTimeout) as info:
        slow.trigger_job(1)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, OpenApiTransportError)
    assert info.value.path == "/api/job/trigger" and "0.25" in str(info.value)


def test_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the call: nothing listens
    c = OpenApiClient(f"http://127.0.0.1:{port}/snail-job", namespace="ns", group="g", token=TOKEN, timeout=2)
    with pytest.raises(OpenApiTransportError) as info:
        c.job_exists(1)
    assert not isinstance(info.value, OpenApiTimeout)
    assert "cannot reach" in str(info.value)
    assert_no_token(str(info.value))


# ------------------------------------------------------------- error texts (issue 25)

# what Tomcat answers for a path outside the server's context path (the URL without /snail-job)
TOMCAT_404 = ('<!doctype html><html lang="en"><head><title>HTTP Status 404 \u2013 Not Found</title>'
              '<style type="text/css">body {font-family:Tahoma,Arial,sans-serif;} h1, h2, h3, b '
              '{color:white;background-color:#525D76;} h1 {font-size:22px;}</style></head><body>'
              '<h1>HTTP Status 404 \u2013 Not Found</h1><hr class="line" /><p><b>Type</b> Status Report</p>'
              '<p><b>Message</b> The requested resource [&#47;api&#47;job&#47;detail&#47;id] is not available</p>'
              '<p><b>Description</b> The origin server did not find a current representation for the target '
              'resource or is not willing to disclose that one exists.</p><hr class="line" />'
              '<h3>Apache Tomcat/10.1.19</h3></body></html>\n').encode()


@pytest.fixture
def tomcat() -> Iterator[int]:
    """A web server that answers every request with Tomcat's HTML 404 page; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _page(self) -> None:
            self.send_response(404, "")  # Tomcat 10 sends no reason phrase: "HTTP/1.1 404 "
            self.send_header("Content-Type", "text/html;charset=utf-8")
            self.send_header("Content-Length", str(len(TOMCAT_404)))
            self.end_headers()
            self.wfile.write(TOMCAT_404)

        do_GET = do_POST = do_PUT = _page

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again before the call: nothing listens


def env_client(**settings: Any) -> OpenApiClient:
    """A client configured as ``snailjob status`` configures it: from settings."""
    return OpenApiClient.from_settings(Settings.load(env_file=None, snail_token=TOKEN, **settings), timeout=5)


def test_tomcat_404_page_becomes_one_short_line_with_the_context_path_hint(tomcat: int) -> None:
    with pytest.raises(OpenApiHTTPError) as info:
        env_client(snail_openapi_url=f"http://127.0.0.1:{tomcat}").job_detail(7)
    err = info.value
    assert err.http_status == 404 and err.path == "/api/job/detail/id"
    head = f"HTTP 404 Not Found from http://127.0.0.1:{tomcat}/api/job/detail/id: "
    hint = "; is SNAIL_OPENAPI_URL missing the /snail-job context path?"
    assert err.message.startswith(head) and err.message.endswith(hint), err.message
    snippet = err.message[len(head):-len(hint)]
    assert snippet.startswith("HTTP Status 404 \u2013 Not Found Type Status Report Message The requested resource "
                              "[/api/job/detail/id] is not available Description")
    assert len(snippet) <= 200 and snippet.endswith("...")
    for piece in ("<", ">", "\n", "font-family", "&#47;", "Tomcat/10"):
        assert piece not in err.message, piece
    assert str(err) == f"/api/job/detail/id: {err.message}"


def test_404_hint_names_what_the_url_came_from(tomcat: int) -> None:
    with pytest.raises(OpenApiHTTPError) as given:
        OpenApiClient(f"http://127.0.0.1:{tomcat}/", namespace="ns", group="g", token=TOKEN, timeout=5).job_exists(1)
    assert given.value.message.endswith("; is the base URL missing the /snail-job context path?")
    with pytest.raises(OpenApiHTTPError) as other:
        env_client(snail_openapi_url=f"http://127.0.0.1:{tomcat}/sj").job_exists(1)
    assert other.value.message.endswith(
        "; is /sj, the context path of SNAIL_OPENAPI_URL, right? (the server's default is /snail-job)")
    with pytest.raises(OpenApiHTTPError) as right:  # the context path is right: no guess about it
        env_client(snail_openapi_url=f"http://127.0.0.1:{tomcat}/snail-job").job_exists(1)
    assert right.value.message.startswith(f"HTTP 404 Not Found from http://127.0.0.1:{tomcat}/snail-job/api/job/"
                                          "exists: HTTP Status 404")
    assert "context path" not in right.value.message


def test_a_long_plain_body_is_cut_and_the_token_removed(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    fake.reply("GET", "/api/job/exists", http_status=502, raw=(f"bad gateway {TOKEN} " + "x" * 5000).encode())
    with pytest.raises(OpenApiHTTPError) as info:
        client.job_exists(1)
    head = f"HTTP 502 Bad Gateway from {fake.base_url}/api/job/exists: "
    assert info.value.message.startswith(head + "bad gateway *** xxx"), info.value.message
    assert len(info.value.message) - len(head) <= 200 and info.value.message.endswith("...")
    assert_no_token(str(info.value))


def test_connection_refused_names_snail_openapi_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}/snail-job"
    with pytest.raises(OpenApiTransportError) as info:
        env_client(snail_openapi_url=url).job_detail(1)
    assert info.value.message == (f"cannot reach {url} (SNAIL_OPENAPI_URL): connection refused; "
                                  "start the server or set SNAIL_OPENAPI_URL")


def test_connection_refused_on_the_default_url_says_the_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setattr("snailjob.openapi.paths.DEFAULT_PORT", port)
    with pytest.raises(OpenApiTransportError) as info:
        env_client(snail_server_host="127.0.0.1").job_detail(1)
    assert info.value.message == (f"cannot reach http://127.0.0.1:{port}/snail-job (the default: SNAIL_OPENAPI_URL "
                                  "is not set): connection refused; start the server or set SNAIL_OPENAPI_URL")


def test_snailjob_status_prints_the_error_texts(tomcat: int, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from snailjob.cli import main

    for key in [k for k in os.environ if k.startswith("SNAIL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SNAIL_TOKEN", TOKEN)
    monkeypatch.chdir(os.path.dirname(os.path.abspath(__file__)))  # no .env here
    url = f"http://127.0.0.1:{closed_port()}/snail-job"
    assert main(["status", "3", "--openapi-url", url]) == 1
    err = capsys.readouterr().err
    assert err == (f"snailjob status: OpenApiTransportError: /api/job/detail/id: cannot reach {url} "
                   "(SNAIL_OPENAPI_URL): connection refused; start the server or set SNAIL_OPENAPI_URL\n")
    monkeypatch.setenv("SNAIL_OPENAPI_URL", f"http://127.0.0.1:{tomcat}")
    assert main(["trigger", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"snailjob trigger: OpenApiHTTPError: /api/job/trigger: HTTP 404 Not Found from "
                          f"http://127.0.0.1:{tomcat}/api/job/trigger: HTTP Status 404")
    assert err.endswith("; is SNAIL_OPENAPI_URL missing the /snail-job context path?\n")
    assert err.count("\n") == 1 and "<" not in err and len(err) < 400
    assert_no_token(err)


def test_errors_survive_pickling() -> None:
    err = pickle.loads(pickle.dumps(OpenApiHTTPError("HTTP 502", path="/api/x", http_status=502)))
    assert (err.message, err.path, err.http_status) == ("HTTP 502", "/api/x", 502)
    verr = pickle.loads(pickle.dumps(OpenApiValidationError("argsStr", "bad")))
    assert verr.field == "argsStr" and str(verr) == "argsStr: bad"


# -------------------------------------------------------------------------- validation


def test_point_in_time_trigger() -> None:
    soon = datetime.now().replace(microsecond=0) + timedelta(hours=1)
    trigger = Trigger.at(soon + timedelta(seconds=10), soon)
    assert trigger.type is TriggerType.POINT_IN_TIME
    assert json.loads(trigger.interval) == [soon.strftime("%Y-%m-%d %H:%M:%S"),
                                            (soon + timedelta(seconds=10)).strftime("%Y-%m-%d %H:%M:%S")]
    aware = Trigger.at((soon + timedelta(minutes=5)).astimezone(timezone.utc))
    assert json.loads(aware.interval) == [(soon + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")]
    with pytest.raises(OpenApiValidationError, match="not in the future") as info:
        trigger.check(now=soon + timedelta(days=1))
    assert info.value.field == "triggerInterval"


@pytest.mark.parametrize("make,field,words", [
    (lambda: Trigger.at(datetime.now() - timedelta(minutes=1)), "triggerInterval", "not in the future"),
    (lambda: Trigger.at(datetime.now() + timedelta(hours=1), datetime.now() + timedelta(hours=1, seconds=9)),
     "triggerInterval", "10 s apart"),
    (lambda: Trigger.at(), "triggerInterval", "at least one"),
    (lambda: Trigger.at(*[datetime.now() + timedelta(hours=1, minutes=i) for i in range(12)]), "triggerInterval",
     "at most 11"),
    (lambda: Trigger.at("2030-01-01 00:00:00"), "triggerInterval", "datetime"),
    (lambda: Trigger.cron("0 * * * *"), "triggerInterval", "6 or 7 fields"),
    (lambda: Trigger.cron("   "), "triggerInterval", "blank"),
    (lambda: Trigger.fixed(0), "triggerInterval", ">= 1"),
    (lambda: Trigger.fixed(True), "triggerInterval", "integer"),
    (lambda: JobSpec.sharding("s", "e", Trigger.fixed(60), shards="a,b"), "argsStr", "list of strings"),
    (lambda: JobSpec.sharding("s", "e", Trigger.fixed(60), shards=["a", 2]), "argsStr", "element 1 is int"),
    (lambda: JobSpec.sharding("s", "e", Trigger.fixed(60), shards=[]), "argsStr", "must not be empty"),
    (lambda: JobSpec(TaskType.SHARDING, "s", "e", Trigger.fixed(60), args_str="a,b"), "argsStr", "JSON list"),
    (lambda: JobSpec(TaskType.CLUSTER, "c", "e", Trigger.fixed(60), parallel_num=4), "parallelNum", "always 1"),
    (lambda: JobSpec.broadcast("b", "e", Trigger.fixed(60)).replace(parallel_num=2), "parallelNum", "always 1"),
    (lambda: JobSpec.map_reduce("m", "e", Trigger.fixed(60), shard_num=0), "shardNum", ">= 1"),
    (lambda: JobSpec.map_reduce("m", "e", Trigger.fixed(60), shard_num="2"), "shardNum", "integer"),
    (lambda: JobSpec(TaskType.MAP_REDUCE, "m", "e", Trigger.fixed(60), args_str="x"), "argsStr", "shardNum"),
    (lambda: JobSpec.map("m", "e", Trigger.fixed(60), parallel_num=0), "parallelNum", ">= 1"),
    (lambda: cluster_spec(labels={"state": "down"}), "labels", "'state' is reserved"),
    (lambda: cluster_spec(labels={"team": 1}), "labels", "string value"),
    (lambda: cluster_spec(labels={" ": "x"}), "labels", "non-blank"),
    (lambda: cluster_spec(executor="  "), "executorInfo", "blank"),
    (lambda: cluster_spec(name=""), "jobName", "blank"),
    (lambda: cluster_spec(name="x" * 65), "jobName", "at most 64"),
    (lambda: cluster_spec(biz_id="has space"), "bizId", "letters, digits"),
    (lambda: cluster_spec(group="bad/group"), "groupName", "letters, digits"),
    (lambda: cluster_spec(executor_timeout=0), "executorTimeout", ">= 1"),
    (lambda: cluster_spec(max_retry_times=-1), "maxRetryTimes", ">= 0"),
    (lambda: cluster_spec(route=9), "routeKey", "CONSISTENT_HASH=1"),
    (lambda: cluster_spec(block_strategy=0), "blockStrategy", "DISCARD=1"),
    (lambda: cluster_spec(enabled=1), "jobStatus", "True or False"),
    (lambda: cluster_spec(notify_ids=(1, "2")), "notifyIds[1]", "integer"),
    (lambda: cluster_spec(trigger="0 0 2 * * ?"), "triggerType", "Trigger"),
    (lambda: JobSpec.cluster("c", "e", Trigger.fixed(60), args=3.5), "argsStr", "string or a mapping"),
    (lambda: map_reduce_args(2, {"x": object()}), "argsStr", "JSON"),
    (lambda: sharding_args("abc"), "argsStr", "list of strings"),
])
def test_invalid_definitions_name_the_field(make: Callable[[], Any], field: str, words: str) -> None:
    with pytest.raises(OpenApiValidationError) as info:
        make()
    assert info.value.field == field
    assert words in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)


def test_cluster_and_broadcast_have_no_parallelism_option() -> None:
    with pytest.raises(TypeError):
        JobSpec.cluster("c", "e", Trigger.fixed(60), parallel_num=3)  # type: ignore[call-arg]
    assert JobSpec.broadcast("b", "e", Trigger.fixed(60)).parallel_num == 1


@pytest.mark.parametrize("call,field", [
    (lambda c: c.job_detail(0), "id"),
    (lambda c: c.job_exists(True), "id"),
    (lambda c: c.trigger_job(-3), "id"),
    (lambda c: c.trigger_job(1, args=3), "tmpArgsStr"),
    (lambda c: c.update_job_status(1, 2), "status"),
    (lambda c: c.update_job_status(1, "yes"), "status"),
    (lambda c: c.delete_jobs([]), "ids"),
    (lambda c: c.delete_jobs(range(1, 102)), "ids"),
    (lambda c: c.delete_jobs_by_biz_id("abc"), "bizIds"),
    (lambda c: c.delete_workflows_by_biz_id(["ok", " "]), "bizIds"),
    (lambda c: c.job_detail_by_biz_id(""), "bizId"),
    (lambda c: c.trigger_workflow(1, context="[1, 2]"), "tmpWfContext"),
    (lambda c: c.trigger_workflow(1, context="not json"), "tmpWfContext"),
    (lambda c: c.update_retry_status(1, 7), "status"),
    (lambda c: c.update_retry_status(1, True), "status"),
    (lambda c: c.add_job_by_biz_id(cluster_spec(biz_id=None)), "bizId"),
    (lambda c: c.add_job("not a job"), "job"),
    (lambda c: c.wait_job_batch(1, timeout=0), "timeout"),
    (lambda c: c.wait_job_batch(1, poll=-1), "poll"),
    (lambda c: c.sync_jobs([cluster_spec(biz_id=None)]), "bizId"),
    (lambda c: c.sync_jobs([cluster_spec(), cluster_spec(name="other")]), "bizId"),
    (lambda c: c.sync_jobs(cluster_spec()), "jobs"),
    (lambda c: c.sync_jobs(["x"]), "jobs[0]"),
])
def test_invalid_calls_send_nothing(fake: FakeOpenApiServer, client: OpenApiClient, call: Call, field: str) -> None:
    with pytest.raises(OpenApiValidationError) as info:
        call(client)
    assert info.value.field == field
    assert fake.requests == []


def test_point_in_time_gone_stale_is_caught_before_sending(fake: FakeOpenApiServer, client: OpenApiClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spec = cluster_spec(trigger=Trigger.at(datetime.now() + timedelta(seconds=30)))
    real_check = Trigger.check
    monkeypatch.setattr(Trigger, "check", lambda self, now=None: real_check(self, datetime.now() + timedelta(hours=1)))
    with pytest.raises(OpenApiValidationError, match="not in the future"):
        client.sync_jobs([spec])
    assert fake.requests == []


@pytest.mark.parametrize("kwargs,field", [
    ({"base_url": "ftp://x/snail-job"}, "base_url"),
    ({"base_url": "http:///snail-job"}, "base_url"),
    ({"base_url": "http://h:99999/snail-job"}, "base_url"),
    ({"base_url": "http://user:pw@h:8080/snail-job"}, "base_url"),
    ({"timeout": 0}, "timeout"),
    ({"group": " "}, "group"),
    ({"token": TOKEN + "\r\nX-Evil: 1"}, "token"),
])
def test_invalid_client_configuration(kwargs: Dict[str, Any], field: str) -> None:
    options: Dict[str, Any] = {"base_url": "http://127.0.0.1:8080/snail-job", "namespace": "ns", "group": "g",
                               "token": TOKEN, "timeout": 5}
    options.update(kwargs)
    with pytest.raises(OpenApiValidationError) as info:
        OpenApiClient(options.pop("base_url"), **options)
    assert info.value.field == field
    assert_no_token(str(info.value))


# ------------------------------------------------------------------------ definitions


def test_spec_bodies_per_task_type(client: OpenApiClient) -> None:
    trigger = Trigger.fixed(600)
    cases = [
        (JobSpec.broadcast("b", "e", trigger, args={"k": "v"}),
         {"taskType": 2, "argsStr": '{"k":"v"}', "argsType": 2, "parallelNum": 1, "routeKey": 4}),
        (JobSpec.sharding("s", "e", trigger, shards=["n", "s"], parallel_num=2),
         {"taskType": 3, "argsStr": '["n","s"]', "argsType": 1, "parallelNum": 2}),
        (JobSpec.map("m", "e", trigger, args="300", route=RouteStrategy.RANDOM, parallel_num=8),
         {"taskType": 4, "argsStr": "300", "routeKey": 2, "parallelNum": 8}),
        (JobSpec.map_reduce("r", "e", Trigger.workflow(), shard_num=2, args="mr"),
         {"taskType": 5, "argsStr": '{"shardNum":2,"argsStr":"mr"}', "argsType": 2, "triggerType": 99,
          "triggerInterval": "*"}),
        (JobSpec.cluster("c", "e", trigger, enabled=False, labels={"team": "a"}, notify_ids=[3],
                         owner_id=9, block_strategy=BlockStrategy.CONCURRENCY, executor_type=ExecutorType.GO,
                         group="other_group", description="d"),
         {"taskType": 1, "jobStatus": 0, "labels": '{"team":"a"}', "notifyIds": [3], "ownerId": 9,
          "blockStrategy": 3, "executorType": 3, "groupName": "other_group", "description": "d",
          "triggerType": 2, "triggerInterval": "600"}),
    ]
    for spec, expected in cases:
        body = spec.to_request(client.group).wire()
        assert {k: body[k] for k in expected} == expected, (spec.task_type, body)
    assert map_reduce_args(3) == '{"shardNum":3}'
    assert sharding_args(("a",)) == '["a"]'


def test_partial_update_with_a_job_request(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    job_id = client.add_job(cluster_spec())
    assert client.update_job(job_id, JobRequest(job_name="renamed", executor_timeout=5)) is True
    assert fake.last().body == {"id": job_id, "groupName": fake.group, "jobName": "renamed", "executorTimeout": 5}
    detail = client.job_detail(job_id)
    assert detail is not None and (detail.job_name, detail.executor_timeout, detail.args_str) == ("renamed", 5, "hello")


# ----------------------------------------------------------------------------- settings


def test_from_settings_uses_the_job_clients_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SNAIL_"):
            monkeypatch.delenv(name)
    settings = Settings.load(env_file=None, snail_server_host="10.1.2.3:17888,10.1.2.4", snail_namespace="ns1",
                             snail_group_name="grp1", snail_token=TOKEN)
    c = OpenApiClient.from_settings(settings)
    assert (c.base_url, c.namespace, c.group, c.timeout) == ("http://10.1.2.3:8080/snail-job", "ns1", "grp1", 10.0)
    assert TOKEN not in repr(c)
    monkeypatch.setenv("SNAIL_OPENAPI_URL", "https://jobs.example.com/sj/")
    monkeypatch.setenv("SNAIL_OPENAPI_TIMEOUT", "2.5")
    monkeypatch.setenv("SNAIL_GROUP_NAME", "grp2")
    c = OpenApiClient.from_settings()
    assert (c.base_url, c.group, c.timeout) == ("https://jobs.example.com/sj", "grp2", 2.5)
    c = OpenApiClient.from_settings(timeout=1.0, group="grp3")
    assert (c.timeout, c.group) == (1.0, "grp3")
    monkeypatch.setenv("SNAIL_OPENAPI_URL", "jobs.example.com:8080")
    with pytest.raises(ConfigurationError, match="SNAIL_OPENAPI_URL"):
        OpenApiClient.from_settings()
    monkeypatch.setenv("SNAIL_OPENAPI_URL", "")
    monkeypatch.setenv("SNAIL_OPENAPI_TIMEOUT", "0")
    with pytest.raises(ConfigurationError, match="SNAIL_OPENAPI_TIMEOUT"):
        OpenApiClient.from_settings()


# ----------------------------------------------------------------------------- waiting


def test_wait_job_batch_follows_the_statuses(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    job_id = client.add_job(cluster_spec())
    fake.set_batch_script(job_id, [1, 1, 2, 2, 3])
    assert client.trigger_job(job_id) is True
    (batch_id,) = fake.batches_of(job_id)
    batch = client.wait_job_batch(batch_id, timeout=10, poll=0.01)
    assert batch.status is BatchStatus.SUCCESS and batch.succeeded and batch.id == batch_id
    assert batch.job_id == job_id and batch.reason is OperationReason.NONE
    reads = [r for r in fake.requests if r.api_path == f"/api/job-batch/detail/{batch_id}"]
    assert len(reads) == 5 and all(r.query == {"id": str(batch_id)} for r in reads)


def test_wait_job_batch_returns_failures_with_their_reason(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    job_id = client.add_job(cluster_spec())
    fake.set_batch_script(job_id, [2, (4, 7)])
    client.trigger_job(job_id)
    batch = client.wait_job_batch(fake.batches_of(job_id)[-1], poll=0.01)
    assert batch.status is BatchStatus.FAIL and not batch.succeeded
    assert batch.reason is OperationReason.TASK_EXECUTION_ERROR


def test_wait_job_batch_times_out_with_the_last_state(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    job_id = client.add_job(cluster_spec())
    fake.set_batch_script(job_id, [1, 2])
    client.trigger_job(job_id)
    started = time.monotonic()
    with pytest.raises(BatchWaitTimeout) as info:
        client.wait_job_batch(fake.batches_of(job_id)[-1], timeout=0.3, poll=0.05)
    assert time.monotonic() - started < 2
    assert info.value.last.status is BatchStatus.RUNNING and "still RUNNING" in str(info.value)
    assert isinstance(info.value, TimeoutError)


def test_wait_job_batch_rides_out_server_errors(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    job_id = client.add_job(cluster_spec())
    client.trigger_job(job_id)
    batch_id = fake.batches_of(job_id)[-1]
    fake.reply("GET", f"/api/job-batch/detail/{batch_id}", http_status=503, raw=b"busy", times=2)
    assert client.wait_job_batch(batch_id, poll=0.01).succeeded
    with pytest.raises(OpenApiNotFoundError):
        client.wait_job_batch(999_999, poll=0.01)
    fake.reply("GET", f"/api/job-batch/detail/{batch_id}", status=0, message="System exception")
    with pytest.raises(OpenApiServerError):
        client.wait_job_batch(batch_id, poll=0.01)


def test_workflow_trigger_and_wait(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    jobs = [client.add_job(cluster_spec(biz_id=f"wf_job_{i}", trigger=Trigger.workflow())) for i in range(2)]
    wf_id = fake.add_workflow(jobs, biz_id="wf_biz", wf_context='{"seed": "stored"}')
    assert client.trigger_workflow_by_biz_id("wf_biz", {"seed": "mine", "extra": 1}) is True
    # the bizId trigger looked the workflow up to send the required workflowId
    assert [r.api_path for r in fake.requests[-2:]] == ["/api/workflow/bizId/exists", "/api/workflow/bizId/trigger"]
    assert fake.last().body == {"bizId": "wf_biz", "workflowId": wf_id, "tmpWfContext": '{"seed":"mine","extra":1}'}
    (wf_batch_id,) = fake.workflow_batches_of(wf_id)
    wf_batch = client.wait_workflow_batch(wf_batch_id, poll=0.01)
    assert wf_batch.status is BatchStatus.SUCCESS and wf_batch.id == wf_id
    assert json.loads(wf_batch.wf_context or "") == {"seed": "stored", "extra": 1}  # the stored value wins
    job_batches = wf_batch.job_batches()
    assert sorted(b.job_id for b in job_batches) == sorted(jobs)
    assert client.wait_job_batch(job_batches[0].id or 0, poll=0.01).workflow_task_batch_id == wf_batch_id
    with pytest.raises(OpenApiNotFoundError):
        client.trigger_workflow_by_biz_id("no_such_wf")
    assert fake.last().api_path == "/api/workflow/bizId/exists"


def test_workflow_trigger_without_job_id_is_refused_by_the_fake(fake: FakeOpenApiServer) -> None:
    # guards the fake's imitation of the server's @NotNull jobId, which the client relies on
    wf_id = fake.add_workflow([])
    fake.client().trigger_workflow(wf_id)
    import urllib.request
    body = json.dumps({"workflowId": wf_id}).encode()
    request = urllib.request.Request(fake.base_url + "/api/workflow/trigger", data=body, method="POST", headers={
        "Content-Type": "application/json", "namespace": fake.namespace, "group-name": fake.group, "token": TOKEN})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read()) == {"status": 0, "message": "jobId cannot be null"}


def test_lifecycle_by_biz_id_against_the_model(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    spec = JobSpec.map_reduce("mr", "mrJob", Trigger.fixed(3600), shard_num=2, args="x", biz_id="mr_1")
    job_id = client.add_job_by_biz_id(spec)
    assert client.job_exists_by_biz_id("mr_1") == JobExists(group_name=fake.group, id=job_id, biz_id="mr_1",
                                                            job_status=1)
    assert client.update_job_by_biz_id(spec.replace(name="mr2", enabled=False)) is True
    detail = client.job_detail_by_biz_id("mr_1")
    assert detail is not None and (detail.job_name, detail.job_status, detail.task_type) == ("mr2", 0, 5)
    assert client.trigger_job_by_biz_id("mr_1", map_reduce_args(4, "once")) is True
    assert fake.last().body == {"bizId": "mr_1", "tmpArgsStr": '{"shardNum":4,"argsStr":"once"}'}
    assert len(fake.batches_of(job_id)) == 1
    assert client.delete_jobs_by_biz_id(["mr_1"]) is True
    assert client.job_exists(job_id) is None
    retry_id = fake.add_retry(scene="pay")
    assert client.update_retry_status(retry_id, RetryStatus.SUSPEND) is True
    assert client.retry_detail(retry_id).retry_status == RetryStatus.SUSPEND
    with pytest.raises(OpenApiServerError, match="Retry task not found"):
        client.retry_detail(retry_id + 1000)


# ----------------------------------------------------------------------------- sync_jobs


def test_sync_jobs_adds_then_updates(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    existing = client.add_job_by_biz_id(cluster_spec(biz_id="a", name="old name"))
    fake.requests.clear()
    specs = [cluster_spec(biz_id="a", name="new name"),
             JobSpec.sharding("b", "shardJob", Trigger.fixed(60), shards=["x", "y"], biz_id="b")]
    results = client.sync_jobs(specs)
    assert [(r.biz_id, r.action) for r in results] == [("a", "updated"), ("b", "added")]
    assert results[0].job_id == existing and results[1].job_id in fake.jobs and all(r.ok for r in results)
    assert [(r.method, r.api_path) for r in fake.requests] == [
        ("GET", "/api/job/bizId/exists"), ("PUT", "/api/job/bizId/update"),
        ("GET", "/api/job/bizId/exists"), ("POST", "/api/job/bizId/add")]
    assert "id" not in fake.requests[1].body and fake.requests[1].body["jobName"] == "new name"
    assert fake.jobs[existing]["jobName"] == "new name"
    assert [r.action for r in client.sync_jobs(specs)] == ["updated", "updated"]


def test_sync_jobs_dry_run_writes_nothing(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    client.add_job_by_biz_id(cluster_spec(biz_id="a"))
    fake.requests.clear()
    results = client.sync_jobs([cluster_spec(biz_id="a"), cluster_spec(biz_id="b")], dry_run=True)
    assert [r.action for r in results] == ["would_update", "would_add"]
    assert {r.method for r in fake.requests} == {"GET"}
    assert len(fake.jobs) == 1


def test_sync_jobs_reports_failures_after_applying_the_rest(fake: FakeOpenApiServer, client: OpenApiClient) -> None:
    fake.reply("POST", "/api/job/bizId/add", status=0, message="Adding new task failed", times=1)
    specs = [cluster_spec(biz_id="a"), cluster_spec(biz_id="b")]
    with pytest.raises(SyncJobsError) as info:
        client.sync_jobs(specs)
    results = info.value.results
    assert [(r.biz_id, r.action) for r in results] == [("a", "failed"), ("b", "added")]
    assert isinstance(results[0].error, OpenApiServerError) and "Adding new task failed" in str(info.value)
    fake.jobs[9] = {"id": 9, "bizId": "c", "groupName": "other_group", "jobStatus": 0}
    results = client.sync_jobs([cluster_spec(biz_id="c")], raise_on_error=False)
    assert results[0].action == "failed" and isinstance(results[0].error, OpenApiValidationError)
    assert "other_group" in str(results[0].error) and fake.last().method == "GET"


# -------------------------------------------------------------------------------- async


def test_async_client_does_not_block_the_loop(fake: FakeOpenApiServer) -> None:
    aclient = fake.async_client()

    async def scenario() -> Dict[str, Any]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        fake.reply("GET", "/api/job/exists", data={"id": 1, "bizId": "slow"}, delay=0.4, times=1)
        exists = await aclient.job_exists(1)
        job_id = await aclient.add_job(cluster_spec())
        await aclient.trigger_job(job_id)
        batch = await aclient.wait_job_batch(fake.batches_of(job_id)[-1], poll=0.01)
        results = await aclient.sync_jobs([cluster_spec(biz_id="async_a")])
        with pytest.raises(OpenApiServerError):
            await aclient.trigger_job(123456)
        task.cancel()
        return {"ticks": ticks, "exists": exists, "batch": batch, "results": results}

    out = asyncio.run(scenario())
    assert out["ticks"] >= 10  # the loop kept running during the 0.4 s call
    assert out["exists"].biz_id == "slow"
    assert out["batch"].status is BatchStatus.SUCCESS
    assert [r.action for r in out["results"]] == ["added"]


def test_async_wait_times_out(fake: FakeOpenApiServer) -> None:
    client = fake.client()
    job_id = client.add_job(cluster_spec())
    fake.set_batch_script(job_id, [2])
    client.trigger_job(job_id)
    with pytest.raises(BatchWaitTimeout):
        asyncio.run(fake.async_client().wait_job_batch(fake.batches_of(job_id)[-1], timeout=0.2, poll=0.05))


def test_async_timeout(fake: FakeOpenApiServer) -> None:
    fake.reply("GET", "/api/job/exists", data=None, delay=2.0)
    started = time.monotonic()
    with pytest.raises(OpenApiTimeout):
        asyncio.run(fake.async_client(timeout=0.2).job_exists(1))
    assert time.monotonic() - started < 1.5


# ------------------------------------------------------------------------------ example


def test_example_runs_offline() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SNAIL_OPENAPI_URL"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "example", "openapi_jobs.py")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" added ") == 3 and out.stdout.count(" updated ") == 3
    assert "rejected before sending: argsStr: sharding args must be a list of strings" in out.stdout
    assert "SUCCESS" in out.stdout.splitlines()[-1]

