#!/usr/bin/env python3
# mypy: allow-untyped-defs
"""Start the real SnailJob server on a private PostgreSQL, for manual runs.

    python scripts/real_server.py up                       # start 2.0.2, print the SNAIL_* lines, wait for Ctrl-C
    python scripts/real_server.py env                      # the SNAIL_* lines of the server `up` started
    python scripts/real_server.py down                     # stop it from another shell (alias: stop)
    python scripts/real_server.py --version 1.10.0 smoke   # start, create+trigger a cluster job, stop
    python scripts/real_server.py --version 2.0.2 probe    # check the harness with a stand-in node (grpcio)
    python scripts/real_server.py --version 2.0.2 fetch    # only lay out the server (fetch-server.sh, cached)
    python scripts/real_server.py --version 2.0.2 expiry   # how long a stopped node stays listed

`COMMAND --help` shows a command's own options. `up` records the running
server in STATE_DIR/<pid of up>.json (see `down --help`); `down` stops it.
The server comes from ../shared/snailjob/server (see tests/e2e/provision.py for the
environment variables, tests/e2e/harness.py for the rest).
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import harness  # noqa: E402
from tests.e2e.provision import PrivatePostgres, cache_dir  # noqa: E402

UP_HELP = """Start the server and PostgreSQL, create the group with its token, print the
settings as `export` lines for a client node and the OpenAPI commands
(`snailjob status/trigger`), then wait. Ctrl-C (or SIGTERM, or `down` from another
shell) stops the server and PostgreSQL and removes the scratch directory."""
DOWN_HELP = """Stop the servers `up` started, in the background or in another shell: `up`
is asked to stop (SIGTERM: it stops SnailJob and PostgreSQL and removes its
scratch directory); if that `up` is gone or does not stop within --wait
seconds, the server's process group and PostgreSQL are stopped here. Each
running `up` is recorded in STATE_DIR/<pid>.json (STATE_DIR:
$SNAILJOB_CACHE/real-server, default ~/.cache/snailjob-e2e/real-server).
Exit code 0, also when nothing was running (it says so); 1 when something
could not be stopped."""
ENV_HELP = """Print the `export` lines of the server `up` started (the newest one when
several run), e.g. eval "$(python scripts/real_server.py env)" in another shell.
Exit code 1 when none is running."""


def state_dir():
    return cache_dir() / "real-server"


def _cmdline(pid):
    """The process's command line, None when there is no such process; "" when
    unknown (no /proc: only whether the pid exists)."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return None  # exited, not yet reaped by its parent
            return proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def _alive(pid, needle):
    """pid is running and its command line holds needle (not a recycled pid)."""
    line = _cmdline(pid)
    return line is not None and (line == "" or needle in line)


