"""The Java service of ``test_retry_chain_real.py``: build and start it.

SnailJob's own Java client app of ``shared/snailjob/java-client`` (the
echo client ``benchmarks/java_peer.py`` builds) plus our ``java/RetryChain.java``
(a ``@RestController`` calling ``@Retryable`` methods, and a RestTemplate
whose interceptor uses the client's ``RequestHeaderPlugins`` /
``ResponseHeaderPlugins``).  The copy's pom gets ``snail-job-client-retry-core``
(from ``../server/m2`` like the other ``com.aizuda`` jars).  It is built with
Maven under ``tests/e2e/.java-build/<version>/`` (git-ignored), once, and
again when an input changes.  The JDKs and Maven checks are ``java_peer``'s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

HERE = Path(__file__).resolve().parent
BUILD_ROOT = HERE / ".java-build"
SOURCE = HERE / "java" / "RetryChain.java"
BUILD_TIMEOUT = 1200
_RETRY_CORE = """        <dependency>
            <groupId>com.aizuda</groupId>
            <artifactId>snail-job-client-retry-core</artifactId>
            <version>${snailjob.version}</version>
        </dependency>
    </dependencies>"""


def _peer() -> Any:
    """``benchmarks/java_peer.py`` (JDK choice, Maven checks, the app's sources)."""
    name = "_snailjob_java_peer"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent.parent / "benchmarks" / "java_peer.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _fingerprint(version: str) -> str:
    peer = _peer()
    src = peer.source_dir()
    digest = hashlib.sha256()
    files = sorted(p for p in src.rglob("*") if p.is_file() and "target" not in p.relative_to(src).parts)
    for path in [*files, SOURCE, Path(__file__)]:
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    digest.update(str(peer.java_home(version)).encode())
    return digest.hexdigest()


def unavailable(version: str) -> Optional[str]:
    """Why the Java service of ``version`` cannot be built or run here, or None."""
    return _peer().unavailable(version)


def build_jar(version: str) -> Path:
    """The service's jar for ``version`` (built once; raises ``java_peer.JavaUnavailable``)."""
    peer = _peer()
    reason = peer.unavailable(version)
    if reason:
        raise peer.JavaUnavailable(reason)
    work = BUILD_ROOT / version
    jar = work / "target" / peer.JAR_NAME
    stamp = work / "build.sha256"
    fingerprint = _fingerprint(version)
    if jar.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return jar
    src = peer.source_dir()
    if work.exists():
        for path in [work, *work.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("target"))
    for path in [work, *work.rglob("*")]:  # the shared folder may be read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    pom = work / str(peer.VERSIONS[version]["pom"])
    text = pom.read_text(encoding="utf-8")
    text = text.replace("${project.basedir}/../server/m2", str((src.parent / "server" / "m2").resolve()))
    text = text.replace("    </dependencies>", _RETRY_CORE, 1)
    pom.write_text(text, encoding="utf-8")
    shutil.copy2(SOURCE, work / "src" / "main" / "java" / "sjbars" / SOURCE.name)
    log = work / "build.log"
    try:
        with open(log, "wb") as out:
            done = subprocess.run(peer.build_command(version), cwd=str(work), env=peer._build_env(version),
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=BUILD_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise peer.JavaUnavailable(f"the Java chain service {version} did not build: {exc}; see {log}") from None
    if done.returncode != 0 or not jar.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise peer.JavaUnavailable(f"the Java chain service {version} build failed ({log}):\n{tail}")
    stamp.write_text(fingerprint + "\n")
    return jar


def start(version: str, env: Mapping[str, str], http_port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the service (its SnailJob node and its web server on ``http_port``)."""
    peer = _peer()
    jar = build_jar(version)
    cmd = peer.command(version, jar, env) + ["--spring.main.web-application-type=servlet",
                                              f"--server.port={http_port}", "--server.address=127.0.0.1"]
    proc_env: Dict[str, str] = dict(env)
    home = peer.java_home(version)
    if home is not None:
        proc_env["JAVA_HOME"] = str(home)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=proc_env, cwd=str(log_path.parent), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=peer._die_with_parent)


if __name__ == "__main__":  # build: python tests/e2e/java_chain.py [VERSION...]
    for v in sys.argv[1:] or list(_peer().VERSIONS):
        print(v, build_jar(v))
