"""SnailJob's Go client as a benchmark peer: fetch, patch, build and start it.

The program is our own ``benchmarks/go/main.go``: the Go client library
(``github.com/open-snail/snail-job-go``, pinned to v0.0.3, commit
``44f07b0``) with the executors ``bench``, ``benchMap`` and ``benchMR``,
configured from the ``SNAIL_*`` environment the load generator gives every
client. The library as published dies under sustained dispatch (a
concurrent map write in its executor cache) and drops ``jobParams``;
``benchmarks/go/snail-job-go-v0.0.3.patch`` is the smallest fix for both
and says why. Everything is built under ``benchmarks/.go-build/``
(git-ignored), once, and again when an input changes::

    from go_peer import GoUnavailable, unavailable, build, start

    reason = unavailable()            # None when it can be built and run here
    binary = build()                  # raises GoUnavailable
    proc = start(env, log_path)       # proc.pid is the Go program's

The source is fetched once into ``.go-build/src-v0.0.3/``: first from the Go
module proxy (``go mod download``, checked against the checksum database),
else from a git repository, ``BENCH_GO_CLIENT_GIT`` (default: the GitHub
repository), whose tag ``v0.0.3`` must be the pinned commit. The library's
own dependencies (gRPC-Go, logrus, protobuf) come from the module proxy at
the versions of our ``go.sum``. The build needs ``go`` 1.22.7 or later
(``BENCH_GO``, default ``go`` on ``PATH``; ``GOTOOLCHAIN=local``: no other
toolchain is downloaded) and ``patch``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional

BENCH_DIR = Path(__file__).resolve().parent
GO_DIR = BENCH_DIR / "go"
"""Our Go program: ``main.go``, ``go.mod`` (whose ``replace`` points at ``PATCHED``), ``go.sum``, the patch."""
BUILD_ROOT = BENCH_DIR / ".go-build"
MODULE = "github.com/open-snail/snail-job-go"
VERSION = "v0.0.3"
COMMIT = "44f07b050c1dc9cb8be49f9aaf2e64b9bb8c76f0"
DEFAULT_GIT = "https://github.com/open-snail/snail-job-go.git"
PATCH = GO_DIR / f"snail-job-go-{VERSION}.patch"
SOURCE = BUILD_ROOT / f"src-{VERSION}"
"""The pristine upstream source, fetched once."""
PATCHED = BUILD_ROOT / "snail-job-go"
"""The patched copy the build uses (recreated at each build)."""
BINARY = BUILD_ROOT / "sj-go-echo-client"
MIN_GO = (1, 22, 7)
"""The library's ``go.mod`` asks for go 1.22.7."""
LABEL = f"{VERSION} + local fix"
ENV_KEYS = ("SNAIL_SERVER_HOST", "SNAIL_SERVER_PORT", "SNAIL_NAMESPACE", "SNAIL_GROUP_NAME", "SNAIL_TOKEN",
            "SNAIL_HOST_IP", "SNAIL_HOST_PORT")
"""What ``start`` needs in its environment (``main.go`` reads them; ``SNAIL_LOG_LEVEL`` too)."""
FETCH_TIMEOUT = 300
BUILD_TIMEOUT = 600


class GoUnavailable(Exception):
    """The Go client cannot be fetched, built or run here; the message says why."""


def go_binary() -> Optional[str]:
    """The ``go`` executable (``BENCH_GO`` or ``go`` on ``PATH``), or None."""
    configured = os.environ.get("BENCH_GO")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("go")


_GO_VERSIONS: Dict[str, Optional[str]] = {}


def go_version(binary: str) -> Optional[str]:
    """``go version``'s release, e.g. ``go1.26.8`` (cached), or None."""
    if binary not in _GO_VERSIONS:
        try:
            done = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=60,
                                  env=go_env())
            match = re.search(r"\bgo(\d+\.\d+(?:\.\d+)?)\S*", done.stdout)
            _GO_VERSIONS[binary] = match.group(0) if match and done.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            _GO_VERSIONS[binary] = None
    return _GO_VERSIONS[binary]


def _release(version: str) -> tuple:
    numbers = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(n or 0) for n in numbers.groups()) if numbers else (0,)