def _records():
    """(path, state) of every recorded `up`, oldest first."""
    found = []
    for path in sorted(state_dir().glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return found


def client_exports(srv):
    """Every variable a client node and the OpenAPI commands need, as a dict."""
    env = srv.client_env(host_port=17889)
    env["SNAIL_OPENAPI_URL"] = srv.base_url  # the web port with the context path /snail-job
    return env


def _export_lines(env):
    return [f"export {k}={shlex.quote(str(v))}" for k, v in env.items()]


def _write_state(srv, env):
    state_dir().mkdir(parents=True, exist_ok=True)
    path = state_dir() / f"{os.getpid()}.json"
    state = {"up_pid": os.getpid(), "version": srv.version, "server_pid": srv.proc.pid if srv.proc else None,
             "http": srv.base_url, "grpc_port": srv.grpc_port, "workdir": str(srv.workdir),
             "pg_bindir": srv.pg.bindir, "pg_port": srv.pg.port, "env": env, "started": time.time()}
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:  # it holds the token
        json.dump(state, f, indent=2)
    tmp.replace(path)
    return path


def _interrupt(signum, frame):
    raise KeyboardInterrupt()


def cmd_up(args):
    with harness.RealServer(args.version, group=args.group, token=args.token) as srv:
        info = {
            "version": args.version, "http": srv.base_url, "grpc_port": srv.grpc_port,
            "postgres": f"127.0.0.1:{srv.pg.port} db={srv.DB} user={srv.DB_USER} password={srv.DB_PASSWORD}",
            "namespace": srv.namespace, "group": srv.group, "token": srv.group_token,
            "login": "admin / admin", "jwt": srv.jwt, "workdir": str(srv.workdir), "timings": srv.timings,
        }
        env = client_exports(srv)
        state = _write_state(srv, env)
        try:
            print(json.dumps(info, indent=2), flush=True)
            print("# settings of a client node (cd example && python main.py; snailjob run) and of the OpenAPI "
                  "commands (snailjob status/trigger): paste into a shell", flush=True)
            for line in _export_lines(env):
                print(line, flush=True)
            print(f"# console: {srv.base_url}/ (admin / admin)", flush=True)
            print(f"# another shell: eval \"$(python {_me()} env)\"", flush=True)
            print(f"# stop: Ctrl-C here, or python {_me()} down", flush=True)
            while srv.proc and srv.proc.poll() is None:
                time.sleep(1)
            print(f"server exited with code {srv.proc.returncode if srv.proc else '?'}", flush=True)
            srv.mark_failed()
        except KeyboardInterrupt:
            print("stopping", flush=True)
        finally:
            state.unlink(missing_ok=True)


def _me():
    """This script's path as the user can type it from the current directory."""
    path = Path(__file__).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stop_leftovers(state):
    """Stop what an `up` that is gone left running: the server's process group, PostgreSQL."""
    problems = []
    pid = state.get("server_pid")
    if pid and _alive(pid, "java"):
        try:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid, "java") and time.monotonic() < deadline:
                time.sleep(0.5)
            if _alive(pid, "java"):
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError as e:
            problems.append(f"server pid {pid}: {e}")
    workdir = Path(state.get("workdir") or "/nonexistent")
    if (workdir / "pgdata" / "postmaster.pid").exists() and state.get("pg_bindir"):
        pg = PrivatePostgres(workdir)
        pg.bindir, pg.port, pg.started = state["pg_bindir"], state.get("pg_port"), True
        pg.stop()
        if (workdir / "pgdata" / "postmaster.pid").exists():
            problems.append(f"PostgreSQL in {workdir / 'pgdata'} is still running")
    if not problems and workdir.is_dir() and workdir.name.startswith("snailjob-"):
        shutil.rmtree(workdir, ignore_errors=True)
    return problems


def cmd_down(args):
    records = _records()
    if not records:
        print(f"nothing to stop: no server started by `{_me()} up` is running (no state in {state_dir()})",
              flush=True)
        return 0
    failed = 0
    for path, state in records:
        up_pid = state.get("up_pid")
        what = (f"SnailJob {state.get('version')} (web {state.get('http')}, gRPC 127.0.0.1:{state.get('grpc_port')}) "
                f"started by `up` (pid {up_pid})")
        if up_pid and _alive(up_pid, "real_server.py"):
            print(f"stopping {what}", flush=True)
            os.kill(up_pid, signal.SIGTERM)
            deadline = time.monotonic() + args.wait
            while _alive(up_pid, "real_server.py") and time.monotonic() < deadline:
                time.sleep(0.5)
            if not _alive(up_pid, "real_server.py"):
                path.unlink(missing_ok=True)
                print(f"stopped {what}", flush=True)
                continue
            print(f"`up` (pid {up_pid}) did not stop within {args.wait:g}s; stopping the server here", flush=True)
        problems = _stop_leftovers(state)
        if problems:
            failed += 1
            print(f"could not stop all of {what}: {'; '.join(problems)}", file=sys.stderr, flush=True)
            continue
        path.unlink(missing_ok=True)
        print(f"stopped what was left of {what}", flush=True)
    return 1 if failed else 0


def cmd_env(args):
    running = [(p, s) for p, s in _records() if _alive(s.get("up_pid") or 0, "real_server.py")]
    if not running:
        print(f"no server started by `{_me()} up` is running (no live state in {state_dir()})", file=sys.stderr)
        return 1
    for line in _export_lines(running[-1][1]["env"]):
        print(line)
    return 0


def cmd_smoke(args):
    """No client online: a triggered cluster job should end CANCEL (reason 2, no client)."""
    with harness.RealServer(args.version, group=args.group, token=args.token) as srv:
        job_id = srv.create_job("smoke-cluster", "testJobExecutor", harness.TaskType.CLUSTER,
                                args_str="hello")
        batch_id = srv.trigger_job(job_id)
        final = srv.wait_batch(batch_id, timeout=60)
        st = int(final["taskBatchStatus"])
        print(json.dumps({"version": args.version, "job": job_id, "batch": batch_id,
                          "status": harness.BatchStatus.NAMES.get(st, st),
                          "operationReason": final.get("operationReason"),
                          "tasks": srv.task_tree(batch_id), "timings": srv.timings}, indent=2), flush=True)
        if st != harness.BatchStatus.CANCEL:
            srv.mark_failed()
            sys.exit(1)


