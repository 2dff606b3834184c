"""The Go client column of the benchmarks (``benchmarks/go_peer.py``).

The reason checks need nothing.  The patch and end-to-end checks need ``go``
and the pinned upstream source already fetched into
``benchmarks/.go-build/`` (``python benchmarks/go_peer.py`` does that once,
from the Go module proxy or ``BENCH_GO_CLIENT_GIT``); they skip otherwise,
so a test run never goes to the network for it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import go_peer  # noqa: E402

# the build writes into benchmarks/.go-build/: one worker for all of these
pytestmark = pytest.mark.xdist_group(name="go_peer")


def _source_fetched() -> bool:
    return (go_peer.SOURCE / ".fetched.json").is_file()


needs_source = pytest.mark.skipif(not _source_fetched() or go_peer.go_binary() is None,
                                  reason="go or the pinned snail-job-go source is not here "
                                         "(python benchmarks/go_peer.py fetches it)")


@pytest.fixture
def no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """go_peer with an empty build folder, so nothing cached hides a missing tool."""
    root = tmp_path / "build"
    monkeypatch.setattr(go_peer, "BUILD_ROOT", root)
    monkeypatch.setattr(go_peer, "SOURCE", root / "src")
    monkeypatch.setattr(go_peer, "BINARY", root / "bin")
    monkeypatch.setattr(go_peer, "_GO_VERSIONS", {})
    return root


def test_reason_when_go_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_cache: Path) -> None:
    monkeypatch.delenv("BENCH_GO", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no go
    reason = go_peer.unavailable()
    assert reason is not None and "go is not on PATH" in reason
    with pytest.raises(go_peer.GoUnavailable, match="go is not on PATH"):
        go_peer.build()


def test_reason_when_go_is_too_old(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_cache: Path) -> None:
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho 'go version go1.21.5 linux/amd64'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("BENCH_GO", str(fake))
    reason = go_peer.unavailable()
    assert reason is not None and "1.22.7" in reason and "go1.21.5" in reason


def test_reason_names_both_sources_when_nothing_can_be_fetched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               no_cache: Path) -> None:
    if go_peer.go_binary() is None or shutil.which("git") is None:
        pytest.skip("needs go and git")
    monkeypatch.setenv("GOPROXY", "off")  # no network: the proxy answers at once that it is off
    monkeypatch.setenv("BENCH_GO_CLIENT_GIT", str(tmp_path / "no-such-repo"))
    reason = go_peer.unavailable()
    assert reason is not None
    assert "go mod download" in reason and "no-such-repo" in reason and "\n" not in reason
    assert not go_peer.SOURCE.exists()


@needs_source
def test_fetch_through_a_module_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The proxy path, against a file:// proxy made of the fetched source
    (the public proxy refuses this module on the benchmark machine)."""
    pristine = go_peer.SOURCE
    proxy = tmp_path / "proxy" / go_peer.MODULE / "@v"
    proxy.mkdir(parents=True)
    (proxy / f"{go_peer.VERSION}.info").write_text(json.dumps({"Version": go_peer.VERSION,
                                                               "Time": "2024-11-30T00:00:00Z"}))
    (proxy / f"{go_peer.VERSION}.mod").write_bytes((pristine / "go.mod").read_bytes())
    with zipfile.ZipFile(proxy / f"{go_peer.VERSION}.zip", "w") as archive:
        for path in sorted(p for p in pristine.rglob("*") if p.is_file() and p.name != ".fetched.json"):
            archive.write(path, f"{go_peer.MODULE}@{go_peer.VERSION}/{path.relative_to(pristine)}")
    root = tmp_path / "build"
    monkeypatch.setattr(go_peer, "BUILD_ROOT", root)
    monkeypatch.setattr(go_peer, "SOURCE", root / "src")
    monkeypatch.setenv("GOPROXY", f"file://{tmp_path / 'proxy'}")
    monkeypatch.setenv("GONOSUMDB", go_peer.MODULE)  # our home-made zip is not in the checksum database
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv("BENCH_GO_CLIENT_GIT", str(tmp_path / "no-such-repo"))  # so only the proxy can succeed
    try:
        assert go_peer.fetch_source() == root / "src"
        origin = go_peer.source_origin()
        assert origin is not None and "module proxy" in origin and "file://" in origin
        assert (root / "src" / "dto" / "dto.go").read_bytes() == (pristine / "dto" / "dto.go").read_bytes()
        go_peer.apply_patch(root / "src", tmp_path / "patched")  # the copy from the read-only cache is writable
    finally:  # the module cache is read-only: make it removable
        for path in (tmp_path / "modcache").rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)


