# mypy: allow-untyped-defs
"""A newcomer's first hour (issue 25): the shell commands of README.md and of
docs/getting-started.md, read from the pages themselves, run in order as
written, each in a fresh copy of this checkout with a fresh virtual
environment, and each outcome asserted. The commands that need a server run
against the session's real 2.0.2 server.

Every command of those pages must be known here: a new one fails the test
until it is given a check (``CHECKS``). Three are not run, and say why:
``make test`` (it is CI's own next step, and would run this suite inside
itself), ``make docs`` (CI builds the same site with warnings as errors) and
``scripts/real_server.py up`` (the session's server stands in for it;
tests/test_real_server_script.py and tests/e2e/test_cli_real.py run the
script). Placeholders a reader replaces (``10.0.0.5``, ``SJ_...``, the group
``reports``) are replaced with the real server's values.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import BatchStatus, TaskType, free_port
from tests.e2e.test_real_server import describe, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
NOT_RUN = {
    "make test": "CI runs it as its next step; here it would run this suite inside itself",
    "make docs": "CI builds the same site with warnings as errors",
    "python scripts/real_server.py --version 2.0.2 up": "the session's real server stands in for it",
}


def shell_commands(page):
    """The commands of a page's ``shell`` blocks, comments and blank lines dropped."""
    text = (ROOT / page).read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```shell\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def copy_checkout(dest):
    """The checkout's tracked and untracked (not ignored) files, as a user's clone has them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


class Walk:
    """A reader's shell: a working directory, an activated venv or not, and exported variables."""

    def __init__(self, root, srv):
        self.root = self.cwd = root
        self.srv = srv
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SNAIL_", "VIRTUAL_ENV")) and k not in ("PYTHONPATH", "PYTHONHOME")}
        self.env["PATH"] = os.pathsep.join(p for p in self.env["PATH"].split(os.pathsep)
                                           if not p.startswith(str(Path(sys.prefix))))
        self.env["SNAIL_HOST_PORT"] = str(free_port())  # the default 17889 may be taken on this machine
        self.group, self.token = f"py_e2e_walk_{uid()}", "SJ_" + uid() * 4  # a group of its own
        srv.create_group(self.group, self.token)
        self.log = []

    def run(self, command, timeout=600):
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        self.log.append(f"$ {command}  [{proc.returncode}, {time.monotonic() - started:.1f}s]\n{out[-2000:]}")
        return proc.returncode, out

    def background(self, command):
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.cwd, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        return proc

    def activate(self):
        venv = self.root / ".venv"
        assert (venv / "bin" / "activate").is_file(), "no .venv to activate"
        self.env["VIRTUAL_ENV"] = str(venv)
        self.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{self.env['PATH']}"

    def server_settings(self):
        """What a reader writes into .env or exports: the real server's values."""
        env = self.srv.client_env(host_port=int(self.env["SNAIL_HOST_PORT"]), group=self.group, token=self.token)
        return {k: v for k, v in env.items() if k != "SNAIL_HOST_IP"}

    def serve_and_run_a_job(self, command, expect_log):
        """Start a node with ``command``; it comes online, runs a cluster job, stops on SIGTERM."""
        proc = self.background(command)
        address = f"127.0.0.1:{self.env['SNAIL_HOST_PORT']}"
        try:
            # `snailjob check` just before left a node at the same address in the list (label
            # state:check, no executors, no job routed to it): wait for this node's executors
            deadline = time.monotonic() + 60
            while "demoClusterJob" not in self.srv.executor_names(self.group):
                assert time.monotonic() < deadline and proc.poll() is None, "the node never registered"
                time.sleep(0.5)
            self.srv.wait_node_online(address, group=self.group, timeout=60)
            job_id = self.srv.create_job(f"walk-{uid()}", "demoClusterJob", TaskType.CLUSTER, group=self.group,
                                         args_str="walked")
            batch = self.srv.trigger_job(job_id)
            status = int(self.srv.wait_batch(batch, timeout=60)["taskBatchStatus"])
            assert status == BatchStatus.SUCCESS, describe(self.srv, batch)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        self.log.append(f"$ {command}  [{proc.returncode}]\n{out[-3000:]}")
        assert proc.returncode == 0, out[-3000:]
        for text in expect_log:
            assert text in out, (text, out[-3000:])
        return out

    def node_without_server(self, command):
        """``snailjob run`` before any settings: it serves, says the server is unreachable and
        what to do, and stops on SIGTERM with exit 0."""
        proc = self.background(command)
        time.sleep(4)
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        self.log.append(f"$ {command}  [{proc.returncode}]\n{out[-3000:]}")
        assert proc.returncode == 0, out
        assert "listening on" in out and "unreachable" in out and "fix:" in out, out


def check_make_examples(walk, command):
    code, out = walk.run(command, timeout=900)
    assert code == 0, out[-4000:]
    assert "SUCCESS" in out and "(intended)" in out, out[-4000:]
    assert (walk.root / ".venv" / "bin" / "snailjob").is_file()


def check_cd(walk, command):
    walk.cwd = (walk.cwd / command.split(maxsplit=1)[1]).resolve()


def check_activate(walk, command):
    walk.activate()


def check_jobs(walk, command):
    code, out = walk.run(command)
    assert code == 0 and "demoClusterJob" in out and "demoMapReduceJob" in out, out


def check_try(walk, command):
    code, out = walk.run(command)
    assert code == 0 and "SUCCESS" in out, out
    if "--params hello" in command:
        assert '{"echo":"hello"}' in out, out


def check_check(walk, command):
    code, out = walk.run(command, timeout=120)
    if "SNAIL_SERVER_HOST" in walk.env:  # settings given: every line is ok
        assert code == 0, out
        assert "FAIL" not in out, out
    else:  # before any settings: it says what to fix
        assert code != 0 and "fix:" in out, out


def check_run_jobs(walk, command):
    if "SNAIL_SERVER_HOST" in walk.env:
        walk.serve_and_run_a_job(command, ["registered executors", "demoClusterJob"])
    else:
        walk.node_without_server(command)


def check_pip_install(walk, command):
    code, out = walk.run(command, timeout=600)
    assert code == 0, out[-3000:]
    code, out = walk.run("python -c 'import snailjob, sys; print(snailjob.__version__, snailjob.__file__)'")
    assert code == 0 and out.startswith("0.2") and str(walk.root) in out, out


def check_cp_env(walk, command):
    code, out = walk.run(command)
    assert code == 0, out
    target = walk.cwd / command.split()[-1]
    text = target.read_text()
    for key, value in walk.server_settings().items():  # what the comment asks the reader to set
        text, found = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        if not found:
            text += f"\n{key}={value}\n"
    target.write_text(text)


def check_main_py(walk, command):
    where, _, program = command.partition("&&")
    check_cd(walk, where.strip())
    env_file = walk.root / ".env"
    walk.serve_and_run_a_job(program.strip(), [f"settings from {env_file}", "registered executors"])


def check_venv(walk, command):
    code, out = walk.run(command.split("&&")[0])
    assert code == 0, out
    walk.activate()


def check_export(walk, command):
    values = walk.server_settings()
    for name in shlex.split(command)[1:]:
        key = name.split("=", 1)[0]
        assert key in values, f"the page exports {key}, which the walkthrough cannot fill in"
        walk.env[key] = values[key]
    walk.env.update(values)  # the port, the namespace: the page's server uses the defaults


def check_build(walk, command):
    code, out = walk.run(command, timeout=600)
    assert code == 0, out[-3000:]
    assert list((walk.root / "dist").glob("snail_job_python-0.2.0-py3-none-any.whl")), out[-2000:]


def check_uv(walk, command):
    if shutil.which("uv", path=walk.env["PATH"]) is None:
        code, out = walk.run("pip install uv")
        assert code == 0, out
    code, out = walk.run(command, timeout=600)
    assert code == 0 and "usage: snailjob" in out, out[-3000:]


CHECKS = [
    (r"make examples$", check_make_examples),
    (r"\. \.venv/bin/activate$", check_activate),
    (r"cd \S+$", check_cd),
    (r"snailjob jobs ", check_jobs),
    (r"snailjob try ", check_try),
    (r"snailjob check$", check_check),
    (r"snailjob run jobs$", check_run_jobs),
    (r"pip install (-e \.|dist/\S+\.whl)$", check_pip_install),
    (r"cp \.env\.example \.env$", check_cp_env),
    (r"cd example && python main\.py$", check_main_py),
    (r"python3 -m venv \.venv && \. \.venv/bin/activate$", check_venv),
    (r"export SNAIL_", check_export),
    (r"pip install build && python -m build$", check_build),
    (r"uv run .*snailjob --help$", check_uv),
]


def walk_through(page, srv, tmp_path):
    root = copy_checkout(tmp_path / "checkout")
    walk = Walk(root, srv)
    done = []
    try:
        for command in shell_commands(page):
            if command in NOT_RUN:
                done.append(f"{command}: not run ({NOT_RUN[command]})")
                continue
            check = next((fn for pattern, fn in CHECKS if re.match(pattern, command)), None)
            assert check is not None, f"{page}: no check for {command!r}; add one to CHECKS"
            check(walk, command)
            done.append(command)
    except BaseException:
        print("\n\n".join(walk.log[-6:]))
        raise
    return done


@pytest.fixture
def only_202(run):
    if run.srv.version != "2.0.2":
        pytest.skip("the walkthrough runs once, against 2.0.2")


def test_the_readme_as_written(only_202, srv, run, tmp_path):
    done = walk_through("README.md", srv, tmp_path)
    assert any(c.startswith("cd example && python main.py") for c in done), done
    run.note(f"README walkthrough: {len(done)} commands in order; " + "; ".join(d for d in done if "not run" in d))


def test_the_getting_started_page_as_written(only_202, srv, run, tmp_path):
    done = walk_through("docs/getting-started.md", srv, tmp_path)
    assert "snailjob run jobs" in done and "snailjob check" in done, done
    run.note(f"getting-started walkthrough: {len(done)} commands in order")
