"""The README's example command works: every example against the emulator."""

import os
import subprocess
import sys

import pytest

# heavy or timing-bound: these modules share one pytest-xdist worker (make test: --dist loadgroup),
# so they never compete with each other for the 2 cores
pytestmark = pytest.mark.xdist_group("heavy")

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
        ("retry_chain.py", "order (stock fails twice)", "SUCCESS"),
        ("retry_chain.py", "one retry task for the chain", "SUCCESS"), ("retry_chain.py", "SIGTERM", "SUCCESS"),
        ("django_site", "ORM job (daily)", "SUCCESS"), ("django_site", "ORM job (weekly)", "SUCCESS"),
        ("django_site", "SIGTERM", "SUCCESS"),
        ("fastapi_app.py", "async job on the app's loop", "SUCCESS"),
        ("fastapi_app.py", "SIGTERM drains the client", "SUCCESS"),
        ("flask_app.py", "job with current_app", "SUCCESS"), ("flask_app.py", "SIGTERM drains the client", "SUCCESS"),
    ]:
        assert any(line.split()[0] == program and f" {job} " in line and f" {outcome} " in line
                   for line in lines), (program, job, out.stdout)
    rows = [line for line in lines[1:] if any(f" {word} " in line for word in ("SUCCESS", "FAIL", "STOP"))]
    assert len(rows) >= 27, out.stdout
    for line in rows:  # the outcomes other than SUCCESS are the intended ones, and say so
        assert (" SUCCESS " in line) != (" (intended) " in line), line
    assert "merge 110" in out.stdout and "300 sub-tasks, sum 448500" in out.stdout
    assert "loaded 40 rows from orders.csv" in out.stdout
    assert "retry FINISH after replays: FAIL, SUCCESS" in out.stdout and "callback: finally succeeded" in out.stdout
    assert '"reports":2,"fresh_connection":true' in out.stdout  # the ORM wrote; connections closed after jobs
    assert '"on_app_loop":true}; GET /stats -> refreshes 1' in out.stdout
    assert "Hello, SnailJob (from flask_app); app contexts torn down: 1" in out.stdout
    assert "acme: 30 EUR" in out.stdout and "amounts.0: Input should be a valid integer" in out.stdout


def _readme_cli_lines():
    """The `snailjob` command lines of the README's `snailjob` block, without their comments, after
    its activation and `cd example` lines and before its closing `cd ..` (the test runs them from
    example/ with this interpreter)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split("### The `snailjob` command", 1)[1].split("```shell", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].split() for line in block.strip().splitlines()]
    assert lines[:2] == [[".", ".venv/bin/activate"], ["cd", "example"]], lines[:2]
    assert lines[-1] == ["cd", ".."], lines[-1]
    return lines[2:-1]


def test_the_readme_cli_examples_run():
    """Each line of the README's CLI block, run from example/ as written (through
    ``python -m snailjob``); check and run against an emulator."""
    import signal
    import time

    from snailjob.testing import ServerEmulator

    lines = _readme_cli_lines()
    assert [argv[:2] for argv in lines] == [["snailjob", "jobs"], ["snailjob", "try"], ["snailjob", "try"],
                                            ["snailjob", "check"], ["snailjob", "run"]]
    cwd = os.path.join(ROOT, "example")
    with ServerEmulator() as emulator:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")}
        env.update(emulator.client_env())
        env.update({"SNAIL_HOST_PORT": "0", "SNAIL_BIND_HOST": "127.0.0.1", "SNAIL_HEARTBEAT_INTERVAL": "0.5",
                    "SNAIL_SHUTDOWN_GRACE": "2", "PYTHONPATH": ROOT})
        outputs = []
        for argv in lines[:4]:
            out = subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0, (argv, out.stdout + out.stderr)
            outputs.append(out.stdout)
        assert "demoClusterJob" in outputs[0] and "demoMapReduceJob" in outputs[0]
        assert "outcome  SUCCESS" in outputs[1] and '{"echo":"hello"}' in outputs[1]
        assert "MERGE_REDUCE_TASK  SUCCESS  110" in outputs[2]
        assert "all ok" in outputs[3]
        node = subprocess.Popen([sys.executable, "-m", *lines[4]], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            emulator.wait_until(lambda: "demoClusterJob" in emulator.registered_executors, timeout=30)
            batch = emulator.trigger("demoClusterJob", args_str="from the README")
            assert batch.wait(30) == 3 and batch.tasks[0].result == '{"echo":"from the README"}'
        finally:
            node.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = node.wait(30)
        assert code == 0 and time.monotonic() - started < 30, node.stdout.read() if node.stdout else ""
