# mypy: allow-untyped-defs
"""The console's built-in executors on a group of Python nodes, on the real server
(issue 27): jobs made the way the console stores them (executorType Java, the
executor's name, the form as JSON in argsStr) run on a node that enables them;
one it does not enable is refused naming the setting.  Also the job fields a Java
job has (jobBizId) and the map sentinel's setting, both ways."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from snailjob.args import SENTINEL_KEY
from snailjob.builtin import HTTP_EXECUTOR, POWERSHELL_EXECUTOR, SHELL_EXECUTOR, http_form, script_form
from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_console import browser  # noqa: F401  (the fixture)
from tests.e2e.test_faults import new_group, start_node
from tests.e2e.test_real_server import describe, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

JAVA = 1  # what the console leaves a built-in job's executor type at


class _Target(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        type(self).seen.append((self.command, self.path, body, dict(self.headers)))
        status = 500 if self.path.startswith("/fail") else 200
        payload = b"broken" if status == 500 else b"pong"
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def target():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def builtin_group(run, nodes, tmp_path_factory):
    group, token = new_group(run.srv, "builtin")
    workspace = tmp_path_factory.mktemp("builtin-ws") / "ws"
    start_node(run, "builtin", group, token, SNAIL_BUILTIN_EXECUTORS="http,shell",
               SNAIL_BUILTIN_WORKSPACE=str(workspace), SNAIL_SCRIPT_KILL_GRACE="2")
    return group


def console_job(srv, group, executor, form, executor_timeout=60):
    """A job as the console's form stores it."""
    return srv.create_job(f"builtin-{uid()}", executor, TaskType.CLUSTER, args_str=form, group=group,
                          executorType=JAVA, executor_timeout=executor_timeout, max_retry_times=0)


def run_job(srv, job_id, timeout=120):
    batch = srv.trigger_job(job_id)
    return batch, int(srv.wait_batch(batch, timeout=timeout)["taskBatchStatus"])


def test_the_stored_form_is_the_consoles(srv, builtin_group, target):
    job_id = console_job(srv, builtin_group, HTTP_EXECUTOR, http_form(f"http://{target}/ping"))
    stored = srv.job(job_id)
    assert (stored["executorInfo"], int(stored["executorType"])) == (HTTP_EXECUTOR, JAVA)
    assert json.loads(stored["argsStr"]) == {"method": "POST", "url": f"http://{target}/ping", "headers": {},
                                             "body": "", "mediaType": "application/json", "timeout": 60}


def test_an_http_job_succeeds_and_a_500_fails_with_the_reason(srv, run, builtin_group, target):
    _Target.seen.clear()
    ok = console_job(srv, builtin_group, HTTP_EXECUTOR, http_form(f"http://{target}/ping", body='{"a": 1}'))
    batch, status = run_job(srv, ok)
    assert status == BatchStatus.SUCCESS, describe(srv, batch)
    [task] = srv.task_rows(batch)
    assert task["result_message"] == "pong"
    assert ("POST", "/ping", '{"a": 1}') in [s[:3] for s in _Target.seen]
    failing = console_job(srv, builtin_group, HTTP_EXECUTOR, http_form(f"{target}/fail", method="GET"))
    batch, status = run_job(srv, failing)
    assert status == BatchStatus.FAIL, describe(srv, batch)
    [task] = srv.task_rows(batch)
    assert "500" in task["result_message"], task
    run.note(f"HTTP 500: the task's result reads {task['result_message'][:160]!r}")