def cmd_probe(args):
    """Check the harness helpers with a stand-in node (tests/e2e/probe_client.py; needs grpcio)."""
    from tests.e2e import probe_client

    T = harness.TaskType
    names = harness.BatchStatus.NAMES
    report = {}

    def behave(d):
        args_str = d.get("argsStr", "")
        if "sleep" in args_str:
            return 3, "late", 60
        if "fail" in args_str:
            return 4, "boom", 0
        return 3, {"echo": json.loads(args_str)}, 0

    with harness.RealServer(args.version, group=args.group, token=args.token) as srv:
        try:
            bad = probe_client.ProbeClient(srv.grpc_port, srv.namespace, srv.group, "WRONG",
                                           harness.free_port())
            report["wrong_token_beat"] = bad.start().first_beat
            bad.stop()
            with probe_client.ProbeClient(srv.grpc_port, srv.namespace, srv.group, srv.group_token,
                                          harness.free_port(), behave=behave) as p:
                report["beat"] = p.first_beat
                report["register_executors"] = p.replies[1][1]
                t0 = time.monotonic()
                report["online"] = srv.wait_online(1)
                report["online_after_s"] = round(time.monotonic() - t0, 1)
                report["pods"] = srv.pods()
                cases: list = [("cluster", T.CLUSTER, {"args_str": "a"}),
                               ("broadcast", T.BROADCAST, {"args_str": "b"}),
                               ("sharding", T.SHARDING, {"args_str": ["s0", "s1", "s2"]}),
                               ("map", T.MAP, {"args_str": "m"}),
                               ("mapreduce", T.MAP_REDUCE, {"args_str": "mr", "shard_num": 2})]
                for name, tt, kw in cases:
                    jid = srv.create_job(f"probe-{name}", "probeExecutor", tt, **kw)
                    b = srv.trigger_job(jid)
                    f = srv.wait_batch(b, 60)
                    report[name] = {"job": jid, "batch": b, "status": names[int(f["taskBatchStatus"])],
                                    "tasks": [(t["taskName"], t["taskStatus"], t.get("resultMessage"))
                                              for t in srv.task_tree(b)]}
                jid = srv.create_job("probe-stop", "probeExecutor", T.CLUSTER, args_str="sleep")
                b = srv.trigger_job(jid)
                srv.wait_batch(b, 20, statuses=(harness.BatchStatus.RUNNING,))
                time.sleep(1)
                srv.stop_batch(b)
                f = srv.wait_batch(b, 30)
                report["stop"] = {"status": names[int(f["taskBatchStatus"])],
                                  "reason": f.get("operationReason")}
                jid = srv.create_job("probe-timeout", "probeExecutor", T.CLUSTER, args_str="sleep",
                                     executor_timeout=3)
                f = srv.wait_batch(srv.trigger_job(jid), 60)
                report["timeout"] = {"status": names[int(f["taskBatchStatus"])],
                                     "reason": f.get("operationReason")}
                jid = srv.create_job("probe-fail", "probeExecutor", T.CLUSTER, args_str="fail",
                                     max_retry_times=2)
                b = srv.trigger_job(jid)
                f = srv.wait_batch(b, 60)
                report["fail"] = {"status": names[int(f["taskBatchStatus"])],
                                  "dispatches": sum(1 for d in p.dispatches if d["taskBatchId"] == b),
                                  "tasks": srv.task_rows(b)}
                ids = [report[n]["job"] for n in ("cluster", "broadcast", "sharding")]
                wf = srv.create_workflow(ids, name="probe-wf")
                wb = srv.trigger_workflow(wf, {"k": "v"})
                r = srv.wait_workflow_batch(wb, 120)
                report["workflow"] = {"id": wf, "batch": wb, "status": r.get("workflowBatchStatus"),
                                      "job_batches": srv.workflow_job_batches(wb)}
                report["log_replies"] = p.log_replies[:1]
                report["logs"] = srv.wait_logs(report["cluster"]["batch"], timeout=15)
                report["fail_logs"] = srv.wait_logs(b, timeout=15)
                try:
                    report["executors"] = srv.executors()
                except harness.ApiError as e:
                    report["executors"] = f"ERROR {e}"
                report["stop_requests_seen"] = p.stops
            report["timings"] = srv.timings
        finally:
            print(json.dumps(report, indent=1, ensure_ascii=False, default=str), flush=True)


