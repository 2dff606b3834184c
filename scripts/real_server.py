#!/usr/bin/env python3
# mypy: allow-untyped-defs
"""Start the real SnailJob server on a private PostgreSQL, for manual runs.

    python scripts/real_server.py --version 2.0.2 up       # start, print ports/token, wait for Ctrl-C
    python scripts/real_server.py --version 1.10.0 smoke   # start, create+trigger a cluster job, stop
    python scripts/real_server.py --version 2.0.2 probe    # check the harness with a stand-in node (grpcio)
    python scripts/real_server.py --version 2.0.2 fetch    # only lay out the server (fetch-server.sh, cached)
    python scripts/real_server.py --version 2.0.2 expiry   # how long a stopped node stays listed

The server comes from ../shared/snailjob/server (see tests/e2e/provision.py for the
environment variables, tests/e2e/harness.py for the rest).
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import harness  # noqa: E402


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
        print(json.dumps(info, indent=2), flush=True)
        print("client env:", flush=True)
        for k, v in srv.client_env(host_port=17889).items():
            print(f"  export {k}={v}", flush=True)
        print("Ctrl-C to stop", flush=True)
        try:
            while srv.proc and srv.proc.poll() is None:
                time.sleep(1)
            print(f"server exited with code {srv.proc.returncode if srv.proc else '?'}", flush=True)
            srv.mark_failed()
        except KeyboardInterrupt:
            print("stopping", flush=True)


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default=os.environ.get("SNAILJOB_VERSION", "2.0.2"))
    ap.add_argument("--group", default="py_e2e_group")
    ap.add_argument("--token", default=None, help="group token (random if omitted)")
    ap.add_argument("command", choices=["up", "smoke", "probe", "fetch", "expiry"])
    args = ap.parse_args()
    # stop cleanly on SIGTERM too; and a shell starts background jobs with SIGINT ignored: take it back
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        {"up": cmd_up, "smoke": cmd_smoke, "probe": cmd_probe, "fetch": cmd_fetch,
         "expiry": cmd_expiry}[args.command](args)
    except harness.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
