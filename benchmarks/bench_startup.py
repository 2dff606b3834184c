"""Start-up and idle footprint: time from spawning a client process to the
first heartbeat the server receives, then the client's idle ``VmRSS`` and
thread count, and the time ``import snailjob`` takes.

Standalone: a small synchronous grpcio server in this process plays the
SnailJob server (``status=1``; ``data`` ``"PONG"`` for ``/beat``, ``true``
otherwise), and each client process runs ``benchmarks/bench_client.py`` (a
plain job program) or, for the floor, ``benchmarks/floor_client.py``::

    python benchmarks/bench_startup.py                                   # this client and the floor
    python benchmarks/bench_startup.py --python-013 benchmarks/.venv013/bin/python --reps 9
    python benchmarks/bench_startup.py --python benchmarks/.venv-ours/bin/python --json out.json
    python benchmarks/bench_startup.py --baseline /tmp/old-checkout     # also another copy of snailjob/

Per run it measures:

- start-up: from just before ``Popen`` to the first ``/beat`` received;
- idle RSS / threads: ``VmRSS`` and ``Threads`` of ``/proc/<pid>/status``
  ``--idle-wait`` seconds (default 1) after that beat;
- import: ``import snailjob`` timed inside a fresh interpreter (``-c``).

Runs of the clients are interleaved, after one untimed warm-up run of each
(which also writes this client's ``__pycache__``: ``PYTHONDONTWRITEBYTECODE``
is removed from the clients' environment, since an installed package has its
bytecode compiled); each figure is reported as ``median (min-max)`` over
``--reps`` runs.  Everything is on 127.0.0.1, and
each client gets SIGTERM (then SIGKILL) after its reading.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_DIR,
    GROUP,
    MAX_MESSAGE,
    NAMESPACE,
    REPO_DIR,
    TOKEN,
    env_without_snail,
    fmt_spread,
    free_port,
    load_pb2,
    median_spread,
    proc_status,
)

IMPORT_CODE = "import time; t = time.perf_counter(); import snailjob; print(time.perf_counter() - t)"


class BeatServer:
    """Answers the client's calls; records when the first ``/beat`` of a run arrives."""

    def __init__(self) -> None:
        self.pb = load_pb2()
        self.port = free_port()
        self._lock = threading.Lock()
        self._first_beat: Optional[float] = None
        self._event = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                           ("grpc.so_reuseport", 0)])
        method = grpc.unary_unary_rpc_method_handler(
            self._serve, request_deserializer=self.pb.GrpcSnailJobRequest.FromString,
            response_serializer=self.pb.GrpcResult.SerializeToString)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": method}),))
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    def _serve(self, request: Any, context: Any) -> Any:
        now = time.perf_counter()
        data = "true"
        if request.metadata.uri == "/beat":
            data = '"PONG"'
            with self._lock:
                if self._first_beat is None:
                    self._first_beat = now
                    self._event.set()
        return self.pb.GrpcResult(reqId=request.reqId, status=1, message="", data=data)

    def reset(self) -> None:
        with self._lock:
            self._first_beat = None
            self._event.clear()

    def wait_beat(self, timeout: float) -> Optional[float]:
        """``perf_counter`` time of the first beat since ``reset``, or None."""
        self._event.wait(timeout)
        with self._lock:
            return self._first_beat


def client_command(kind: str, python: str, server_port: int, pythonpath: str,
                   workdir: Path) -> Tuple[List[str], Dict[str, str]]:
    """Command and environment of one client process."""
    env = _clean_env()
    env.update({
        "SNAIL_SERVER_HOST": "127.0.0.1", "SNAIL_SERVER_PORT": str(server_port),
        "SNAIL_HOST_IP": "127.0.0.1", "SNAIL_HOST_PORT": str(free_port()), "SNAIL_BIND_HOST": "127.0.0.1",
        "SNAIL_TOKEN": TOKEN, "SNAIL_GROUP_NAME": GROUP, "SNAIL_NAMESPACE": NAMESPACE,
        "SNAIL_LOG_LEVEL": "WARNING", "SNAIL_SHUTDOWN_GRACE": "1",
        "BENCH_IDENT_FILE": str(workdir / "ident.json"),
    })
    if kind in ("ours", "baseline"):
        env["PYTHONPATH"] = pythonpath
    script = "floor_client.py" if kind == "floor" else "bench_client.py"
    return [python, str(BENCH_DIR / script)], env