def test_a_shell_job_streams_its_lines_and_a_failing_one_fails(srv, run, builtin_group):
    ok = console_job(srv, builtin_group, SHELL_EXECUTOR,
                     script_form("echo 'first line'\necho 'to stderr' >&2\necho 'second line'"))
    batch, status = run_job(srv, ok)
    assert status == BatchStatus.SUCCESS, describe(srv, batch)

    def has_lines(lines):
        text = [ln.get("message") or "" for ln in lines]
        return all(any(want in t for t in text) for want in ("first line", "second line", "to stderr"))

    lines = srv.wait_logs(batch, has_lines, timeout=30)
    assert has_lines(lines), lines
    messages = [ln["message"] for ln in lines]
    assert [m for m in messages if "first line" in m or "second line" in m][0].endswith("first line")
    failing = console_job(srv, builtin_group, SHELL_EXECUTOR, script_form("echo 'about to fail' >&2\nexit 3"))
    batch, status = run_job(srv, failing)
    assert status == BatchStatus.FAIL, describe(srv, batch)
    [task] = srv.task_rows(batch)
    assert "3" in task["result_message"] and "exit" in task["result_message"], task
    run.note(f"shell exit 3: the task's result reads {task['result_message'][:200]!r}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stop_kills_the_script_and_its_children(srv, run, builtin_group, tmp_path):
    pids = tmp_path / "pids"
    script = f"sleep 600 &\necho $! > {pids}.tmp\nsh -c 'sleep 600' &\necho $! >> {pids}.tmp\n" \
             f"echo $$ >> {pids}.tmp\nmv {pids}.tmp {pids}\nwait\n"
    job_id = console_job(srv, builtin_group, SHELL_EXECUTOR, script_form(script), executor_timeout=600)
    batch = srv.trigger_job(job_id)
    deadline = time.monotonic() + 60
    while not pids.exists():
        assert time.monotonic() < deadline, describe(srv, batch)
        time.sleep(0.2)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 3 and all(_alive(p) for p in started)
    srv.stop_batch(batch)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in started):
        assert time.monotonic() < deadline, f"still running after the stop: {[p for p in started if _alive(p)]}"
        time.sleep(0.2)
    assert int(srv.wait_batch(batch, timeout=60)["taskBatchStatus"]) == BatchStatus.STOP
    run.note(f"stop: the script and its 2 children ended {20 - (deadline - time.monotonic()):.1f}s after the stop")


def test_a_builtin_the_node_does_not_enable_is_refused_naming_the_setting(srv, builtin_group):
    job_id = console_job(srv, builtin_group, POWERSHELL_EXECUTOR, script_form("Write-Output hi"))
    batch, status = run_job(srv, job_id)
    assert status == BatchStatus.FAIL, describe(srv, batch)

    def refused(lines):
        return [ln for ln in lines if "SNAIL_BUILTIN_EXECUTORS" in (ln.get("message") or "")]

    lines = refused(srv.wait_logs(batch, lambda ls: bool(refused(ls)), timeout=30))
    assert lines and "add powershell to SNAIL_BUILTIN_EXECUTORS" in lines[0]["message"], srv.job_logs(batch)


def test_a_job_sees_its_biz_id(srv, run):
    biz = f"e2e-biz-{uid()}"
    job_id = srv.create_job(f"biz-{uid()}", "e2eBizId", TaskType.CLUSTER, biz_id=biz, executor_timeout=42)
    batch, status = run_job(srv, job_id)
    assert status == BatchStatus.SUCCESS, describe(srv, batch)
    [task] = srv.task_rows(batch)
    seen = json.loads(task["result_message"])
    assert seen["args"] == seen["context"] == biz, seen
    assert (seen["group"], seen["timeout"], seen["parallel"]) == (srv.group, 42, 1), seen
    run.note(f"jobBizId reached the job: {seen}")


@pytest.mark.parametrize("sentinel", ["true", "false"])
def test_the_map_sentinel_setting(srv, run, sentinel):
    """The envelope is stored with the first sub-task when on, and not when off.  Off, the
    server's completion race is open again (docs/e2e.md, "A map batch that never ends"):
    the batch may stay RUNNING with every task done, so only the sentinel's side must end
    SUCCESS; a batch the race left RUNNING is stopped and noted."""
    group, token = new_group(srv, f"sentinel{sentinel}")
    start_node(run, f"sentinel-{sentinel}", group, token, SNAIL_MAP_SENTINEL=sentinel)
    job_id = srv.create_job(f"sentinel-{uid()}", "e2eMap", TaskType.MAP, args_str="2",
                            group=group, parallel_num=2)
    batch = srv.trigger_job(job_id)
    if sentinel == "true":
        assert int(srv.wait_batch(batch, timeout=120)["taskBatchStatus"]) == BatchStatus.SUCCESS, \
            describe(srv, batch)
    else:
        deadline = time.monotonic() + 120
        while len([t for t in srv.task_rows(batch) if t["task_name"] == "SQUARE"
                   and int(t["task_status"]) == 3]) < 2:
            assert time.monotonic() < deadline, describe(srv, batch)
            time.sleep(0.5)
        try:
            srv.wait_batch(batch, timeout=20)
        except Exception:  # the race: every task done, the batch RUNNING
            srv.stop_batch(batch)
            run.note(f"SNAIL_MAP_SENTINEL=false: batch {batch} stayed RUNNING with its tasks done (the race)")
    children = [t for t in srv.task_rows(batch) if t["task_name"] == "SQUARE"]
    wrapped = [t for t in children if SENTINEL_KEY in (t["args_str"] or "")]
    assert len(children) == 2
    assert len(wrapped) == (1 if sentinel == "true" else 0), [t["args_str"] for t in children]
