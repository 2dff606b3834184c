"""Load generator: plays the SnailJob server against one client process.

It is a lean ``grpc.aio`` server and client built on the generated stubs of
``snailjob/wire`` (one event loop, no validation beyond what it needs). It

- answers what a client calls, as the server does (``status=1``; ``data``
  ``"PONG"`` for ``/beat``, ``true`` otherwise; ``reqId`` echoed):
  ``/beat``, ``/register/job/executors``, ``/report/dispatch/result``,
  ``/batch/report/job/map/task/v1`` (and then dispatches the sub-tasks it
  announced, collecting their results), ``/batch/server/report/log``;
- calls the client's ``/job/dispatch/v1`` with header ``SJ-TOKEN`` and a body
  of one ``DispatchJobRequest``, keeping K tasks in flight, and measures per
  task the dispatch reply latency and the time from sending the dispatch to
  receiving its result report (matched by ``taskId``);
- after a non-cluster batch completes it sends ``/job/stop/v1`` for it, as
  the server does (protocol.md section 4.5), unless told not to;
- starts the client process itself and reads its ``VmRSS`` and ``Threads``
  from ``/proc/<pid>/status``.

Usage (``run_all.py`` drives it)::

    python benchmarks/loadgen.py --kind ours --phases throughput,map --out results/x.json [--quick]

All traffic is on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

# The client process is started with a preexec_fn, so by fork(): grpcio's fork handlers would then run in
# the child before its exec and sometimes abort it ("epoll_wait error: Bad file descriptor", exit -6).
# This process never uses grpc in a forked child, so it does not need them.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import grpc  # noqa: E402
import grpc.aio  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import go_peer  # noqa: E402
import java_peer  # noqa: E402
from common import (  # noqa: E402
    BENCH_DIR,
    GROUP,
    MAX_MESSAGE,
    METHOD,
    NAMESPACE,
    REPO_DIR,
    TOKEN,
    env_without_snail,
    free_port,
    latency_summary,
    load_pb2,
    machine_busy_seconds,
    proc_cpu_seconds,
    proc_status,
)

KINDS = ("ours", "ours_grpc", "v013", "floor", "floor_aio", "floor_h2", "java110", "java202", "go")
JAVA_VERSIONS = {"java110": "1.10.0", "java202": "2.0.2"}
"""Kinds played by SnailJob's own Java client (``java_peer.py``): the version of each."""
JAVA_EXECUTORS = {"bench": "echoExecutor"}
"""Executor names of the Python benchmark job -> the Java app's equivalent."""
CLUSTER, BROADCAST, SHARDING, MAP, MAP_REDUCE = 1, 2, 3, 4, 5

BATCH_TYPES: Dict[str, Dict[str, Any]] = {
    # name: dispatch fields of every task of one batch (one dict per task)
    "CLUSTER": {"tasks": [{"taskType": CLUSTER, "taskName": "CLUSTER_TASK", "executorInfo": "bench",
                           "parallelNum": 1, "argsStr": '{"jobParams":"x"}'}]},
    "BROADCAST": {"tasks": [{"taskType": BROADCAST, "taskName": "BROADCAST_TASK", "executorInfo": "bench",
                             "parallelNum": 1, "argsStr": '{"jobParams":"x"}'}]},
    "SHARDING": {"tasks": [{"taskType": SHARDING, "taskName": "SHARDING_TASK", "executorInfo": "bench",
                            "parallelNum": 2, "shardingTotal": 2, "shardingIndex": i,
                            "argsStr": json.dumps({"jobParams": f"shard{i}"})} for i in range(2)]},
    "MAP_ROOT": {"tasks": [{"taskType": MAP, "taskName": "ROOT_MAP", "mrStage": 1, "executorInfo": "benchMap",
                            "parallelNum": 2, "argsStr": '{"jobParams":"","maps":""}'}]},
    "MR_REDUCE": {"tasks": [{"taskType": MAP_REDUCE, "taskName": "REDUCE_TASK", "mrStage": 2,
                             "executorInfo": "benchMR", "parallelNum": 2,
                             "argsStr": '{"jobParams":"","maps":["1","2","3"]}'}]},
}