@needs_source
def test_patch_applies_to_the_pinned_source(tmp_path: Path) -> None:
    go_peer.apply_patch(go_peer.SOURCE, tmp_path / "patched")
    cache = (tmp_path / "patched" / "job" / "executor_cache.go").read_text()
    assert "mu *sync.Mutex" in cache and "receiver.mu.Lock()" in cache
    assert "execCache.mu.Lock()" in (tmp_path / "patched" / "job" / "base_job_executor.go").read_text()
    assert "execCache.mu.Lock()" in (tmp_path / "patched" / "job" / "dispatcher.go").read_text()
    assert '`json:"jobParams"`' in (tmp_path / "patched" / "dto" / "dto.go").read_text()
    # the pristine copy is untouched, so the next build starts from the published code
    assert '`json:"job_params"`' in (go_peer.SOURCE / "dto" / "dto.go").read_text()


@needs_source
def test_the_go_client_echoes_params_survives_load_and_maps(tmp_path: Path) -> None:
    """Against the load generator: the echo result carries jobParams (lost
    without the patch), 600 cluster tasks at K=16 all report and the process
    lives on (the published code dies of a concurrent map write), a sharding
    batch is stopped, and a 600-item fan-out needs two map calls."""
    import loadgen

    if go_peer.unavailable() is not None:
        pytest.skip(str(go_peer.unavailable()))
    go_peer.build()

    async def scenario() -> None:
        lg = loadgen.LoadGen("go", sys.executable, "WARNING", "default", tmp_path)
        await lg.start_server()
        try:
            lg.start_client()
            assert lg.proc is not None
            await lg.wait_ready(30.0)
            fields = dict(loadgen.BATCH_TYPES["CLUSTER"]["tasks"][0], argsStr=json.dumps({"jobParams": "hello"}))
            outcome = await lg.run_task(next(lg.ids), fields)
            assert outcome.error is None, outcome.error
            assert outcome.report is not None and outcome.report["executeResult"]["result"] == {"params": "hello"}
            cluster = loadgen.BATCH_TYPES["CLUSTER"]["tasks"]
            run = await lg.closed_loop(16, 600, 30.0, lambda: cluster, False)
            assert run["errors"] == {} and run["tasks"] == 600
            sharding = loadgen.BATCH_TYPES["SHARDING"]["tasks"]
            run = await lg.closed_loop(4, 20, 30.0, lambda: list(sharding), True)
            assert run["errors"] == {} and run["tasks"] == 40 and lg.counters["stop_failures"] == 0
            mapped = await lg.phase_map({"reps": 1, "children": 600, "k": 16, "timeout": 30})
            (rep,) = mapped["runs"]
            assert rep["root_error"] is None and rep["announced"] == 600 and rep["map_reports"] == 2
            assert rep.get("all_reported_s") is not None and rep["children_failed"] == 0
            assert lg.proc.poll() is None, (tmp_path / "client.log").read_text()[-2000:]
            assert json.loads((tmp_path / "ident.json").read_text())["snail-job-go"].startswith(go_peer.MODULE)
        finally:
            lg.stop_client()
            if lg.channel is not None:
                await lg.channel.close()
            if lg.server is not None:
                await lg.server.stop(0)

    asyncio.run(asyncio.wait_for(scenario(), 90))
