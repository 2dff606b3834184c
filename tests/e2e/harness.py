# mypy: allow-untyped-defs
"""Start the real SnailJob server on a private PostgreSQL and drive it.

Standard library only.  The server (1.10.0 or 2.0.2) is laid out from
``../shared/snailjob/server`` by its ``fetch-server.sh`` and cached; the JDK,
PostgreSQL and the schema come from ``provision.py``, which installs what is
missing.  A version the shared directory does not hold raises
``ServerUnavailable``; anything else that goes wrong raises ``HarnessError``.

Typical use::

    from tests.e2e.harness import RealServer, TaskType

    with RealServer("2.0.2") as srv:
        job = srv.create_job("demo", "testJobExecutor", TaskType.CLUSTER, args_str="hi")
        batch = srv.trigger_job(job)
        final = srv.wait_batch(batch)

Environment variables (all optional; those of the machine set-up are in provision.py):

- ``SNAILJOB_WORKDIR``     parent of the per-run scratch dir (default: system temp dir)
- ``SNAILJOB_KEEP``        "1": keep the scratch dir even on success
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.harness_retry import (  # noqa: F401  (re-exported for the tests and scripts)
    MIN_RETRY_INTERVAL,
    BackOff,
    RetryHelpers,
    RetryStatus,
    RetryTaskStatus,
    RetryTaskType,
)
from tests.e2e.provision import (  # noqa: F401  (re-exported for the tests and scripts)
    REPO_ROOT,
    HarnessError,
    PrivatePostgres,
    ServerUnavailable,
    fetch_server,
    free_port,
    java_for_version,
    java_major,
    log,
    log_root,
    port_open,
    schema_path,
    server_versions,
    vtuple,
)

DEFAULT_NAMESPACE = "764d604ec6fc45f68cd92514c40e9e1a"


class TaskType:
    CLUSTER = 1
    BROADCAST = 2
    SHARDING = 3
    MAP = 4
    MAP_REDUCE = 5


class BatchStatus:
    WAITING = 1
    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    STOP = 5
    CANCEL = 6
    FINAL = (3, 4, 5, 6)
    NAMES = {1: "WAITING", 2: "RUNNING", 3: "SUCCESS", 4: "FAIL", 5: "STOP", 6: "CANCEL"}


EXECUTOR_TYPE_PYTHON = 2


class ApiError(HarnessError):
    def __init__(self, method, path, reply):
        self.reply = reply
        super().__init__(f"{method} {path} -> {json.dumps(reply, ensure_ascii=False)[:2000]}")


def md5_hex(text):
    return hashlib.md5(text.encode()).hexdigest()


class PortClash(HarnessError):
    pass


class ServerProcess:
    """One SnailJob server JVM: its ports, working directory, output and process group."""

    def __init__(self, workdir, http_port, grpc_port, start_timeout):
        self.workdir = Path(workdir)
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.start_timeout = start_timeout
        self.proc = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.http_port}/snail-job"

    def start(self, cmd):
        """Launch and wait until ready; returns the seconds it took. PortClash if a port was taken."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cmd.txt").write_text(" ".join(cmd) + "\n")
        out = open(self.workdir / "server.out", "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        log(f"server pid {self.proc.pid}: http {self.http_port} grpc {self.grpc_port}")
        ok, why = self._wait_ready(t0, len(self.log_text()))
        if ok:
            log(f"server ready after {time.monotonic() - t0:.1f}s")
            return time.monotonic() - t0
        tail = "\n".join(self.log_text().splitlines()[-60:])
        self.kill()
        if "Address already in use" in tail or "BindException" in tail:
            raise PortClash(tail)
        raise HarnessError(f"server did not become ready: {why}\n--- server.out tail ---\n{tail}")

    def _wait_ready(self, t0, offset):
        deadline = t0 + self.start_timeout
        http_ok = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, f"server exited with code {self.proc.returncode}"
            if not http_ok:
                try:
                    with urllib.request.urlopen(self.base_url + "/system/version", timeout=3) as r:
                        http_ok = r.status == 200
                except (urllib.error.URLError, OSError):
                    pass
            if http_ok and port_open(self.grpc_port):
                text = self.log_text()[offset:]  # this start's output only
                if "started successfully" in text or time.monotonic() - t0 > 20 and "Started" in text:
                    return True, ""
            time.sleep(0.5)
        return False, f"timeout {self.start_timeout}s (http ok: {http_ok}, grpc open: {port_open(self.grpc_port)})"

    def log_text(self):
        try:
            return (self.workdir / "server.out").read_text(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Send ``sig`` to the server's process group and wait for it (SIGTERM: 20 s, then SIGKILL)."""
        if not self.alive():
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


# ---------------------------------------------------------------------------
# the server


class RealServer(RetryHelpers):
    """Private PostgreSQL + unmodified SnailJob server + an admin HTTP session.

    On __enter__ everything is started and a group with a token exists. On
    __exit__ the server and PostgreSQL are stopped and the scratch dir removed;
    if the block raised (or stop(failed=True) is called) the logs are copied to
    a kept directory whose path is printed.
    """

    DB = "snail_job"
    DB_USER = "snailjob"
    DB_PASSWORD = "snailjob"

    def __init__(self, version="2.0.2", group="py_e2e_group", token=None, namespace=None,
                 start_timeout=240, jvm_opts=None, extra_args=None):
        self.version = version
        self.group = group
        self.group_token = token or "SJ_" + hashlib.sha256(os.urandom(16)).hexdigest()[:32]
        self.namespace = DEFAULT_NAMESPACE
        self.custom_namespace = namespace  # a name: created through the API when given
        self.start_timeout = start_timeout
        self.jvm_opts = list(jvm_opts or ["-Xms256m", "-Xmx768m"])
        self.extra_args = list(extra_args or [])
        self.workdir: Any = None  # Path while running
        self.pg: Any = None  # PrivatePostgres while running
        self.node: Any = None  # ServerProcess while running
        self.peers: list = []  # ServerProcess of start_peer()
        self._java: Any = None
        self._launch: Any = None
        self.jwt: Any = None
        self.timings = {}
        self.launch_info = {}
        self.kept_logs = None
        self._failed = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop(failed=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop(failed=exc_type is not None or self._failed)
        return False

    def mark_failed(self):
        self._failed = True

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.http_port}/snail-job"

    def start(self):
        t_all = time.monotonic()
        atexit.register(self.stop, True)  # last resort if the caller never reaches stop()
        schema = schema_path(self.version)
        java = java_for_version(self.version)
        log(f"server {self.version}: java {java} (major {java_major(java)})")
        launch, info = fetch_server(self.version)
        self.launch_info = info
        self.timings["maven_s"] = round(info["seconds"], 1)
        log(f"server artifact: {info['route']} ({info['seconds']:.1f}s)")

        parent = os.environ.get("SNAILJOB_WORKDIR") or None
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"snailjob-{self.version}-", dir=parent))
        os.chmod(self.workdir, 0o755)
        log(f"workdir {self.workdir}")

        t0 = time.monotonic()
        self.pg = PrivatePostgres(self.workdir)
        self.pg.start()
        self.pg.psql(f"CREATE ROLE {self.DB_USER} LOGIN PASSWORD '{self.DB_PASSWORD}'")
        self.pg.psql(f"CREATE DATABASE {self.DB} OWNER {self.DB_USER}")
        self.pg.psql(db=self.DB, user=self.DB_USER, file=schema)
        # the seed inserts sj_namespace id=1 explicitly without moving the sequence
        self.pg.psql("SELECT setval('sj_namespace_id_seq', "
                     "(SELECT coalesce(max(id), 0) + 1 FROM sj_namespace), false)",
                     db=self.DB, user=self.DB_USER)
        self.timings["postgres_s"] = round(time.monotonic() - t0, 1)
        log(f"postgres on 127.0.0.1:{self.pg.port}, schema loaded")

        self._start_server(java, launch)
        self.login()
        if self.custom_namespace:
            self.namespace = self.create_namespace(self.custom_namespace)
        self.create_group(self.group, self.group_token)
        self.timings["total_s"] = round(time.monotonic() - t_all, 1)
        log(f"ready: http {self.base_url}  grpc 127.0.0.1:{self.grpc_port}  group {self.group} "
            f"token {self.group_token}  namespace {self.namespace}")

    def _server_cmd(self, java, launch, http_port, grpc_port):
        jvm = list(self.jvm_opts)
        if java_major(java) >= 24:
            jvm.append("--enable-native-access=ALL-UNNAMED")
        url = f"jdbc:postgresql://127.0.0.1:{self.pg.port}/{self.DB}?reWriteBatchedInserts=true"
        args = [
            "--server.address=127.0.0.1", f"--server.port={http_port}",
            "--spring.datasource.driver-class-name=org.postgresql.Driver",
            f"--spring.datasource.url={url}",
            f"--spring.datasource.username={self.DB_USER}",
            f"--spring.datasource.password={self.DB_PASSWORD}",
            "--spring.datasource.hikari.maximum-pool-size=20",
            "--spring.datasource.hikari.minimum-idle=2",
            f"--snail-job.server-port={grpc_port}",
            "--snail-job.server-host=127.0.0.1",
            *self.extra_args,
        ]
        return [java, *jvm, *launch, *args]

    def _start_server(self, java, launch):
        self._java, self._launch = java, launch
        for _attempt in range(3):
            http_port = free_port()
            grpc_port = free_port()
            while grpc_port == http_port:
                grpc_port = free_port()
            node = ServerProcess(self.workdir / "server", http_port, grpc_port, self.start_timeout)
            try:
                seconds = node.start(self._server_cmd(java, launch, http_port, grpc_port))
            except PortClash:
                log("port clash, retrying on other ports")
                continue
            self.node = node
            self.timings["server_start_s"] = round(seconds, 1)
            return
        raise HarnessError("server failed to bind free ports 3 times")

    # -- faults: kill, restart, a second server on the same database ----------

    @property
    def proc(self):
        return self.node.proc if self.node else None

    @property
    def http_port(self):
        return self.node.http_port if self.node else None

    @property
    def grpc_port(self):
        return self.node.grpc_port if self.node else None

    def kill(self, sig=signal.SIGKILL):
        """Kill the server process (SIGKILL: no shutdown hooks); PostgreSQL stays up."""
        self.node.kill(sig)

    def restart(self):
        """Start the server again on the same ports and database; returns the seconds it took."""
        self.node.kill()
        seconds = self.node.start(self._server_cmd(self._java, self._launch, self.node.http_port,
                                                   self.node.grpc_port))
        self.login()
        return seconds

    def start_peer(self, name="peer"):
        """A second server process on the same database (a SnailJob server cluster of two):
        its own HTTP and gRPC ports and working directory. Stopped with the server."""
        http_port, grpc_port = free_port(), free_port()
        node = ServerProcess(self.workdir / f"server-{name}", http_port, grpc_port, self.start_timeout)
        node.start(self._server_cmd(self._java, self._launch, http_port, grpc_port))
        self.peers.append(node)
        return node

    def server_log_text(self):
        return self.node.log_text() if self.node else ""

    def server_log_tail(self, n=60):
        return "\n".join(self.server_log_text().splitlines()[-n:])

    def _kill_server(self):
        for node in [*self.peers, self.node]:
            if node is not None:
                node.kill(signal.SIGTERM)

    def stop(self, failed=False):
        """Always safe to call; idempotent."""
        if self.node is None and self.pg is None and self.workdir is None:
            return
        try:
            self._kill_server()
        finally:
            self.node = None
            self.peers = []
            try:
                if self.pg:
                    self.pg.stop()
                    self.pg = None
            finally:
                if self.workdir and self.workdir.exists():
                    if failed:
                        self.kept_logs = self._keep_logs()
                        print(f"[snailjob-harness] run failed; server and postgres logs kept in "
                              f"{self.kept_logs}",
                              file=sys.stderr, flush=True)
                    if os.environ.get("SNAILJOB_KEEP") == "1":
                        log(f"SNAILJOB_KEEP=1: scratch dir kept at {self.workdir}")
                    else:
                        shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def _keep_logs(self):
        root = log_root()
        dest = root / f"{self.version}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        dest.mkdir(parents=True, exist_ok=True)
        for srv in sorted(self.workdir.glob("server*")):
            suffix = srv.name[len("server"):]
            for name in ("server.out", "cmd.txt"):
                if (srv / name).is_file():
                    shutil.copy2(srv / name, dest / f"{name.split('.')[0]}{suffix}.{name.split('.')[1]}")
            if (srv / "data" / "log").is_dir():
                shutil.copytree(srv / "data" / "log", dest / f"server-logs{suffix}", dirs_exist_ok=True)
        if (self.workdir / "postgres.log").is_file():
            shutil.copy2(self.workdir / "postgres.log", dest / "postgres.log")
        return dest

    # -- HTTP --------------------------------------------------------------

    def request(self, method, path, body=None, params=None, auth=True, via=None):
        """Raw call; returns the decoded JSON envelope {status, message, data, ...}.
        ``via``: a peer ServerProcess to send it to instead (same session)."""
        url = (via or self).base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        headers = {"Content-Type": "application/json"}
        if auth and self.jwt:
            headers["SNAIL-JOB-AUTH"] = self.jwt
            headers["SNAIL-JOB-NAMESPACE-ID"] = self.namespace
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return {"status": -e.code, "message": f"HTTP {e.code}", "data": json.loads(raw or b"null")}
            except ValueError:
                return {"status": -e.code, "message": f"HTTP {e.code}", "data": raw.decode(errors="replace")}
        return json.loads(raw)

    def api(self, method, path, body=None, params=None, auth=True, envelope=False, via=None):
        reply = self.request(method, path, body, params, auth, via)
        if reply.get("status") != 1:
            raise ApiError(method, path, reply)
        return reply if envelope else reply.get("data")

    def login(self, username="admin", password="admin"):
        body = {"username": username, "password": md5_hex(password)}
        data = self.api("POST", "/auth/login", body, auth=False)
        self.jwt = data["token"]
        return data

    # -- namespace / group -------------------------------------------------

    def create_namespace(self, name, unique_id=None):
        unique_id = unique_id or re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
        self.api("POST", "/namespace", {"name": name, "uniqueId": unique_id})
        return unique_id

    def create_group(self, group, token, enabled=True, init_scene=True):
        """``init_scene``: a retry reported for a scene that does not exist creates that scene
        (back-off DELAY_LEVEL, 21 attempts, no callback); off, such a report is refused."""
        return self.api("POST", "/group", {
            "groupName": group, "groupStatus": 1 if enabled else 0, "token": token,
            "description": "python e2e", "groupPartition": 0, "idGeneratorMode": 2,
            "initScene": 1 if init_scene else 0})

    def group_detail(self, group=None):
        return self.api("GET", f"/group/{group or self.group}")

    def online_pods(self, group=None):
        """['ip:port', ...] of the group's registered client nodes."""
        return self.api("GET", f"/group/on-line/pods/{group or self.group}") or []

    def pods(self, group=None):
        """Node rows (clients and servers) from the dashboard, filtered by group."""
        return self.api("GET", "/dashboard/pods", params={"page": 1, "size": 100,
                                                         "groupName": group or self.group}) or []

    def wait_online(self, n=1, group=None, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.online_pods(group)
            if len(pods) >= n:
                time.sleep(1)
                return pods
            time.sleep(0.5)
        raise HarnessError(f"only {self.online_pods(group)} online after {timeout}s (wanted {n})")

    def wait_node_online(self, address, group=None, timeout=60):
        """Wait until one node ('ip:port') is among the group's online pods."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if address in self.online_pods(group):
                time.sleep(1)  # registration and channel set-up happen in the same loop run
                return True
            time.sleep(0.5)
        raise HarnessError(f"{address} not online after {timeout}s (online: {self.online_pods(group)})")

    def has_executor_registry(self):
        """True if the server has the executor list of the web API (added in 1.6)."""
        reply = self.request("GET", "/job/executor/list", params={"groupName": self.group})
        return reply.get("status") == 1

    def create_webhook_alarm(self, url, name, scene=1, system_task_type=3):
        """A webhook recipient and a notify config (default: JOB_TASK_ERROR for jobs) posting to url.

        Returns the notify config id, to put in a job's ``notifyIds``. Both endpoints answer
        only ``true``, so the ids are read back from the database by name."""
        attribute = json.dumps({"webhookUrl": url, "contentType": 1, "secret": "py-e2e"})
        self.api("POST", "/notify-recipient", {"recipientName": name, "notifyType": 5,
                                               "notifyAttribute": attribute, "description": ""})
        esc = name.replace("'", "''")
        rows = self.pg.query_json(f"SELECT id FROM sj_notify_recipient WHERE recipient_name = '{esc}' "
                                  f"ORDER BY id DESC", db=self.DB)
        recipient_id = int(rows[0]["id"])
        self.api("POST", "/notify-config", {
            "groupName": self.group, "systemTaskType": system_task_type, "notifyStatus": 1,
            "notifyName": name, "recipientIds": [recipient_id], "notifyThreshold": 0,
            "notifyScene": scene, "rateLimiterStatus": 0, "rateLimiterThreshold": 0,
            "description": ""})
        rows = self.pg.query_json(f"SELECT id FROM sj_notify_config WHERE notify_name = '{esc}' "
                                  f"ORDER BY id DESC", db=self.DB)
        return int(rows[0]["id"])

    def executors(self, group=None):
        """Executor rows registered by clients of the group (server >= 1.6)."""
        return self.api("GET", "/job/executor/page/list", params={"page": 1, "size": 200,
                                                                 "groupName": group or self.group}) or []

    def executor_names(self, group=None):
        return sorted(self.api("GET", "/job/executor/list", params={"groupName": group or self.group}) or [])

    # -- jobs ----------------------------------------------------------------

    def job_body(self, name, executor, task_type, args_str="", parallel_num=1, executor_timeout=60,
                 max_retry_times=0, retry_interval=1, shard_num=None, route_key=4, args_type=1,
                 trigger_type=2, trigger_interval="86400", block_strategy=1, job_status=0, biz_id=None,
                 group=None, **extra):
        if task_type == TaskType.SHARDING and not isinstance(args_str, str):
            args_str = json.dumps([str(x) for x in args_str])
        if task_type == TaskType.MAP_REDUCE and shard_num is not None:
            args_str = json.dumps({"shardNum": shard_num, "argsStr": args_str})
        body = {
            "groupName": group or self.group, "jobName": name, "jobStatus": job_status,
            "executorType": EXECUTOR_TYPE_PYTHON, "executorInfo": executor, "taskType": task_type,
            "routeKey": route_key, "triggerType": trigger_type, "triggerInterval": str(trigger_interval),
            "blockStrategy": block_strategy, "executorTimeout": executor_timeout,
            "maxRetryTimes": max_retry_times, "retryInterval": retry_interval,
            "parallelNum": parallel_num, "argsType": args_type, "argsStr": args_str,
            "description": "", "notifyIds": [], "labels": "",
        }
        if biz_id:
            body["bizId"] = biz_id
        body.update(extra)
        return body

    def create_job(self, name, executor, task_type=TaskType.CLUSTER, **kw):
        """Create a job (disabled, fixed 1-day interval: only manual triggers run it); returns its id."""
        data = self.api("POST", "/job", self.job_body(name, executor, task_type, **kw))
        if isinstance(data, bool) or data is None:  # older servers answer only true
            rows = self.api("GET", "/job/page/list", params={"jobName": name, "groupName": self.group,
                                                             "page": 1, "size": 10})
            data = max(r["id"] for r in rows if r["jobName"] == name)
        return int(data)

    def job(self, job_id):
        return self.api("GET", f"/job/{job_id}")

    def batches(self, job_id, size=10):
        return self.api("GET", "/job/batch/list", params={"jobId": job_id, "page": 1, "size": size}) or []

    def latest_batch(self, job_id):
        rows = self.batches(job_id, 1)
        return rows[0] if rows else None

    def trigger_job(self, job_id, tmp_args=None, timeout=30, via=None):
        """Trigger a job by hand (``via``: through a peer server); returns the id of the batch it made."""
        prev = self.latest_batch(job_id)
        prev_id = int(prev["id"]) if prev else 0
        body = {"jobId": job_id}
        if tmp_args is not None:
            body["tmpArgsStr"] = tmp_args
        self.api("POST", "/job/trigger", body, via=via)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = self.latest_batch(job_id)
            if b and int(b["id"]) > prev_id:
                return int(b["id"])
            time.sleep(0.3)
        raise HarnessError(f"no new batch for job {job_id} within {timeout}s after trigger")

    def batch(self, batch_id):
        return self.api("GET", f"/job/batch/{batch_id}")

    def wait_batch(self, batch_id, timeout=120, statuses=BatchStatus.FINAL):
        deadline = time.monotonic() + timeout
        while True:
            b = self.batch(batch_id)
            if int(b["taskBatchStatus"]) in statuses:
                return b
            if time.monotonic() > deadline:
                name = BatchStatus.NAMES.get(int(b["taskBatchStatus"]))
                raise HarnessError(f"batch {batch_id} still {name} "
                                   f"after {timeout}s: {b}")
            time.sleep(0.5)

    def stop_batch(self, batch_id):
        return self.api("POST", f"/job/batch/stop/{batch_id}")

    def tasks(self, batch_id):
        """Top-level tasks only."""
        params = {"taskBatchId": batch_id, "page": 1, "size": 500}
        return self.api("GET", "/job/task/list", params=params) or []

    def task_tree(self, batch_id, parent_id=None):
        """All tasks of a batch (map children, reduce, merge) with taskStatus and resultMessage."""
        params = {"taskBatchId": batch_id}
        if parent_id is not None:
            params["parentId"] = parent_id
        return self.api("GET", "/job/task/tree/list", params=params) or []

    def task_rows(self, batch_id):
        """All tasks of a batch straight from the database (no paging, every column)."""
        return self.pg.query_json(
            f"SELECT id, parent_id, task_name, task_status, retry_count, result_message, client_info, "
            f"args_str, leaf, mr_stage, wf_context FROM sj_job_task WHERE task_batch_id = {int(batch_id)} "
            f"ORDER BY id", db=self.DB)

    def job_logs(self, batch_id, task_id=None):
        """Log lines stored for a batch: list of dicts (time_stamp, level, message, location, throwable, ...)
        each with task_id added. Logs arrive asynchronously: poll if needed."""
        where = f"task_batch_id = {int(batch_id)}"
        if task_id is not None:
            where += f" AND task_id = {int(task_id)}"
        rows = self.pg.query_json(f"SELECT id, job_id, task_batch_id, task_id, message, log_num, real_time "
                                  f"FROM sj_job_log_message WHERE {where} ORDER BY id", db=self.DB)
        lines = []
        for r in rows:
            try:
                msgs = json.loads(r["message"])
            except (TypeError, ValueError):
                msgs = [{"message": r["message"]}]
            for m in msgs if isinstance(msgs, list) else [msgs]:
                m = dict(m)
                m["task_id"] = r["task_id"]
                lines.append(m)
        return lines

    def wait_logs(self, batch_id, predicate=lambda lines: bool(lines), timeout=30, task_id=None):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.job_logs(batch_id, task_id)
            if predicate(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.5)

    # -- workflows -------------------------------------------------------------

    def create_workflow(self, job_ids, name="py-e2e-wf", biz_id=None, wf_context="{}", executor_timeout=120):
        """A chain: one level per job id (or a list of ids for parallel nodes). Returns the workflow id."""
        biz_id = biz_id or f"wf_{int(time.time() * 1000)}"
        level_node = None
        for i, level in reversed(list(enumerate(job_ids))):
            ids = level if isinstance(level, (list, tuple)) else [level]
            node = {"nodeType": 1, "conditionNodes": [
                {"nodeName": f"n{i + 1}_{k + 1}", "workflowNodeStatus": 1, "priorityLevel": k + 1,
                 "failStrategy": 2, "jobTask": {"jobId": jid}} for k, jid in enumerate(ids)]}
            if level_node:
                node["childNode"] = level_node
            level_node = node
        body = {"groupName": self.group, "bizId": biz_id, "workflowName": name, "triggerType": 2,
                "triggerInterval": "86400", "executorTimeout": executor_timeout, "blockStrategy": 1,
                "workflowStatus": 0, "wfContext": wf_context, "description": "", "notifyIds": [],
                "nodeConfig": level_node}
        data = self.api("POST", "/workflow", body)
        if isinstance(data, (int, str)) and not isinstance(data, bool) and str(data).isdigit():
            return int(data)
        rows = self.api("GET", "/workflow/page/list", params={"bizId": biz_id, "page": 1, "size": 10}) or []
        rows = [r for r in rows if r.get("bizId", biz_id) == biz_id] or rows
        if not rows:
            raise HarnessError(f"workflow {biz_id} not found after create")
        return int(rows[0]["id"])

    def workflow_batches(self, workflow_id, size=10):
        return self.api("GET", "/workflow/batch/page/list", params={"workflowId": workflow_id, "page": 1,
                                                                   "size": size}) or []

    def trigger_workflow(self, workflow_id, tmp_wf_context=None, timeout=30):
        """Trigger a workflow; returns the id of its new workflow batch."""
        rows = self.workflow_batches(workflow_id, 1)
        prev_id = int(rows[0]["id"]) if rows else 0
        body = {"workflowId": workflow_id}
        if tmp_wf_context is not None:
            ctx = tmp_wf_context
            body["tmpWfContext"] = ctx if isinstance(ctx, str) else json.dumps(ctx)
        self.api("POST", "/workflow/trigger", body)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.workflow_batches(workflow_id, 1)
            if rows and int(rows[0]["id"]) > prev_id:
                return int(rows[0]["id"])
            time.sleep(0.3)
        raise HarnessError(f"no new workflow batch for workflow {workflow_id} within {timeout}s")

    def workflow_batch(self, wf_batch_id):
        return self.api("GET", f"/workflow/batch/{wf_batch_id}")

    def wait_workflow_batch(self, wf_batch_id, timeout=180):
        deadline = time.monotonic() + timeout
        while True:
            sql = ("SELECT task_batch_status, operation_reason FROM sj_workflow_task_batch "
                   f"WHERE id = {int(wf_batch_id)}")
            rows = self.pg.query_json(sql, db=self.DB)
            if rows and int(rows[0]["task_batch_status"]) in BatchStatus.FINAL:
                return self.workflow_batch(wf_batch_id)
            if time.monotonic() > deadline:
                raise HarnessError(f"workflow batch {wf_batch_id} not final after {timeout}s: {rows}")
            time.sleep(0.5)

    def workflow_job_batches(self, wf_batch_id):
        """Job batches created by one workflow batch, from the database."""
        return self.pg.query_json(
            "SELECT id, job_id, workflow_node_id, task_batch_status, operation_reason "
            f"FROM sj_job_task_batch WHERE workflow_task_batch_id = {int(wf_batch_id)} ORDER BY id",
            db=self.DB)

    def stop_workflow_batch(self, wf_batch_id):
        return self.api("POST", f"/workflow/batch/stop/{wf_batch_id}")

    # -- for clients -------------------------------------------------------------

    def client_env(self, host_port=None, group=None, token=None):
        """Environment for a Python snailjob client process pointed at this server."""
        return {
            "SNAIL_SERVER_HOST": "127.0.0.1", "SNAIL_SERVER_PORT": str(self.grpc_port),
            "SNAIL_HOST_IP": "127.0.0.1", "SNAIL_HOST_PORT": str(host_port or free_port()),
            "SNAIL_NAMESPACE": self.namespace, "SNAIL_GROUP_NAME": group or self.group,
            "SNAIL_TOKEN": token or self.group_token,
        }
