"""The health port under half-open connections: threads and probe latency.

Serves a stand-in client (live and ready) with ``snailjob.ops.health`` in
this process, opens ``--connections`` connections that each send half a
request line and stall, then times ``--probes`` probes (``GET /readyz`` and
``/livez`` alternately, one connection each, one after the other)::

    python benchmarks/bench_health.py                          # 1,000 half-open connections, 200 probes
    git show <rev>:snailjob/ops/health.py > /tmp/old_health.py
    python benchmarks/bench_health.py --baseline /tmp/old_health.py   # also another health.py

Reported per implementation: the process's threads before the connections,
with them (highest seen), the probes' latency p50 / p99 / max, and probes
that failed.  All on 127.0.0.1; the open-file limit is raised if needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import socket
import statistics
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List

HALF_REQUEST = b"GET /livez HT"


class Ready:
    def health(self) -> Dict[str, Any]:
        return {"live": True, "ready": True, "state": "running", "reasons": []}


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"health_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe(port: int, path: str) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    if not answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        raise RuntimeError(answer[:80])
    return time.perf_counter() - started


def measure(module: ModuleType, connections: int, probes: int) -> Dict[str, Any]:
    before = threading.active_count()
    server = module.HealthServer(Ready(), 0, "127.0.0.1").start()
    socks: List[socket.socket] = []
    peak = threading.active_count()
    try:
        started = time.monotonic()
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(HALF_REQUEST)
            socks.append(sock)
            peak = max(peak, threading.active_count())
        opened = time.monotonic() - started
        time.sleep(1.0)  # let the server take them all
        peak = max(peak, threading.active_count())
        latencies, failed = [], 0
        for i in range(probes):
            try:
                latencies.append(probe(server.port, "/livez" if i % 2 else "/readyz"))
            except (OSError, RuntimeError):
                failed += 1
            peak = max(peak, threading.active_count())
    finally:
        for sock in socks:
            sock.close()
        server.close()
    latencies.sort()
    return {"threads_before": before, "threads_peak": peak, "open_s": opened, "failed": failed,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000 if latencies else float("nan"),
            "max_ms": latencies[-1] * 1000 if latencies else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--baseline", help="another health.py to measure as well")
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * options.connections + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need) if hard != resource.RLIM_INFINITY else hard))
    implementations = {"this": str(Path(__file__).resolve().parents[1] / "snailjob" / "ops" / "health.py")}
    if options.baseline:
        implementations["baseline"] = options.baseline
    print(f"{options.connections} half-open connections, {options.probes} probes")
    for name, path in implementations.items():
        found = measure(load(path), options.connections, options.probes)
        print(f"{name:9} threads {found['threads_before']} -> {found['threads_peak']} "
              f"(+{found['threads_peak'] - found['threads_before']}); "
              f"connections opened in {found['open_s']:.2f} s; probes p50 {found['p50_ms']:.2f} ms, "
              f"p99 {found['p99_ms']:.2f} ms, max {found['max_ms']:.2f} ms, failed {found['failed']}")


if __name__ == "__main__":
    main()
