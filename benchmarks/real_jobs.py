"""The client program of ``bench_real.py``: one Python node on the real server.

Its two executors mirror the Java peer's, so both sides do the same work:

- ``benchEcho``: returns ``{"params": <job params>}`` (cluster and broadcast jobs);
- ``benchMap``: a map job; its params are N. ``ROOT_MAP`` maps ``range(N)`` into
  ``CHUNK`` sub-tasks of at most 500 items (each gets its list of numbers), each
  ``CHUNK`` maps one ``ITEM`` sub-task per number, and each ``ITEM`` returns its
  number and appends ``<batch> <item> <node>`` to ``<E2E_MARKER_DIR>/bench-items``
  (one line per run, so the benchmark can check that every item ran exactly once).
  With params ``flat:N`` the root maps every ``ITEM`` itself (no ``CHUNK`` level).

Configured through the environment like ``tests/e2e/e2e_client.py``
(``SNAIL_*``, ``E2E_MARKER_DIR``, ``E2E_NODE``); ``bench_real.py`` starts it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import snailjob as sj

MARKER_DIR = Path(os.environ.get("E2E_MARKER_DIR") or ".")
NODE = os.environ.get("E2E_NODE", "node")
CHUNK = 500


def mark(name: str, text: str) -> None:
    """Append one line to ``<E2E_MARKER_DIR>/<name>`` (one write: atomic for short lines)."""
    fd = os.open(MARKER_DIR / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def _value(raw):
    """A map item as the job gets it: a JSON value, or its text."""
    return json.loads(raw) if isinstance(raw, str) else raw


@sj.job("benchEcho")
def echo(args: sj.JobArgs) -> sj.ExecuteResult:
    return sj.ExecuteResult.success({"params": args.job_params})


bench_map = sj.MapExecutor("benchMap")


@bench_map.map()
def root(args: sj.MapArgs) -> sj.ExecuteResult:
    params = str(args.job_params)
    if params.startswith("flat:"):  # every item from the root, one report of 200 after the other
        return sj.mr_do_map(list(range(int(params[5:]))), "ITEM")
    count = int(params)
    chunks = [list(range(start, min(start + CHUNK, count))) for start in range(0, count, CHUNK)]
    return sj.mr_do_map(chunks, "CHUNK")


@bench_map.map("CHUNK")
def chunk(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.mr_do_map([int(n) for n in _value(args.map_result)], "ITEM")


@bench_map.map("ITEM")
def item(args: sj.MapArgs) -> int:
    number = int(_value(args.map_result))
    mark("bench-items", f"{args.task_batch_id} {number} {NODE}")
    return number


if __name__ == "__main__":
    sj.ExecutorManager.register(echo)
    sj.ExecutorManager.register(bench_map)
    sj.client_main()
