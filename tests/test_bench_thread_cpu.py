"""The bookkeeping of ``benchmarks/thread_cpu.py``: thread names read from a
py-spy dump, this client's workers counted as one row, and the per-thread
figures read from ``/proc`` (of this test's own process)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import thread_cpu  # noqa: E402

DUMP = '''Process 18284: /bench/.venv-ours/bin/python /bench/bench_client.py
Python v3.11.7 (/bench/.venv-ours/bin/python)

Thread 18284 (idle): "MainThread"
    Condition.wait (threading.py:331)
Thread 18295 (active+gil): "snailjob-inbound"
Thread 18297 (idle): "Thread-1 (_poll_wrapper)"
Thread 18310 (active): "snailjob-1005263-3"
Thread 18311 (idle): "snailjob-worker-idle"
'''


def test_thread_names_come_from_the_dump():
    assert thread_cpu.parse_dump(DUMP) == {
        "18284": "MainThread", "18295": "snailjob-inbound", "18297": "Thread-1 (_poll_wrapper)",
        "18310": "snailjob-1005263-3", "18311": "snailjob-worker-idle"}


def test_workers_are_one_row_and_other_numbers_collapse():
    assert thread_cpu.group_of("snailjob-1005263-3") == thread_cpu.group_of("snailjob-worker-idle") \
        == "snailjob worker threads"
    assert thread_cpu.group_of("snailjob-inbound") == "snailjob-inbound"
    assert thread_cpu.group_of("Thread-12 (_poll_wrapper)") == "Thread-N (_poll_wrapper)"


def test_each_thread_is_sampled_with_its_cpu_time():
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        first = thread_cpu.sample(os.getpid())
        threading.Event().wait(0.3)
        second = thread_cpu.sample(os.getpid())
    finally:
        stop.set()
        spinner.join()
    tid = str(spinner.native_id)
    assert tid in first and tid in second
    assert second[tid][1] > first[tid][1]  # it used CPU between the samples
    assert second[tid][2] >= first[tid][2]
