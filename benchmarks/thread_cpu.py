"""Where a client's CPU goes, by thread: CPU time and voluntary context
switches per task of each of its threads, under a steady load.

    .venv/bin/python benchmarks/thread_cpu.py                     # this client, K=64 and K=1
    .venv/bin/python benchmarks/thread_cpu.py --kind floor_aio --k 1
    .venv/bin/python benchmarks/thread_cpu.py --pythonpath /tmp/patched   # a patched copy of snailjob/

It runs the load generator with K tasks in flight (as ``profile_client.py``
does), names the client's threads from one py-spy dump (the kernel knows
them all as ``python``), and reads each thread's CPU time and voluntary
context switches from ``/proc`` at the start and end of the window.  CPU
per task is that difference divided by the tasks completed in the window.
This client's worker threads (named for their batch) are counted together;
a thread started after the dump shows under its kernel name, ``python``, and
one that ended within the window is not counted (grpcio's completion threads
of synchronous futures come and go: ``run_all.py``'s process totals include
them).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO_DIR  # noqa: E402
from profile_client import PYTHONS, RESULTS, ensure_py_spy, start_load  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_names(spy: Path, pid: int) -> Dict[str, str]:
    """Native thread id -> Python thread name, from one ``py-spy dump``."""
    for _ in range(40):  # a dump fails when a thread exits while it is read
        dump = subprocess.run([str(spy), "dump", "-p", str(pid)], capture_output=True, text=True)
        if dump.returncode == 0:
            break
        time.sleep(0.3)
    return parse_dump(dump.stdout)


def parse_dump(text: str) -> Dict[str, str]:
    """Native thread id -> thread name, from the text of a ``py-spy dump``."""
    return {m.group(1): m.group(2) for m in re.finditer(r'^Thread (\d+) \([^)]*\): "(.*)"$', text, re.M)}


def group_of(name: str) -> str:
    """One row per kind of thread: this client's workers (named for their
    batch, or ``snailjob-worker-idle``) together, other digits collapsed."""
    if re.fullmatch(r"snailjob-(\d+-\d+|worker-.*)", name):
        return "snailjob worker threads"
    return re.sub(r"\d+", "N", name)


def sample(pid: int) -> Dict[str, Tuple[str, float, int]]:
    """Per thread id: kernel name, CPU seconds, voluntary context switches."""
    out: Dict[str, Tuple[str, float, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm = Path(base, "comm").read_text().strip()
            fields = Path(base, "stat").read_text().rpartition(")")[2].split()
            status = Path(base, "status").read_text()
        except OSError:  # the thread ended
            continue
        switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        out[tid] = (comm, (int(fields[11]) + int(fields[12])) / TICK, switches)
    return out


def measure(kind: str, k: int, seconds: float, pythonpath: str, spy: Path) -> Optional[str]:
    """One window at ``k``: the table as text, or None when the client did not start."""
    work = RESULTS / f"threads-{time.strftime('%Y%m%d-%H%M%S')}-{kind}-k{k}"
    started = start_load(kind, k, seconds + 10, pythonpath, work)
    if isinstance(started, int):
        return None
    load, pid = started
    time.sleep(4)  # start-up and warm-up
    names = thread_names(spy, pid)
    before, t0 = sample(pid), time.monotonic()
    time.sleep(seconds)
    after, elapsed = sample(pid), time.monotonic() - t0
    load.wait(timeout=seconds + 90)
    run = json.loads((work / "load.json").read_text())["throughput"]["runs"][0]
    tasks = run["tasks_per_s"] * elapsed
    cpu: Dict[str, float] = collections.defaultdict(float)
    switches: Dict[str, int] = collections.defaultdict(int)
    for tid, (comm, seconds_used, vcs) in after.items():
        _, cpu0, vcs0 = before.get(tid, (comm, 0.0, 0))
        group = group_of(names.get(tid, comm))
        cpu[group] += seconds_used - cpu0
        switches[group] += vcs - vcs0
    lines = [f"{kind}, K={k}: {run['tasks_per_s']:.0f} tasks/s; per task, by thread:"]
    rows = sorted(cpu.items(), key=lambda kv: -kv[1]) + [("all", sum(cpu.values()))]
    switches["all"] = sum(switches.values())
    for group, used in rows:
        per_task, waits = used * 1e6 / tasks, switches[group] / tasks
        if per_task >= 0.5 or waits >= 0.01:
            lines.append(f"  {group:34} CPU {per_task:6.0f} us   voluntary switches {waits:5.2f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="ours", choices=sorted(PYTHONS))
    parser.add_argument("--k", type=int, action="append", help="tasks in flight (repeat for several; default 64 and 1)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window")
    parser.add_argument("--pythonpath", default=str(REPO_DIR), help="where this client's snailjob/ is")
    opts = parser.parse_args(argv)
    spy = ensure_py_spy()
    for k in opts.k or [64, 1]:
        table = measure(opts.kind, k, opts.seconds, opts.pythonpath, spy)
        if table is None:
            return 1
        print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