def cmd_expiry(args):
    """How long a stopped node stays listed: one client (tests/e2e/e2e_client.py) beats every
    10 s as by default, is stopped with SIGTERM, and the two lists the console and the server
    use are polled every 0.5 s until it has left both."""
    import subprocess

    with harness.RealServer(args.version, group=args.group, token=args.token) as srv:
        port = harness.free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")},
               **srv.client_env(host_port=port), "SNAIL_BIND_HOST": "127.0.0.1",
               "PYTHONPATH": str(harness.REPO_ROOT)}
        client = subprocess.Popen([sys.executable, str(harness.REPO_ROOT / "tests" / "e2e" / "e2e_client.py")],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        address = f"127.0.0.1:{port}"
        try:
            srv.wait_node_online(address)
            time.sleep(25)  # a few beats, so that the lease has been refreshed as in steady state
        finally:
            client.terminate()
            client.communicate(timeout=30)
        stopped = time.time()
        gone = {}
        while len(gone) < 2 and time.time() - stopped < 240:
            if "online pods" not in gone and address not in srv.online_pods():
                gone["online pods"] = round(time.time() - stopped, 1)
            if "console node list" not in gone and not any(
                    f"{p.get('hostIp')}:{p.get('hostPort')}" == address for p in srv.pods()):
                gone["console node list"] = round(time.time() - stopped, 1)
            time.sleep(0.5)
        print(json.dumps({"version": args.version, "seconds_after_stop": gone,
                          "note": "the last heartbeat was 0-10 s before the stop"}, indent=2), flush=True)


def cmd_fetch(args):
    t0 = time.monotonic()
    java = harness.java_for_version(args.version)
    launch, info = harness.fetch_server(args.version)
    print(json.dumps({"java": java, "launch": launch, **info, "wall_s": round(time.monotonic() - t0, 1)}, indent=2))


def _common(parser, suppress):
    """--version, --group, --token: before the command (as always) or after it."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--version", default=default(os.environ.get("SNAILJOB_VERSION", "2.0.2")),
                        help="server version (default: $SNAILJOB_VERSION, else 2.0.2)")
    parser.add_argument("--group", default=default("py_e2e_group"), help="group to create (default py_e2e_group)")
    parser.add_argument("--token", default=default(None), help="the group's token (random if omitted)")


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(ap, suppress=False)
    commands = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    def add(name, func, summary, description, server=True, aliases=()):
        sub = commands.add_parser(name, help=summary, description=description, formatter_class=raw,
                                  aliases=list(aliases))
        if server:
            _common(sub, suppress=True)
        sub.set_defaults(func=func)
        return sub

    add("up", cmd_up, "start a server, print the SNAIL_* lines, wait for Ctrl-C", UP_HELP)
    down = add("down", cmd_down, "stop the server(s) `up` started (alias: stop)", DOWN_HELP, server=False,
               aliases=["stop"])
    down.add_argument("--wait", type=float, default=90.0, metavar="S",
                      help="seconds to let `up` stop everything itself (default 90)")
    add("env", cmd_env, "print the SNAIL_* lines of the server `up` started", ENV_HELP, server=False)
    add("smoke", cmd_smoke, "start, trigger a cluster job with no client (it must end CANCEL), stop",
        cmd_smoke.__doc__)
    add("probe", cmd_probe, "check the harness with a stand-in node (needs grpcio)", cmd_probe.__doc__)
    add("fetch", cmd_fetch, "only lay out the server (fetch-server.sh, cached)",
        "Lay out the server's jars for --version (fetch-server.sh, cached) and print where.")
    add("expiry", cmd_expiry, "how long a stopped node stays listed", cmd_expiry.__doc__)
    return ap


def main():
    args = build_parser().parse_args()
    if args.func in (cmd_down, cmd_env):
        sys.exit(args.func(args))
    # stop cleanly on SIGTERM too; and a shell starts background jobs with SIGINT ignored: take it back
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        args.func(args)
    except harness.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
