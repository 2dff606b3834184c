"""This Python client against SnailJob's Java client on the real SnailJob server, then scaled out.

One real server (default 2.0.2) on its private PostgreSQL (``tests/e2e/harness.py``)
for the whole run; each client kind and node count gets its own group. Nodes
run on this machine's loopback, each on its own port: the Python nodes run
``benchmarks/real_jobs.py``, the Java nodes the Java peer of
``benchmarks/java_peer.py`` (its ``echoExecutor`` and ``benchMap``). When the
Java peer cannot run, its rows are skipped with the reason.

Scenarios:

1. one Python node, then one Java node:
   (a) ``--jobs`` cluster batches of an echo job, triggered through the web API
       as fast as it takes them (a job with the "parallel" block strategy); the
       rate is batches per second from the first trigger to the last batch final;
   (b) a map job of ``--map-items`` items (ROOT_MAP -> CHUNKs of <= 500 -> ITEMs)
       end to end: wall time, items/s, every ITEM row SUCCESS with its number.
2. the same with three nodes of each kind.
3. scale-out: ``--scale-nodes`` Python node processes in one group:
   (a) a broadcast job (``--broadcasts`` times): a SUCCESS task on every node;
   (b) a map of ``--scale-items`` items (``--scale-shape flat``: mapped by the root
       task itself), every item run exactly once (one marker
       line per run, plus the ``sj_job_task`` status counts).

Scenarios 1 and 2 (``real_pairs.py``) are measured so that neither client profits
from the server's JIT warm-up: both node sets start, the server is warmed with
rounds of cluster jobs on each set in turn until two consecutive rounds of each
agree within 10 % (``--steady-tolerance``, at most ``--steady-rounds``), then
``--reps`` repetitions (default 3) run both sets with the order alternating, and
the summary gives medians and ranges, with the server's CPU per job or item.

For each measurement: wall time; CPU seconds and peak RSS (sampled every 0.5 s)
of the server JVM, of PostgreSQL (all its processes) and of the client nodes
(sum, and per node for the scale-out); the machine's busy CPU; and a verdict on
the bottleneck from those (cores busy per party against the CPU count). Before
each node set is measured it runs a short warm-up (a few echo batches and a
small map) so JIT and connection set-up stay out of the figures.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_real.py --quick          # small: about 4 min on 2 cores
    .venv/bin/python benchmarks/bench_real.py                  # full scale: about 30 min (20-40)
    .venv/bin/python benchmarks/bench_real.py --scenarios 3 --scale-nodes 20 --scale-items 20000
    .venv/bin/python benchmarks/bench_real.py --kinds python --scenarios 1,2

Defaults (full scale): 300 jobs, 10,000-item maps, 50 nodes and a 100,000-item
map for the scale-out; ``--quick``: 100 jobs, 1,000-item maps, 5 nodes, 5,000
items. A table is printed and everything is written to
``benchmarks/results/real-<time>.json`` (rewritten after each measurement, so an
interrupted run keeps what it measured). Client logs and marker files go to a
scratch directory, removed at the end unless ``--keep`` or a check failed.

Run it on a machine with nothing else busy: the server gives a node 3 s to take
a dispatch, and when other work starves it of CPU those calls time out, it drops
the nodes and FAILs or CANCELs what it was dispatching (seen here at a load
average in the thousands). Each measurement counts such lines of the server log
(``server_errors``) and "other work" shows the CPU that went to other processes.
The full run's 100,000-item map takes most of the time (the server completes
about 80-140 items/s on 2 cores); ``--server-jvm "-Xms256m -Xmx1536m"`` gives
the server more heap if it needs it.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(BENCH_DIR))

from real_meter import NCPU, Meter  # noqa: E402
from real_pairs import run_pairs, summary_table  # noqa: E402

from tests.e2e import harness  # noqa: E402
from tests.e2e.clients import ClientProcess, client_env  # noqa: E402
from tests.e2e.harness import BatchStatus, TaskType  # noqa: E402

PYTHON_PROGRAM = BENCH_DIR / "real_jobs.py"
EXECUTOR_TYPE_JAVA = 1
EXECUTORS = {  # kind -> (executorType, echo executor, map executor)
    "python": (harness.EXECUTOR_TYPE_PYTHON, "benchEcho", "benchMap"),
    "java": (EXECUTOR_TYPE_JAVA, "echoExecutor", "benchMap"),
}
BLOCK_PARALLEL = 3  # block strategy: run a new batch next to a running one
FULL = {"jobs": 300, "map_items": 10_000, "scale_nodes": 50, "scale_items": 100_000}
QUICK = {"jobs": 100, "map_items": 1_000, "scale_nodes": 5, "scale_items": 5_000}


def say(text: str) -> None:
    print(f"[bench-real {time.strftime('%H:%M:%S')}] {text}", flush=True)


class JavaUnavailableHere(Exception):
    pass


def java_module():
    try:
        import java_peer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise JavaUnavailableHere(f"benchmarks/java_peer.py cannot be imported ({exc})") from None
    return java_peer


def java_check(version: str) -> Optional[str]:
    """None when the Java peer can run (its jar built), else the reason."""
    try:
        peer = java_module()
        reason = peer.unavailable(version)
        if reason:
            return reason
        say(f"building (or reusing) the Java peer for {version}")
        peer.build_jar(version)
    except JavaUnavailableHere as exc:
        return str(exc)
    except Exception as exc:  # JavaUnavailable or a build failure: skip the Java rows with it
        return f"{type(exc).__name__}: {exc}"
    return None


class Node:
    """One client node process of either kind."""

    def __init__(self, kind: str, name: str, proc: subprocess.Popen, address: str, log_path: Path,
                 client: Optional[ClientProcess] = None):
        self.kind, self.name, self.proc, self.address, self.log_path = kind, name, proc, address, log_path
        self.client = client

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()
            return
        if self.proc.poll() is not None:
            return
        try:
            own_group = os.getpgid(self.proc.pid) == self.proc.pid
        except ProcessLookupError:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM) if own_group else self.proc.terminate()
        except ProcessLookupError:
            return
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL) if own_group else self.proc.kill()
            self.proc.wait(10)


class Bench:
    def __init__(self, args: argparse.Namespace, srv: harness.RealServer, workdir: Path, java_reason: Optional[str]):
        self.args = args
        self.srv = srv
        self.workdir = workdir
        self.markers = workdir / "markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.java_reason = java_reason
        self.groups: Dict[str, str] = {}  # group -> token
        self.failures: List[str] = []

    # -- set-up ----------------------------------------------------------------

    def group(self, name: str) -> str:
        if name not in self.groups:
            token = "SJ_" + os.urandom(16).hex()
            self.srv.create_group(name, token)
            self.groups[name] = token
        return name

    def online_timeout(self, kind: str, count: int) -> float:
        """--online-timeout, else 60 s (Python) or 240 s (Java: a JVM and Spring per node) + 3 s a node."""
        return self.args.online_timeout or (240.0 if kind == "java" else 60.0) + 3.0 * count

    def start_nodes(self, kind: str, count: int, group: str) -> List[Node]:
        token = self.groups[group]
        nodes = []
        for i in range(count):
            name = f"{group}-{i + 1}"
            if kind == "python":
                env = client_env(self.srv, name, self.markers, SNAIL_GROUP_NAME=group, SNAIL_TOKEN=token,
                                 SNAIL_HOST_ID=f"bench-{name}", SNAIL_LOG_LEVEL="WARNING")
                client = ClientProcess(name, env, self.workdir, program=PYTHON_PROGRAM).start()
                nodes.append(Node(kind, name, client.proc, client.address, client.log_path, client))
            else:
                port = harness.free_port()
                env = {k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")}
                env.update(self.srv.client_env(host_port=port, group=group, token=token))
                log_path = self.workdir / f"java-{name}.log"
                proc = java_module().start(self.args.java_version, env, log_path, self.args.java_opts,
                                          die_with_parent=True)
                nodes.append(Node(kind, name, proc, f"127.0.0.1:{port}", log_path))
        t0 = time.monotonic()
        try:
            self.srv.wait_online(count, group=group, timeout=self.online_timeout(kind, count))
        except harness.HarnessError as exc:
            dead = [n for n in nodes if not n.alive()]
            detail = "\n".join(f"--- {n.name} exited {n.proc.returncode}:\n{n.tail()}" for n in dead[:3])
            for node in nodes:
                node.stop()
            raise harness.HarnessError(f"{kind} nodes of {group} not online: {exc}\n{detail}") from None
        say(f"{count} {kind} node(s) of {group} online {time.monotonic() - t0:.1f}s after the last start")
        return nodes

    def meter(self, nodes: List[Node]) -> Meter:
        pg_pid = int((self.srv.pg.data / "postmaster.pid").read_text().split()[0])
        return Meter({"server": [self.srv.proc.pid], "postgres": [pg_pid], "clients": [n.pid for n in nodes]},
                     server_log=self.srv.node.workdir / "server.out")

    def job(self, kind: str, group: str, what: str, task_type: int, **kw: Any) -> int:
        executor_type, echo, bench_map = EXECUTORS[kind]
        executor = echo if what == "echo" else bench_map
        return self.srv.create_job(f"{group}-{what}-{os.urandom(3).hex()}", executor, task_type, group=group,
                                   executorType=executor_type, **kw)

    def query(self, sql: str) -> List[Dict[str, Any]]:
        return self.srv.pg.query_json(sql, db=self.srv.DB)

    # -- waiting ---------------------------------------------------------------

    def wait_final(self, batch: int, timeout: float, poll: float) -> int:
        deadline = time.monotonic() + timeout
        status = -1
        while True:
            try:
                status = int(self.srv.batch(batch)["taskBatchStatus"])
            except OSError as exc:  # a swamped server's web API times out: keep polling until the deadline
                say(f"batch {batch}: the web API did not answer ({exc!r}); polling on")
            if status in BatchStatus.FINAL or time.monotonic() > deadline:
                return status
            time.sleep(poll)

    def batch_span(self, batch: int) -> float:
        """Seconds from the batch row's creation to its last update, as the server recorded them."""
        rows = self.query(f"SELECT extract(epoch FROM update_dt - create_dt) AS s FROM sj_job_task_batch "
                          f"WHERE id = {int(batch)}")
        return round(float(rows[0]["s"]), 3) if rows else float("nan")

    # -- measurements -------------------------------------------------------------

    def warm_up(self, kind: str, group: str, nodes: List[Node]) -> Dict[str, Any]:
        """Echo broadcasts (every node answers) and a small map, until one round ends all SUCCESS
        (``--warmup-rounds`` at most), then every node listed online again. A node the server
        found too slow is dropped from its list until its next beat, and a measurement taken
        then would only show CANCELs. Returns what happened, for the JSON."""
        rounds: List[Dict[str, Any]] = []
        if self.args.no_warmup:
            return {"skipped": True}
        t0 = time.monotonic()
        echo = self.job(kind, group, "echo", TaskType.BROADCAST, args_str="warm-up", executor_timeout=60)
        small_map = self.job(kind, group, "map", TaskType.MAP, args_str=str(self.args.warmup_items),
                             parallel_num=self.args.parallel, executor_timeout=300)
        for attempt in range(self.args.warmup_rounds):
            statuses = [self.wait_final(self.srv.trigger_job(echo), 60, 0.1) for _ in range(3)]
            statuses.append(self.wait_final(self.srv.trigger_job(small_map), 300, 0.5))
            names = [BatchStatus.NAMES.get(st, str(st)) for st in statuses]
            rounds.append({"statuses": names, "at_s": round(time.monotonic() - t0, 1)})
            if set(statuses) == {BatchStatus.SUCCESS}:
                break
            say(f"warm-up round {attempt + 1} of {group}: {names}; waiting for the nodes to be listed again")
            time.sleep(5)
            self.srv.wait_online(len(nodes), group=group, timeout=self.online_timeout(kind, len(nodes)))
        ok = bool(rounds) and rounds[-1]["statuses"] == ["SUCCESS"] * 4
        self.srv.wait_online(len(nodes), group=group, timeout=self.online_timeout(kind, len(nodes)))
        say(f"warm-up of {group} {time.monotonic() - t0:.1f}s ({len(rounds)} round(s), "
            f"{'all SUCCESS' if ok else 'NOT all SUCCESS: ' + str(rounds[-1]['statuses'])})")
        return {"ok": ok, "seconds": round(time.monotonic() - t0, 1), "rounds": rounds}

    say = staticmethod(say)

    def rate(self, kind: str, group: str, nodes: List[Node], count: Optional[int] = None) -> Dict[str, Any]:
        n = count or self.args.jobs
        job = self.job(kind, group, "echo", TaskType.CLUSTER, args_str="bench", block_strategy=BLOCK_PARALLEL,
                       executor_timeout=60)
        timeout = max(120.0, n / 2.0)
        errors: List[str] = []

        def trigger(_: int) -> None:
            try:
                self.srv.api("POST", "/job/trigger", {"jobId": job})
            except Exception as exc:  # counted and reported, the run goes on
                errors.append(str(exc)[:300])

        sql = (f"SELECT task_batch_status AS s, count(*) AS n FROM sj_job_task_batch WHERE job_id = {job} "
               "GROUP BY 1")
        reasons_sql = (f"SELECT task_batch_status AS s, operation_reason AS r, count(*) AS n FROM sj_job_task_batch "
                       f"WHERE job_id = {job} AND task_batch_status <> {BatchStatus.SUCCESS} GROUP BY 1, 2")
        counts: Dict[int, int] = {}
        with self.meter(nodes) as meter:
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(self.args.trigger_threads) as pool:
                list(pool.map(trigger, range(n)))
            triggered = time.monotonic() - t0
            deadline = t0 + timeout
            while True:
                counts = {int(r["s"]): int(r["n"]) for r in self.query(sql)}
                final = sum(v for k, v in counts.items() if k in BatchStatus.FINAL)
                if final >= n - len(errors) or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            wall = time.monotonic() - t0
        span = self.query(f"SELECT extract(epoch FROM max(update_dt) - min(create_dt)) AS s FROM sj_job_task_batch "
                          f"WHERE job_id = {job}")
        server_span = float(span[0]["s"] or "nan") if span else float("nan")
        success = counts.get(BatchStatus.SUCCESS, 0)
        ok = success == n and not errors
        result = {
            "what": "cluster jobs", "kind": kind, "nodes": len(nodes), "count": n, "ok": ok,
            "wall_s": round(wall, 2), "per_s": round(success / wall, 1), "trigger_s": round(triggered, 2),
            "server_span_s": round(server_span, 2),
            "per_s_server_span": round(success / server_span, 1) if server_span > 0 else None,
            "statuses": {BatchStatus.NAMES.get(k, str(k)): v for k, v in sorted(counts.items())},
            "not_success_reasons": {f"{BatchStatus.NAMES.get(int(r['s']), r['s'])} reason {r['r']}": int(r["n"])
                                    for r in self.query(reasons_sql)},
            "trigger_errors": errors[:5], "trigger_error_count": len(errors),
            "check": "all SUCCESS" if ok else f"{success}/{n} SUCCESS, {len(errors)} trigger errors",
            **meter.figures()}
        if not ok:
            self.failures.append(f"{kind} x{len(nodes)} cluster jobs: {result['check']}")
        return result

    def map_run(self, kind: str, group: str, nodes: List[Node], items: int, flat: bool = False) -> Dict[str, Any]:
        """``flat``: the root task maps every item itself (Python only), instead of through CHUNKs."""
        timeout = max(600.0, items / self.args.min_rate)
        job = self.job(kind, group, "map", TaskType.MAP, args_str=f"flat:{items}" if flat else str(items),
                       parallel_num=self.args.parallel, executor_timeout=int(timeout) + 60)
        with self.meter(nodes) as meter:
            t0 = time.monotonic()
            batch = self.srv.trigger_job(job)
            status = self.wait_final(batch, timeout, 1.0 if items >= 5000 else 0.25)
            wall = time.monotonic() - t0
        result: Dict[str, Any] = {
            "what": f"{'flat ' if flat else ''}map of {items:,} items",
            "kind": kind, "nodes": len(nodes), "count": items, "batch": batch,
            "status": BatchStatus.NAMES.get(status, status), "wall_s": round(wall, 2),
            "server_span_s": self.batch_span(batch)}
        result.update(self.check_map(kind, batch, items, nodes))
        result["per_s"] = round(result["items_done"] / wall, 1)  # ITEM rows SUCCESS per second
        result["ok"] = status == BatchStatus.SUCCESS and not result["problems"]
        once = "every item once (markers)" if kind == "python" else "one ITEM row per item"
        result["check"] = f"{once}, all SUCCESS" if result["ok"] else \
            "; ".join([f"batch {result['status']}", *result["problems"]])
        result.update(meter.figures())
        if not result["ok"]:
            self.failures.append(f"{kind} x{len(nodes)} {result['what']}: {result['check']}")
        return result

    def check_map(self, kind: str, batch: int, items: int, nodes: List[Node]) -> Dict[str, Any]:
        """Task rows: status counts per task name; ITEM rows: one per number, all SUCCESS.
        Python nodes: the marker lines (one per run of an item)."""
        problems = []
        rows = self.query(f"SELECT task_name AS name, task_status AS s, count(*) AS n FROM sj_job_task "
                          f"WHERE task_batch_id = {batch} GROUP BY 1, 2 ORDER BY 1, 2")
        by_name: Dict[str, Dict[str, int]] = collections.defaultdict(dict)
        for r in rows:
            by_name[r["name"]][BatchStatus.NAMES.get(int(r["s"]), str(r["s"]))] = int(r["n"])
        not_success = {name: c for name, c in by_name.items() if set(c) != {"SUCCESS"}}
        if not_success:
            problems.append(f"tasks not SUCCESS: {dict(not_success)}")
        item_rows = self.query(
            f"SELECT count(*) AS n, count(DISTINCT trim(both '\"' FROM result_message)) AS d, "
            f"count(*) FILTER (WHERE trim(both '\"' FROM result_message) ~ '^[0-9]+$' AND "
            f"trim(both '\"' FROM result_message)::bigint BETWEEN 0 AND {items - 1}) AS in_range "
            f"FROM sj_job_task WHERE task_batch_id = {batch} AND task_name = 'ITEM'")[0]
        n, d, in_range = int(item_rows["n"]), int(item_rows["d"]), int(item_rows["in_range"])
        done = by_name.get("ITEM", {}).get("SUCCESS", 0)
        if not (n == d == in_range == items):
            problems.append(f"ITEM rows {n}, distinct results {d}, in range {in_range} (want {items})")
        spread = self.query(f"SELECT client_info AS c, count(*) AS n FROM sj_job_task WHERE task_batch_id = {batch} "
                            f"AND task_name = 'ITEM' GROUP BY 1")
        per_node = sorted(int(r["n"]) for r in spread)
        out: Dict[str, Any] = {"tasks": dict(by_name), "item_rows": n, "items_done": done,
                               "items_per_node_min_max": [per_node[0], per_node[-1]] if per_node else [],
                               "nodes_used": len(per_node)}
        if kind == "python":
            path = self.markers / "bench-items"
            lines = [ln.split() for ln in path.read_text().splitlines()] if path.is_file() else []
            runs = collections.Counter(int(parts[1]) for parts in lines if parts[0] == str(batch))
            twice = sorted(i for i, c in runs.items() if c > 1)
            missing = items - len(set(runs) & set(range(items)))
            out["marker_runs"] = sum(runs.values())
            if twice or missing:
                problems.append(f"markers: {len(twice)} items ran more than once (e.g. {twice[:5]}), "
                                f"{missing} never ran")
        out["problems"] = problems
        return out

    def broadcast(self, group: str, nodes: List[Node]) -> Dict[str, Any]:
        job = self.job("python", group, "echo", TaskType.BROADCAST, args_str="all", executor_timeout=120)
        rounds = []
        for _ in range(self.args.broadcasts):
            with self.meter(nodes) as meter:
                t0 = time.monotonic()
                batch = self.srv.trigger_job(job)
                status = self.wait_final(batch, 300, 0.1)
                wall = time.monotonic() - t0
            rows = self.query(f"SELECT task_status AS s, client_info AS c FROM sj_job_task "
                              f"WHERE task_batch_id = {batch}")
            ok_nodes = {r["c"].rsplit("@", 1)[-1] for r in rows if int(r["s"]) == BatchStatus.SUCCESS}
            missing = sorted({n.address for n in nodes} - ok_nodes)
            rounds.append({"batch": batch, "status": BatchStatus.NAMES.get(status, status), "wall_s": round(wall, 2),
                           "server_span_s": self.batch_span(batch), "tasks": len(rows),
                           "success_nodes": len(ok_nodes), "missing": missing[:10], **meter.figures()})
        walls = [r["wall_s"] for r in rounds]
        ok = all(r["status"] == "SUCCESS" and not r["missing"] and r["success_nodes"] == len(nodes) for r in rounds)
        best = min(rounds, key=lambda r: r["wall_s"])
        result = {"what": "broadcast", "kind": "python", "nodes": len(nodes), "count": len(nodes), "ok": ok,
                  "wall_s": statistics.median(walls), "wall_s_all": walls,
                  "per_s": round(len(nodes) / statistics.median(walls), 1),
                  "server_span_s": statistics.median(r["server_span_s"] for r in rounds), "rounds": rounds,
                  "check": f"SUCCESS on all {len(nodes)} nodes" if ok else
                  "; ".join(f"batch {r['batch']} {r['status']}, {r['success_nodes']} nodes" for r in rounds),
                  "server_errors": dict(sum((collections.Counter(r["server_errors"]) for r in rounds),
                                            collections.Counter())),
                  **{k: best[k] for k in ("server", "postgres", "clients", "machine", "bottleneck")}}
        if not ok:
            self.failures.append(f"broadcast to {len(nodes)}: {result['check']}")
        return result