def _clean_env() -> Dict[str, str]:
    env = env_without_snail()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode compiled
    return env


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_run(kind: str, python: str, server: BeatServer, pythonpath: str, idle_wait: float,
            timeout: float) -> Dict[str, Any]:
    """Spawn one client; time its first beat; read its idle status."""
    workdir = Path(tempfile.mkdtemp(prefix=f"snailjob-startup-{kind}-"))
    cmd, env = client_command(kind, python, server.port, pythonpath, workdir)
    server.reset()
    with open(workdir / "client.log", "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=str(workdir), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            beat = server.wait_beat(timeout)
            if beat is None:
                return {"failure": f"no beat within {timeout}s (exit {proc.poll()}); see {workdir / 'client.log'}"}
            time.sleep(idle_wait)
            status = proc_status(proc.pid)
            out: Dict[str, Any] = {"startup_s": beat - started, **status}
            ident = workdir / "ident.json"
            if ident.exists():
                out["ident"] = json.loads(ident.read_text())
            return out
        finally:
            stop(proc)


def import_time(kind: str, python: str, pythonpath: str) -> Optional[float]:
    """Seconds ``import snailjob`` takes in a fresh interpreter."""
    if kind == "floor":
        return None
    env = _clean_env()
    if kind in ("ours", "baseline"):
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([python, "-c", IMPORT_CODE], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True)
    return float(done.stdout.strip()) if done.returncode == 0 else None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--python", default=sys.executable, help="interpreter of this client (run from --pythonpath)")
    parser.add_argument("--python-013", help="interpreter of an environment with snail-job-python 0.1.3")
    parser.add_argument("--python-floor", help="interpreter of the floor (default: --python)")
    parser.add_argument("--pythonpath", default=str(REPO_DIR), help="where this client's snailjob/ is")
    parser.add_argument("--baseline", help="a directory with another snailjob/ to compare, run by --python")
    parser.add_argument("--kinds", default="baseline,ours,013,floor")
    parser.add_argument("--idle-wait", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json", help="write the raw runs here")
    opts = parser.parse_args(argv)
    pythons = {"ours": opts.python, "013": opts.python_013, "floor": opts.python_floor or opts.python,
               "baseline": opts.python if opts.baseline else None}
    paths = {"ours": opts.pythonpath, "baseline": opts.baseline or ""}
    kinds = [k for k in opts.kinds.split(",") if k and pythons.get(k)]
    server = BeatServer()
    server.server.start()
    runs: Dict[str, List[Dict[str, Any]]] = {k: [] for k in kinds}
    try:
        for kind in kinds:  # warm-up: bytecode written, files in the page cache
            one_run(kind, os.path.abspath(pythons[kind]), server, paths.get(kind, ""), 0.0, opts.timeout)
            import_time(kind, os.path.abspath(pythons[kind]), paths.get(kind, ""))
        for rep in range(opts.reps):
            for kind in kinds:  # interleaved: background load hits every kind alike
                python = os.path.abspath(pythons[kind])
                result = one_run(kind, python, server, paths.get(kind, ""), opts.idle_wait, opts.timeout)
                result["import_s"] = import_time(kind, python, paths.get(kind, ""))
                runs[kind].append(result)
                if "failure" in result:
                    print(f"{kind} run {rep + 1}: {result['failure']}", file=sys.stderr)
    finally:
        server.server.stop(0)
    print(f"{'':8} {'import snailjob ms':>20} {'start->first beat ms':>22} {'idle RSS MB':>18} {'threads':>10}"
          f"   (median (min-max), N={opts.reps})")
    for kind in kinds:
        ok = [r for r in runs[kind] if "failure" not in r]
        imp = median_spread(r["import_s"] * 1e3 for r in ok if r.get("import_s") is not None)
        start = median_spread(r["startup_s"] * 1e3 for r in ok)
        rss = median_spread(r.get("rss_kb", float("nan")) / 1024 for r in ok)
        threads = median_spread(r.get("threads") for r in ok)
        print(f"{kind:8} {fmt_spread(imp, 0):>20} {fmt_spread(start, 0):>22} {fmt_spread(rss, 1):>18} "
              f"{fmt_spread(threads, 0):>10}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
