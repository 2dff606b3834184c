"""A refused dispatch is visible where the user looks (issue 25, item 5): the
reason and the registered executors in the task's log in the console, once
per task and attempt, bounded, never for a call without the right token."""

import json

import snailjob as sj
import snailjob.routing

from .conftest import TOKEN, dispatch, dispatch_body, wait_for

FAIL = 4


@sj.job("ncHello")
def nc_hello(args):
    return "hello"


def fields(entry):
    return {f["name"]: f["value"] for f in entry["fieldList"]}


def test_unknown_executor_logged_in_the_tasks_log(snailjob_emulator, run_client):
    client = run_client([nc_hello, sj.job("other")(lambda a: None)])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("ncHelo", 1)  # the typo
    assert batch.wait(5) == FAIL
    task = batch.tasks[0]

    def of_task():
        return [e for e in snailjob_emulator.logs if e["taskId"] == task.task_id]

    snailjob_emulator.wait_until(lambda: bool(of_task()))
    entries = of_task()
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["jobId"], entry["taskBatchId"], entry["logType"]) == (batch.job_id, batch.id, "JOB")
    assert entry["namespaceId"] == snailjob_emulator.namespace and entry["groupName"] == snailjob_emulator.group
    f = fields(entry)
    assert f["level"] == "ERROR"
    assert f"node {client.host_id}" in f["message"] and "refused this task" in f["message"]
    assert "no executor named 'ncHelo' on this client (registered: " in f["message"]
    assert "ncHello" in f["message"] and "other" in f["message"]
    assert f["location"].startswith("snailjob.routing.dispatch(routing.py:")
    assert int(f["time_stamp"]) == entry["realTime"]


def test_one_entry_per_task_and_attempt_and_none_without_the_token(make_client):
    client, transport = make_client([nc_hello])
    port = client.host_port
    request = dispatch_body("ncHelo")
    for _ in range(3):  # the server sending the same dispatch again
        assert dispatch(port, request).data == "false"
    assert dispatch(port, dict(request, retryCount=1, retryStatus=True, retry=True)).data == "false"
    wrong = dispatch_body("ncHelo")
    assert dispatch(port, wrong, token="SJ_not_the_token").status == 0
    assert dispatch(port, dispatch_body("ncHello", executorType=1)).data == "false"

    def shipped():
        return [e for body in transport.bodies("/batch/server/report/log") for e in body[0]]

    wait_for(lambda: len(shipped()) >= 3, timeout=5)
    entries = shipped()
    assert [e["taskId"] for e in entries].count(request["taskId"]) == 2  # attempts 1 and 2
    assert "(attempt 2)" in fields(entries[1])["message"]
    assert wrong["taskId"] not in [e["taskId"] for e in entries]
    assert "executorType 1 is not Python (2); this is a Python client (registered: 'ncHello')" in \
        fields(entries[2])["message"]
    assert TOKEN not in json.dumps(entries)


def test_refusal_entries_are_capped_per_minute(make_client, monkeypatch):
    monkeypatch.setattr(snailjob.routing, "REFUSAL_LOGS_PER_MINUTE", 5)
    client, transport = make_client([nc_hello])
    requests = [dispatch_body("ncHelo") for _ in range(12)]
    for request in requests:
        client._router.dispatch(json.dumps([request]))  # as the inbound server calls it
    assert client._router.refusal_entries.skipped == 7
    wait_for(lambda: client.stats()["logs_shipped"] == 5 and client.stats()["logs_buffered"] == 0, timeout=5)
    assert client.stats()["logs_shipped"] == 5
