# mypy: allow-untyped-defs
"""Client alarms with the real server: a webhook recipient and a notify config for the
client-side job scene (JOB_CLIENT_ERROR: systemTaskType 3 JOB, notifyScene 2) made through the
web API as the console makes them; the server's /sync/version reply read raw (its shape is
pinned here); a node pulls it; the server is killed while a job runs, so the node cannot report
the result, and the alarm must reach a local webhook receiver with the facts and without the
group's token. The server's push (after a notify config's status changes) is checked too."""

from __future__ import annotations

import json
import time

import pytest

from snailjob.transport import GrpcTransport
from tests.e2e.harness import TaskType
from tests.e2e.test_faults import new_group, start_node, wait_for_text
from tests.e2e.test_real_server import uid
from tests.test_alarms import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RETRY, JOB = 1, 3  # SyetemTaskTypeEnum
JOB_CLIENT_ERROR, JOB_TASK_ERROR = 2, 1  # JobNotifySceneEnum
MAX_RETRY_ERROR, CLIENT_REPORT_ERROR = 2, 3  # RetryNotifySceneEnum


def pull_raw(srv, group, token):
    """The server's /sync/version reply to a client of ``group`` (as the node sends it: [])."""
    headers = {"host-id": f"py-e2e-probe-{uid()}", "host-ip": "127.0.0.1", "host-port": "1",
               "namespace": srv.namespace, "group-name": group, "token": token, "executor-type": "2",
               "system-version": "e2e"}
    transport = GrpcTransport(f"127.0.0.1:{srv.grpc_port}", lambda: headers)
    try:
        return transport.call("/sync/version", "[]", 10.0)
    finally:
        transport.close()


def create_alarm(srv, group, url, name, scene, system_task_type):
    saved, srv.group = srv.group, group  # the harness makes them for its srv.group
    try:
        return srv.create_webhook_alarm(url, name, scene=scene, system_task_type=system_task_type)
    finally:
        srv.group = saved


def test_the_reply_names_scenes_by_number_only(run):
    """Retry configs: the client's CLIENT_REPORT_ERROR (3) arrives as retryNotifyScene 3; the
    server's MAX_RETRY_ERROR (2) arrives as jobNotifyScene 2, the number of the job client scene:
    the reply carries no task type (AbstractConfigAccess.getConfigInfo)."""
    srv = run.srv
    group, token = new_group(srv, "scenes")
    create_alarm(srv, group, "http://127.0.0.1:9/report", f"py-report-{uid()}", CLIENT_REPORT_ERROR, RETRY)
    create_alarm(srv, group, "http://127.0.0.1:9/max", f"py-max-{uid()}", MAX_RETRY_ERROR, RETRY)
    reply = pull_raw(srv, group, token)
    assert reply.status == 1, reply
    entries = sorted((n.get("jobNotifyScene"), n.get("retryNotifyScene"),
                      json.loads(n["recipients"][0]["notifyAttribute"])["webhookUrl"])
                     for n in reply.data["notifyList"])
    assert entries == [(0, CLIENT_REPORT_ERROR, "http://127.0.0.1:9/report"),
                       (JOB_CLIENT_ERROR, None, "http://127.0.0.1:9/max")], entries
    run.note("a Retry MAX_RETRY_ERROR config arrives as jobNotifyScene 2 (the job client scene's number)")


def wait_requests(receiver, n, timeout):
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < n:
        assert time.monotonic() < deadline, f"{len(receiver.requests)} alarm(s) after {timeout}s (wanted {n})"
        time.sleep(0.2)


def test_client_alarm_when_the_node_cannot_report_a_result(run):
    srv = run.srv
    group, token = new_group(srv, "alarm")
    receiver = Receiver(answer=b"ok")
    try:
        # the console's two forms: a webhook recipient, a notify config of the client scene;
        # and one of a server scene, which the reply lists too (with jobNotifyScene 0)
        create_alarm(srv, group, receiver.url("/client"), f"py-client-{uid()}", JOB_CLIENT_ERROR, JOB)
        create_alarm(srv, group, receiver.url("/server"), f"py-server-{uid()}", JOB_TASK_ERROR, JOB)
        reply = pull_raw(srv, group, token)
        assert reply.status == 1, reply
        data = reply.data
        assert set(data) == {"version", "sceneList", "notifyList"}, data
        assert isinstance(data["version"], int) and isinstance(data["sceneList"], list)
        by_scene = {n.get("jobNotifyScene"): n for n in data["notifyList"]}
        assert set(by_scene) == {JOB_CLIENT_ERROR, 0}, data["notifyList"]
        client = by_scene[JOB_CLIENT_ERROR]
        assert set(client) == {"recipients", "notifyThreshold", "jobNotifyScene"}, client
        [recipient] = client["recipients"]
        assert recipient["notifyType"] == 5
        assert json.loads(recipient["notifyAttribute"]) == {"webhookUrl": receiver.url("/client"),
                                                            "contentType": 1, "secret": "py-e2e"}
        run.note(f"/sync/version reply: keys {sorted(data)}; a JOB_TASK_ERROR (server) config is listed "
                 f"with jobNotifyScene 0: {sorted(by_scene[0])}")

        node = start_node(run, "alarm", group, token, SNAIL_CONFIG_SYNC_INTERVAL="600")
        wait_for_text(node, "group config from the server's reply")
        assert "JOB_CLIENT_ERROR (1 recipient(s))" in node.output(), node.output()[-3000:]

        # the server's push: a notify config's status change sends the group config to the node
        config_id = int(srv.pg.query_json(f"SELECT id FROM sj_notify_config WHERE group_name = '{group}' "
                                          f"AND notify_scene = {JOB_CLIENT_ERROR}", db=srv.DB)[0]["id"])
        for status, text in ((0, "none for client scenes"), (1, "JOB_CLIENT_ERROR (1 recipient(s))")):
            # the server reads the config on its own thread, maybe before the change is committed:
            # a second identical change pushes again
            for _ in range(2):
                srv.api("PUT", f"/notify-config/{config_id}/status/{status}")
                time.sleep(3)
            pushed = [ln for ln in node.output().splitlines() if "from the server's push" in ln]
            assert pushed and text in pushed[-1], node.output()[-3000:]

        job_id = srv.create_job(f"alarm-{uid()}", "e2eWhere", TaskType.CLUSTER, group=group, args_str="5",
                                executor_timeout=300)
        batch = srv.trigger_job(job_id)
        assert run.wait_marker("where-start", batch, timeout=60), node.output()[-3000:]
        srv.kill()
        wait_requests(receiver, 1, timeout=60)
        path, headers, body = receiver.requests[0]
        alarm = json.loads(body)
        assert path == "/client" and headers["secret"] == "py-e2e"
        assert headers["content-type"].startswith("application/json")
        text = alarm["text"]
        for fact in ("JOB_CLIENT_ERROR", srv.namespace, group, node.env["SNAIL_HOST_ID"], node.address,
                     f"batches {batch}", "time: "):
            assert fact in text, (fact, text)
        assert group in alarm["title"] and token not in body.decode() and srv.group_token not in body.decode()
        run.note(f"alarm after the server was killed: {alarm['title']!r}")
    finally:
        receiver.close()
        if not srv.node.alive():
            srv.restart()
