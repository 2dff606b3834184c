"""SnailJob's own Java client as a benchmark peer: build and start it.

The application is the minimal Spring Boot echo client of
``shared/snailjob/java-client`` (one executor, ``echoExecutor``) plus our
map job ``benchMap`` (``benchmarks/java/BenchMap.java``). It is built with
Maven in a copy of that folder under ``benchmarks/.java-build/<version>/``
(git-ignored), once, and rebuilt when its sources, pom or ``BenchMap.java``
change::

    from java_peer import JavaUnavailable, unavailable, build_jar, start

    reason = unavailable("2.0.2")          # None when it can be built and run here
    jar = build_jar("2.0.2")               # raises JavaUnavailable
    proc = start("2.0.2", env, log_path)   # proc.pid is the JVM's

Versions: ``1.10.0`` (Spring Boot 3.5, Java 17 or later: ``java`` on
``PATH``) and ``2.0.2`` (Spring Boot 4, Java 21 or later: the JDK at
``BENCH_JAVA202_HOME``, default ``/usr/lib/jvm/temurin-25-jdk-amd64``).
The source folder is ``BENCH_JAVA_CLIENT_DIR`` (default
``shared/snailjob/java-client`` next to the checkout); its poms take the
``com.aizuda`` jars from the local Maven repository ``../server/m2``.

What a harness must know about the Java client: it accepts only dispatches
with ``executorType`` 1 and a non-null ``jobBizId``, polls
``/sync/version`` about once a minute with a null body, and takes a few
seconds (JVM and Spring start) before its first ``/beat``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
BUILD_ROOT = BENCH_DIR / ".java-build"
BENCH_MAP_SOURCE = BENCH_DIR / "java" / "BenchMap.java"
JAR_NAME = "sj-java-echo-client.jar"
ENV_KEYS = ("SNAIL_SERVER_HOST", "SNAIL_SERVER_PORT", "SNAIL_NAMESPACE", "SNAIL_GROUP_NAME", "SNAIL_TOKEN",
            "SNAIL_HOST_IP", "SNAIL_HOST_PORT")
"""What ``start`` needs in its environment (mapped to Spring properties, as ``launch.sh`` does)."""

# version -> pom file name, minimum Java release, where its JDK is (None: ``java`` on PATH), extra Maven args
VERSIONS: Dict[str, Dict[str, object]] = {
    "1.10.0": {"pom": "pom.xml", "java": 17, "home_env": "BENCH_JAVA110_HOME", "home": None, "mvn_args": ()},
    "2.0.2": {"pom": "pom-2.x.xml", "java": 21, "home_env": "BENCH_JAVA202_HOME",
              "home": "/usr/lib/jvm/temurin-25-jdk-amd64", "mvn_args": ("-Dmaven.compiler.proc=full",)},
}
BUILD_TIMEOUT = 900


class JavaUnavailable(Exception):
    """The Java client of a version cannot be built or run here; the message says why."""


def source_dir() -> Path:
    """The Java client's source folder (read only: it is copied to build)."""
    env = os.environ.get("BENCH_JAVA_CLIENT_DIR")
    if env:
        return Path(env)
    return BENCH_DIR.parent.parent / "shared" / "snailjob" / "java-client"


def _spec(version: str) -> Dict[str, object]:
    try:
        return VERSIONS[version]
    except KeyError:
        raise JavaUnavailable(f"unknown Java client version {version!r} (known: {', '.join(VERSIONS)})") from None


def java_home(version: str) -> Optional[Path]:
    """The JDK for ``version``; None means the ``java`` on ``PATH``."""
    spec = _spec(version)
    home = os.environ.get(str(spec["home_env"])) or spec["home"]
    return Path(str(home)) if home else None


def java_binary(version: str) -> Optional[str]:
    """The ``java`` executable for ``version``, or None when there is none."""
    home = java_home(version)
    if home is None:
        return shutil.which("java")
    binary = home / "bin" / "java"
    return str(binary) if os.access(binary, os.X_OK) else None


_RELEASES: Dict[str, Optional[int]] = {}