# ---------------------------------------------------------------------------
# the run


class Report:
    def __init__(self, path: Path, meta: Dict[str, Any]):
        self.path = path
        self.data: Dict[str, Any] = {"meta": meta, "results": [], "skipped": [], "scenario_seconds": {}}

    def add(self, scenario: str, row: Dict[str, Any]) -> None:
        row = {"scenario": scenario, **row}
        self.data["results"].append(row)
        self.save()
        say(f"{scenario} {row['kind']} x{row['nodes']} {row['what']}: {row['wall_s']}s "
            f"({row['per_s']}/s), {row['check']}; {row['bottleneck']}")

    def skip(self, scenario: str, kind: str, reason: str) -> None:
        self.data["skipped"].append({"scenario": scenario, "kind": kind, "reason": reason})
        self.save()
        say(f"{scenario} {kind}: skipped ({reason})")

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        tmp.replace(self.path)

    def table(self) -> str:
        head = ["scen", "client", "nodes", "work", "wall s", "per s", "server CPU s (cores)", "pg CPU s",
                "clients CPU s (cores)", "server RSS MB", "clients RSS MB", "machine cores", "check"]
        lines = [head]
        for r in self.data["results"]:
            lines.append([
                r["scenario"], r["kind"], str(r["nodes"]), r["what"], f"{r['wall_s']:.1f}", f"{r['per_s']:.1f}",
                f"{r['server']['cpu_s']:.1f} ({r['server']['cores']:.2f})", f"{r['postgres']['cpu_s']:.1f}",
                f"{r['clients']['cpu_s']:.1f} ({r['clients']['cores']:.2f})",
                f"{r['server']['peak_rss_mb']:.0f}", f"{r['clients']['peak_rss_mb']:.0f}",
                f"{r['machine']['busy_cores']:.2f}/{r['machine']['ncpu']}", "ok" if r["ok"] else "FAILED"])
        widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
        text = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        for r in self.data["results"]:
            text.append(f"- {r['scenario']} {r['kind']} x{r['nodes']} {r['what']}: {r['bottleneck']}")
            if not r["ok"]:
                text.append(f"  FAILED: {r['check']}")
            if r.get("server_errors"):
                text.append(f"  server log: {r['server_errors']}")
        for s in self.data["skipped"]:
            text.append(f"- {s['scenario']} {s['kind']}: skipped: {s['reason']}")
        for name, seconds in self.data["scenario_seconds"].items():
            text.append(f"- scenario {name} took {seconds:.0f}s in all (node start, warm-up, measurements)")
        return "\n".join(text)


