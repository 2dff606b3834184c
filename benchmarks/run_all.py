"""Run every benchmark: this client, snail-job-python 0.1.3, the gRPC
floor and SnailJob's own Java (1.10.0 and 2.0.2) and Go clients, side by side.

    .venv/bin/python benchmarks/run_all.py            # full run, about 10 minutes
    .venv/bin/python benchmarks/run_all.py --quick    # smaller counts, about 4 minutes
    .venv/bin/python benchmarks/run_all.py --only logs   # only the remote-logging benchmark
    .venv/bin/python benchmarks/run_all.py --quick --kinds java110,ours   # only these clients

It creates ``benchmarks/.venv013`` (``snail-job-python==0.1.3`` from PyPI)
and ``benchmarks/.venv-ours`` (this client's runtime dependencies at the
versions of the interpreter running this script; this client itself runs
from the working tree) on first use (and ``benchmarks/.venv-h2``, protobuf
and ``hpack``, when the floor without grpcio is measured), then starts one load generator process (``loadgen.py``) per
measurement; each load generator starts the client process it measures.
The Java client is built with Maven by ``java_peer.py`` (cached in
``benchmarks/.java-build/``); a Java version that cannot be built or run
here is skipped, and the reason is printed and kept in the JSON. So is
SnailJob's Go client, built with ``go`` by ``go_peer.py`` (cached in
``benchmarks/.go-build/``) from its pinned source and our local fix.
It prints a table and writes the raw figures and the summary to
``benchmarks/results/<timestamp>.json`` (and ``results/latest.json``).

Everything stays on 127.0.0.1, and every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import go_peer  # noqa: E402
import java_peer  # noqa: E402
from common import BENCH_DIR, REPO_DIR, fmt_spread, median_spread  # noqa: E402

VENV_013 = BENCH_DIR / ".venv013"
VENV_OURS = BENCH_DIR / ".venv-ours"
VENV_H2 = BENCH_DIR / ".venv-h2"
HPACK_PIN = "hpack==4.2.0"
RUNTIME_DEPS = ("grpcio", "protobuf", "pydantic", "python-dotenv")
RESULTS = BENCH_DIR / "results"
KINDS = ("ours", "ours_grpc", "v013", "floor", "floor_aio", "floor_h2", "java110", "java202", "go")
LABELS = {"ours": "this client", "ours_grpc": "this client on grpcio", "v013": "0.1.3",
          "floor": "floor", "floor_aio": "floor (aio)",
          "floor_h2": "floor without grpcio",
          "java110": "Java 1.10.0", "java202": "Java 2.0.2", "go": f"Go client ({go_peer.VERSION})"}
JAVA_KINDS = {"java110": "1.10.0", "java202": "2.0.2"}
ON_REQUEST = ("ours_grpc", "floor_aio", "floor_h2")  # measured only when named in --kinds
LEAK_TYPES = ["CLUSTER", "BROADCAST", "SHARDING", "MAP_ROOT", "MR_REDUCE"]
GO_NOT_RUN = {"logs": "the logging phase measures the Python clients' logging handlers (SnailLog with and "
                      "without the console handler); the Go client logs through logrus, with no such modes"}
"""Phases the Go column leaves out, and why (kept in the JSON under ``not_run``)."""


def plan(quick: bool) -> Dict[str, Any]:
    """Counts and time caps of every phase."""
    if quick:
        return {
            "throughput_processes": 1,
            "throughput": {"warmup": 100, "reps": 2, "ks": [1, 16, 64], "tasks": {"1": 150, "16": 600, "64": 800},
                           "max_seconds": 1.2, "paced_rate": 150, "paced_seconds": 1.5},
            "java_warmup": {"warmup": 2000, "warmup_seconds": 20},
            "leak": {"warmup": 100, "k": 32, "batches": 300, "rounds": 2, "types": LEAK_TYPES, "max_seconds": 30,
                     "thread_guard": 3000, "nostop_batches": 150, "settle_min": 1.3, "settle_max": 4},
            "logs": {"reps": 2, "records": 2000, "timeout": 30, "drain_timeout": 1.5},
            "map": {"reps": 2, "children": 1000, "k": 64, "timeout": 60},
        }
    return {
        "throughput_processes": 3,
        "throughput": {"warmup": 300, "reps": 1, "ks": [1, 16, 64], "tasks": {"1": 500, "16": 3000, "64": 4000},
                       "max_seconds": 2.5, "paced_rate": 250, "paced_seconds": 2.0},
        # the JVM compiles hot code only after thousands of calls: a longer warm-up for the Java client
        "java_warmup": {"warmup": 5000, "warmup_seconds": 45},
        "leak": {"warmup": 500, "k": 32, "batches": 10000, "rounds": 2, "types": LEAK_TYPES, "max_seconds": 120,
                 "thread_guard": 3000, "nostop_batches": 1000, "settle_min": 2.0, "settle_max": 8},
        "logs": {"reps": 3, "records": 10000, "timeout": 60, "drain_timeout": 11},
        "map": {"reps": 3, "children": 10000, "k": 64, "timeout": 120},
    }


# --- environment ----------------------------------------------------------------


def ensure_venv013() -> Path:
    """The interpreter of a virtual environment with snail-job-python 0.1.3."""
    python = VENV_013 / "bin" / "python"
    if python.exists():
        code = "import importlib.metadata as m; print(m.version('snail-job-python'))"
        # -I: not the working directory's metadata (the repository root has this client's egg-info)
        check = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == "0.1.3":
            return python
    print(f"creating {VENV_013} with snail-job-python==0.1.3 ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(str(VENV_013))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "snail-job-python==0.1.3"], check=True)
    return python


def ensure_venv_ours() -> Path:
    """The interpreter of a clean virtual environment with this client's
    runtime dependencies, at the versions the running interpreter has.

    This client runs from the working tree (``PYTHONPATH``); a clean
    environment keeps the development environment's editable-install hooks
    (about 2 MB of RSS at interpreter start) out of its figures, so both
    clients start from the same kind of interpreter.
    """
    from importlib import metadata

    return _pinned_venv(VENV_OURS, sorted(f"{d}=={metadata.version(d)}" for d in RUNTIME_DEPS))


def ensure_venv_h2() -> Path:
    """The interpreter of the floor without grpcio: protobuf at the version
    this client uses, and ``hpack`` to decode the peer's headers."""
    from importlib import metadata

    return _pinned_venv(VENV_H2, [f"protobuf=={metadata.version('protobuf')}", HPACK_PIN])