SERVER_MESSAGES = {
    "/beat": ("", '"PONG"'),
    "/register/job/executors": ("Batch Register Job Executors Processed Successfully", "true"),
    "/report/dispatch/result": ("Report Dispatch Result Processed Successfully", "true"),
    "/batch/report/job/map/task/v1": ("Report Map Task Processed Successfully", "true"),
    "/batch/server/report/log": ("Batch Log Retry Data Upload Processed Successfully", "true"),
    # the Java client pulls its group's alerting config once a minute
    "/sync/version": ("", '{"version":1,"sceneList":[],"notifyList":[]}'),
}


def _is_benchmark_record(entry: Dict[str, Any]) -> bool:
    """True for the records the ``benchLog`` job emits (not the client's own)."""
    for item in entry.get("fieldList") or ():
        if item.get("name") == "message":
            return str(item.get("value") or "").startswith("benchmark record")
    return False


class CpuMeter:
    """CPU used by the client, by this process and by everything else on the
    machine between ``__init__`` and ``read``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.perf_counter()
        self.client0 = proc_cpu_seconds(pid)
        self.self0 = time.process_time()
        self.busy0 = machine_busy_seconds()

    def read(self, tasks: int) -> Dict[str, float]:
        """Per-task CPU (µs) and average cores used, since construction."""
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        client = proc_cpu_seconds(self.pid) - self.client0
        mine = time.process_time() - self.self0
        others = machine_busy_seconds() - self.busy0 - client - mine
        per_task = max(1, tasks)
        return {"client_cpu_us_per_task": client / per_task * 1e6, "loadgen_cpu_us_per_task": mine / per_task * 1e6,
                "client_cores": client / elapsed, "loadgen_cores": mine / elapsed,
                "other_processes_cores": max(0.0, others / elapsed)}


def _die_with_parent() -> None:
    """``preexec_fn``: the client gets SIGTERM if the load generator dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class TaskOutcome:
    """What happened to one dispatched task."""

    reply_s: Optional[float] = None
    report_s: Optional[float] = None
    report: Optional[Dict[str, Any]] = None
    error: Optional[str] = None


@dataclass
class LogTrack:
    """Log entries received for one task."""

    target: int
    event: asyncio.Event
    count: int = 0
    first_at: Optional[float] = None
    done_at: Optional[float] = None


@dataclass
class MapRun:
    """Sub-tasks announced by map reports of one batch, and their results."""

    expected: int
    job_params: str
    event: asyncio.Event
    announced: int = 0
    reports: int = 0
    done: int = 0
    failed: int = 0
    last_done_at: float = 0.0
    children: List[asyncio.Task[None]] = field(default_factory=list)


