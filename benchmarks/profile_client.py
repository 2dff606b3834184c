"""Profile a client under load with py-spy: where its CPU (GIL) time goes.

    .venv/bin/python benchmarks/profile_client.py                 # this client, K=64, 15 s of samples
    .venv/bin/python benchmarks/profile_client.py --kind v013     # snail-job-python 0.1.3
    .venv/bin/python benchmarks/profile_client.py --kind ours_grpc --k 1   # on grpcio, one task at a time
    .venv/bin/python benchmarks/profile_client.py --pythonpath /tmp/patched   # a patched copy of snailjob/

It installs py-spy into ``benchmarks/.venv-tools`` on first use, runs the
load generator with K tasks in flight, samples the client process (only the
thread holding the GIL, ``--gil``, i.e. its Python CPU time), dumps every
thread's stack once (to show what blocked threads wait on), and prints the
functions by self and by inclusive share of samples.  The raw samples
(py-spy's collapsed-stack format) are kept in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BENCH_DIR, REPO_DIR  # noqa: E402

TOOLS = BENCH_DIR / ".venv-tools"
RESULTS = BENCH_DIR / "results"


def ensure_py_spy() -> Path:
    """The py-spy executable, installed into ``.venv-tools`` if needed."""
    exe = TOOLS / "bin" / "py-spy"
    if not exe.exists():
        print(f"installing py-spy into {TOOLS} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(str(TOOLS))
        subprocess.run([str(TOOLS / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "py-spy"], check=True)
    return exe


def aggregate(raw: Path, top: int) -> Tuple[int, List[Tuple[str, int]], List[Tuple[str, int]]]:
    """Total samples, and (function, samples) by self and by inclusive count."""
    self_count: Dict[str, int] = collections.Counter()
    inclusive: Dict[str, int] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [f for f in stack.split(";")[1:] if f]  # the first item names the thread
        if not frames:
            continue
        self_count[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            inclusive[name] += n
    return (total, sorted(self_count.items(), key=lambda kv: -kv[1])[:top],
            sorted(inclusive.items(), key=lambda kv: -kv[1])[:top])


def _short(frame: str) -> str:
    """``func (path/file.py:line)`` -> ``func (file.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def _child_of(parent: int) -> Optional[int]:
    """The pid of a child process of ``parent`` (from ``/proc``), or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent:
            return int(entry.name)
    return None


_OURS = BENCH_DIR / ".venv-ours" / "bin" / "python"
PYTHONS = {"ours": _OURS, "ours_grpc": _OURS, "v013": BENCH_DIR / ".venv013" / "bin" / "python", "floor": _OURS,
           "floor_aio": _OURS}


def start_load(kind: str, k: int, seconds: float, pythonpath: str, work: Path) -> Union[Tuple[Any, int], int]:
    """Start the load generator with ``k`` tasks in flight for ``seconds``
    (after a warm-up of 300 tasks) on a client of ``kind``; its process and
    the client's pid, or an exit status when the client did not start."""
    python = PYTHONS[kind]
    if not python.exists():
        print(f"{python} is missing: run benchmarks/run_all.py --quick once first", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    cfg = {"throughput": {"warmup": 300, "reps": 1, "ks": [k], "tasks": {str(k): 10 ** 7},
                          "max_seconds": seconds, "paced_rate": 10, "paced_seconds": 0.1}}
    env = dict(os.environ, GRPC_VERBOSITY="ERROR")
    load = subprocess.Popen([sys.executable, str(BENCH_DIR / "loadgen.py"), "--kind", kind, "--python",
                             str(python), "--phases", "throughput", "--config", json.dumps(cfg), "--out",
                             str(work / "load.json"), "--workdir", str(work / "client"), "--pythonpath",
                             pythonpath], env=env)
    ident = work / "client" / "ident.json"
    deadline = time.time() + 60
    pid = None
    while time.time() < deadline and load.poll() is None:
        try:
            pid = int(json.loads(ident.read_text())["pid"])
            break
        except (OSError, ValueError, KeyError):
            if kind.startswith("floor"):  # the floor writes no ident file: take the load generator's child
                pid = _child_of(load.pid)
                if pid is not None:
                    break
            time.sleep(0.2)
    if pid is None:
        print("the client did not start (no ident.json); see", work, file=sys.stderr)
        load.kill()
        return 1
    return load, pid


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the load, sample the client, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="ours", choices=("ours", "ours_grpc", "v013", "floor"))
    parser.add_argument("--k", type=int, default=64, help="tasks in flight")
    parser.add_argument("--seconds", type=float, default=15.0, help="sampling time")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--pythonpath", default=str(REPO_DIR), help="where this client's snailjob/ is")
    opts = parser.parse_args(argv)
    spy = ensure_py_spy()
    work = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}-{opts.kind}"
    started = start_load(opts.kind, opts.k, opts.seconds + 8, opts.pythonpath, work)
    if isinstance(started, int):
        return started
    load, pid = started
    time.sleep(4)  # start-up and warm-up
    for _ in range(10):  # a dump fails when a thread exits while it is read; try again
        dump = subprocess.run([str(spy), "dump", "-p", str(pid)], capture_output=True, text=True)
        if dump.returncode == 0:
            break
        time.sleep(0.3)
    (work / "dump.txt").write_text(dump.stdout + dump.stderr)
    raw = work / "gil-samples.txt"
    subprocess.run([str(spy), "record", "-p", str(pid), "-d", str(int(opts.seconds)), "-r", str(opts.rate), "--gil",
                    "--nonblocking", "-f", "raw", "-o", str(raw)], capture_output=True, check=False)
    load.wait(timeout=opts.seconds + 60)
    summary = json.loads((work / "load.json").read_text())
    run = summary.get("throughput", {}).get("runs", [{}])[0]
    total, by_self, by_incl = aggregate(raw, opts.top)
    possible = opts.rate * opts.seconds
    print(f"\n{opts.kind}: {run.get('tasks_per_s', 0):.0f} tasks/s at K={opts.k}; client CPU "
          f"{run.get('cpu', {}).get('client_cpu_us_per_task', 0):.0f} us/task "
          f"({run.get('cpu', {}).get('client_cores', 0):.2f} cores); GIL held in {total / possible:.0%} of samples")
    lines = dump.stdout.splitlines()
    waits = collections.Counter(line.strip() for prev, line in zip(lines, lines[1:]) if prev.startswith("Thread "))
    print("\nthread states at one instant (top frame: count):")
    for frame, count in waits.most_common(8):
        print(f"  {count:3d}  {frame}")
    for title, rows in (("self", by_self), ("inclusive", by_incl)):
        print(f"\nby {title} share of GIL samples:")
        for name, count in rows:
            print(f"  {count / total:6.1%}  {name}")
    print(f"\nraw samples and the thread dump: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
