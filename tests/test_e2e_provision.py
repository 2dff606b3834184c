"""The end-to-end harness's choice between skip and error, and its server cache
(tests/e2e/provision.py), without a server: a fake shared directory whose
fetch-server.sh records its calls."""

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.e2e import provision

SCRIPT = """#!/usr/bin/env bash
# a stand-in fetch-server.sh: logs its call; fails when FAIL_FETCH is set
echo "$@" >> "$(dirname "$0")/calls"
if [ -n "${FAIL_FETCH:-}" ]; then echo "[ERROR] Could not resolve dependencies" >&2; exit 3; fi
mkdir -p "$2/lib" && touch "$2/lib/snail-job-server-starter-$1.jar"
"""


@pytest.fixture
def shared(tmp_path, monkeypatch):
    root = tmp_path / "shared"
    server = root / "server"
    (server / "2.0.2").mkdir(parents=True)
    (server / "2.0.2" / "pom.xml").write_text("<project>2.0.2</project>")
    script = server / "fetch-server.sh"
    script.write_text(SCRIPT)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SNAILJOB_SHARED", str(root))
    monkeypatch.setenv("SNAILJOB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SNAILJOB_SERVER_JAR", raising=False)
    monkeypatch.delenv("FAIL_FETCH", raising=False)
    monkeypatch.setattr(provision, "ensure_tool", lambda binary, package: binary)
    return server


def calls(server: Path):
    path = server / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_a_version_the_shared_directory_does_not_hold_is_unavailable(shared):
    with pytest.raises(provision.ServerUnavailable) as caught:
        provision.fetch_server("1.9.0")
    assert str(caught.value) == f"SnailJob server 1.9.0 is not in {shared} (it holds: 2.0.2)"
    assert calls(shared) == []


def test_a_failing_layout_is_an_error_with_its_output(shared, monkeypatch):
    monkeypatch.setenv("FAIL_FETCH", "1")
    with pytest.raises(provision.HarnessError) as caught:
        provision.fetch_server("2.0.2")
    assert not isinstance(caught.value, provision.ServerUnavailable)  # an error, not a skip
    assert "fetch-server.sh 2.0.2 failed (exit 3" in str(caught.value)
    assert "Could not resolve dependencies" in str(caught.value)


def test_the_layout_is_cached_until_the_pom_changes(shared, tmp_path):
    launch, info = provision.fetch_server("2.0.2")
    dest = tmp_path / "cache" / "2.0.2"
    assert launch == ["-cp", f"{dest / 'lib'}/*", provision.MAIN_CLASS]
    assert info["route"].startswith("fetch-server.sh") and len(calls(shared)) == 1
    assert calls(shared)[0].startswith(f"2.0.2 {dest}")
    assert provision.fetch_server("2.0.2")[1]["route"] == f"cached {dest}"  # reused
    assert len(calls(shared)) == 1
    (shared / "2.0.2" / "pom.xml").write_text("<project>2.0.2, rebuilt</project>")
    stale = dest / "lib" / "old-library.jar"
    stale.write_text("")
    provision.fetch_server("2.0.2")
    assert len(calls(shared)) == 2 and not stale.exists()  # laid out afresh
    stamp = (dest / ".complete").read_text().strip()
    assert stamp == hashlib.sha256((shared / "2.0.2" / "pom.xml").read_bytes()).hexdigest()


def test_a_jar_given_by_hand_needs_no_shared_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("SNAILJOB_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SNAILJOB_SERVER_JAR", "server.jar")
    launch, info = provision.fetch_server("1.4.0")
    assert launch == ["-jar", os.path.abspath("server.jar")] and info["route"] == "SNAILJOB_SERVER_JAR"


def test_no_shared_directory_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("SNAILJOB_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.delenv("SNAILJOB_SERVER_JAR", raising=False)
    with pytest.raises(provision.ServerUnavailable, match="no SnailJob servers at"):
        provision.fetch_server("2.0.2")
