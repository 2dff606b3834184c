"""The benchmark's job program: trivial jobs, run unchanged by this client
and by snail-job-python 0.1.3 (both expose the same 0.1.3 API).

Run with the interpreter of the client under test::

    SNAIL_SERVER_PORT=... SNAIL_HOST_PORT=... SNAIL_TOKEN=... python benchmarks/bench_client.py

Executors:

- ``bench``: returns success at once (cluster, broadcast, sharding tasks);
- ``benchLog``: calls ``SnailLog.REMOTE.info`` ``job_params`` times, timing
  each call with ``time.perf_counter_ns``, and returns the timings' summary
  as its result (JSON text);
- ``benchMap`` (map): ``ROOT_MAP`` returns success, or with job params
  ``fanout:N`` emits N sub-tasks named ``CHILD`` through ``mr_do_map``
  (0.1.3 refuses more than 200 items per call, so there it calls
  ``mr_do_map`` once per 200 items); ``CHILD`` returns success;
- ``benchMR`` (map-reduce): ``ROOT_MAP``, ``reduce`` and ``merge`` return success.

Environment besides the ``SNAIL_*`` settings:

- ``BENCH_LOG_MODE``: ``default`` keeps the logging the library sets up
  (console handler, and 0.1.3's log file); ``remote`` leaves only the remote
  (shipping) handler, to isolate the shipping cost;
- ``BENCH_IDENT_FILE``: where to write which ``snailjob`` was imported;
- ``BENCH_CENSUS_FILE``: if set, each SIGUSR1 appends a count of live
  objects by type (one JSON line) to this file, to see what a growth is made of.

Nothing runs at import; ``main()`` registers the executors and calls
``client_main()``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, List

import snailjob as sj

MAX_ITEMS_013 = 200  # 0.1.3's mr_do_map refuses longer lists


def _is_this_client() -> bool:
    """True for this repository's client, False for 0.1.3."""
    return hasattr(sj, "Client")


@sj.job("bench")
def bench(args: Any) -> Any:
    """The trivial job: succeed at once."""
    return sj.ExecuteResult.success()


@sj.job("benchLog")
def bench_log(args: Any) -> Any:
    """Log ``job_params`` records remotely; return the caller-side cost of each call."""
    count = int(args.job_params or 10000)
    log = sj.SnailLog.REMOTE
    clock = time.perf_counter_ns
    costs: List[int] = [0] * count
    started = clock()
    for i in range(count):
        t0 = clock()
        log.info("benchmark record %d", i)
        costs[i] = clock() - t0
    total_ns = clock() - started
    costs.sort()
    summary: Dict[str, Any] = {
        "n": count,
        "total_ms": total_ns / 1e6,
        "mean_us": sum(costs) / count / 1e3,
        "p50_us": costs[count // 2] / 1e3,
        "p99_us": costs[min(count - 1, (count * 99) // 100)] / 1e3,
        "max_us": costs[-1] / 1e3,
        "over_1ms": sum(1 for c in costs if c > 1_000_000),
    }
    return sj.ExecuteResult.success(json.dumps(summary))


bench_map = sj.MapExecutor("benchMap")


@bench_map.map()
def bench_map_root(args: Any) -> Any:
    """ROOT_MAP: succeed, or fan out ``fanout:N`` sub-tasks."""
    params = str(args.job_params or "")
    if not params.startswith("fanout:"):
        return sj.ExecuteResult.success()
    items = list(range(int(params.split(":", 1)[1])))
    if _is_this_client():
        return sj.mr_do_map(items, "CHILD")
    for start in range(0, len(items), MAX_ITEMS_013):
        sj.mr_do_map(items[start:start + MAX_ITEMS_013], "CHILD")
    return sj.ExecuteResult.success()


@bench_map.map("CHILD")
def bench_map_child(args: Any) -> Any:
    """A sub-task: succeed at once."""
    return sj.ExecuteResult.success()


bench_mr = sj.MapReduceExecutor("benchMR")


@bench_mr.map()
def bench_mr_root(args: Any) -> Any:
    """ROOT_MAP of the map-reduce executor."""
    return sj.ExecuteResult.success()


@bench_mr.reduce()
def bench_mr_reduce(args: Any) -> Any:
    """The reduce stage: succeed at once."""
    return sj.ExecuteResult.success()


@bench_mr.merge()
def bench_mr_merge(args: Any) -> Any:
    """The merge stage: succeed at once."""
    return sj.ExecuteResult.success()


def _write_ident(path: str) -> None:
    try:
        from importlib.metadata import version

        dist_version = version("snail-job-python")
    except Exception:  # run from a source tree
        dist_version = str(getattr(sj, "__version__", "unknown"))
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"module": sj.__file__, "version": dist_version, "this_client": _is_this_client(),
                   "pid": os.getpid()}, fh)


def _install_census(path: str) -> None:
    """On SIGUSR1, append the live objects' counts by type to ``path``."""
    import collections
    import gc
    import signal

    def census(signum: int, frame: Any) -> None:
        """Write one census line."""
        gc.collect()
        counts: Dict[str, Any] = dict(collections.Counter(type(o).__qualname__ for o in gc.get_objects())
                                      .most_common(60))
        import tracemalloc

        if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=1: Python allocations by file too
            stats = tracemalloc.take_snapshot().statistics("filename")
            counts["tracemalloc_total_kb"] = sum(st.size for st in stats) // 1024
            counts["tracemalloc_by_file_kb"] = {st.traceback[0].filename: st.size // 1024 for st in stats[:40]}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(counts) + "\n")

    signal.signal(signal.SIGUSR1, census)


def _remote_only_logging() -> None:
    """Keep only the handler that ships records to the server."""
    if _is_this_client():
        # client_main() adds a console handler only when the program configured
        # no logging; a NullHandler on the root counts as configured.
        logging.getLogger().addHandler(logging.NullHandler())
        return
    for logger in (sj.SnailLog.REMOTE, sj.SnailLog.LOCAL):
        for handler in list(logger.handlers):
            if type(handler).__name__ != "SnailHttpHandler":
                logger.removeHandler(handler)


def main() -> None:
    """Register the executors and run the client until SIGTERM."""
    ident = os.environ.get("BENCH_IDENT_FILE")
    if ident:
        _write_ident(ident)
    if os.environ.get("BENCH_CENSUS_FILE"):
        _install_census(os.environ["BENCH_CENSUS_FILE"])
    if os.environ.get("BENCH_LOG_MODE", "default") == "remote":
        _remote_only_logging()
    for executor in (bench, bench_log, bench_map, bench_mr):
        sj.ExecutorManager.register(executor)
    sj.client_main()


if __name__ == "__main__":
    main()
