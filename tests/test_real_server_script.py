"""scripts/real_server.py's own commands without a server: per-command help,
and `down` / `env` against recorded states (a stand-in `up` process)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "real_server.py"


def run(*args, cache, timeout=60):
    env = {**os.environ, "SNAILJOB_CACHE": str(cache)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def record(cache, pid, **extra):
    state_dir = cache / "real-server"
    state_dir.mkdir(parents=True, exist_ok=True)
    state = {"up_pid": pid, "version": "2.0.2", "server_pid": None, "http": "http://127.0.0.1:1/snail-job",
             "grpc_port": 2, "workdir": None, "pg_bindir": None, "pg_port": None,
             "env": {"SNAIL_SERVER_PORT": "2", "SNAIL_OPENAPI_URL": "http://127.0.0.1:1/snail-job",
                     "SNAIL_TOKEN": "SJ_x y"}, **extra}
    path = state_dir / f"{pid}.json"
    path.write_text(json.dumps(state))
    return path


def test_each_command_has_its_own_help(tmp_path):
    up = run("up", "--help", cache=tmp_path)
    assert up.returncode == 0
    assert up.stdout.startswith("usage: real_server.py up [-h] [--version VERSION]")
    assert "print the\nsettings as `export` lines" in up.stdout and "expiry" not in up.stdout
    stop = run("stop", "--help", cache=tmp_path)
    assert stop.stdout.startswith("usage: real_server.py down [-h] [--wait S]") and "Exit code 0" in stop.stdout
    top = run("--help", cache=tmp_path)
    assert "down (stop)" in top.stdout and "env" in top.stdout


def test_down_with_nothing_running_says_so_and_exits_0(tmp_path):
    done = run("down", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nothing to stop: no server started by `scripts/real_server.py up` is running")
    env = run("env", cache=tmp_path)
    assert env.returncode == 1 and "no server started by" in env.stderr


def test_env_prints_the_exports_and_down_stops_up(tmp_path):
    # a stand-in for `up`: its command line names the script, it exits on SIGTERM
    up = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "real_server.py", "up"])
    try:
        state = record(tmp_path, up.pid)
        env = run("env", cache=tmp_path)
        assert env.returncode == 0, env.stderr
        assert env.stdout.splitlines() == ["export SNAIL_SERVER_PORT=2",
                                           "export SNAIL_OPENAPI_URL=http://127.0.0.1:1/snail-job",
                                           "export SNAIL_TOKEN='SJ_x y'"]
        started = time.monotonic()
        done = run("stop", cache=tmp_path)
        assert done.returncode == 0, done.stderr
        what = f"SnailJob 2.0.2 (web http://127.0.0.1:1/snail-job, gRPC 127.0.0.1:2) started by `up` (pid {up.pid})"
        assert done.stdout.splitlines() == [f"stopping {what}", f"stopped {what}"]
        assert up.wait(5) != 0 and time.monotonic() - started < 30
        assert not state.exists()
    finally:
        up.kill()
        up.wait()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_down_cleans_up_after_an_up_that_is_gone(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    workdir = tmp_path / "snailjob-2.0.2-abc"
    (workdir / "server").mkdir(parents=True)
    state = record(tmp_path, gone.pid, workdir=str(workdir))
    done = run("down", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"stopped what was left of SnailJob 2.0.2 (web http://127.0.0.1:1/snail-job, "
                                        f"gRPC 127.0.0.1:2) started by `up` (pid {gone.pid})"]
    assert not state.exists() and not workdir.exists()
