"""Helpers shared by the benchmark scripts: statistics, ports, ``/proc``
readings, and loading the generated gRPC message module without importing
the ``snailjob`` package (so that the floor process stays bare).

Importing this module has no side effects.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import statistics
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PB2_PATH = REPO_DIR / "snailjob" / "wire" / "snailjob_pb2.py"

TOKEN = "SJ_benchmark_token_0123456789"
"""The group token: sent by the clients as ``token``, by the load generator as ``SJ-TOKEN``."""
GROUP = "bench_group"
NAMESPACE = "764d604ec6fc45f68cd92514c40e9e1a"
METHOD = "/UnaryRequest/unaryRequest"
MAX_MESSAGE = 16 * 1024 * 1024


def load_pb2() -> ModuleType:
    """The generated ``snailjob_pb2`` module, loaded from its file only.

    ``snailjob/wire/snailjob_pb2.py`` imports nothing but protobuf, so the
    floor client can use it without pulling in pydantic and the client.
    """
    spec = importlib.util.spec_from_file_location("bench_snailjob_pb2", PB2_PATH)
    if spec is None or spec.loader is None:  # pragma: no cover - broken checkout
        raise ImportError(f"cannot load {PB2_PATH}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int) -> Dict[str, int]:
    """``VmRSS`` (KiB) and ``Threads`` of a process, from ``/proc/<pid>/status``.

    Returns an empty dict when the process is gone.
    """
    out: Dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    out["rss_kb"] = int(line.split()[1])
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
    except OSError:
        return {}
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine spent busy so far (``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(math.floor(rank))
    high = min(low + 1, len(ordered) - 1)
    frac = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * frac)


def latency_summary(seconds: Sequence[float]) -> Dict[str, float]:
    """p50 / p99 / max / mean in milliseconds, and the sample count."""
    if not seconds:
        return {"n": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan, "mean_ms": math.nan}
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1e3,
        "p99_ms": percentile(seconds, 99) * 1e3,
        "max_ms": max(seconds) * 1e3,
        "mean_ms": statistics.fmean(seconds) * 1e3,
    }


def median_spread(values: Iterable[Optional[float]]) -> Dict[str, float]:
    """Median, min and max of the non-missing values (``n`` = how many)."""
    clean: List[float] = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean), "n": len(clean)}


def fmt_spread(stats: Dict[str, float], digits: int = 0, unit: str = "") -> str:
    """``median (min-max)`` as text; ``n/a`` when there is no value."""
    if not stats or stats.get("n", 0) == 0 or math.isnan(stats.get("median", math.nan)):
        return "n/a"
    med = f"{stats['median']:.{digits}f}"
    if stats["n"] == 1 or stats["min"] == stats["max"]:
        return f"{med}{unit}"
    return f"{med}{unit} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def env_without_snail(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A copy of the environment without inherited ``SNAIL_*`` and
    ``PYTHONPATH`` variables, so that only what the benchmark sets applies."""
    src = dict(os.environ if base is None else base)
    return {k: v for k, v in src.items() if not k.upper().startswith("SNAIL_") and k != "PYTHONPATH"}

