"""The console's built-in executors on a node (routing, the setting, registration),
the job fields a Java job has, and the map sentinel's setting: through a real
client and the server emulator (real gRPC both ways)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, List

import pytest

import snailjob as sj
from snailjob.args import SENTINEL_KEY
from snailjob.builtin import CMD_EXECUTOR, HTTP_EXECUTOR, POWERSHELL_EXECUTOR, SHELL_EXECUTOR, http_form
from snailjob.errors import ConfigurationError
from snailjob.settings import Settings

from .conftest import dispatch, dispatch_body, wait_for

SUCCESS, FAIL = 3, 4
REPORT = "/report/dispatch/result"
JAVA = 1  # the executor type the console leaves a built-in job at


def refusal(batch: Any) -> str:
    replies = batch.tasks[0].dispatch_replies
    assert replies and replies[0].data == "false", replies
    return str(replies[0].message)


@pytest.mark.parametrize("name,kind", [(HTTP_EXECUTOR, "http"), (SHELL_EXECUTOR, "shell"),
                                       (CMD_EXECUTOR, "cmd"), (POWERSHELL_EXECUTOR, "powershell")])
def test_a_builtin_that_is_off_is_refused_naming_the_setting(snailjob_emulator, run_client, name, kind):
    run_client([sj.job("plain")(lambda args: "ok")], snail_builtin_executors="http" if kind != "http" else "")
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger(name, 1, args_str="{}", executor_type=JAVA)
    assert batch.wait(10) == FAIL
    message = refusal(batch)
    assert f"add {kind} to SNAIL_BUILTIN_EXECUTORS" in message and name in message, message


def test_a_builtin_runs_whatever_executor_type_and_is_never_registered(snailjob_emulator, run_client, tmp_path):
    run_client([sj.job("plain")(lambda args: "ok")], snail_builtin_executors="shell",
               snail_builtin_workspace=str(tmp_path / "ws"))
    snailjob_emulator.wait_for_clients(1)
    form = json.dumps({"method": "SCRIPT_CODE", "scriptParams": "echo built-in ran", "charset": ""})
    for executor_type in (JAVA, 2, 3):
        batch = snailjob_emulator.trigger(SHELL_EXECUTOR, 1, args_str=form, executor_type=executor_type)
        assert batch.wait(20) == SUCCESS, (executor_type, batch.tasks[0].dispatch_replies)
    assert snailjob_emulator.registered_executors == {"plain"}
    wait_for(lambda: any("built-in ran" in json.dumps(e) for e in snailjob_emulator.logs), timeout=10)


def test_a_registered_executor_of_a_builtins_name_wins(snailjob_emulator, run_client):
    run_client([sj.job(HTTP_EXECUTOR)(lambda args: "mine")], snail_builtin_executors="")
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger(HTTP_EXECUTOR, 1, args_str="{}")
    assert batch.wait(10) == SUCCESS
    assert batch.tasks[0].result == "mine"
    refused = snailjob_emulator.trigger(HTTP_EXECUTOR, 1, args_str="{}", executor_type=JAVA)
    assert refused.wait(10) == FAIL and "executorType 1 is not Python" in refusal(refused)


def test_the_setting_lists_known_kinds_only():
    assert Settings(snail_builtin_executors=" Shell, http ").builtin_kinds == {"http", "shell"}
    assert Settings(snail_builtin_executors="all").snail_builtin_executors == "http,shell,cmd,powershell"
    assert Settings().builtin_kinds == frozenset()
    with pytest.raises(ConfigurationError, match="SNAIL_BUILTIN_EXECUTORS.*'ftp'"):
        Settings.load(env_file=None, snail_builtin_executors="http,ftp")
    with pytest.raises(ConfigurationError, match="SNAIL_HTTP_RESPONSE_TYPE"):
        Settings.load(env_file=None, snail_http_response_type="xml")


def test_a_job_sees_the_fields_a_java_job_has(snailjob_emulator, run_client):
    seen: Dict[str, Any] = {}

    @sj.job("fields")
    def fields(args: sj.JobArgs) -> str:
        ctx = sj.current_task()
        seen.update(args_biz=args.job_biz_id, biz=ctx.job_biz_id, namespace=ctx.namespace_id,
                    group=ctx.group_name, executor=ctx.executor_info, parallel=ctx.parallel_num,
                    timeout=ctx.executor_timeout, total=ctx.sharding_total, index=ctx.sharding_index,
                    scene=ctx.retry_scene, retrying=ctx.retry_status)
        return "ok"

    run_client([fields])
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("fields", 3, args_str='["a", "b"]', parallel_num=2, executor_timeout=7)
    assert batch.wait(10) == SUCCESS
    assert seen["args_biz"] == seen["biz"] == f"job-{batch.job_id}"
    assert (seen["namespace"], seen["group"]) == (snailjob_emulator.namespace, snailjob_emulator.group)
    assert (seen["executor"], seen["parallel"], seen["timeout"]) == ("fields", 2, 7)
    assert seen["total"] == 2 and seen["index"] in (0, 1)
    assert (seen["scene"], seen["retrying"]) == (None, False)


def first_items(snailjob_emulator: Any, batch: Any) -> List[Any]:
    return [r["subTask"][0] for r in snailjob_emulator.map_reports if r["taskBatchId"] == batch.id]


@pytest.mark.parametrize("sentinel", [True, False])
def test_the_map_sentinel_setting(snailjob_emulator, run_client, sentinel):
    seen: List[Any] = []
    lock = threading.Lock()
    mapper = sj.MapExecutor("sentinelMap")
    mapper.map()(lambda args: sj.mr_do_map([{"n": 1}, {"n": 2}], "LEAF"))

    @mapper.map("LEAF")
    def leaf(args: sj.MapArgs) -> str:
        with lock:
            seen.append(args.map_result)
        return "leaf"

    if not sentinel:
        # Without the sentinel the batch completes only when the root's own result beats its
        # children's (the server's race the sentinel is there for); this test is about the item.
        snailjob_emulator.map_race_quirk = False
    run_client([mapper], snail_map_sentinel=sentinel)
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("sentinelMap", 4, parallel_num=2)
    assert batch.wait(20) == SUCCESS
    [first] = [r["subTask"][0] for r in snailjob_emulator.map_reports if r["taskBatchId"] == batch.id]
    if sentinel:
        assert first == {SENTINEL_KEY: 1, "item": {"n": 1}}
    else:
        assert first == {"n": 1}  # what a Java or 0.1.3 node of the group would run as its item
    assert sorted(seen, key=str) == [{"n": 1}, {"n": 2}]  # the job sees the item either way


def test_the_reduce_stage_ends_the_sentinels_repeats(make_client):
    """A node that receives the batch's reduce stage knows every map task has
    ended: the sentinel's result is not sent again (it would otherwise be
    repeated until the batch's stop or its timeout)."""
    mr = sj.MapReduceExecutor("mr")
    mr.map("LEAF")(lambda args: args.map_result)
    mr.reduce()(lambda args: "reduced")
    client, transport = make_client([mr])
    sentinel = dispatch_body("mr", 5, taskBatchId=7001, mrStage=1, taskName="LEAF",
                             argsStr=json.dumps({"jobParams": "", "maps": {SENTINEL_KEY: 1, "item": 1}}))
    assert dispatch(client.host_port, sentinel).status == 1

    def copies():
        return [b[0] for b in transport.bodies(REPORT) if b[0]["taskId"] == sentinel["taskId"]]

    wait_for(lambda: len(copies()) >= 2, timeout=10, what="the sentinel's first repeat")
    reduce = dispatch_body("mr", 5, taskBatchId=7001, mrStage=2, taskName="REDUCE_TASK",
                           argsStr=json.dumps({"jobParams": "", "maps": [1]}))
    assert dispatch(client.host_port, reduce).status == 1
    sent = len(copies())
    time.sleep(0.5)
    assert not [p for p in client._reports.outbox._repeats if p.key == 7001]  # none scheduled any more
    time.sleep(2.5)  # the next repeat was due 2 s after the last
    assert len(copies()) <= sent + 1  # at most one already on its way


def test_an_http_job_through_the_client_sends_the_form_and_the_context(snailjob_emulator, run_client):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: List[Any] = []

    class Target(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            seen.append((self.path, body, self.headers.get("Content-Type"), self.headers.get("order")))
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"done")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run_client([], snail_builtin_executors="http")
        snailjob_emulator.wait_for_clients(1)
        form = http_form(f"127.0.0.1:{server.server_address[1]}/hook", body='{"x": 1}')
        batch = snailjob_emulator.trigger(HTTP_EXECUTOR, 1, args_str=form, executor_type=JAVA,
                                          wf_context={"order": 42})
        assert batch.wait(10) == SUCCESS, batch.tasks[0].dispatch_replies
        assert batch.tasks[0].result == "done"
        assert seen == [("/hook", '{"x": 1}', "application/json", "42")]
    finally:
        server.shutdown()