def _pinned_venv(where: Path, pins: List[str]) -> Path:
    """A virtual environment at ``where`` holding exactly ``pins``, made once
    and again only when the pins change."""
    python = where / "bin" / "python"
    marker = where / "bench-requirements.txt"
    if python.exists() and marker.exists() and marker.read_text().split() == pins:
        return python
    print(f"creating {where} with {' '.join(pins)} ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(str(where))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins], check=True)
    marker.write_text("\n".join(pins) + "\n")
    return python


def _versions(python: str) -> Dict[str, str]:
    code = ("import json, platform, importlib.metadata as m\n"
            "out = {'python': platform.python_version()}\n"
            "for d in ('grpcio', 'protobuf', 'pydantic', 'snail-job-python'):\n"
            "    try: out[d] = m.version(d)\n"
            "    except Exception: out[d] = 'not installed'\n"
            "print(json.dumps(out))")
    if python.startswith(str(VENV_OURS)):  # this client runs from the working tree
        code += "\nimport snailjob; print(json.dumps({'snailjob (working tree)': snailjob.__version__}))"
        done = subprocess.run([python, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO_DIR)), cwd=str(BENCH_DIR))
    else:
        done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True)
    out: Dict[str, str] = {}
    try:
        for line in done.stdout.splitlines():
            out.update(json.loads(line))
    except ValueError:
        out["error"] = done.stderr[-300:]
    return out


