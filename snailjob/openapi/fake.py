"""``FakeOpenApiServer``: an in-process stand-in for the server's OpenAPI, for tests and examples.

A real HTTP server on ``127.0.0.1`` (standard library, one thread per request)
that

- records every request (method, path, query, headers, JSON body) in ``requests``;
- answers like SnailJob 1.10 / 2.0 from a small in-memory model: jobs (by id and
  bizId), batches whose status advances one step per detail read, workflows,
  workflow batches and retry tasks. It checks the token headers (and, like the
  real server, quotes the token it got in its refusal) and the fields the server
  requires (including the workflow trigger's deprecated ``jobId``);
- can be told to answer anything instead (``reply(...)``): another ``data``,
  ``status != 1``, a non-JSON body, an HTTP error, or a slow answer.

::

    with FakeOpenApiServer() as fake:
        client = fake.client()
        job_id = client.add_job(JobSpec.cluster("demo", "demoJob", Trigger.cron("0 0 * * * ?")))
        client.trigger_job(job_id)
        batch = client.wait_job_batch(fake.batches_of(job_id)[-1], poll=0.01)

It imitates the server's answers, not its exact wording, and schedules nothing:
batches exist only because of triggers and never run anything.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from snailjob.openapi.client import AsyncOpenApiClient, OpenApiClient
from snailjob.settings import DEFAULT_NAMESPACE

__all__ = ["CannedReply", "FakeOpenApiServer", "RecordedRequest"]

_FMT = "%Y-%m-%d %H:%M:%S"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JOB_BATCH_DETAIL = re.compile(r"^/api/job-batch/detail/[^/]+$")
BatchStep = Union[int, Tuple[int, int]]  # a status, or (status, operationReason)


@dataclass
class RecordedRequest:
    """One request as the fake received it. ``api_path`` is the path without the
    prefix (``/api/job/add``); ``headers`` have lower-case names; ``body`` is the
    parsed JSON (``None`` without a body, the raw text if it is not JSON)."""

    method: str
    path: str
    api_path: str
    query: Dict[str, str]
    headers: Dict[str, str]
    body: Any
    raw: bytes


@dataclass
class CannedReply:
    method: str
    api_path: str
    data: Any = None
    status: int = 1
    message: str = "Request succeeded"
    http_status: int = 200
    raw: Optional[bytes] = None
    delay: float = 0.0
    times: Optional[int] = None  # None: every matching request


class _Fail(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _now() -> str:
    return datetime.now().strftime(_FMT)


@dataclass
class _Batch:
    data: Dict[str, Any]
    script: List[BatchStep]
    step: int = 0

    def read(self, status_key: str) -> Dict[str, Any]:
        entry = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        status, reason = entry if isinstance(entry, tuple) else (entry, 0)
        self.data[status_key] = status
        self.data["operationReason"] = reason
        self.data["updateDt"] = _now()
        return dict(self.data)


@dataclass
class _Workflow:
    id: int
    biz_id: str
    name: str
    group: str
    job_ids: List[int]
    status: int = 0
    wf_context: str = "{}"
    node_ids: List[int] = field(default_factory=list)


class FakeOpenApiServer:
    """See the module docstring. ``batch_script``: the statuses a new batch reports on
    successive detail reads (the last one sticks), default WAITING, RUNNING, SUCCESS."""

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE, group: str = "snail_job_demo_group",
                 token: str = "SJ_fake_openapi_token_0123456789", prefix: str = "/snail-job",
                 batch_script: Sequence[BatchStep] = (1, 2, 3)) -> None:
        self.namespace = namespace
        self.group = group
        self.token = token
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.batch_script: List[BatchStep] = list(batch_script)
        self.group_enabled = True
        self.requests: List[RecordedRequest] = []
        self.jobs: Dict[int, Dict[str, Any]] = {}
        self.workflows: Dict[int, _Workflow] = {}
        self.retries: Dict[int, Dict[str, Any]] = {}
        self._replies: List[CannedReply] = []
        self._batches: Dict[int, _Batch] = {}
        self._wf_batches: Dict[int, _Batch] = {}
        self._job_scripts: Dict[int, List[BatchStep]] = {}
        self._ids = iter(range(1001, 10**9))
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeOpenApiServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout tests) is not an error here

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="fake-openapi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenApiServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the fake first"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def client(self, **options: Any) -> OpenApiClient:
        """An ``OpenApiClient`` pointed at this fake with its credentials (timeout 5 s)."""
        settings: Dict[str, Any] = {"namespace": self.namespace, "group": self.group, "token": self.token,
                                    "timeout": 5.0}
        settings.update(options)
        return OpenApiClient(self.base_url, **settings)

    def async_client(self, **options: Any) -> AsyncOpenApiClient:
        return AsyncOpenApiClient(client=self.client(**options))

    # ----------------------------------------------------------------- scripting

    def reply(self, method: str, api_path: str, data: Any = None, *, status: int = 1,
              message: str = "Request succeeded", http_status: int = 200, raw: Optional[bytes] = None,
              delay: float = 0.0, times: Optional[int] = None) -> None:
        """Answer ``method api_path`` with this instead of the model (``times``: only
        the next n matching requests). ``raw`` replaces the whole body."""
        with self._lock:
            self._replies.append(CannedReply(method.upper(), api_path, data, status, message, http_status, raw,
                                             delay, times))

    def clear_replies(self) -> None:
        with self._lock:
            self._replies.clear()

    def set_batch_script(self, job_id: int, statuses: Sequence[BatchStep]) -> None:
        """The statuses the next batches of ``job_id`` report (instead of ``batch_script``)."""
        with self._lock:
            self._job_scripts[job_id] = list(statuses)

    def last(self, api_path: Optional[str] = None) -> RecordedRequest:
        """The last request (to ``api_path``, if given)."""
        with self._lock:
            for request in reversed(self.requests):
                if api_path is None or request.api_path == api_path:
                    return request
        raise LookupError(f"no request to {api_path}")

    def add_workflow(self, job_ids: Sequence[int] = (), *, biz_id: Optional[str] = None, name: str = "fake-wf",
                     status: int = 0, wf_context: str = "{}") -> int:
        """A workflow running ``job_ids`` one after the other; returns its id."""
        with self._lock:
            wf_id = next(self._ids)
            self.workflows[wf_id] = _Workflow(wf_id, biz_id or f"wf{wf_id}", name, self.group, list(job_ids),
                                              status, wf_context, [next(self._ids) for _ in job_ids])
            return wf_id

    def add_retry(self, *, scene: str = "fake-scene", biz_no: str = "", args_str: str = "[]",
                  executor_name: str = "fakeRetry", retry_status: int = 0) -> int:
        """A retry task; returns its id."""
        with self._lock:
            retry_id = next(self._ids)
            self.retries[retry_id] = {
                "id": retry_id, "namespaceId": self.namespace, "groupName": self.group, "sceneName": scene,
                "idempotentId": f"idem{retry_id}", "bizNo": biz_no, "argsStr": args_str, "extAttrs": "",
                "executorName": executor_name, "serializerName": "jackson", "nextTriggerAt": _now(),
                "retryCount": 0, "retryStatus": retry_status, "taskType": 1, "parentId": 0, "bucketIndex": 0,
                "deleted": 0, "createDt": _now(), "updateDt": _now()}
            return retry_id

    def batches_of(self, job_id: int) -> List[int]:
        """Ids of the batches triggers created for ``job_id``, oldest first (the real
        server shows these in the console / web API, not in the OpenAPI)."""
        with self._lock:
            return [bid for bid, b in self._batches.items() if b.data["jobId"] == job_id]

    def workflow_batches_of(self, workflow_id: int) -> List[int]:
        with self._lock:
            return [bid for bid, b in self._wf_batches.items() if b.data["workflowId"] == workflow_id]

    # ------------------------------------------------------------------ serving

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body = raw.decode("utf-8", "replace")
        api_path = split.path[len(self.prefix):] if split.path.startswith(self.prefix) else split.path
        request = RecordedRequest(handler.command, split.path, api_path, dict(urllib.parse.parse_qsl(split.query)),
                                  {k.lower(): v for k, v in handler.headers.items()}, body, raw)
        with self._lock:
            self.requests.append(request)
            canned = self._take_reply(request)
        if canned is not None:
            if canned.delay:
                self._stopping.wait(canned.delay)
            payload = canned.raw if canned.raw is not None else json.dumps(
                {"status": canned.status, "message": canned.message, "data": canned.data}).encode()
            self._send(handler, canned.http_status, payload)
            return
        if not split.path.startswith(self.prefix + "/api/"):
            self._send(handler, 404, json.dumps({"timestamp": _now(), "status": 404, "error": "Not Found",
                                                 "path": split.path}).encode())
            return
        try:
            with self._lock:
                self._authenticate(request)
                data = self._route(request)
            envelope = {"status": 1, "message": "Request succeeded", "data": data}
        except _Fail as failure:
            envelope = {"status": failure.status, "message": failure.message}
        self._send(handler, 200, json.dumps(envelope, ensure_ascii=False).encode())

    def _take_reply(self, request: RecordedRequest) -> Optional[CannedReply]:
        for canned in self._replies:
            if canned.method == request.method and canned.api_path == request.api_path:
                if canned.times is not None:
                    canned.times -= 1
                    if canned.times <= 0:
                        self._replies.remove(canned)
                return canned
        return None

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, payload: bytes) -> None:
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the client went away

    def _authenticate(self, request: RecordedRequest) -> None:
        h = request.headers
        if (h.get("namespace"), h.get("group-name"), h.get("token")) != (self.namespace, self.group, self.token):
            # the real server quotes the token it received in this message
            raise _Fail(f"Token authentication failed. [namespace:{h.get('namespace')} "
                        f"groupName:{h.get('group-name')} token:{h.get('token')}]")
        if request.raw and not h.get("content-type", "").startswith("application/json"):
            raise _Fail("Parameter incorrect")

    # ------------------------------------------------------------------- model

    def _route(self, r: RecordedRequest) -> Any:
        route = (r.method, r.api_path)
        if r.method == "GET" and _JOB_BATCH_DETAIL.match(r.api_path):
            return self._read_batch(self._batches, self._query_id(r), "taskBatchStatus")
        handlers = {
            ("POST", "/api/job/add"): lambda: self._add_job(self._object(r), by_biz_id=False),
            ("PUT", "/api/job/update"): lambda: self._update_job(self._object(r), by_biz_id=False),
            ("GET", "/api/job/detail/id"): lambda: self._job_response(self.jobs.get(self._query_id(r))) or {},
            ("GET", "/api/job/exists"): lambda: self._exists(self.jobs.get(self._query_id(r))),
            ("POST", "/api/job/trigger"): lambda: self._trigger(self._job(self._need(self._object(r), "jobId"))),
            ("PUT", "/api/job/update/status"): lambda: self._job_status(self._status_body(r, "id")),
            ("DELETE", "/api/job/delete"): lambda: self._delete_jobs(self._id_list(r.body, int)),
            ("POST", "/api/job/bizId/add"): lambda: self._add_job(self._object(r), by_biz_id=True),
            ("PUT", "/api/job/bizId/update"): lambda: self._update_job(self._object(r), by_biz_id=True),
            ("GET", "/api/job/bizId/detail"): lambda: self._job_response(self._job_by_biz(self._query(r, "bizId"))),
            ("GET", "/api/job/bizId/exists"): lambda: self._exists(self._job_by_biz(self._query(r, "bizId"))),
            ("POST", "/api/job/bizId/trigger"): lambda: self._trigger(self._job_by_biz_or_fail(
                self._need(self._object(r), "bizId"), "job can not be null.")),
            ("PUT", "/api/job/bizId/updateStatus"): lambda: self._job_status(self._status_body(r, "bizId")),
            ("DELETE", "/api/job/bizId/delete"): lambda: self._delete_jobs(
                [self._job_by_biz_or_fail(b, "Failed to delete the scheduled task.")["id"]
                 for b in self._id_list(self._need(self._object(r), "bizIds"), str)]),
            ("POST", "/api/workflow/trigger"): lambda: self._trigger_workflow(self._object(r), by_biz_id=False),
            ("PUT", "/api/workflow/update/status"): lambda: self._workflow_status(self._status_body(r, "id")),
            ("DELETE", "/api/workflow/delete"): lambda: self._delete_workflows(self._id_list(r.body, int)),
            ("GET", "/api/workflow/exists"): lambda: self._wf_exists(self.workflows.get(self._query_id(r))),
            ("POST", "/api/workflow/bizId/trigger"): lambda: self._trigger_workflow(self._object(r), by_biz_id=True),
            ("PUT", "/api/workflow/bizId/updateStatus"): lambda: self._workflow_status(
                self._status_body(r, "bizId")),
            ("DELETE", "/api/workflow/bizId/delete"): lambda: self._delete_workflows(
                [self._workflow_by_biz_or_fail(b).id for b in self._id_list(r.body, str)]),
            ("GET", "/api/workflow/bizId/exists"): lambda: self._wf_exists(self._workflow_by_biz(
                self._query(r, "bizId"))),
            ("GET", "/api/workflow-batch/detail/id"): lambda: self._workflow_batch(self._query_id(r)),
            ("GET", "/api/retry/query"): lambda: self._retry(self._query_id(r)),
            ("POST", "/api/retry/trigger"): lambda: self._retry_trigger(self._need(self._object(r), "id")),
            ("PUT", "/api/retry/update/status"): lambda: self._retry_status(self._status_body(r, "id")),
        }
        if route not in handlers:
            raise _Fail("Parameter incorrect")  # what the server answers to a wrong method
        return handlers[route]()

    # request helpers
    @staticmethod
    def _object(r: RecordedRequest) -> Dict[str, Any]:
        if not isinstance(r.body, dict):
            raise _Fail("Parameter incorrect")
        return r.body

    @staticmethod
    def _need(body: Dict[str, Any], name: str) -> Any:
        value = body.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _Fail(f"{name} cannot be null")
        return value

    @staticmethod
    def _query(r: RecordedRequest, name: str) -> str:
        if name not in r.query:
            raise _Fail("Parameter incorrect")
        return r.query[name]

    def _query_id(self, r: RecordedRequest) -> int:
        try:
            return int(self._query(r, "id"))
        except ValueError:
            raise _Fail("Parameter incorrect") from None

    @staticmethod
    def _id_list(body: Any, kind: type) -> List[Any]:
        if not isinstance(body, list) or not body:
            raise _Fail("ids cannot be null")
        if len(body) > 100:
            raise _Fail("Maximum 100 deletions")
        if not all(isinstance(x, kind) and not isinstance(x, bool) for x in body):
            raise _Fail("Parameter incorrect")
        return body

    def _status_body(self, r: RecordedRequest, key: str) -> Tuple[Any, int]:
        body = self._object(r)
        return self._need(body, key), self._need(body, "status")

    # jobs
    def _job(self, job_id: Any) -> Dict[str, Any]:
        job = self.jobs.get(job_id) if isinstance(job_id, int) else None
        if job is None:
            raise _Fail("job can not be null.")
        return job

    def _job_by_biz(self, biz_id: str) -> Optional[Dict[str, Any]]:
        return next((j for j in self.jobs.values() if j["bizId"] == biz_id), None)

    def _job_by_biz_or_fail(self, biz_id: str, message: str) -> Dict[str, Any]:
        job = self._job_by_biz(biz_id)
        if job is None:
            raise _Fail(message)
        return job

    def _check_job_body(self, body: Dict[str, Any]) -> None:
        group = self._need(body, "groupName")
        if not isinstance(group, str) or not _NAME.match(group):
            raise _Fail("groupName: Only supports 1~64 characters, including numbers, letters, underscores, "
                        "and hyphens")
        if body.get("triggerType") == 5:
            times = sorted(datetime.strptime(t, _FMT) for t in json.loads(body.get("triggerInterval") or "[]"))
            if not times or times[0] < datetime.now():
                raise _Fail("The submission time is less than the current time.")
            if any((b - a).total_seconds() < 10 for a, b in zip(times, times[1:])):
                raise _Fail("There are combinations with intervals less than 10(s)")

    def _add_job(self, body: Dict[str, Any], by_biz_id: bool) -> int:
        if by_biz_id:
            biz_id = self._need(body, "bizId")
            if self._job_by_biz(biz_id) is not None:
                raise _Fail("bizId already exists")
        self._check_job_body(body)
        job_id = next(self._ids)
        job = {k: v for k, v in body.items() if k != "id"}
        job.update(id=job_id, bizId=body.get("bizId") or str(1_900_000_000_000_000_000 + job_id),
                   createDt=_now(), updateDt=_now())
        self.jobs[job_id] = job
        return job_id

    def _update_job(self, body: Dict[str, Any], by_biz_id: bool) -> bool:
        if by_biz_id:
            job = self._job_by_biz_or_fail(self._need(body, "bizId"), "Job is null, update failed")
        else:
            job_id = body.get("id")
            if job_id is None:
                raise _Fail("ID cannot be empty")
            job = self.jobs.get(job_id) or {}
            if not job:
                raise _Fail("Job is null, update failed")
        self._check_job_body(body)
        job.update({k: v for k, v in body.items() if v is not None and k not in ("id", "groupName", "bizId")})
        job["updateDt"] = _now()
        return True

    @staticmethod
    def _job_response(job: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if job is None:
            return None
        out = {k: v for k, v in job.items() if v is not None}
        out["argsType"] = str(job.get("argsType", 1))  # a String in the server's JobResponse
        out.update(bucketIndex=0, deleted=0, nextTriggerAt=_now())
        return out

    @staticmethod
    def _exists(job: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if job is None:
            return None
        return {"groupName": job["groupName"], "id": job["id"], "bizId": job["bizId"],
                "jobStatus": job.get("jobStatus")}

    def _trigger(self, job: Dict[str, Any]) -> bool:
        if not self.group_enabled:
            raise _Fail(f"Group [{job['groupName']}] is closed, manual execution is not supported.")
        batch_id = next(self._ids)
        self._batches[batch_id] = _Batch({
            "id": batch_id, "jobId": job["id"], "jobName": job.get("jobName"), "groupName": job["groupName"],
            "taskType": str(job.get("taskType")), "executorType": job.get("executorType"),
            "executorInfo": job.get("executorInfo"), "createDt": _now(), "executionAt": _now()},
            list(self._job_scripts.get(job["id"], self.batch_script)))
        return True

    def _job_status(self, key_status: Tuple[Any, int]) -> bool:
        key, status = key_status
        if status not in (0, 1):
            raise _Fail("Status cannot be empty")
        job = self.jobs.get(key) if isinstance(key, int) else self._job_by_biz(key)
        if job is None:
            raise _Fail("update job status failed")
        job["jobStatus"] = status
        return True

    def _delete_jobs(self, ids: List[int]) -> bool:
        if any(self.jobs.get(i, {}).get("jobStatus", 1) != 0 for i in ids):
            raise _Fail("Failed to delete the scheduled task. Ensure the task is closed, and confirm whether "
                        "the job exists.")
        for i in ids:
            del self.jobs[i]
        return True

    def _read_batch(self, batches: Dict[int, _Batch], batch_id: int, key: str) -> Optional[Dict[str, Any]]:
        batch = batches.get(batch_id)
        return None if batch is None else batch.read(key)

    # workflows
    def _workflow_by_biz(self, biz_id: str) -> Optional[_Workflow]:
        return next((w for w in self.workflows.values() if w.biz_id == biz_id), None)

    def _workflow_by_biz_or_fail(self, biz_id: str) -> _Workflow:
        wf = self._workflow_by_biz(biz_id)
        if wf is None:
            raise _Fail("Failed to delete workflow task, please check if the task status is closed")
        return wf

    @staticmethod
    def _wf_exists(wf: Optional[_Workflow]) -> Optional[Dict[str, Any]]:
        if wf is None:
            return None
        return {"groupName": wf.group, "id": wf.id, "bizId": wf.biz_id, "workflowStatus": wf.status, "version": 1}

    def _trigger_workflow(self, body: Dict[str, Any], by_biz_id: bool) -> bool:
        # both request classes require workflowId (WorkflowTriggerBizIdRequest inherits it);
        # the id-based one also the deprecated jobId
        if by_biz_id:
            self._need(body, "workflowId")
            wf = self._workflow_by_biz(self._need(body, "bizId"))
        else:
            self._need(body, "jobId")
            wf = self.workflows.get(self._need(body, "workflowId"))
        if wf is None:
            raise _Fail("workflow can not be null.")
        if not self.group_enabled:
            raise _Fail(f"Group [{wf.group}] is closed, manual execution is not supported.")
        context = json.loads(wf.wf_context or "{}")
        tmp = body.get("tmpWfContext")
        if tmp:
            merged = json.loads(tmp)
            merged.update(context)  # the workflow's own context wins, as on the server
            context = merged
        wf_batch_id = next(self._ids)
        script = list(self.batch_script)
        final = script[-1] if isinstance(script[-1], int) else script[-1][0]
        job_batches = []
        for job_id, node_id in zip(wf.job_ids, wf.node_ids):
            batch_id = next(self._ids)
            job = self.jobs.get(job_id, {"id": job_id, "groupName": wf.group})
            self._batches[batch_id] = _Batch({
                "id": batch_id, "jobId": job_id, "jobName": job.get("jobName"), "groupName": wf.group,
                "taskType": str(job.get("taskType")), "workflowTaskBatchId": wf_batch_id,
                "workflowNodeId": node_id, "createDt": _now()}, [final])
            job_batches.append(batch_id)
        self._wf_batches[wf_batch_id] = _Batch({"workflowId": wf.id, "jobBatches": job_batches,
                                                "wfContext": json.dumps(context)}, script)
        return True

    def _workflow_status(self, key_status: Tuple[Any, int]) -> bool:
        key, status = key_status
        if status not in (0, 1):
            raise _Fail("Status cannot be empty")
        wf = self.workflows.get(key) if isinstance(key, int) else self._workflow_by_biz(key)
        if wf is None:
            raise _Fail("workflow does not exist")
        wf.status = status
        return True

    def _delete_workflows(self, ids: List[int]) -> bool:
        if any(i not in self.workflows or self.workflows[i].status != 0 for i in ids):
            raise _Fail("Failed to delete workflow task, please check if the task status is closed")
        for i in ids:
            del self.workflows[i]
        return True

    def _workflow_batch(self, wf_batch_id: int) -> Optional[Dict[str, Any]]:
        batch = self._wf_batches.get(wf_batch_id)
        if batch is None:
            return None
        state = batch.read("workflowBatchStatus")
        wf = self.workflows.get(state["workflowId"])
        if wf is None:
            return None
        level: Optional[Dict[str, Any]] = None
        for job_id, node_id, batch_id in reversed(list(zip(wf.job_ids, wf.node_ids, state["jobBatches"]))):
            job_batch = self._batches[batch_id].read("taskBatchStatus")
            node = {"id": node_id, "nodeType": 1, "nodeName": f"node{node_id}", "priorityLevel": 1,
                    "workflowNodeStatus": 1, "failStrategy": 1, "taskBatchStatus": job_batch["taskBatchStatus"],
                    "jobTask": {"jobId": job_id}, "jobBatchList": [job_batch]}
            level = {"nodeType": 1, "conditionNodes": [node], **({"childNode": level} if level else {})}
        out = {"id": wf.id, "bizId": wf.biz_id, "workflowName": wf.name, "groupName": wf.group, "triggerType": 2,
               "blockStrategy": 1, "triggerInterval": "86400", "executorTimeout": 60, "workflowStatus": wf.status,
               "description": "", "workflowBatchStatus": state["workflowBatchStatus"],
               "wfContext": state["wfContext"], "notifyIds": []}
        if level is not None:
            out["nodeConfig"] = level
        return out

    # retries
    def _retry(self, retry_id: int) -> Dict[str, Any]:
        if retry_id not in self.retries:
            raise _Fail(f"Retry task not found:[{retry_id}].")
        return dict(self.retries[retry_id])

    def _retry_trigger(self, retry_id: Any) -> bool:
        retry = self._retry(retry_id)
        if not self.group_enabled:
            raise _Fail(f"Group [{retry['groupName']}] is closed, manual execution is not supported.")
        retry["retryCount"] += 1
        self.retries[retry_id] = retry
        return True

    def _retry_status(self, key_status: Tuple[Any, int]) -> bool:
        key, status = key_status
        if status not in (0, 1, 2, 3):
            raise _Fail(f"Retry status error. [{status}]")
        if key not in self.retries:
            raise _Fail("Retry task not found")
        self.retries[key]["retryStatus"] = status
        return True