class LoadGen:
    """The fake server, the dispatcher of load, and the client process's owner."""

    def __init__(self, kind: str, python: str, log_level: str, log_mode: str, workdir: Path,
                 pythonpath: str = str(REPO_DIR), census: bool = False) -> None:
        self.kind = kind
        self.census = census
        self.pythonpath = pythonpath
        self.pb = load_pb2()
        self.python = os.path.abspath(python)  # not resolve(): a venv's python is a symlink
        self.log_level = log_level
        self.log_mode = log_mode
        self.workdir = workdir
        self.server_port = free_port()
        self.client_port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.server: Optional[grpc.aio.Server] = None
        self.channel: Optional[grpc.aio.Channel] = None
        self.call: Any = None
        self.pending: Dict[int, asyncio.Future[Tuple[float, Dict[str, Any]]]] = {}
        self.log_tracks: Dict[int, LogTrack] = {}
        self.map_runs: Dict[int, MapRun] = {}
        self.map_window: Optional[asyncio.Semaphore] = None
        self.ids = itertools.count(1_000_001)
        self.req_ids = itertools.count(1)
        self.beat = asyncio.Event()
        self.java_version = JAVA_VERSIONS.get(kind)
        self.spawned_at: Optional[float] = None
        self.first_beat_at: Optional[float] = None
        self.ready_at: Optional[float] = None
        self.first_dispatch_at: Optional[float] = None
        self.first_reply_s: Optional[float] = None
        self.client_log: Any = None
        self.counters: Dict[str, int] = {"beats": 0, "registers": 0, "results": 0, "unmatched_results": 0,
                                         "map_reports": 0, "log_calls": 0, "log_entries": 0, "stops_sent": 0,
                                         "stop_failures": 0, "refused": 0, "lost": 0, "rpc_errors": 0,
                                         "config_syncs": 0}
        self.headers = {"SJ-TOKEN": TOKEN, "host-id": "bench-server", "host-ip": "127.0.0.1",
                        "host-port": str(self.server_port), "group-name": "DEFAULT_SERVER",
                        "namespace": NAMESPACE, "token": "SJ_bench_server_token"}

    # --- the server side -------------------------------------------------

    async def _serve(self, request: Any, context: Any) -> Any:
        uri = request.metadata.uri
        now = time.perf_counter()
        try:
            if uri == "/report/dispatch/result":
                report = json.loads(request.body)[0]
                self.counters["results"] += 1
                fut = self.pending.pop(int(report.get("taskId") or 0), None)
                if fut is not None and not fut.done():
                    fut.set_result((now, report))
                else:
                    self.counters["unmatched_results"] += 1
            elif uri == "/batch/server/report/log":
                self._on_logs(json.loads(request.body)[0], now)
            elif uri == "/batch/report/job/map/task/v1":
                self._on_map(json.loads(request.body)[0])
            elif uri == "/beat":
                self.counters["beats"] += 1
                if self.first_beat_at is None:
                    self.first_beat_at = now
                self.beat.set()
            elif uri == "/sync/version":
                self.counters["config_syncs"] += 1
            elif uri == "/register/job/executors":
                self.counters["registers"] += 1
            else:
                return self.pb.GrpcResult(reqId=request.reqId, status=0, data="null",
                                     message=f"No matching handler found. Path:[{uri}]")
        except Exception as exc:  # a malformed call: answer as the server would
            return self.pb.GrpcResult(reqId=request.reqId, status=0, message=repr(exc)[:200], data="null")
        message, data = SERVER_MESSAGES[uri]
        return self.pb.GrpcResult(reqId=request.reqId, status=1, message=message, data=data)

    def _on_logs(self, entries: List[Dict[str, Any]], now: float) -> None:
        self.counters["log_calls"] += 1
        self.counters["log_entries"] += len(entries)
        for entry in entries:
            track = self.log_tracks.get(int(entry.get("taskId") or 0))
            if track is None or not _is_benchmark_record(entry):
                continue
            track.count += 1
            if track.first_at is None:
                track.first_at = now
            if track.count >= track.target and track.done_at is None:
                track.done_at = now
                track.event.set()

    def _on_map(self, request: Dict[str, Any]) -> None:
        self.counters["map_reports"] += 1
        run = self.map_runs.get(int(request["taskBatchId"]))
        if run is None:
            return
        run.reports += 1
        for item in request["subTask"]:
            run.announced += 1
            fields = {"taskType": MAP, "taskName": request["taskName"], "mrStage": 1, "executorInfo": "benchMap",
                      "parallelNum": 4, "argsStr": json.dumps({"jobParams": run.job_params, "maps": item})}
            run.children.append(asyncio.ensure_future(
                self._run_child(run, int(request["taskBatchId"]), fields)))

    async def _run_child(self, run: MapRun, batch_id: int, fields: Dict[str, Any]) -> None:
        assert self.map_window is not None
        async with self.map_window:
            outcome = await self.run_task(batch_id, fields, report_timeout=60)
        if outcome.report_s is None or outcome.error:
            run.failed += 1
        run.done += 1
        run.last_done_at = time.perf_counter()
        if run.done >= run.expected:
            run.event.set()

    async def start_server(self) -> None:
        """Listen on 127.0.0.1 for the client's calls."""
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                               ("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._serve, request_deserializer=self.pb.GrpcSnailJobRequest.FromString,
            response_serializer=self.pb.GrpcResult.SerializeToString)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": handler}),))
        self.server.add_insecure_port(f"127.0.0.1:{self.server_port}")
        await self.server.start()

    # --- the client process ----------------------------------------------

    def client_command(self) -> Tuple[List[str], Dict[str, str], Path]:
        """Command, environment and working directory of the client under test."""
        env = env_without_snail()
        env.update({
            "SNAIL_SERVER_HOST": "127.0.0.1", "SNAIL_SERVER_PORT": str(self.server_port),
            "SNAIL_HOST_IP": "127.0.0.1", "SNAIL_HOST_PORT": str(self.client_port), "SNAIL_BIND_HOST": "127.0.0.1",
            "SNAIL_TOKEN": TOKEN, "SNAIL_GROUP_NAME": GROUP, "SNAIL_NAMESPACE": NAMESPACE,
            "SNAIL_LOG_LEVEL": self.log_level, "SNAIL_SHUTDOWN_GRACE": "2",
            "BENCH_LOG_MODE": self.log_mode, "BENCH_IDENT_FILE": str(self.workdir / "ident.json"),
            "PYTHONUNBUFFERED": "0",
        })
        if self.census:
            env["BENCH_CENSUS_FILE"] = str(self.workdir / "census.jsonl")
        if self.kind in ("ours", "ours_grpc"):
            env["PYTHONPATH"] = self.pythonpath
        if self.kind == "ours_grpc":  # grpcio for the client's calls and the inbound port (the default: native)
            env["SNAIL_TRANSPORT"] = env["SNAIL_INBOUND"] = "grpc"
        if self.kind == "go":  # SnailJob's Go client: our program on it (go_peer.py), built or found in the cache
            cmd = [str(go_peer.build())]
        elif self.kind == "floor_h2":
            cmd = [self.python, str(BENCH_DIR / "floor_h2.py")]
        elif self.kind.startswith("floor"):
            cmd = [self.python, str(BENCH_DIR / "floor_client.py")] + (["--aio"] if self.kind == "floor_aio" else [])
        else:
            cmd = [self.python, str(BENCH_DIR / "bench_client.py")]
        return cmd, env, self.workdir

    def start_client(self) -> None:
        """Start the client process (output to ``client.log`` in its working directory).

        ``spawned_at`` is taken just before the process is spawned: the
        start-up figures count from there.  A Java kind's jar (the Go kind's
        program) is built, or found in the cache, before that.
        """
        cmd, env, cwd = self.client_command()
        if self.java_version is not None:
            java_peer.build_jar(self.java_version)
            self.spawned_at = time.perf_counter()
            self.proc = java_peer.start(self.java_version, env, cwd / "client.log", die_with_parent=True, cwd=cwd)
            return
        self.client_log = open(cwd / "client.log", "wb")
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                     stdout=self.client_log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def startup(self) -> Dict[str, Optional[float]]:
        """Seconds from spawning the client to its first beat, to its port
        answering, and the reply time of the very first dispatch (cold)."""
        def since(at: Optional[float]) -> Optional[float]:
            return None if at is None or self.spawned_at is None else at - self.spawned_at

        return {"first_beat_s": since(self.first_beat_at), "ready_s": since(self.ready_at),
                "first_dispatch_answered_s": since(self.first_dispatch_at),
                "first_dispatch_reply_ms": None if self.first_reply_s is None else self.first_reply_s * 1e3}

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait for the first beat and for the client's port; seconds taken."""
        started = time.perf_counter()
        assert self.proc is not None
        deadline = started + timeout
        while not self.beat.is_set():
            if self.proc.poll() is not None:
                raise RuntimeError(f"client exited with {self.proc.returncode}; see {self.workdir / 'client.log'}")
            if time.perf_counter() > deadline:
                raise RuntimeError("client did not beat in time")
            try:
                await asyncio.wait_for(self.beat.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.client_port}",
            options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.initial_reconnect_backoff_ms", 50),
                     ("grpc.min_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)])
        await asyncio.wait_for(self.channel.channel_ready(), max(1.0, deadline - time.perf_counter()))
        self.call = self.channel.unary_unary(METHOD, request_serializer=self.pb.GrpcSnailJobRequest.SerializeToString,
                                             response_deserializer=self.pb.GrpcResult.FromString)
        self.ready_at = time.perf_counter()
        return self.ready_at - started

    def status(self) -> Dict[str, int]:
        """The client's ``VmRSS`` (KiB) and ``Threads`` now."""
        assert self.proc is not None
        return proc_status(self.proc.pid)

    def ident(self) -> Dict[str, Any]:
        """Which ``snailjob`` the client imported (written by ``bench_client.py``)."""
        path = self.workdir / "ident.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def stop_client(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after 8 s; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.client_log is not None:
            self.client_log.close()
        return self.proc.returncode

    # --- dispatching ---------------------------------------------------------

    def _dispatch_request(self, batch_id: int, task_id: int, fields: Dict[str, Any]) -> Any:
        body = {"namespaceId": NAMESPACE, "jobId": 7, "taskBatchId": batch_id, "taskId": task_id,
                "groupName": GROUP, "executorType": 2, "executorTimeout": 60, "retryCount": 0,
                "retry": False, "retryStatus": False}
        body.update(fields)
        if self.java_version is not None:
            # the Java client takes executorType 1 (Java) only, and needs a jobBizId
            body["executorType"] = 1
            body["jobBizId"] = f"bench-{batch_id}"
            body["executorInfo"] = JAVA_EXECUTORS.get(body["executorInfo"], body["executorInfo"])
        elif self.kind == "go":
            body["executorType"] = 3  # GO, as the server sends for a Go executor (the Go client does not check it)
        return self.pb.GrpcSnailJobRequest(reqId=next(self.req_ids),
                                      metadata=self.pb.Metadata(uri="/job/dispatch/v1", headers=self.headers),
                                      body=json.dumps([body], separators=(",", ":")))

    async def run_task(self, batch_id: int, fields: Dict[str, Any], report_timeout: float = 15.0,
                       task_id: Optional[int] = None) -> TaskOutcome:
        """Dispatch one task and wait for its result report."""
        task_id = next(self.ids) if task_id is None else task_id
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Tuple[float, Dict[str, Any]]] = loop.create_future()
        self.pending[task_id] = fut
        request = self._dispatch_request(batch_id, task_id, fields)
        out = TaskOutcome()
        t0 = time.perf_counter()
        try:
            reply = await self.call(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            self.pending.pop(task_id, None)
            self.counters["rpc_errors"] += 1
            out.error = f"dispatch failed: {exc.code().name}"
            return out
        out.reply_s = time.perf_counter() - t0
        if self.first_reply_s is None:
            self.first_reply_s = out.reply_s
        if self.first_dispatch_at is None and reply.status == 1:
            self.first_dispatch_at = t0 + out.reply_s
        if reply.status != 1 or reply.data != "true":
            self.pending.pop(task_id, None)
            self.counters["refused"] += 1
            out.error = f"dispatch refused: {reply.message[:200]}"
            return out
        try:
            at, report = await asyncio.wait_for(fut, report_timeout)
        except asyncio.TimeoutError:
            self.pending.pop(task_id, None)
            self.counters["lost"] += 1
            out.error = "no report"
            return out
        out.report_s = at - t0
        out.report = report
        if report.get("taskStatus") != 3:
            out.error = f"task failed: {json.dumps(report.get('executeResult'))[:300]}"
        return out

    async def send_stop(self, batch_id: int) -> None:
        """``/job/stop/v1`` for a finished batch, with the server's 1 s deadline."""
        body = json.dumps([{"jobId": 7, "taskBatchId": batch_id, "groupName": GROUP}])
        request = self.pb.GrpcSnailJobRequest(reqId=next(self.req_ids),
                                         metadata=self.pb.Metadata(uri="/job/stop/v1", headers=self.headers), body=body)
        self.counters["stops_sent"] += 1
        try:
            await self.call(request, timeout=1)
        except grpc.aio.AioRpcError:
            self.counters["stop_failures"] += 1

    async def closed_loop(self, k: int, count: int, max_seconds: float,
                          batch: Callable[[], List[Dict[str, Any]]], stop_after: bool,
                          guard: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
        """Run up to ``count`` batches with ``k`` batches in flight, for at most
        ``max_seconds`` (no new batch starts after that); per-task figures."""
        assert self.proc is not None
        meter = CpuMeter(self.proc.pid)
        started = time.perf_counter()
        deadline = started + max_seconds
        issued = itertools.count()
        replies: List[float] = []
        reports: List[float] = []
        errors: Dict[str, int] = {}
        batches_done = [0]
        tasks_done = [0]
        aborted = [False]
        peak = {"threads": 0, "rss_kb": 0}

        async def one_task(batch_id: int, fields: Dict[str, Any]) -> None:
            """Run one task of a batch and record its figures."""
            outcome = await self.run_task(batch_id, fields)
            if outcome.reply_s is not None:
                replies.append(outcome.reply_s)
            if outcome.error:
                key = outcome.error[:80]
                errors[key] = errors.get(key, 0) + 1
            elif outcome.report_s is not None:
                reports.append(outcome.report_s)
                tasks_done[0] += 1

        async def worker() -> None:
            """Run batches one after the other until the count or the time is used up."""
            while True:
                n = next(issued)
                if n >= count or time.perf_counter() > deadline or aborted[0]:
                    return
                if n % 50 == 0:
                    now = self.status()
                    peak["threads"] = max(peak["threads"], now.get("threads", 0))
                    peak["rss_kb"] = max(peak["rss_kb"], now.get("rss_kb", 0))
                    if guard is not None and not guard():
                        aborted[0] = True
                        return
                batch_id = next(self.ids)
                specs = batch()
                if len(specs) == 1:
                    await one_task(batch_id, specs[0])
                else:
                    await asyncio.gather(*(one_task(batch_id, f) for f in specs))
                if stop_after and specs[0]["taskType"] != CLUSTER:
                    await self.send_stop(batch_id)
                batches_done[0] += 1

        await asyncio.gather(*(worker() for _ in range(k)))
        elapsed = time.perf_counter() - started
        return {"k": k, "batches": batches_done[0], "tasks": tasks_done[0], "seconds": elapsed,
                "tasks_per_s": tasks_done[0] / elapsed if elapsed > 0 else 0.0, "cpu": meter.read(tasks_done[0]),
                "reply": latency_summary(replies), "report": latency_summary(reports),
                "errors": errors, "aborted_by_guard": aborted[0], "peak": peak}

    async def open_loop(self, rate: float, seconds: float, cap: int) -> Dict[str, Any]:
        """Cluster tasks started at a fixed ``rate`` per second for ``seconds``
        (never more than ``cap`` in flight; a start that finds ``cap`` in
        flight is skipped and counted): latencies at a load every client
        sustains."""
        assert self.proc is not None
        cluster = BATCH_TYPES["CLUSTER"]["tasks"][0]
        meter = CpuMeter(self.proc.pid)
        replies: List[float] = []
        reports: List[float] = []
        errors: Dict[str, int] = {}
        in_flight = [0]
        skipped = 0
        running: List[asyncio.Task[None]] = []

        async def one() -> None:
            """Run one paced task and record its figures."""
            in_flight[0] += 1
            try:
                outcome = await self.run_task(next(self.ids), cluster)
            finally:
                in_flight[0] -= 1
            if outcome.reply_s is not None:
                replies.append(outcome.reply_s)
            if outcome.error:
                errors[outcome.error[:80]] = errors.get(outcome.error[:80], 0) + 1
            elif outcome.report_s is not None:
                reports.append(outcome.report_s)

        started = time.perf_counter()
        launched = 0
        while True:
            now = time.perf_counter()
            if now - started >= seconds:
                break
            due = int((now - started) * rate) + 1
            while launched < due:
                launched += 1
                if in_flight[0] >= cap:
                    skipped += 1
                    continue
                running.append(asyncio.ensure_future(one()))
            await asyncio.sleep(max(0.0005, (launched / rate) - (time.perf_counter() - started)))
        await asyncio.gather(*running)
        elapsed = time.perf_counter() - started
        return {"rate": rate, "launched": launched, "skipped_at_cap": skipped, "tasks": len(reports),
                "seconds": elapsed, "reply": latency_summary(replies), "report": latency_summary(reports),
                "errors": errors, "cpu": meter.read(len(reports))}

    async def settle(self, minimum: float = 2.5, maximum: float = 10.0) -> Dict[str, int]:
        """Wait until the client's thread count has not changed for 1 s
        (at least ``minimum``, at most ``maximum`` seconds); its status then.
        With ``--census`` the client also writes its object census then."""
        started = time.perf_counter()
        if self.census and self.proc is not None:
            self.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(minimum)
        last = self.status()
        while time.perf_counter() - started < maximum:
            await asyncio.sleep(1.0)
            now = self.status()
            if now.get("threads") == last.get("threads"):
                return now
            last = now
        return last

    # --- phases -----------------------------------------------------------

    async def phase_throughput(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        """Cluster tasks, closed loop, at each K; several repetitions."""
        cluster = BATCH_TYPES["CLUSTER"]["tasks"]
        warm = await self.closed_loop(16, cfg["warmup"], cfg.get("warmup_seconds", 30), lambda: cluster, False)
        runs: List[Dict[str, Any]] = []
        for rep in range(cfg["reps"]):
            for k in cfg["ks"]:
                result = await self.closed_loop(k, cfg["tasks"][str(k)], cfg["max_seconds"], lambda: cluster, False)
                result["rep"] = rep
                runs.append(result)
        paced = []
        for rep in range(cfg["reps"]):
            result = await self.open_loop(cfg["paced_rate"], cfg["paced_seconds"], 64)
            result["rep"] = rep
            paced.append(result)
        return {"warmup": warm, "runs": runs, "paced": paced, "after": self.status()}

    async def phase_leak(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        """10,000 batches of each type, twice (``rounds``); RSS and threads
        after each round: the first shows the steady state, the second any
        growth left."""
        out: Dict[str, Any] = {"fresh": self.status()}
        cluster = BATCH_TYPES["CLUSTER"]["tasks"]
        out["warmup"] = await self.closed_loop(64, cfg["warmup"], 60, lambda: cluster, False)
        out["baseline"] = await self.settle(cfg.get("settle_min", 2.5), cfg.get("settle_max", 10.0))
        types: Dict[str, Any] = {}
        for name in cfg["types"]:
            specs: List[Dict[str, Any]] = BATCH_TYPES[name]["tasks"]
            rounds = []
            for _ in range(cfg.get("rounds", 1)):
                run = await self.closed_loop(cfg["k"], cfg["batches"], cfg["max_seconds"],
                                             functools.partial(list, specs), True,
                                             guard=lambda: self.status().get("threads", 0) < cfg["thread_guard"])
                run["status"] = await self.settle(cfg.get("settle_min", 2.5), cfg.get("settle_max", 10.0))
                rounds.append(run)
            types[name] = {**rounds[-1], "rounds": [{"batches": r["batches"], "status": r["status"]}
                                                     for r in rounds]}
        out["types"] = types
        if cfg.get("nostop_batches"):
            specs = BATCH_TYPES["BROADCAST"]["tasks"]
            run = await self.closed_loop(cfg["k"], cfg["nostop_batches"], cfg["max_seconds"], lambda: specs, False,
                                         guard=lambda: self.status().get("threads", 0) < cfg["thread_guard"])
            run["status"] = await self.settle(cfg.get("settle_min", 2.5), cfg.get("settle_max", 10.0))
            out["broadcast_without_stop"] = run
        return out

    async def phase_logs(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        """The log job, several times: caller cost (measured in the job) and delivery."""
        runs: List[Dict[str, Any]] = []
        fields = {"taskType": CLUSTER, "taskName": "CLUSTER_TASK", "executorInfo": "benchLog", "parallelNum": 1,
                  "argsStr": json.dumps({"jobParams": str(cfg["records"])})}
        for rep in range(cfg["reps"]):
            batch_id = next(self.ids)
            track = LogTrack(target=cfg["records"], event=asyncio.Event())
            task_id = next(self.ids)
            self.log_tracks[task_id] = track
            assert self.proc is not None
            meter = CpuMeter(self.proc.pid)
            t0 = time.perf_counter()
            outcome = await self.run_task(batch_id, fields, report_timeout=cfg["timeout"], task_id=task_id)
            cpu = meter.read(cfg["records"])
            job_done = time.perf_counter()
            received_at_job_end = track.count
            try:
                await asyncio.wait_for(track.event.wait(), cfg["drain_timeout"])
            except asyncio.TimeoutError:
                pass
            result: Dict[str, Any] = {"rep": rep, "error": outcome.error, "received": track.count,
                                      "received_when_job_reported": received_at_job_end,
                                      "other_processes_cores": cpu["other_processes_cores"],
                                      "client_cores": cpu["client_cores"]}
            if outcome.report is not None:
                value = (outcome.report.get("executeResult") or {}).get("result")
                try:
                    result["caller"] = json.loads(value) if isinstance(value, str) else value
                except ValueError:
                    result["caller"] = None
            if track.done_at is not None:
                seconds = track.done_at - t0
                result["delivered_s"] = seconds
                result["records_per_s"] = cfg["records"] / seconds
                result["lag_after_job_s"] = track.done_at - (t0 + (outcome.report_s or 0.0))
            result["job_s"] = job_done - t0
            del self.log_tracks[task_id]
            runs.append(result)
            await asyncio.sleep(0.5)
        return {"runs": runs, "after": self.status()}

    async def phase_map(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        """One ROOT_MAP task emits N sub-tasks; they are dispatched (K=64 in
        flight) and collected.  Several repetitions.  For the Java client
        (``benchMap``, run by hand: ``--kind java110 --phases map``) the
        sub-tasks are N/500 CHUNKs and then the N ITEMs they map."""
        runs: List[Dict[str, Any]] = []
        self.map_window = asyncio.Semaphore(cfg["k"])
        for rep in range(cfg["reps"]):
            batch_id = next(self.ids)
            params = f"fanout:{cfg['children']}"
            expected = cfg["children"]
            if self.java_version is not None:  # benchMap: CHUNK sub-tasks of <= 500, each mapping its ITEMs
                expected += -(-cfg["children"] // 500)
            run = MapRun(expected=expected, job_params=params, event=asyncio.Event())
            self.map_runs[batch_id] = run
            fields = {"taskType": MAP, "taskName": "ROOT_MAP", "mrStage": 1, "executorInfo": "benchMap",
                      "parallelNum": 4, "argsStr": json.dumps({"jobParams": params, "maps": ""})}
            t0 = time.perf_counter()
            root = await self.run_task(batch_id, fields, report_timeout=cfg["timeout"])
            try:
                await asyncio.wait_for(run.event.wait(), cfg["timeout"])
            except asyncio.TimeoutError:
                pass
            end = time.perf_counter()
            for child in run.children:
                child.cancel()
            await asyncio.gather(*run.children, return_exceptions=True)
            await self.send_stop(batch_id)
            result: Dict[str, Any] = {"rep": rep, "root_error": root.error, "map_reports": run.reports,
                                      "announced": run.announced, "children_done": run.done,
                                      "children_failed": run.failed}
            if root.report_s is not None:
                result["root_reported_s"] = root.report_s
            if root.report_s is not None and run.done >= run.expected and not root.error:
                result["all_reported_s"] = max(root.report_s, run.last_done_at - t0)
            result["wall_s"] = end - t0
            runs.append(result)
            del self.map_runs[batch_id]
            await asyncio.sleep(1.0)
        return {"runs": runs, "after": self.status()}


async def _main(opts: argparse.Namespace) -> Dict[str, Any]:
    cfg = json.loads(opts.config)
    if opts.workdir:
        workdir = Path(opts.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"snailjob-bench-{opts.kind}-"))
    lg = LoadGen(opts.kind, opts.python, opts.log_level, opts.log_mode, workdir, opts.pythonpath, opts.census)
    await lg.start_server()
    out: Dict[str, Any] = {"kind": opts.kind, "python": opts.python, "log_mode": opts.log_mode,
                           "log_level": opts.log_level, "workdir": str(workdir)}
    try:
        lg.start_client()
        assert lg.proc is not None
        out["pid"] = lg.proc.pid
        # a JVM with Spring takes seconds to start, and much longer on a busy machine
        out["ready_s"] = await lg.wait_ready(180.0 if lg.java_version else 60.0)
        await asyncio.sleep(1.0)
        out["idle"] = lg.status()
        out["startup"] = lg.startup()
        out["ident"] = lg.ident()
        for phase in [p for p in opts.phases.split(",") if p]:
            started = time.perf_counter()
            out[phase] = await getattr(lg, f"phase_{phase}")(cfg[phase])
            out[phase]["phase_seconds"] = time.perf_counter() - started
    except Exception as exc:
        out["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        out["counters"] = dict(lg.counters)
        out["startup"] = lg.startup()
        out["client_exit"] = lg.stop_client()
        if lg.channel is not None:
            await lg.channel.close()
        if lg.server is not None:
            await lg.server.stop(0)
    return out


def main() -> None:
    """Parse arguments, run the phases, write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the client")
    parser.add_argument("--phases", default="throughput")
    parser.add_argument("--config", required=True, help="JSON: settings of each phase")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-mode", default="default", choices=("default", "remote"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--workdir", help="working directory of the client process (default: a new temp dir)")
    parser.add_argument("--census", action="store_true",
                        help="leak phase: have the client write its live objects by type after each step")
    parser.add_argument("--pythonpath", default=str(REPO_DIR),
                        help="PYTHONPATH of this client's process (to benchmark a patched copy of snailjob/)")
    opts = parser.parse_args()
    result = asyncio.run(_main(opts))
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    if "failure" in result:
        print(f"loadgen {opts.kind}: {result['failure']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
