# mypy: allow-untyped-defs
"""Fixtures of the end-to-end suite (marker ``e2e``).

- Off unless ``SNAILJOB_E2E=1``: the suite's modules are not collected, and the run's summary
  says so in one line; an ``e2e`` test named on the command line is skipped with the reason.
- ``SNAILJOB_E2E_VERSIONS`` (default ``2.0.2,1.10.0``) lists the server versions; the
  session-scoped ``server`` fixture is parametrized by it, so each version gets one
  server (PostgreSQL + SnailJob, see harness.py) for the whole session.
  A version ``../shared/snailjob/server`` does not hold is skipped with a one-line
  reason; any other failure to start it is an error.
- ``nodes``: two client processes (``e2e_client.py``) per server, started once.
  Their output is captured in files; ``ClientProcess.output()`` reads it.
- On a failure the server's and PostgreSQL's logs are kept by the harness, and the
  client logs are copied next to them (the path is printed at the end).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.clients import CLIENT_PROGRAM, ClientProcess, client_env  # noqa: F401  (re-exported)

HERE = Path(__file__).resolve().parent
ENABLED = os.environ.get("SNAILJOB_E2E") == "1"
VERSIONS = [v.strip() for v in os.environ.get("SNAILJOB_E2E_VERSIONS", "2.0.2,1.10.0").split(",") if v.strip()]


NOTES: list = []  # (version, text): findings the tests report, printed at the end of the run
_OUTCOMES: dict = {}  # version -> {"passed": n, "failed": n, "skipped": n}
_WALL: dict = {}  # version -> seconds from its server's start to its stop


def note(version, text):
    """Keep a finding for the summary at the end of the run (pytest captures prints)."""
    NOTES.append((version, text))


def pytest_runtest_logreport(report):
    m = re.search(r"\[sj([0-9.]+)", report.nodeid)
    if not m:
        return
    counts = _OUTCOMES.setdefault(m.group(1), {"passed": 0, "failed": 0, "skipped": 0})
    if report.when == "call" or report.outcome != "passed":  # a test's result, or its set-up's skip or error
        counts[report.outcome] += 1


OFF = ("tests/e2e: the end-to-end suite against the real SnailJob server is off "
       "(SNAILJOB_E2E=1, or make e2e, runs it)")
if not ENABLED:
    collect_ignore_glob = ["test_*.py"]  # not imported: the suite is one line of the summary, not 92 skips


def pytest_terminal_summary(terminalreporter):
    # when off, tests/conftest.py prints OFF (this file is not loaded by pytest-xdist's controller)
    if not ENABLED or not _OUTCOMES:
        return
    terminalreporter.section("real SnailJob servers")
    for version, counts in _OUTCOMES.items():
        wall = f" in {_WALL[version]:.0f}s" if version in _WALL else ""
        terminalreporter.line(f"{version}: {counts['passed']} passed, {counts['failed']} failed, "
                              f"{counts['skipped']} skipped{wall}")
    for version, text in NOTES:
        terminalreporter.line(f"{version}: {text}")


def pytest_collection_modifyitems(config, items):
    if ENABLED:
        return
    skip = pytest.mark.skip(reason=OFF)
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)


class Run:
    """Per-server session state shared by the tests."""

    def __init__(self, srv, workdir: Path):
        self.srv = srv
        self.workdir = workdir
        self.markers = workdir / "markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.clients = []
        self.failed_before = 0

    def note(self, text):
        note(self.srv.version, text)

    def marker_lines(self, name, batch_id=None):
        path = self.markers / name
        if not path.is_file():
            return []
        lines = path.read_text().splitlines()
        if batch_id is not None:
            lines = [ln for ln in lines if ln.split(" ", 1)[0] == str(batch_id)]
        return lines

    def wait_marker(self, name, batch_id, count=1, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.marker_lines(name, batch_id)
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.2)

    def start_client(self, name, host=None, **overrides):
        """A client process; with ``host`` (netns.Host) it runs there, given only the server's
        address on that host's link: no SNAIL_HOST_IP, no SNAIL_BIND_HOST."""
        if host is not None:
            overrides = {"SNAIL_SERVER_HOST": host.gateway, "SNAIL_HOST_IP": None, "SNAIL_BIND_HOST": None,
                         **overrides}
        env = client_env(self.srv, name, self.markers, **overrides)
        client = ClientProcess(name, env, self.workdir, host)
        self.clients.append(client)
        return client.start()

    def start_online(self, name, host=None, timeout=60, **overrides):
        """start_client(), then wait until the server lists the node; fails with its output if not."""
        return self.wait_online(self.start_client(name, host, **overrides), timeout)

    def wait_online(self, client, timeout=60):
        try:
            self.srv.wait_node_online(client.address, group=client.env["SNAIL_GROUP_NAME"], timeout=timeout)
        except harness.HarnessError as exc:
            raise AssertionError(f"client {client.name} did not come online: {exc}\n"
                                 f"--- its output ---\n{client.output()[-4000:]}") from None
        return client

    def keep_client_logs(self, dest):
        dest = Path(dest) / "clients"
        dest.mkdir(parents=True, exist_ok=True)
        for client in self.clients:
            if client.log_path.is_file():
                shutil.copy2(client.log_path, dest / client.log_path.name)
        if self.markers.is_dir():
            shutil.copytree(self.markers, dest / "markers", dirs_exist_ok=True)
        return dest


@pytest.fixture(scope="session", params=VERSIONS, ids=[f"sj{v}" for v in VERSIONS])
def run(request, tmp_path_factory):
    """One real server (+ PostgreSQL) per version for the whole session."""
    version = request.param
    started = time.monotonic()
    srv = harness.RealServer(version, group="py_e2e_group")
    try:
        srv.start()
    except harness.ServerUnavailable as exc:
        srv.stop(failed=False)
        pytest.skip(str(exc))
    except BaseException:
        srv.stop(failed=True)
        raise
    state = Run(srv, tmp_path_factory.mktemp(f"e2e-{version}"))
    state.failed_before = request.session.testsfailed
    yield state
    failed = request.session.testsfailed > state.failed_before
    for client in state.clients:
        client.stop()
    srv.stop(failed=failed)
    _WALL[version] = time.monotonic() - started
    if failed and srv.kept_logs:
        kept = state.keep_client_logs(srv.kept_logs)
        print(f"\n[snailjob-e2e] client logs kept in {kept}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def nodes(run):
    """Two client processes of the group, online before the first test uses them."""
    started = [run.start_client("a"), run.start_client("b")]
    return [run.wait_online(client) for client in started]


@pytest.fixture
def srv(run, nodes):
    """The server, with both client nodes running (a test fails if one has died)."""
    for client in nodes:
        assert client.alive(), (f"client {client.name} exited with {client.proc.returncode}:\n"
                                f"{client.output()[-4000:]}")
    return run.srv
