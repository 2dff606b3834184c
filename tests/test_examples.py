"""The README's example command works: every example against the emulator."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_examples_reports_every_outcome():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "example", "run_examples.py")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for program, job, outcome in [
        ("main.py", "cluster", "SUCCESS"), ("main.py", "broadcast", "SUCCESS"),
        ("main.py", "sharding (3 shards)", "SUCCESS"),
        ("main.py", "map (ROOT_MAP -> 300 pages)", "SUCCESS"),
        ("main.py", "map-reduce (2 reduces + merge)", "SUCCESS"), ("main.py", "workflow (3 nodes)", "SUCCESS"),
        ("main.py", "stop-aware job, stopped", "STOP"), ("main.py", "async job", "SUCCESS"),
        ("main.py", "typed job", "SUCCESS"), ("main.py", "typed job, bad parameters", "FAIL"),
        ("main.py", "SIGTERM", "SUCCESS"),
        ("readme_job.py", "0.1.3 README example", "SUCCESS"),
        ("readme_map.py", "0.1.3 README example", "SUCCESS"),
        ("readme_mapreduce.py", "0.1.3 README example", "FAIL"), ("readme_stop.py", "0.1.3 README example", "STOP"),
        ("openapi_jobs.py", "sync_jobs (jobs as code)", "SUCCESS"),
        ("openapi_jobs.py", "trigger + wait_job_batch", "SUCCESS"),
        ("retry_example.py", "checkout (charge fails twice)", "SUCCESS"),
        ("retry_example.py", "server replays of the charge", "SUCCESS"),
        ("retry_example.py", "completion callback", "SUCCESS"), ("retry_example.py", "SIGTERM", "SUCCESS"),
    ]:
        assert any(line.split()[0] == program and f" {job} " in line and f" {outcome} " in line
                   for line in lines), (program, job, out.stdout)
    assert "merge 110" in out.stdout and "300 sub-tasks, sum 448500" in out.stdout
    assert "loaded 40 rows from orders.csv" in out.stdout
    assert "retry FINISH after replays: FAIL, SUCCESS" in out.stdout and "callback: finally succeeded" in out.stdout
    assert "acme: 30 EUR" in out.stdout and "amounts.0: Input should be a valid integer" in out.stdout