def go_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of every ``go`` command: this toolchain only, no workspace, modules read-only."""
    env = dict(os.environ)
    env.update({"GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"})
    env.update(extra or {})
    return env


def _make_writable(root: Path) -> None:
    """The module cache's files are read-only; the copies must not be."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def _from_proxy(binary: str, into: Path) -> str:
    """Fetch the pinned version through the Go module proxy; raises GoUnavailable."""
    with tempfile.TemporaryDirectory(prefix="sj-go-fetch-") as tmp:
        try:
            done = subprocess.run([binary, "mod", "download", "-json", f"{MODULE}@{VERSION}"], cwd=tmp,
                                  capture_output=True, text=True, timeout=FETCH_TIMEOUT,
                                  env=go_env({"GOFLAGS": "-mod=mod"}))
        except (OSError, subprocess.SubprocessError) as exc:
            raise GoUnavailable(f"go mod download did not finish: {exc}") from None
        try:
            info = json.loads(done.stdout)
        except ValueError:
            raise GoUnavailable(f"go mod download failed: {(done.stderr or done.stdout).strip()[-300:]}") from None
        if info.get("Error") or not info.get("Dir"):
            error = " ".join(str(info.get("Error") or "no Dir").split())  # one line: it is printed as a reason
            raise GoUnavailable(f"go mod download: {error[:300]}")
        shutil.copytree(info["Dir"], into)
    proxy = os.environ.get("GOPROXY") or "the default GOPROXY"
    return f"Go module proxy ({proxy}), {MODULE}@{VERSION}"


