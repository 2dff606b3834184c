"""The `snailjob` command, run for real in subprocesses against a ServerEmulator
on a real port (and a FakeOpenApiServer for trigger / status)."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

import snailjob
from snailjob.cli.discover import DiscoveryError, describe, discover
from snailjob.openapi import JobSpec, Trigger
from snailjob.openapi.fake import FakeOpenApiServer
from snailjob.testing import ServerEmulator

PROGRAMS = os.path.join(os.path.dirname(__file__), "programs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "snailjob")
SUCCESS = 3
CLI_JOBS = {"cliEcho", "cliBilling", "cliAsync", "cliShard", "cliBroken", "cliPages", "cliSum"}
SECRET = "SJ_not_the_right_token_4711"

Result = Tuple[int, str, str]  # exit code, stdout, stderr


def base_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SNAIL_")}
    # the commands import this checkout's snailjob, not whichever one the interpreter has installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env.update(SNAIL_HOST_PORT="0", SNAIL_BIND_HOST="127.0.0.1", SNAIL_HEARTBEAT_INTERVAL="0.5",
               SNAIL_SHUTDOWN_GRACE="0", SNAIL_LOG_REMOTE_INTERVAL="0.2")
    env.update(extra)
    return env


def emu_env(emu: ServerEmulator, **extra: str) -> Dict[str, str]:
    return base_env(**{**emu.client_env(), **extra})


def command(*args: str) -> List[str]:
    return [sys.executable, "-m", "snailjob", *args]


def spawn(argv: Sequence[str], env: Dict[str, str], cwd: str = PROGRAMS) -> subprocess.Popen:
    return subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 30) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish in {timeout}s\n{out}\n{err}") from None
    return proc.returncode, out, err


def run_all(*runs: Tuple[Sequence[str], Dict[str, str]]) -> List[Result]:
    """Run several commands at once (the machine is slow; they mostly wait)."""
    procs = [spawn(argv, env) for argv, env in runs]
    return [finish(proc) for proc in procs]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> Tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except OSError:
        return 0, {}


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", proc: Optional[subprocess.Popen] = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the command exited with {proc.returncode}: {finish(proc)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> Result:
    proc.send_signal(signal.SIGTERM)
    return finish(proc, timeout=20)


# --- run ------------------------------------------------------------------------------


def test_run_serves_health_runs_a_job_and_exits_0_on_sigterm(snailjob_emulator):
    emu = snailjob_emulator
    health = free_port()
    env = emu_env(emu, SNAIL_HEALTH_PORT=str(health))
    del env["SNAIL_SERVER_HOST"], env["SNAIL_SERVER_PORT"]  # given as an option instead
    proc = spawn([SCRIPT, "run", "cli_jobs", "--server", f"127.0.0.1:{emu.port}"], env)
    try:
        wait_for(lambda: emu.registered_executors == CLI_JOBS, what="registration", proc=proc)
        wait_for(lambda: http_get(health, "/readyz")[0] == 200, what="/readyz 200", proc=proc)
        status, live = http_get(health, "/livez")
        assert status == 200 and live["live"] is True
        batch = emu.trigger("cliEcho", 1, args_str="hello")
        assert batch.wait(10) == SUCCESS
        assert json.loads(batch.tasks[0].result) == {"echo": "hello"}
        typed = emu.trigger("cliBilling", 1, args_str='{"customer": "c", "amounts": [1, 2, 3]}')
        assert typed.wait(10) == SUCCESS and typed.tasks[0].result == "6"
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "signal received" in err
    assert emu.problems == []


def test_run_with_a_bad_setting_exits_2_and_names_the_variable():
    env = base_env(SNAIL_SERVER_PORT="not-a-port", SNAIL_TOKEN=SECRET)
    (code, out, err), (code2, _, err2) = run_all((command("run", "cli_jobs"), env),
                                                 (command("run", "cli_jobs", "--host-port", "70000"), base_env()))
    assert code == 2 and "SNAIL_SERVER_PORT" in err and "Traceback" not in err
    assert SECRET not in out + err
    assert code2 == 2 and "SNAIL_HOST_PORT" in err2


def test_run_import_error_exits_1_and_no_executor_exits_2():
    (code, _, err), (code2, _, err2), (code3, _, err3) = run_all(
        (command("run", "cli_broken"), base_env()), (command("run", "cli_empty"), base_env()),
        (command("run", "cli_no_such_module"), base_env()))
    assert code == 1 and "Traceback" in err and "RuntimeError: cli_broken cannot be imported" in err
    assert code2 == 2 and "no executor found in cli_empty" in err2 and "Traceback" not in err2
    assert code3 == 2 and "no module named 'cli_no_such_module'" in err3


def test_run_module_object_forms():
    forms = {"cli_forms:client": {"formClient"}, "cli_forms:ExecutorManager": {"formManager"},
             "cli_forms:REGISTRY": {"formRegistry"}, "cli_forms:EXECUTORS": {"formList1", "formList2"}}
    emulators = {form: ServerEmulator().start() for form in forms}
    procs = {form: spawn(command("run", form), emu_env(emulators[form])) for form in forms}
    try:
        for form, expected in forms.items():
            emu = emulators[form]
            wait_for(lambda emu=emu: emu.registered_executors, what=f"{form} registration", proc=procs[form])
            assert emu.registered_executors == expected, form
            name = sorted(expected)[0]
            batch = emu.trigger(name, 1)
            assert batch.wait(10) == SUCCESS, form
            assert batch.tasks[0].result == {"formClient": "client", "formManager": "manager",
                                             "formRegistry": "registry", "formList1": "one"}[name]
    finally:
        results = {form: stop(proc) for form, proc in procs.items()}
        for emu in emulators.values():
            emu.stop()
    for form, (code, _, err) in results.items():
        assert code == 0, (form, err)


def test_run_reload_restarts_on_a_change(snailjob_emulator, tmp_path):
    emu = snailjob_emulator
    module = tmp_path / "cli_reload_job.py"
    source = 'import snailjob as sj\n\n\n@sj.job("reloadJob")\ndef job(args):\n    return "{}"\n'
    module.write_text(source.format("first"))
    env = emu_env(emu)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let the first child cache bytecode, as it usually does
    proc = spawn(command("run", "cli_reload_job", "--reload"), env, cwd=str(tmp_path))
    try:
        first = wait_for(lambda: emu.live_nodes, what="first child", proc=proc)[0].host_id
        batch = emu.trigger("reloadJob", 1, node=first)
        assert batch.wait(10) == SUCCESS and batch.tasks[0].result == "first"
        # same size and same whole second as before: only the removal of the stale .pyc shows the edit
        before = module.stat().st_mtime_ns
        module.write_text(source.format("fresh"))
        os.utime(module, ns=(before + 1000, before + 1000))
        second = wait_for(lambda: [n.host_id for n in emu.live_nodes if n.host_id != first], timeout=30,
                          what="restarted child", proc=proc)[0]
        batch = emu.trigger("reloadJob", 1, node=second)
        assert batch.wait(10) == SUCCESS and batch.tasks[0].result == "fresh"
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "cli_reload_job.py changed; restarting" in err
    assert err.count("reload: started child") == 2


# --- check ------------------------------------------------------------------------------


def test_check_ok_wrong_token_and_no_server(snailjob_emulator):
    emu = snailjob_emulator
    (ok_code, ok_out, _), (bad_code, bad_out, bad_err), (none_code, none_out, _) = run_all(
        (command("check", "--timeout", "10"), emu_env(emu)),
        (command("check", "--timeout", "10"), emu_env(emu, SNAIL_TOKEN=SECRET)),
        (command("check", "--timeout", "5", "--server", f"127.0.0.1:{free_port()}"), base_env()))
    assert ok_code == 0, ok_out
    lines = ok_out.splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == [
        "ok   settings", "ok   server 127.0.0.1", "ok   advertised address", "ok   inbound port",
        "ok   token and group"]
    assert lines[-1] == "5 check(s): all ok"
    assert lines[-2].startswith("note: the console lists this check's node py-") and "about a minute" in lines[-2]
    assert "note:" not in bad_out and "note:" not in none_out  # never registered: nothing lingers
    assert emu.token not in ok_out
    assert emu.problems == []

    assert bad_code == 1
    assert "FAIL token and group: server refused the heartbeat: Token authentication failed" in bad_out
    fix = bad_out.splitlines()[bad_out.splitlines().index(next(
        line for line in bad_out.splitlines() if line.startswith("FAIL token"))) + 1]
    assert fix.startswith("     fix: set SNAIL_TOKEN to the group's token")
    assert "SNAIL_GROUP_NAME / SNAIL_NAMESPACE" in fix
    assert SECRET not in bad_out + bad_err
    assert bad_out.splitlines()[-1] == "5 check(s): 1 failed"

    assert none_code == 1
    assert "FAIL server 127.0.0.1:" in none_out and "cannot connect" in none_out
    assert "fix: start the server, or fix SNAIL_SERVER_HOST / SNAIL_SERVER_PORT" in none_out


class _AnyPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_check_tells_a_web_port_from_a_grpc_port(snailjob_emulator):
    from snailjob.cli.check import probe_protocol

    emu = snailjob_emulator
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnyPage)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    web_port = web.server_address[1]
    try:
        assert probe_protocol(("127.0.0.1", web_port), 3.0) == ("http", "HTTP/1.0 404 Not Found")
        assert probe_protocol(("127.0.0.1", emu.port), 3.0) == ("grpc", "")
        (code, out, err), (ok_code, ok_out, _) = run_all(
            (command("check", "--timeout", "2"), emu_env(emu, SNAIL_SERVER_PORT=str(web_port))),
            (command("check", "--timeout", "10"), emu_env(emu)))
    finally:
        web.shutdown()
        web.server_close()
    lines = out.splitlines()
    server_line = f"FAIL server 127.0.0.1:{web_port}: not a gRPC port: it answers HTTP/1.x, not HTTP/2 "
    at = next(i for i, line in enumerate(lines) if line.startswith(server_line))
    assert re.fullmatch(re.escape(server_line) + r"\('HTTP/1\.0 404 Not Found', \d+ ms\)",
                        lines[at]), lines[at]
    fix = lines[at + 1]
    assert fix == ("     fix: this is an HTTP (web) port; SNAIL_SERVER_PORT (or the port in SNAIL_SERVER_HOST) "
                   "must be the server's gRPC port, snail-job.server-port (default 17888)")
    assert "reachable" not in out and code == 1, out
    assert "FAIL token and group" in out and "fix: the server did not answer the heartbeat: see the server check" in out
    assert ok_code == 0, ok_out
    assert any(line.startswith(f"ok   server 127.0.0.1:{emu.port}: gRPC port reachable, answers HTTP/2 (")
               for line in ok_out.splitlines()), ok_out
    assert emu.problems == []


# --- jobs -------------------------------------------------------------------------------


def test_jobs_lists_names_kinds_async_and_typed_parameters():
    (code, table, _), (jcode, text, _) = run_all((command("jobs", "cli_jobs"), base_env()),
                                                 (command("jobs", "cli_jobs", "--json"), base_env()))
    assert code == 0 and jcode == 0
    rows = {row["name"]: row for row in json.loads(text)}
    assert set(rows) == CLI_JOBS | {"cli_jobs.charge"}
    assert (rows["cliBilling"]["kind"], rows["cliBilling"]["params"]) == ("job", "Invoice")
    assert rows["cliAsync"]["async"] is True and rows["cliEcho"]["async"] is False
    assert rows["cliEcho"]["params"] is None
    assert rows["cliPages"]["kind"] == "map"
    assert [f["task"] for f in rows["cliPages"]["functions"]] == ["ROOT_MAP", "PAGE"]
    assert rows["cliPages"]["functions"][1]["item"] == "int"
    assert rows["cliSum"]["kind"] == "mapreduce"
    assert [f["task"] for f in rows["cliSum"]["functions"]] == ["ROOT_MAP", "DOUBLE", "reduce", "merge"]
    assert (rows["cli_jobs.charge"]["kind"], rows["cli_jobs.charge"]["scene"]) == ("retryable", "cliScene")
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ASYNC", "PARAMS", "DETAIL"]
    assert next(line for line in lines if line.startswith("cliBilling")).split()[:4] == [
        "cliBilling", "job", "no", "Invoice"]
    assert next(line for line in lines if line.startswith("cliAsync")).split()[:3] == ["cliAsync", "job", "yes"]
    assert next(line for line in lines if line.startswith("cliSum")).split()[:2] == ["cliSum", "mapreduce"]


def test_discovery_merges_modules_and_reports_problems(monkeypatch):
    monkeypatch.chdir(PROGRAMS)
    monkeypatch.syspath_prepend(PROGRAMS)
    found = discover(["cli_jobs", "cli_jobs:echo"])  # the same object twice is taken once
    assert set(found.names()) == CLI_JOBS | {"cli_jobs.charge"}
    assert describe(found.items[0])["name"] == "cliEcho"
    with pytest.raises(DiscoveryError, match="no executor found"):
        discover(["cli_empty"])
    with pytest.raises(DiscoveryError, match="has no object"):
        discover(["cli_jobs:nothing_here"])
    with pytest.raises(DiscoveryError, match=r"cli_empty:ANSWER is a int"):
        discover(["cli_empty:ANSWER"])


# --- try --------------------------------------------------------------------------------


def test_try_every_task_type_a_failure_and_an_unknown_job():
    env = base_env()
    results = run_all(
        (command("try", "cli_jobs", "cliEcho", "--params", "hi"), env),
        (command("try", "cli_jobs", "cliShard", "--type", "sharding", "--shards", '["a","b","c"]'), env),
        (command("try", "cli_jobs", "cliPages"), env),
        (command("try", "cli_jobs", "cliSum", "--type", "mapreduce", "--shard-num", "2"), env),
        (command("try", "cli_jobs", "cliBroken"), env),
        (command("try", "cli_jobs", "noSuchJob"), env))
    (cluster, c_out, c_err), (sharding, s_out, _), (mapping, m_out, _), (mr, r_out, _), \
        (broken, b_out, _), (unknown, _, u_err) = results

    assert cluster == 0, c_out + c_err
    assert "outcome  SUCCESS" in c_out
    assert "CLUSTER_TASK  SUCCESS  {\"echo\":\"hi\"}" in c_out
    assert "  INFO  echo says hi" in c_out

    assert sharding == 0 and "outcome  SUCCESS" in s_out
    assert all(f"SUCCESS  {i}/3:{shard}" in s_out for i, shard in enumerate("abc"))

    assert mapping == 0 and "outcome  SUCCESS" in m_out
    assert sorted(line.split()[-1] for line in m_out.splitlines() if " PAGE " in line) == ["10", "20", "30"]

    assert mr == 0 and "outcome  SUCCESS" in r_out
    assert next(line for line in r_out.splitlines() if "MERGE_REDUCE_TASK" in line).split()[-2:] == ["SUCCESS", "20"]
    assert len([line for line in r_out.splitlines() if "REDUCE_TASK " in line and "MERGE" not in line]) == 2

    assert broken == 1 and "outcome  FAIL" in b_out
    assert "ERROR executor raised ValueError: the ledger is closed" in b_out

    assert unknown == 2
    assert "no job named 'noSuchJob'" in u_err
    assert "cliAsync, cliBilling, cliBroken, cliEcho, cliPages, cliShard, cliSum" in u_err


# --- trigger / status -------------------------------------------------------------------


def test_trigger_and_status_through_the_openapi():
    with FakeOpenApiServer() as fake:
        job_id = fake.client().add_job(JobSpec.cluster("nightly", "cliEcho", Trigger.cron("0 0 2 * * ?")))
        env = base_env(SNAIL_OPENAPI_URL=fake.base_url, SNAIL_TOKEN=fake.token)
        (t_code, t_out, t_err), (s_code, s_out, _), (m_code, _, m_err), (a_code, a_out, a_err) = run_all(
            (command("trigger", str(job_id), "--params", '{"day": 1}'), env),
            (command("status", str(job_id)), env),
            (command("status", "424242"), env),
            (command("trigger", str(job_id)), {**env, "SNAIL_TOKEN": SECRET}))
        trigger_body = [r.body for r in fake.requests
                        if r.api_path == "/api/job/trigger" and r.headers.get("token") == fake.token]
    assert t_code == 0, t_err
    assert json.loads(t_out) == {"jobId": job_id, "triggered": True}
    assert {"jobId": job_id, "tmpArgsStr": '{"day": 1}'}.items() <= trigger_body[0].items()
    assert s_code == 0
    detail = json.loads(s_out)
    assert (detail["id"], detail["jobName"], detail["executorInfo"]) == (job_id, "nightly", "cliEcho")
    assert m_code == 1 and "no job 424242" in m_err
    assert a_code == 1 and "Token authentication failed" in a_err
    assert SECRET not in a_out + a_err and len(trigger_body) == 1


# --- the command itself -----------------------------------------------------------------


def test_version_and_no_command():
    (v_code, v_out, _), (n_code, _, n_err) = run_all((command("--version"), base_env()), (command(), base_env()))
    assert v_code == 0 and v_out.strip() == snailjob.__version__
    assert n_code == 2 and "usage: snailjob" in n_err and "run" in n_err and "check" in n_err