def machine_info(python_ours: str, python_013: str) -> Dict[str, Any]:
    """Cores, CPU model, load and the versions each side runs with."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "loadavg_start": os.getloadavg(), "this_client": _versions(python_ours),
            "v013": _versions(python_013)}


# --- running ----------------------------------------------------------------------


def run_loadgen(kind: str, python: str, phases: str, cfg: Dict[str, Any], out: Path,
                log_level: str = "WARNING", log_mode: str = "default",
                pythonpath: str = str(REPO_DIR)) -> Dict[str, Any]:
    """One load generator process (which starts one client process)."""
    env = dict(os.environ)
    env["GRPC_VERBOSITY"] = "ERROR"
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, str(BENCH_DIR / "loadgen.py"), "--kind", kind, "--python", python, "--phases", phases,
           "--config", json.dumps(cfg), "--log-level", log_level, "--log-mode", log_mode, "--out", str(out),
           "--pythonpath", pythonpath, "--workdir", str(out.with_suffix(""))]
    started = time.perf_counter()
    print(f"  {LABELS[kind]:<12} {phases:<11} {log_mode if phases == 'logs' else '':<8}", end="", flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    try:
        result = dict(json.loads(out.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        result = {"failure": f"no result (exit {done.returncode}): {done.stderr[-500:]}"}
    took = time.perf_counter() - started
    print(f" {took:5.1f}s" + (f"  FAILED: {result['failure']}" if "failure" in result else ""), flush=True)
    return result


# --- summarising --------------------------------------------------------------------


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def summarize(raw: Dict[str, List[Dict[str, Any]]], cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Medians (with min and max) over repetitions, per client kind."""
    out: Dict[str, Any] = {}
    for kind in KINDS:
        runs = raw.get(kind, [])
        s: Dict[str, Any] = {}
        idle = [r["idle"] for r in runs if r.get("idle")]
        s["idle_rss_mb"] = median_spread(i.get("rss_kb", math.nan) / 1024 for i in idle)
        s["idle_threads"] = median_spread(i.get("threads") for i in idle)
        # every client process started (any phase) gives one start-up reading
        ups = [r["startup"] for r in runs if r.get("startup")]
        s["startup"] = {
            "first_beat_s": median_spread(u.get("first_beat_s") for u in ups),
            "ready_s": median_spread(u.get("ready_s") for u in ups),
            "first_dispatch_reply_ms": median_spread(u.get("first_dispatch_reply_ms") for u in ups),
            "processes": len(ups),
        }
        tp_runs = [r for run in runs if "throughput" in run for r in run["throughput"]["runs"]]
        tp: Dict[str, Any] = {}
        for k in cfg["throughput"]["ks"]:
            at_k = [r for r in tp_runs if r["k"] == k]
            tp[str(k)] = {
                "tasks_per_s": median_spread(r["tasks_per_s"] for r in at_k),
                "report_p50_ms": median_spread(r["report"]["p50_ms"] for r in at_k),
                "report_p99_ms": median_spread(r["report"]["p99_ms"] for r in at_k),
                "reply_p50_ms": median_spread(r["reply"]["p50_ms"] for r in at_k),
                "reply_p99_ms": median_spread(r["reply"]["p99_ms"] for r in at_k),
                "client_cpu_us": median_spread(r["cpu"]["client_cpu_us_per_task"] for r in at_k),
                "client_cores": median_spread(r["cpu"]["client_cores"] for r in at_k),
                "other_cores": median_spread(r["cpu"]["other_processes_cores"] for r in at_k),
                "errors": sum(sum(r["errors"].values()) for r in at_k),
                "runs": len(at_k),
            }
        s["throughput"] = tp
        paced = [p for run in runs if "throughput" in run for p in run["throughput"].get("paced", [])]
        s["paced"] = {
            "rate": cfg["throughput"]["paced_rate"],
            "reply_p50_ms": median_spread(p["reply"]["p50_ms"] for p in paced),
            "reply_p99_ms": median_spread(p["reply"]["p99_ms"] for p in paced),
            "report_p50_ms": median_spread(p["report"]["p50_ms"] for p in paced),
            "report_p99_ms": median_spread(p["report"]["p99_ms"] for p in paced),
            "client_cpu_us": median_spread(p["cpu"]["client_cpu_us_per_task"] for p in paced),
            "errors": sum(sum(p["errors"].values()) + p["skipped_at_cap"] for p in paced),
        }
        leak_run = next((r for r in runs if "leak" in r), None)
        if leak_run is not None:
            leak = leak_run["leak"]
            base = leak["baseline"]
            types = {}
            for name, r in leak["types"].items():
                st = r.get("status", {})
                first = (r.get("rounds") or [{"status": st}])[0]["status"]
                types[name] = {"batches": r["batches"], "tasks": r["tasks"], "errors": sum(r["errors"].values()),
                               "rss_mb": st.get("rss_kb", math.nan) / 1024, "threads": st.get("threads"),
                               "rss_mb_first_round": first.get("rss_kb", math.nan) / 1024,
                               "growth_second_round_mb": (st.get("rss_kb", math.nan)
                                                          - first.get("rss_kb", math.nan)) / 1024,
                               "peak_threads": r.get("peak", {}).get("threads"),
                               "batches_per_s": r["batches"] / r["seconds"] if r["seconds"] else math.nan}
            last = list(leak["types"].values())[-1].get("status", {}) if leak["types"] else {}
            s["leak"] = {
                "fresh": leak["fresh"], "baseline": base, "types": types,
                "growth_mb": (last.get("rss_kb", math.nan) - base.get("rss_kb", math.nan)) / 1024,
                "growth_from_fresh_mb": (last.get("rss_kb", math.nan) - leak["fresh"].get("rss_kb", math.nan)) / 1024,
                "max_threads": max((t["threads"] or 0) for t in types.values()) if types else None,
            }
            nostop = leak.get("broadcast_without_stop")
            if nostop:
                s["leak"]["nostop"] = {"batches": nostop["batches"], "threads": nostop["status"].get("threads"),
                                       "peak_threads": nostop.get("peak", {}).get("threads"),
                                       "rss_mb": nostop["status"].get("rss_kb", math.nan) / 1024,
                                       "aborted_by_guard": nostop["aborted_by_guard"]}
        logs: Dict[str, Any] = {}
        for run in runs:
            if "logs" not in run:
                continue
            reps = run["logs"]["runs"]
            callers = [r["caller"] for r in reps if r.get("caller")]
            logs[run["log_mode"]] = {
                "mean_us": median_spread(c["mean_us"] for c in callers),
                "p50_us": median_spread(c["p50_us"] for c in callers),
                "p99_us": median_spread(c["p99_us"] for c in callers),
                "max_us": median_spread(c["max_us"] for c in callers),
                "over_1ms": median_spread(c["over_1ms"] for c in callers),
                "records_per_s": median_spread(r.get("records_per_s") for r in reps),
                "during_job_per_s": median_spread(r["received_when_job_reported"] / r["job_s"] for r in reps
                                                  if r.get("job_s")),
                "lag_s": median_spread(r.get("lag_after_job_s") for r in reps),
                "other_cores": median_spread(r.get("other_processes_cores") for r in reps),
                "complete": sum(1 for r in reps if r.get("delivered_s") is not None), "reps": len(reps),
            }
        s["logs"] = logs
        map_run = next((r for r in runs if "map" in r), None)
        if map_run is not None:
            reps = map_run["map"]["runs"]
            s["map"] = {
                "emit_s": median_spread(r.get("root_reported_s") for r in reps),
                "all_s": median_spread(r.get("all_reported_s") for r in reps),
                "complete": sum(1 for r in reps if r.get("all_reported_s") is not None), "reps": len(reps),
                "map_reports": median_spread(r["map_reports"] for r in reps),
                "errors": [r["root_error"] for r in reps if r.get("root_error")],
            }
        out[kind] = s
    for kind in KINDS:  # a column only for the clients measured
        if not raw.get(kind):
            out.pop(kind, None)
    return out