def _java_release(binary: str) -> Optional[int]:
    """The feature release of a ``java`` binary (17, 21, 25...), cached."""
    if binary not in _RELEASES:
        try:
            done = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=30)
            match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
            release = int(match.group(1)) if match else None
            if release == 1 and match and match.group(2):  # "1.8.0" style
                release = int(match.group(2))
        except (OSError, subprocess.SubprocessError):
            release = None
        _RELEASES[binary] = release
    return _RELEASES[binary]


def build_dir(version: str) -> Path:
    """Where ``version`` is copied and built."""
    _spec(version)
    return BUILD_ROOT / version


def _fingerprint(version: str) -> str:
    """Hash of everything a build depends on (sources, pom, BenchMap.java, JDK path)."""
    src = source_dir()
    digest = hashlib.sha256()
    files = sorted(p for p in src.rglob("*") if p.is_file() and "target" not in p.relative_to(src).parts)
    files.append(BENCH_MAP_SOURCE)
    for path in files:
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    digest.update(str(java_home(version)).encode())
    return digest.hexdigest()


def _cached_jar(version: str) -> Optional[Path]:
    """The built jar when it is up to date with the sources."""
    work = build_dir(version)
    jar = work / "target" / JAR_NAME
    stamp = work / "build.sha256"
    try:
        if jar.is_file() and stamp.read_text().strip() == _fingerprint(version):
            return jar
    except OSError:
        pass
    return None


def unavailable(version: str) -> Optional[str]:
    """Why the Java client ``version`` cannot be built or run here, or None.

    Cheap checks only: the version is known, the source folder and its Maven
    repository exist, Maven is on ``PATH`` (unless an up-to-date jar is
    already built), the JDK exists and is recent enough.
    """
    try:
        spec = _spec(version)
    except JavaUnavailable as exc:
        return str(exc)
    src = source_dir()
    if not (src / str(spec["pom"])).is_file():
        return f"no Java client sources: {src / str(spec['pom'])} is missing (set BENCH_JAVA_CLIENT_DIR)"
    binary = java_binary(version)
    if binary is None:
        home = java_home(version)
        where = f"{home}/bin/java" if home else "java on PATH"
        return f"no JDK for the Java client {version}: {where} not found (set {spec['home_env']})"
    release = _java_release(binary)
    if release is None or release < int(str(spec["java"])):
        return f"the Java client {version} needs Java {spec['java']} or later; {binary} is {release or 'unknown'}"
    if _cached_jar(version) is None:
        if shutil.which("mvn") is None:
            return "mvn (Maven) is not on PATH"
        if not (src.parent / "server" / "m2").is_dir():
            return f"no local Maven repository with the SnailJob jars at {src.parent / 'server' / 'm2'}"
    return None


def _prepare_copy(version: str) -> Path:
    """Copy the sources (and BenchMap.java) into the build folder; the pom's
    relative repository path is made absolute, as the copy lives elsewhere."""
    src = source_dir()
    work = build_dir(version)
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "src", ignore_errors=True)
    shutil.copytree(src / "src", work / "src")
    for name in ("pom.xml", "pom-2.x.xml", "launch.sh"):
        if (src / name).is_file():
            target = work / name
            if target.exists():
                target.chmod(0o644)
            text = (src / name).read_text(encoding="utf-8")
            text = text.replace("${project.basedir}/../server/m2", str((src.parent / "server" / "m2").resolve()))
            target.write_text(text, encoding="utf-8")
    (work / "launch.sh").chmod(0o755)
    for path in (work / "src").rglob("*"):  # the source folder may be read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    package_dir = work / "src" / "main" / "java" / "sjbars"
    shutil.copy2(BENCH_MAP_SOURCE, package_dir / BENCH_MAP_SOURCE.name)
    (package_dir / BENCH_MAP_SOURCE.name).chmod(0o644)
    return work


def build_command(version: str) -> List[str]:
    """The Maven command that builds ``version`` (run in its build folder)."""
    spec = _spec(version)
    return ["mvn", "-B", "-q", "-f", str(spec["pom"]), "package", "-DskipTests", *spec["mvn_args"]]  # type: ignore[misc]


