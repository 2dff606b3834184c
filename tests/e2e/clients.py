# mypy: allow-untyped-defs
"""Client node processes for the end-to-end suite and the real-server benchmark.

``ClientProcess`` runs a client program (``e2e_client.py`` unless told otherwise)
as its own process group, output in a file; ``client_env`` builds its
environment from the harness's ``SNAIL_*`` values plus the suite's settings.
No pytest here, so scripts can use it too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e import harness

HERE = Path(__file__).resolve().parent
CLIENT_PROGRAM = HERE / "e2e_client.py"


class ClientProcess:
    """One client program process (default ``e2e_client.py``); stdout and stderr go to ``log_path``."""

    def __init__(self, name, env, workdir: Path, host=None, program=CLIENT_PROGRAM):
        self.name = name
        self.program = Path(program)
        self.env = env
        self.host = host  # a netns.Host to run in, or None for this machine's loopback
        self.port = int(env["SNAIL_HOST_PORT"])
        ip = env.get("SNAIL_HOST_IP") or (host.address if host else "127.0.0.1")
        self.address = f"{ip}:{self.port}"  # what the server should list for this node
        self.workdir = workdir
        self.log_path = workdir / f"client-{name}.log"
        self.proc = None

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        cmd = [sys.executable, str(self.program)]
        # cwd = a scratch dir: client_main() reads the nearest .env upward from the working directory
        self.proc = subprocess.Popen(self.host.command(cmd) if self.host else cmd, env=self.env,
                                     cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        return self

    def kill(self, sig=signal.SIGKILL):
        """Send ``sig`` to the client's process group; SIGKILL waits for it to die."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            if sig == signal.SIGKILL:
                self.proc.wait(10)

    def output(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM (graceful stop), then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        return self.proc.returncode


def client_env(srv, name, marker_dir: Path, **overrides):
    """Environment of a client process: the harness' SNAIL_* values plus the suite's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")}
    env.update(srv.client_env(host_port=harness.free_port()))
    env.update({
        "SNAIL_BIND_HOST": "127.0.0.1", "SNAIL_HOST_IP": "127.0.0.1", "SNAIL_HEARTBEAT_INTERVAL": "2",
        "SNAIL_LOG_REMOTE_INTERVAL": "1", "SNAIL_SHUTDOWN_GRACE": "2", "SNAIL_HOST_ID": f"py-e2e-{name}",
        "SNAIL_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(harness.REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "E2E_MARKER_DIR": str(marker_dir), "E2E_NODE": name,
    })
    # extra client settings for experiments, e.g. SNAILJOB_E2E_CLIENT_ENV="SNAIL_RPC_TIMEOUT=30"
    for pair in filter(None, os.environ.get("SNAILJOB_E2E_CLIENT_ENV", "").split(",")):
        key, _, value = pair.partition("=")
        env[key.strip()] = value.strip()
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    for key in [k for k, v in overrides.items() if v is None]:  # None: leave the setting unset
        env.pop(key, None)
    return env