def verdicts(s: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each current target (issue 29) with the measured value and met /
    missed; ``None`` where this run did not measure it."""
    ours, floor, go = s.get("ours", {}), s.get("floor", {}), s.get("go", {})

    def med(d: Any) -> float:
        """The median of a ``median_spread`` dict, NaN when missing."""
        return float(d["median"]) if isinstance(d, dict) and d.get("n") else math.nan

    def at(d: Dict[str, Any], k: str, what: str) -> float:
        return med(_get(d, "throughput", k, what))

    rows: List[Dict[str, Any]] = []
    for k in ("1", "16", "64"):
        tp, tp_floor, tp_go = at(ours, k, "tasks_per_s"), at(floor, k, "tasks_per_s"), at(go, k, "tasks_per_s")
        rows.append({"target": f"tasks/s K={k} >= 0.95x the floor's",
                     "value": f"{tp / tp_floor:.2f}x ({tp:.0f} vs {tp_floor:.0f})", "met": tp >= 0.95 * tp_floor})
        rows.append({"target": f"tasks/s K={k} >= the Go client's",
                     "value": f"{tp / tp_go:.2f}x ({tp:.0f} vs {tp_go:.0f})", "met": tp >= tp_go})
    reply, reply_floor = at(ours, "64", "reply_p99_ms"), at(floor, "64", "reply_p99_ms")
    rows.append({"target": "dispatch reply p99 K=64 <= 1.3x the floor's",
                 "value": f"{reply / reply_floor:.2f}x ({reply:.1f} vs {reply_floor:.1f} ms)",
                 "met": reply <= 1.3 * reply_floor})
    cpu, cpu_floor = at(ours, "64", "client_cpu_us"), at(floor, "64", "client_cpu_us")
    rows.append({"target": "client CPU per task K=64 <= 1.25x the floor's",
                 "value": f"{cpu / cpu_floor:.2f}x ({cpu:.0f} vs {cpu_floor:.0f} us)", "met": cpu <= 1.25 * cpu_floor})
    types = ours.get("leak", {}).get("types", {})
    peak = max((t["rss_mb"] for t in types.values()), default=math.nan)
    growth = max((t.get("growth_second_round_mb", math.nan) for t in types.values()), default=math.nan)
    rows.append({"target": "RSS after the batches of every type <= 64 MB", "value": f"max {peak:.1f} MB",
                 "met": peak <= 64.0})
    rows.append({"target": "no RSS growth across the second round of batches (<= 1 MB)",
                 "value": f"max {growth:+.1f} MB", "met": growth <= 1.0})
    for r in rows:
        if "nan" in str(r["value"]):
            r["met"] = None  # not measured in this run
    return rows


def _nostop_cell(d: Dict[str, Any]) -> Optional[str]:
    n = d.get("leak", {}).get("nostop")
    if n is None:
        return None
    guard = " (guard hit)" if n["aborted_by_guard"] else ""
    return f"{n['threads']} (peak {n['peak_threads']}), {n['rss_mb']:.1f} MB{guard}"


def _leak_cell(d: Dict[str, Any], kind: str, wanted: int) -> Optional[str]:
    t = d.get("leak", {}).get("types", {}).get(kind)
    if t is None:
        return None
    done = "" if t["batches"] >= wanted else f" (only {t['batches']} done)"
    first = t.get("rss_mb_first_round")
    rounds = f"{first:.1f} -> " if first is not None and not math.isnan(first) else ""
    return f"{rounds}{t['rss_mb']:.1f} / {t['threads']}{done}"


def render(s: Dict[str, Any], cfg: Dict[str, Any]) -> str:
    """The side-by-side table."""
    rows: List[Sequence[str]] = []

    shown = [k for k in KINDS if k in s]

    def row(name: str, key: Any, digits: int = 0, unit: str = "", kinds: Sequence[str] = KINDS) -> None:
        """Add a table row: ``key(summary)`` for each client shown."""
        cells = []
        for kind in shown:
            value = key(s[kind]) if kind in kinds else None
            if isinstance(value, dict):
                cells.append(fmt_spread(value, digits, unit))
            elif isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                cells.append(f"{value:.{digits}f}{unit}")
            elif isinstance(value, str):
                cells.append(value)
            else:
                cells.append("-")
        rows.append([name, *cells])

    row("start-up to first heartbeat s", lambda d: _get(d, "startup", "first_beat_s"), 2)
    row("start-up to dispatch port open s", lambda d: _get(d, "startup", "ready_s"), 2)
    row("first dispatch reply ms (cold)", lambda d: _get(d, "startup", "first_dispatch_reply_ms"), 1)
    for k in cfg["throughput"]["ks"]:
        row(f"tasks/s, K={k}", lambda d, k=k: _get(d, "throughput", str(k), "tasks_per_s"))
    for k in cfg["throughput"]["ks"]:
        row(f"dispatch->report p50 ms, K={k}", lambda d, k=k: _get(d, "throughput", str(k), "report_p50_ms"), 1)
        row(f"dispatch->report p99 ms, K={k}", lambda d, k=k: _get(d, "throughput", str(k), "report_p99_ms"), 1)
    row("dispatch reply p99 ms, K=64", lambda d: _get(d, "throughput", "64", "reply_p99_ms"), 1)
    row("dispatch reply p99 ms, K=1", lambda d: _get(d, "throughput", "1", "reply_p99_ms"), 1)
    rate = cfg["throughput"]["paced_rate"]
    row(f"paced {rate}/s: reply p99 ms", lambda d: _get(d, "paced", "reply_p99_ms"), 1)
    row(f"paced {rate}/s: dispatch->report p99 ms", lambda d: _get(d, "paced", "report_p99_ms"), 1)
    for k in cfg["throughput"]["ks"]:
        row(f"client CPU us/task, K={k}", lambda d, k=k: _get(d, "throughput", str(k), "client_cpu_us"))
    row("client CPU us/task, paced", lambda d: _get(d, "paced", "client_cpu_us"))
    row("other processes' cores during K=64", lambda d: _get(d, "throughput", "64", "other_cores"), 2)
    row("idle RSS MB", lambda d: d["idle_rss_mb"], 1)
    row("idle threads", lambda d: d["idle_threads"])
    row("after warm-up: RSS MB / threads",
        lambda d: (f"{d['leak']['baseline'].get('rss_kb', 0) / 1024:.1f} / {d['leak']['baseline'].get('threads')}"
                   if "leak" in d else None))
    n = cfg["leak"]["batches"]
    for t in LEAK_TYPES:
        row(f"after {n} {t} batches (then {n} more): RSS MB / threads",
            lambda d, t=t: _leak_cell(d, t, n))
    row("peak threads during those batches",
        lambda d: (str(max(t.get("peak_threads") or 0 for t in d["leak"]["types"].values()))
                   if "leak" in d and d["leak"]["types"] else None))
    row("RSS growth over warm-up MB (after the last type)",
        lambda d: d["leak"]["growth_mb"] if "leak" in d else None, 1)
    row(f"then {cfg['leak']['nostop_batches']} broadcast batches, no stop: threads, RSS",
        lambda d: _nostop_cell(d))
    both = ("ours", "ours_grpc", "v013")
    for mode, label in (("default", "default handlers"), ("remote", "remote handler only")):
        row(f"log call mean us ({label})", lambda d, m=mode: _get(d, "logs", m, "mean_us"), 1, kinds=both)
        row(f"log call p99 us ({label})", lambda d, m=mode: _get(d, "logs", m, "p99_us"), 1, kinds=both)
        row(f"log calls > 1 ms per {cfg['logs']['records']} ({label})",
            lambda d, m=mode: _get(d, "logs", m, "over_1ms"), kinds=both)
        row(f"log records/s, dispatch to last record ({label})",
            lambda d, m=mode: _get(d, "logs", m, "records_per_s"), kinds=both)
        row(f"last record delivered s after job ({label})", lambda d, m=mode: _get(d, "logs", m, "lag_s"), 2,
            kinds=both)
    c = cfg["map"]["children"]
    mappers = (*both, "go")
    row(f"map: ROOT_MAP emits {c} sub-tasks, s", lambda d: _get(d, "map", "emit_s"), 2, kinds=mappers)
    row(f"map: all {c} sub-tasks reported, s", lambda d: _get(d, "map", "all_s"), 2, kinds=mappers)
    row("map reports sent", lambda d: _get(d, "map", "map_reports"), kinds=mappers)

    header = ["figure (median (min-max))", *(LABELS[k] for k in shown)]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(str(v).ljust(w) for v, w in zip(header, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmarks; 0 when every run produced figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts (about 4 minutes)")
    parser.add_argument("--aio-floor", action="store_true",
                        help="also measure the floor on grpc.aio (throughput only; about 30 s more)")
    parser.add_argument("--pythonpath", default=str(REPO_DIR),
                        help="directory holding the snailjob/ to measure as 'this client' (default: this checkout); "
                             "point it at a patched copy to compare a change")
    parser.add_argument("--only", choices=("throughput", "leak", "logs", "map"), action="append",
                        help="run only this part (repeatable); e.g. --only logs is the remote-logging benchmark")
    parser.add_argument("--kinds", default=",".join(k for k in KINDS if k not in ON_REQUEST),
                        help=f"comma-separated clients to measure (default: all but {', '.join(ON_REQUEST)}); "
                             f"known: {', '.join(KINDS)}")
    parser.add_argument("--no-java", action="store_true", help="leave out the Java client columns")
    opts = parser.parse_args(argv)
    selected = [k.strip() for k in opts.kinds.split(",") if k.strip()]
    unknown = [k for k in selected if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}")
    if opts.aio_floor and "floor_aio" not in selected:
        selected.append("floor_aio")
    if opts.no_java:
        selected = [k for k in selected if k not in JAVA_KINDS]
    cfg = plan(opts.quick)
    python_013 = str(ensure_venv013())
    python_ours = str(ensure_venv_ours())
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = RESULTS / stamp
    work.mkdir(parents=True, exist_ok=True)
    # the Java kinds ignore the interpreter (their client is the JVM)
    python_h2 = str(ensure_venv_h2()) if "floor_h2" in selected else python_ours
    pythons = {"ours": python_ours, "ours_grpc": python_ours, "v013": python_013, "floor": python_ours,
               "floor_aio": python_ours, "floor_h2": python_h2, "java110": python_ours, "java202": python_ours,
               "go": python_ours}
    info = machine_info(python_ours, python_013)
    print(f"{info['cores']} cores, {info['cpu']}; load average {info['loadavg_start']}; results in {work}")
    skipped: Dict[str, str] = {}
    java_builds: Dict[str, Dict[str, Any]] = {}
    for kind in [k for k in selected if k in JAVA_KINDS]:
        version = JAVA_KINDS[kind]
        t0 = time.perf_counter()
        try:
            jar = java_peer.build_jar(version)
        except java_peer.JavaUnavailable as exc:
            skipped[kind] = str(exc)
            print(f"{LABELS[kind]}: skipped: {exc}", flush=True)
            continue
        java_builds[kind] = {"version": version, "jar": str(jar), "seconds": time.perf_counter() - t0,
                             "java": java_peer.java_binary(version)}
        print(f"{LABELS[kind]}: {jar} ({java_builds[kind]['seconds']:.1f} s to build or find)", flush=True)
    if "go" in selected:
        t0 = time.perf_counter()
        try:
            go_binary = go_peer.build()
        except go_peer.GoUnavailable as exc:
            skipped["go"] = str(exc)
            print(f"{LABELS['go']}: skipped: {exc}", flush=True)
        else:
            info["go"] = {"module": go_peer.MODULE, "version": go_peer.VERSION, "commit": go_peer.COMMIT,
                          "patch": go_peer.PATCH.name, "source": go_peer.source_origin(), "binary": str(go_binary),
                          "go": go_peer.go_version(go_peer.go_binary() or "go"),
                          "seconds": time.perf_counter() - t0}
            print(f"{LABELS['go']}: {go_binary} ({info['go']['seconds']:.1f} s to build or find)", flush=True)
    selected = [k for k in selected if k not in skipped]
    info["java"] = java_builds
    raw: Dict[str, List[Dict[str, Any]]] = {k: [] for k in KINDS}
    n = 0

    def go(kind: str, phases: str, phase_cfg: Dict[str, Any], **kw: str) -> None:
        """Run one load generator and keep its result."""
        nonlocal n
        n += 1
        raw[kind].append(run_loadgen(kind, pythons[kind], phases, phase_cfg, work / f"{n:02d}-{kind}-{phases}.json",
                                     pythonpath=opts.pythonpath, **kw))

    parts = set(opts.only or ("throughput", "leak", "logs", "map"))
    if "throughput" in parts:
        print("throughput (processes interleaved across clients):")
        java_tp = dict(cfg["throughput"], **cfg["java_warmup"])
        for _ in range(cfg["throughput_processes"]):
            for kind in selected:
                go(kind, "throughput", {"throughput": java_tp if kind in JAVA_KINDS else cfg["throughput"]})
    if "leak" in parts:
        print(f"resources ({cfg['leak']['batches']} batches of each type):")
        for kind in [k for k in ("ours", "ours_grpc", "v013", "go") if k in selected]:
            go(kind, "leak", {"leak": cfg["leak"]})
        # the floor has no task types (every dispatch gets one report): one type is enough
        if "floor" in selected:
            go("floor", "leak", {"leak": dict(cfg["leak"], types=["CLUSTER"])})
    if parts & {"logs", "map"} and {"ours", "ours_grpc", "v013", "go"} & set(selected):
        print("remote logging and map fan-out:")
    for kind in [k for k in ("ours", "ours_grpc", "v013", "go") if k in selected]:
        if "logs" in parts and kind != "go":
            for mode in ("default", "remote"):
                go(kind, "logs", {"logs": cfg["logs"]}, log_level="INFO", log_mode=mode)
        if "map" in parts:
            go(kind, "map", {"map": cfg["map"]})
    summary = summarize(raw, cfg)
    checks = verdicts(summary)
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.time() - started
    table = render(summary, cfg)
    print()
    print(table)
    print()
    for v in checks:
        verdict = "n/a   " if v["met"] is None else ("MET   " if v["met"] else "MISSED")
        print(f"{verdict} {v['target']}: {v['value']}")
    print(f"\n{info['seconds']:.0f} s; load average at the end {info['loadavg_end']}")
    failures = [r.get("failure") for rs in raw.values() for r in rs if r.get("failure")]
    for kind, reason in skipped.items():
        print(f"{LABELS[kind]} not measured: {reason.splitlines()[0] if reason else ''}")
    not_run = {"go": {p: why for p, why in GO_NOT_RUN.items() if p in parts}} if "go" in selected else {}
    for kind, phases in not_run.items():
        for phase, why in phases.items():
            print(f"{LABELS[kind]}: no {phase} phase: {why}")
    doc = {"plan": cfg, "quick": opts.quick, "machine": info, "kinds": selected, "skipped": skipped,
           "not_run": not_run,
           "summary": summary, "targets": checks, "table": table, "failures": failures, "raw": raw}
    text = json.dumps(doc, indent=1, default=str)
    (RESULTS / f"{stamp}.json").write_text(text, encoding="utf-8")
    (RESULTS / "latest.json").write_text(text, encoding="utf-8")
    print(f"raw figures: {RESULTS / (stamp + '.json')}")
    if failures:
        print("failures:", *failures, sep="\n  ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