def _from_git(url: str, into: Path) -> str:
    """Fetch tag ``VERSION`` from a git repository and check it is ``COMMIT``; raises GoUnavailable."""
    if shutil.which("git") is None:
        raise GoUnavailable("git is not on PATH")
    with tempfile.TemporaryDirectory(prefix="sj-go-git-") as tmp:
        def git(*args: str) -> str:
            done = subprocess.run(["git", "-C", tmp, *args], capture_output=True, text=True, timeout=FETCH_TIMEOUT)
            if done.returncode != 0:
                raise GoUnavailable(f"git {args[0]} from {url}: {' '.join(done.stderr.split())[-300:]}")
            return done.stdout.strip()

        try:
            git("init", "-q")
            git("fetch", "-q", "--depth", "1", url, f"refs/tags/{VERSION}")
            commit = git("rev-parse", "FETCH_HEAD^{commit}")
            if commit != COMMIT:
                raise GoUnavailable(f"tag {VERSION} at {url} is {commit}, not the pinned {COMMIT}")
            into.mkdir(parents=True)
            archive = subprocess.Popen(["git", "-C", tmp, "archive", "--format=tar", COMMIT],
                                       stdout=subprocess.PIPE)
            assert archive.stdout is not None
            with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8-3.11 security releases
                    tar.extractall(into, filter="data")
                else:
                    tar.extractall(into)  # our own git archive of the pinned commit
            if archive.wait(FETCH_TIMEOUT) != 0:
                raise GoUnavailable(f"git archive of {COMMIT} failed")
        except (OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
            raise GoUnavailable(f"git fetch from {url} failed: {exc}") from None
    return f"git {url}, tag {VERSION} = {COMMIT}"


def fetch_source() -> Path:
    """The pristine pinned source (fetched once into ``SOURCE``); raises GoUnavailable."""
    marker = SOURCE / ".fetched.json"
    if marker.is_file():
        return SOURCE
    binary = go_binary()
    if binary is None:
        raise GoUnavailable("go is not on PATH (set BENCH_GO)")
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    reasons: List[str] = []
    url = os.environ.get("BENCH_GO_CLIENT_GIT") or DEFAULT_GIT
    for attempt in (lambda into: _from_proxy(binary, into), lambda into: _from_git(url, into)):
        shutil.rmtree(SOURCE, ignore_errors=True)
        try:
            origin = attempt(SOURCE)
        except GoUnavailable as exc:
            reasons.append(str(exc))
            continue
        _make_writable(SOURCE)
        marker.write_text(json.dumps({"module": MODULE, "version": VERSION, "commit": COMMIT, "origin": origin}))
        return SOURCE
    shutil.rmtree(SOURCE, ignore_errors=True)
    raise GoUnavailable(f"cannot fetch {MODULE}@{VERSION}: " + "; ".join(reasons)
                        + " (set BENCH_GO_CLIENT_GIT to a clone that has the tag)")


def source_origin() -> Optional[str]:
    """Where the fetched source came from, or None before the first fetch."""
    try:
        return str(json.loads((SOURCE / ".fetched.json").read_text())["origin"])
    except (OSError, ValueError, KeyError):
        return None


def unavailable() -> Optional[str]:
    """Why the Go client cannot be built or run here, or None.

    Checks ``go`` (present, recent enough) and ``patch`` and fetches the
    pinned source if it is not cached yet (a few seconds, once).
    """
    binary = go_binary()
    if binary is None:
        return "go is not on PATH (set BENCH_GO)"
    version = go_version(binary)
    if version is None:
        return f"{binary} version did not answer"
    if _release(version) < MIN_GO:
        return f"the Go client {VERSION} needs go {'.'.join(map(str, MIN_GO))} or later; {binary} is {version}"
    if _cached_binary() is not None:
        return None
    if shutil.which("patch") is None:
        return "patch is not on PATH"
    try:
        fetch_source()
    except GoUnavailable as exc:
        return str(exc)
    return None


def _fingerprint() -> str:
    """Hash of everything a build depends on: our program, the patch, the pin, the toolchain."""
    digest = hashlib.sha256()
    for path in sorted(p for p in GO_DIR.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    binary = go_binary()
    digest.update(f"{COMMIT} {binary} {go_version(binary) if binary else None}".encode())
    return digest.hexdigest()


def _cached_binary() -> Optional[Path]:
    """The built program when it is up to date with its inputs."""
    try:
        if BINARY.is_file() and (BUILD_ROOT / "build.sha256").read_text().strip() == _fingerprint():
            return BINARY
    except OSError:
        pass
    return None


def apply_patch(source: Path, into: Path) -> None:
    """Copy ``source`` to ``into`` and apply ``PATCH`` there; raises GoUnavailable when it does not apply."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(source, into, ignore=shutil.ignore_patterns(".fetched.json"))
    _make_writable(into)
    try:
        done = subprocess.run(["patch", "-p1", "--batch", "--forward", "-d", str(into), "-i", str(PATCH)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GoUnavailable(f"patch did not run: {exc}") from None
    if done.returncode != 0:
        raise GoUnavailable(f"{PATCH.name} does not apply to {MODULE}@{VERSION}: {done.stdout.strip()[-300:]}")


def build() -> Path:
    """Build the Go program once (cached until an input changes); its path. Raises GoUnavailable."""
    reason = unavailable()
    if reason:
        raise GoUnavailable(reason)
    cached = _cached_binary()
    if cached is not None:
        return cached
    binary = go_binary()
    assert binary is not None
    fingerprint = _fingerprint()
    (BUILD_ROOT / "build.sha256").unlink(missing_ok=True)
    apply_patch(fetch_source(), PATCHED)
    log = BUILD_ROOT / "build.log"
    ident = f"{MODULE} {VERSION} ({COMMIT[:7]}) + {PATCH.name}"
    cmd = [binary, "build", "-trimpath", "-ldflags", f"-X 'main.upstream={ident}'", "-o", str(BINARY), "."]
    try:
        with open(log, "wb") as out:
            done = subprocess.run(cmd, cwd=str(GO_DIR), env=go_env(), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise GoUnavailable(f"the Go client build took over {BUILD_TIMEOUT} s; see {log}") from None
    except OSError as exc:
        raise GoUnavailable(f"the Go client build did not start: {exc}") from None
    if done.returncode != 0 or not BINARY.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise GoUnavailable(f"the Go client build failed (exit {done.returncode}; {log}):\n{tail}")
    (BUILD_ROOT / "build.sha256").write_text(fingerprint + "\n")
    return BINARY


def _die_with_parent() -> None:
    """``preexec_fn``: SIGTERM to the Go program when the process that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start(env: Mapping[str, str], log_path: Path, *, die_with_parent: bool = False,
          cwd: Optional[Path] = None) -> subprocess.Popen[bytes]:
    """Start the Go program (building it first if needed) with ``env`` as its
    whole environment, which must hold ``ENV_KEYS``; output to ``log_path``."""
    missing = [k for k in ENV_KEYS if not env.get(k)]
    if missing:
        raise ValueError(f"start() needs {', '.join(missing)} in env")
    binary = build()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([str(binary)], env=dict(env), cwd=str(cwd or log_path.parent),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if die_with_parent else None)


if __name__ == "__main__":  # fetch and build: python benchmarks/go_peer.py
    import sys
    import time

    why = unavailable()
    if why:
        print(f"Go client unavailable: {why}")
        sys.exit(1)
    t0 = time.perf_counter()
    try:
        print(f"{build()} ({time.perf_counter() - t0:.1f} s; source: {source_origin()})")
    except GoUnavailable as exc:
        print(exc)
        sys.exit(1)