def _build_env(version: str) -> Dict[str, str]:
    env = dict(os.environ)
    home = java_home(version)
    if home is not None:
        env["JAVA_HOME"] = str(home)
        env["PATH"] = f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_jar(version: str) -> Path:
    """Build the application jar of ``version`` once (cached until its inputs
    change); its path. Raises ``JavaUnavailable`` with the reason."""
    reason = unavailable(version)
    if reason:
        raise JavaUnavailable(reason)
    cached = _cached_jar(version)
    if cached is not None:
        return cached
    fingerprint = _fingerprint(version)
    work = _prepare_copy(version)
    (work / "build.sha256").unlink(missing_ok=True)
    log = work / "build.log"
    try:
        with open(log, "wb") as out:
            done = subprocess.run(build_command(version), cwd=str(work), env=_build_env(version),
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise JavaUnavailable(f"the Java client {version} build took over {BUILD_TIMEOUT} s; see {log}") from None
    except OSError as exc:
        raise JavaUnavailable(f"the Java client {version} build did not start: {exc}") from None
    jar = work / "target" / JAR_NAME
    if done.returncode != 0 or not jar.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise JavaUnavailable(f"the Java client {version} build failed (exit {done.returncode}; {log}):\n{tail}")
    (work / "build.sha256").write_text(fingerprint + "\n")
    return jar


def _die_with_parent() -> None:
    """``preexec_fn``: SIGTERM to the JVM when the process that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def command(version: str, jar: Path, env: Mapping[str, str], jvm_options: Sequence[str] = ()) -> List[str]:
    """The JVM command line: what ``launch.sh`` runs, with the version's ``java``."""
    missing = [k for k in ENV_KEYS if not env.get(k)]
    if missing:
        raise ValueError(f"start() needs {', '.join(missing)} in env")
    binary = java_binary(version)
    if binary is None:
        raise JavaUnavailable(f"no java binary for the Java client {version}")
    args = [binary, *jvm_options, "-jar", str(jar),
            f"--snail-job.server.host={env['SNAIL_SERVER_HOST']}",
            f"--snail-job.server.port={env['SNAIL_SERVER_PORT']}",
            f"--snail-job.namespace={env['SNAIL_NAMESPACE']}", f"--snail-job.group={env['SNAIL_GROUP_NAME']}",
            f"--snail-job.token={env['SNAIL_TOKEN']}",
            f"--snail-job.host={env['SNAIL_HOST_IP']}", f"--snail-job.port={env['SNAIL_HOST_PORT']}"]
    extra = env.get("SJ_APP_ARGS", "")
    return args + extra.split()


def start(version: str, env: Mapping[str, str], log_path: Path, jvm_options: Sequence[str] = (),
          *, die_with_parent: bool = False, cwd: Optional[Path] = None) -> subprocess.Popen[bytes]:
    """Start the Java client ``version`` (building it first if needed).

    ``env`` is the whole environment of the process and must hold the
    ``SNAIL_*`` variables of ``ENV_KEYS``; they become the Spring properties
    ``launch.sh`` sets. Output (stdout and stderr) goes to ``log_path``. The
    JVM is started directly, so the returned process's ``pid`` is the JVM's.
    With ``die_with_parent`` the JVM gets SIGTERM when the calling thread's
    process exits (``PR_SET_PDEATHSIG``).
    """
    jar = build_jar(version)
    cmd = command(version, jar, env, jvm_options)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc_env = dict(env)
    home = java_home(version)
    if home is not None:
        proc_env["JAVA_HOME"] = str(home)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=proc_env, cwd=str(cwd or log_path.parent), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if die_with_parent else None)


if __name__ == "__main__":  # build (or check) every version: python benchmarks/java_peer.py
    import sys
    import time

    status = 0
    for v in (sys.argv[1:] or list(VERSIONS)):
        why = unavailable(v)
        if why:
            print(f"{v}: unavailable: {why}")
            continue
        t0 = time.perf_counter()
        try:
            print(f"{v}: {build_jar(v)} ({time.perf_counter() - t0:.1f} s)")
        except JavaUnavailable as exc:
            print(f"{v}: {exc}")
            status = 1
    sys.exit(status)