@contextlib.contextmanager
def timed(report: Report, name: str) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        report.data["scenario_seconds"][name] = round(time.monotonic() - t0, 1)
        report.save()


def head_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_scale_scenario(bench: Bench, report: Report) -> None:
    count = bench.args.scale_nodes
    group = bench.group("bench_scale")
    t0 = time.monotonic()
    nodes = bench.start_nodes("python", count, group)
    report.data["scale_nodes_online_s"] = round(time.monotonic() - t0, 1)
    try:
        warm = bench.warm_up("python", group, nodes)
        report.add("3a", {**bench.broadcast(group, nodes), "warm_up": warm})
        report.add("3b", bench.map_run("python", group, nodes, bench.args.scale_items,
                                       flat=bench.args.scale_shape == "flat"))
    finally:
        for node in nodes:
            node.stop()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", default="2.0.2", help="server version (default 2.0.2)")
    p.add_argument("--java-version", default=None, help="Java client version (default: the server's)")
    p.add_argument("--quick", action="store_true", help="small run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--jobs", type=int, help=f"cluster batches triggered per node set (default {FULL['jobs']})")
    p.add_argument("--map-items", type=int, help=f"items of the map in scenarios 1 and 2 (default {FULL['map_items']})")
    p.add_argument("--scale-nodes", type=int, help=f"Python nodes of scenario 3 (default {FULL['scale_nodes']})")
    p.add_argument("--scale-items", type=int, help=f"items of the map of scenario 3 (default {FULL['scale_items']})")
    p.add_argument("--scale-shape", choices=("chunked", "flat"), default="chunked",
                   help="scenario 3's map: ROOT_MAP -> CHUNKs -> ITEMs as in scenarios 1-2 (default), or flat: "
                        "the root maps every item itself, so the server creates the sub-tasks one report "
                        "at a time")
    p.add_argument("--scenarios", default="1,2,3", help="which scenarios, e.g. 1,2 (default all)")
    p.add_argument("--kinds", default="python,java", help="client kinds of scenarios 1-2 (default python,java)")
    p.add_argument("--parallel", type=int, default=16, help="parallelNum of the map jobs (default 16)")
    p.add_argument("--broadcasts", type=int, default=3, help="broadcast rounds in scenario 3a (default 3)")
    p.add_argument("--trigger-threads", type=int, default=4, help="concurrent trigger calls (default 4)")
    p.add_argument("--warmup-items", type=int, default=200, help="items of the warm-up map (default 200)")
    p.add_argument("--warmup-rounds", type=int, default=3,
                   help="warm-up rounds at most, until one ends all SUCCESS (default 3)")
    p.add_argument("--no-warmup", action="store_true", help="no node or server warm-up")
    p.add_argument("--reps", type=int, default=3,
                   help="repetitions of scenarios 1-2, the client order alternating (default 3)")
    p.add_argument("--warmup-jobs", type=int, default=None,
                   help="cluster jobs per node set in each server warm-up round (default: --jobs)")
    p.add_argument("--steady-rounds", type=int, default=8,
                   help="server warm-up rounds at most (default 8)")
    p.add_argument("--steady-tolerance", type=float, default=0.10,
                   help="the server is warm when two consecutive rounds of each client agree within this "
                        "(default 0.10)")
    p.add_argument("--min-rate", type=float, default=10.0,
                   help="map items/s below which a map is given up (timeout = items / this; default 10)")
    p.add_argument("--online-timeout", type=float, default=None,
                   help="seconds for the nodes to come online (default 60, Java 240, + 3 per node)")
    p.add_argument("--server-jvm", default="-Xms256m -Xmx768m", help="server JVM options (default the harness's)")
    p.add_argument("--java-opts", default="", help="JVM options of the Java client nodes")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/real-<time>.json)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (client logs, markers)")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.java_version = args.java_version or args.version
    args.warmup_jobs = args.warmup_jobs or args.jobs
    args.java_opts = tuple(args.java_opts.split())
    args.scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = set(args.kinds) - set(EXECUTORS)
    if bad:
        p.error(f"unknown kinds {sorted(bad)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or BENCH_DIR / "results" / f"real-{stamp}.json"
    sizes = {k: getattr(args, k) for k in FULL}
    meta = {"time": stamp, "server_version": args.version, "java_version": args.java_version, "commit": head_commit(),
            "python": platform.python_version(), "machine": platform.machine(), "ncpu": NCPU,
            "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items() if k != "out"},
            **sizes}
    report = Report(out, meta)
    java_reason = None
    if "java" in args.kinds and args.scenarios & {"1", "2"}:
        java_reason = java_check(args.java_version)
        if java_reason:
            say(f"Java rows will be skipped: {java_reason}")
    meta["java_unavailable"] = java_reason
    workdir = Path(tempfile.mkdtemp(prefix="bench-real-"))
    say(f"scratch dir {workdir}; results to {out}")
    failed = True
    t_all = time.monotonic()
    try:
        with harness.RealServer(args.version, group="bench_default", jvm_opts=args.server_jvm.split()) as srv:
            meta["server_start_s"] = srv.timings.get("total_s")
            bench = Bench(args, srv, workdir, java_reason)
            try:
                for scenario, count in (("1", 1), ("2", 3)):
                    if scenario in args.scenarios:
                        with timed(report, scenario):
                            run_pairs(bench, report, scenario, count, args.kinds)
                if "3" in args.scenarios:
                    with timed(report, "3"):
                        run_scale_scenario(bench, report)
            except BaseException:
                srv.mark_failed()
                raise
            if bench.failures:
                srv.mark_failed()
            failed = bool(bench.failures)
            report.data["failures"] = bench.failures
    finally:
        report.data["total_s"] = round(time.monotonic() - t_all, 1)
        report.save()
        print()
        print(report.table())
        if report.data.get("summary"):
            print("\nmedians (ranges) over the repetitions:")
            print(summary_table(report.data["summary"]))
        for scenario, warm in report.data.get("server_warm_up", {}).items():
            rates = ", ".join(f"{r['kind']} {r['per_s']}" for r in warm["rounds"])
            print(f"server warm-up of scenario {scenario}: {'steady' if warm['steady'] else 'NOT steady'} "
                  f"after {len(warm['rounds'])} runs ({rates} /s)")
        print(f"\nresults: {out} (total {report.data['total_s']:.0f}s)")
        if failed or args.keep:
            print(f"client logs and markers kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
