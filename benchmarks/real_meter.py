"""``bench_real.py``'s meter: CPU seconds and peak RSS of process trees from
/proc (the server JVM, PostgreSQL, the client nodes), the machine's busy CPU,
the server log's error lines during a measurement, and a verdict on the
bottleneck."""

from __future__ import annotations

import collections
import os
import resource
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from common import machine_busy_seconds

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

SERVER_ERRORS = {  # server log lines counted per measurement (none in a clean run)
    "dispatch_failed": "Task scheduling failed.",
    "node_call_error": "request client I/O error",
    "node_call_timeout": "java.util.concurrent.TimeoutException: Waited",
    "no_node": "client node is null",
}

# ---------------------------------------------------------------------------
# /proc: CPU and RSS of process trees


def _proc_table() -> Dict[int, List[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name (state is [0], ppid [1])."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                table[int(entry)] = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
    return table


def _tree(table: Dict[int, List[str]], root: int) -> List[int]:
    children = collections.defaultdict(list)
    for pid, fields in table.items():
        children[int(fields[1])].append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def tree_usage(table: Dict[int, List[str]], root: int) -> Dict[str, float]:
    """CPU seconds (user + system, with reaped children's) and RSS bytes of a process and its descendants."""
    cpu = rss = 0.0
    for pid in _tree(table, root):
        f = table[pid]
        cpu += sum(int(x) for x in f[11:15]) / TICK
        rss += int(f[21]) * PAGE
    return {"cpu_s": cpu, "rss_b": rss}


def own_cpu() -> float:
    """This process's CPU plus its reaped children's (the psql calls)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class Meter:
    """CPU deltas and peak RSS (sampled) of named process trees over one measurement.

    ``parties``: name -> list of root pids (e.g. {"server": [jvm], "postgres": [postmaster],
    "clients": [node pids]}). The peak of a party is the peak of its summed RSS;
    per root, the peak and the CPU are kept too (per-node figures)."""

    def __init__(self, parties: Dict[str, List[int]], interval: float = 0.5, server_log: Optional[Path] = None):
        self.parties = parties
        self.server_log = server_log
        self.interval = interval
        self.peak = {name: 0.0 for name in parties}
        self.peak_root: Dict[int, float] = collections.defaultdict(float)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-meter")

    def _sample(self) -> Dict[str, Dict[int, Dict[str, float]]]:
        table = _proc_table()
        out = {}
        for name, roots in self.parties.items():
            per = {root: tree_usage(table, root) for root in roots}
            out[name] = per
            self.peak[name] = max(self.peak[name], sum(u["rss_b"] for u in per.values()))
            for root, u in per.items():
                self.peak_root[root] = max(self.peak_root[root], u["rss_b"])
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Meter:
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_seconds()
        self.own0 = own_cpu()
        self.log0 = self._log_size()
        self.first = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.last = self._sample()
        self.wall = time.monotonic() - self.t0
        self.busy = machine_busy_seconds() - self.busy0
        self.own = own_cpu() - self.own0
        self.log1 = self._log_size()

    def _log_size(self) -> int:
        try:
            return self.server_log.stat().st_size if self.server_log else 0
        except OSError:
            return 0

    def server_errors(self) -> Dict[str, int]:
        """What the server logged during the measurement that says it could not reach a node:
        dispatches that failed, gRPC calls to nodes that timed out or failed, "no client" picks."""
        if not self.server_log or self.log1 <= self.log0:
            return {}
        with open(self.server_log, "rb") as fh:
            fh.seek(self.log0)
            text = fh.read(self.log1 - self.log0).decode(errors="replace")
        counts = {key: text.count(pattern) for key, pattern in SERVER_ERRORS.items()}
        return {k: v for k, v in counts.items() if v}

    def figures(self) -> Dict[str, Any]:
        """CPU seconds, cores busy and peak RSS (MB) per party, the machine's busy cores, a verdict.
        Cores are CPU seconds per second of the meter's span (a little longer than the wall time)."""
        span = self.wall
        out: Dict[str, Any] = {"meter_s": round(span, 2)}
        cores = {}
        for name in self.parties:
            cpu_per = {root: self.last[name].get(root, {"cpu_s": 0.0})["cpu_s"] - u["cpu_s"]
                       for root, u in self.first[name].items()}
            cpu = sum(cpu_per.values())
            cores[name] = cpu / span
            out[name] = {"cpu_s": round(cpu, 2), "cores": round(cpu / span, 3),
                         "peak_rss_mb": round(self.peak[name] / 2**20, 1)}
            if len(cpu_per) > 1:
                per_cpu = sorted(cpu_per.values())
                per_rss = sorted(self.peak_root[r] / 2**20 for r in cpu_per)
                out[name]["per_node"] = {
                    "n": len(per_cpu),
                    "cpu_s_min_median_max": [round(per_cpu[0], 2), round(statistics.median(per_cpu), 2),
                                             round(per_cpu[-1], 2)],
                    "peak_rss_mb_min_median_max": [round(per_rss[0], 1), round(statistics.median(per_rss), 1),
                                                   round(per_rss[-1], 1)]}
        out["bench_process"] = {"cpu_s": round(self.own, 2), "cores": round(self.own / span, 3)}
        other = self.busy - sum(c * span for c in cores.values()) - self.own
        out["machine"] = {"busy_cpu_s": round(self.busy, 2), "busy_cores": round(self.busy / span, 3),
                          "ncpu": NCPU, "other_cores": round(max(other, 0.0) / span, 3)}
        out["bottleneck"] = verdict(cores, self.busy / span, max(other, 0.0) / span)
        out["server_errors"] = self.server_errors()
        return out


def verdict(cores: Dict[str, float], busy: float, other: float) -> str:
    parts = ", ".join(f"{name} {c:.2f}" for name, c in cores.items())
    top = max(cores, key=lambda k: cores[k]) if cores else "?"
    if busy >= 0.85 * NCPU:
        note = f"; other work on the machine {other:.2f} cores" if other >= 0.25 else ""
        return f"CPU-bound: the machine's {NCPU} cores are busy, most of it the {top} ({parts}){note}"
    if cores.get(top, 0) >= 0.85:
        return f"the {top} keeps about one core busy or more ({parts}); the machine is not saturated"
    return (f"not CPU-bound ({parts} cores; machine {busy:.2f}/{NCPU}): waiting on the server's "
            "dispatch and round trips")


# ---------------------------------------------------------------------------
# nodes
