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

This module is the HTTP side (serving, recording, canned replies, the token
check); what each call does lives in ``_fake_routes.py`` (which handler, which
request fields) and ``_fake_model.py`` (the state and the handlers).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence

from snailjob.openapi._fake_model import BatchStep, Fail, FakeModel, Workflow, now
from snailjob.openapi._fake_routes import route
from snailjob.openapi.client import AsyncOpenApiClient, OpenApiClient
from snailjob.settings import DEFAULT_NAMESPACE

__all__ = ["CannedReply", "FakeOpenApiServer", "RecordedRequest"]


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


class FakeOpenApiServer:
    """See the module docstring. ``batch_script``: the statuses a new batch reports on
    successive detail reads (the last one sticks), default WAITING, RUNNING, SUCCESS."""

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE, group: str = "snail_job_demo_group",
                 token: str = "SJ_fake_openapi_token_0123456789", prefix: str = "/snail-job",
                 batch_script: Sequence[BatchStep] = (1, 2, 3)) -> None:
        self._model = FakeModel(namespace=namespace, group=group, batch_script=batch_script)
        self.token = token
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.requests: List[RecordedRequest] = []
        self._replies: List[CannedReply] = []
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
            self._model.set_batch_script(job_id, statuses)

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
            return self._model.add_workflow(job_ids, biz_id, name, status, wf_context)

    def add_retry(self, *, scene: str = "fake-scene", biz_no: str = "", args_str: str = "[]",
                  executor_name: str = "fakeRetry", retry_status: int = 0) -> int:
        """A retry task; returns its id."""
        with self._lock:
            return self._model.add_retry(scene, biz_no, args_str, executor_name, retry_status)

    def batches_of(self, job_id: int) -> List[int]:
        """Ids of the batches triggers created for ``job_id``, oldest first (the real
        server shows these in the console / web API, not in the OpenAPI)."""
        with self._lock:
            return self._model.batches_of(job_id)

    def workflow_batches_of(self, workflow_id: int) -> List[int]:
        with self._lock:
            return self._model.workflow_batches_of(workflow_id)

    # ----------------------------------- the model's state (read and set there)

    @property
    def namespace(self) -> str:
        return self._model.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._model.namespace = value

    @property
    def group(self) -> str:
        return self._model.group

    @group.setter
    def group(self, value: str) -> None:
        self._model.group = value

    @property
    def batch_script(self) -> List[BatchStep]:
        return self._model.batch_script

    @batch_script.setter
    def batch_script(self, value: List[BatchStep]) -> None:
        self._model.batch_script = value

    @property
    def group_enabled(self) -> bool:
        return self._model.group_enabled

    @group_enabled.setter
    def group_enabled(self, value: bool) -> None:
        self._model.group_enabled = value

    @property
    def jobs(self) -> Dict[int, Dict[str, Any]]:
        return self._model.jobs

    @jobs.setter
    def jobs(self, value: Dict[int, Dict[str, Any]]) -> None:
        self._model.jobs = value

    @property
    def workflows(self) -> Dict[int, Workflow]:
        return self._model.workflows

    @workflows.setter
    def workflows(self, value: Dict[int, Workflow]) -> None:
        self._model.workflows = value

    @property
    def retries(self) -> Dict[int, Dict[str, Any]]:
        return self._model.retries

    @retries.setter
    def retries(self, value: Dict[int, Dict[str, Any]]) -> None:
        self._model.retries = value

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
            self._send(handler, 404, json.dumps({"timestamp": now(), "status": 404, "error": "Not Found",
                                                 "path": split.path}).encode())
            return
        try:
            with self._lock:
                self._authenticate(request)
                data = route(self._model, request.method, request.api_path, request.query, request.body)
            envelope = {"status": 1, "message": "Request succeeded", "data": data}
        except Fail as failure:
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
            raise Fail(f"Token authentication failed. [namespace:{h.get('namespace')} "
                        f"groupName:{h.get('group-name')} token:{h.get('token')}]")
        if request.raw and not h.get("content-type", "").startswith("application/json"):
            raise Fail("Parameter incorrect")
