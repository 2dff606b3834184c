"""``OpenApiClient`` (blocking) and ``AsyncOpenApiClient``: every OpenAPI call of the server.

One method per endpoint of SnailJob server 1.10 / 2.0 (27 in all), plus
``wait_job_batch`` / ``wait_workflow_batch`` and ``sync_jobs``. Each call is one
HTTP request on a new connection to ``{base_url}{path}`` with the headers
``namespace``, ``group-name`` and ``token`` (and ``system-version``,
``executor-type: 2``), and a timeout that covers connecting and each wait for
data. The client keeps no connection open and is safe to share between threads.
"""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import logging
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Type, TypeVar, Union

from pydantic import BaseModel, ValidationError

from snailjob._version import __version__
from snailjob.openapi.enums import ExecutorType, JobStatus, RetryStatus
from snailjob.openapi.errors import (
    BatchWaitTimeout,
    OpenApiAuthError,
    OpenApiError,
    OpenApiHTTPError,
    OpenApiNotFoundError,
    OpenApiResponseError,
    OpenApiServerError,
    OpenApiTimeout,
    OpenApiTransportError,
    OpenApiValidationError,
)
from snailjob.openapi.models import (
    DeleteBizIdRequest,
    JobBatch,
    JobDetail,
    JobExists,
    JobRequest,
    JobTriggerBizIdRequest,
    JobTriggerRequest,
    RetryTask,
    StatusUpdateBizIdRequest,
    StatusUpdateRequest,
    TriggerRetryRequest,
    WorkflowBatch,
    WorkflowExists,
    WorkflowTriggerBizIdRequest,
    WorkflowTriggerRequest,
)
from snailjob.openapi.paths import (  # noqa: F401  (DEFAULT_PORT, DEFAULT_PREFIX: re-exported)
    DEFAULT_PORT,
    DEFAULT_PREFIX,
    MAX_DELETE,
    P,
    _biz_id,
    _id,
    _ids,
    _json_text,
    _status,
    default_base_url,
)
from snailjob.openapi.spec import JobSpec
from snailjob.settings import Settings
from snailjob.wire.codec import clean, location

__all__ = ["AsyncOpenApiClient", "OpenApiClient", "SyncJobsError", "SyncResult", "default_base_url"]

logger = logging.getLogger("snailjob.openapi")

_M = TypeVar("_M", bound=BaseModel)
_SNIPPET = 200  # characters of a reply body shown in an error
_READ_FOR_SNIPPET = 65536  # bytes of a body looked at for that
_HTML = re.compile(r"(?i)<(?:!doctype|html|head|body|title|h1|p|div)\b")
_HIDDEN = re.compile(r"(?is)<(head|style|script)\b.*?</\1\s*>")
_TAG = re.compile(r"(?s)<[^>]*>")
StatusLike = Union[bool, int, JobStatus]
JobLike = Union[JobSpec, JobRequest]


# ------------------------------------------------------------------------- sync results


@dataclass(frozen=True)
class SyncResult:
    """What ``sync_jobs`` did for one job.

    ``action`` is ``"added"``, ``"updated"``, ``"failed"``, or with ``dry_run``
    ``"would_add"`` / ``"would_update"``. ``job_id`` is the server's id (``None`` for
    ``would_add`` and for a failed add); ``error`` is set when ``action == "failed"``."""

    biz_id: str
    name: str
    action: str
    job_id: Optional[int] = None
    error: Optional[OpenApiError] = None

    @property
    def ok(self) -> bool:
        return self.action != "failed"


class SyncJobsError(OpenApiError):
    """``sync_jobs`` could not add or update some jobs; ``results`` has one ``SyncResult``
    per job (the others were applied)."""

    def __init__(self, results: Sequence[SyncResult]) -> None:
        self.results = list(results)
        failed = [r for r in self.results if not r.ok]
        detail = "; ".join(f"{r.biz_id}: {r.error.message if r.error else '?'}" for r in failed[:5])
        super().__init__(f"{len(failed)} of {len(self.results)} jobs failed to sync: {detail}")


# ------------------------------------------------------------------------------ client


class OpenApiClient:
    """Blocking client of the SnailJob server's OpenAPI (HTTP, server 1.10 and later).

    ``base_url`` is ``{scheme}://{host}:{port}/{prefix}`` of the server's *web*
    port (default ``SNAIL_OPENAPI_URL``, else ``http://<first SNAIL_SERVER_HOST>:8080/snail-job``).
    ``namespace``, ``group`` and ``token`` default to ``SNAIL_NAMESPACE``,
    ``SNAIL_GROUP_NAME`` and ``SNAIL_TOKEN``, ``timeout`` (seconds, for connecting and
    for each wait for data) to ``SNAIL_OPENAPI_TIMEOUT``. Settings are read only for
    what is not given explicitly. ``ssl_context`` is used for ``https://`` URLs.

    Every method raises ``OpenApiValidationError`` for bad arguments before
    sending, and a subclass of ``OpenApiError`` for everything the server or the
    network does wrong. The token never appears in a message, ``repr`` or log line.
    """

    def __init__(self, base_url: Optional[str] = None, *, namespace: Optional[str] = None,
                 group: Optional[str] = None, token: Optional[str] = None, timeout: Optional[float] = None,
                 settings: Optional[Settings] = None, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        if settings is None and None in (base_url, namespace, group, token, timeout):
            settings = Settings.load()
        # where the URL came from, for the error messages: given, SNAIL_OPENAPI_URL, or the default
        self._url_source = "base_url"
        if settings is not None:
            if base_url is None:
                self._url_source = "SNAIL_OPENAPI_URL" if settings.snail_openapi_url else "default"
            base_url = base_url if base_url is not None else default_base_url(settings)
            namespace = namespace if namespace is not None else settings.snail_namespace
            group = group if group is not None else settings.snail_group_name
            token = token if token is not None else settings.snail_token
            timeout = timeout if timeout is not None else float(settings.snail_openapi_timeout)
        assert base_url is not None and namespace is not None and group is not None and token is not None
        for field, value in (("namespace", namespace), ("group", group), ("token", token)):
            if not isinstance(value, str) or not value.strip():
                raise OpenApiValidationError(field, "must be a non-blank string")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):  # the value is never echoed
                raise OpenApiValidationError(field, "must not contain control characters (it is an HTTP header)")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise OpenApiValidationError("timeout", f"must be a number of seconds > 0, got {timeout!r}")
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpenApiValidationError("base_url", f"must look like http://host:8080/snail-job, got {base_url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise OpenApiValidationError("base_url", "must not contain a query, a fragment or credentials")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port or (443 if self._https else 80)
        except ValueError:
            raise OpenApiValidationError("base_url", f"has an invalid port: {base_url!r}") from None
        self._prefix = parts.path.rstrip("/")
        self._netloc = parts.netloc
        self.base_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, self._prefix, "", ""))
        self.namespace = namespace
        self.group = group
        self.timeout = float(timeout)
        self._token = token
        self._ssl_context = ssl_context

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None, **overrides: Any) -> OpenApiClient:
        """A client configured by ``settings`` (default: ``Settings.load()``, i.e. the
        ``SNAIL_*`` environment and ``.env``); keyword ``overrides`` as for the constructor."""
        return cls(settings=settings if settings is not None else Settings.load(), **overrides)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_url={self.base_url!r}, namespace={self.namespace!r}, "
                f"group={self.group!r}, timeout={self.timeout})")

    # ------------------------------------------------------------------ HTTP plumbing

    def _headers(self) -> Dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"snail-job-python/{__version__}",
            "namespace": self.namespace,
            "group-name": self.group,
            "token": self._token,
            "system-version": __version__,
            "executor-type": str(int(ExecutorType.PYTHON)),
        }

    def _redact(self, text: str) -> str:
        if len(self._token) >= 4:
            text = text.replace(self._token, "***")
        return re.sub(r"(?i)(token\s*[:=]\s*)[^\]\s,;\"']+", r"\1***", text)

    def _snippet(self, raw: bytes) -> str:
        """At most ``_SNIPPET`` characters of a reply body, token removed; an HTML page
        (a servlet container's error page) as its text on one line, tags and styles removed."""
        text = self._redact(raw[:_READ_FOR_SNIPPET].decode("utf-8", "replace"))
        if _HTML.search(text):
            text = self._redact(html.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", text))))
            text = " ".join(text.split())
        else:
            text = text.strip()
        if len(text) > _SNIPPET or len(raw) > _READ_FOR_SNIPPET:
            text = text[:_SNIPPET - 3].rstrip() + "..."
        return text

    def _url_name(self) -> str:
        """How the messages name the base URL's setting."""
        return "SNAIL_OPENAPI_URL" if self._url_source != "base_url" else "the base URL"

    def _unreachable(self, exc: BaseException) -> str:
        """``cannot reach URL (where it came from): reason; what to do``."""
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(exc, socket.gaierror):
            reason = f"unknown host {clean(self._host, 100)} ({clean(exc.strerror or str(exc), 100)})"
        elif isinstance(exc, ConnectionResetError):
            reason = "connection reset by the server"
        elif isinstance(exc, http.client.RemoteDisconnected):
            reason = "the server closed the connection without answering"
        elif isinstance(exc, http.client.BadStatusLine):
            # http.client's exceptions can carry the server's bytes
            reason = (f"the answer is not HTTP/1.x ({clean(self._redact(str(exc)), 60)}); "
                      "is this the server's gRPC port instead of its web port?")
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS error: {clean(self._redact(str(exc)), 200)}"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = clean(exc.strerror.lower(), 200)
        else:
            reason = f"{type(exc).__name__}: {clean(self._redact(str(exc)), 300)}"
        if self._url_source == "SNAIL_OPENAPI_URL":
            where, fix = " (SNAIL_OPENAPI_URL)", "start the server or set SNAIL_OPENAPI_URL"
        elif self._url_source == "default":
            where, fix = " (the default: SNAIL_OPENAPI_URL is not set)", "start the server or set SNAIL_OPENAPI_URL"
        else:
            where, fix = "", "start the server or pass its web port's URL as base_url"
        return f"cannot reach {self.base_url}{where}: {reason}; {fix}"

    def _http_error(self, http_status: int, reason: str, target: str, raw: bytes) -> str:
        """``HTTP 404 Not Found from URL: short body; hint``: never a whole page."""
        url = urllib.parse.urlunsplit(("https" if self._https else "http", f"{self._netloc}", target, "", ""))
        reason = reason.strip() or http.client.responses.get(http_status, "")  # Tomcat sends no reason phrase
        text = f"HTTP {http_status} {clean(reason, 80)}".rstrip() + f" from {clean(url, 300)}"
        body = self._snippet(raw)
        if body:
            text += f": {clean(body, _SNIPPET + 50)}"
        if http_status == 404:
            name = self._url_name()
            if not self._prefix:
                text += f"; is {name} missing the /{DEFAULT_PREFIX} context path?"
            elif self._prefix != f"/{DEFAULT_PREFIX}":
                text += (f"; is {self._prefix}, the context path of {name}, right? "
                         f"(the server's default is /{DEFAULT_PREFIX})")
        return text

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _call(self, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None,
              body: Any = None) -> Any:
        """One request; returns the envelope's ``data`` or raises an ``OpenApiError``."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        payload = None if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        started = time.monotonic()
        conn = self._connection()
        try:
            conn.request(method, target, body=payload, headers=self._headers())
            response = conn.getresponse()
            raw = response.read()
            http_status, reason = response.status, response.reason
        except (socket.timeout, TimeoutError):
            logger.warning("%s %s: no answer within %.1fs", method, path, self.timeout)
            raise OpenApiTimeout(f"no answer from {self.base_url} within {self.timeout:g}s", path=path) from None
        except (OSError, http.client.HTTPException) as exc:
            problem = self._unreachable(exc)
            logger.warning("%s %s: %s", method, path, problem)
            raise OpenApiTransportError(problem, path=path) from None
        finally:
            conn.close()
        elapsed = (time.monotonic() - started) * 1000
        if not 200 <= http_status < 300:
            logger.warning("%s %s -> HTTP %s in %.0f ms", method, path, http_status, elapsed)
            raise OpenApiHTTPError(self._http_error(http_status, reason, target.split("?", 1)[0], raw), path=path,
                                   http_status=http_status)
        try:
            envelope = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise OpenApiResponseError(f"the reply is not JSON: {self._snippet(raw)!r}", path=path) from None
        if not isinstance(envelope, dict) or "status" not in envelope:
            raise OpenApiResponseError(f"the reply is not a SnailJob result: {self._snippet(raw)!r}", path=path)
        status = envelope.get("status")
        logger.debug("%s %s -> status %s in %.0f ms", method, path, status, elapsed)
        if status != 1:
            text = self._redact(str(envelope.get("message") or "(no message)"))
            code = status if isinstance(status, int) and not isinstance(status, bool) else None
            auth = code == 5001 or text.lower().startswith("token authentication failed")
            message = clean(text, 2000)  # quoted when it holds a newline or an escape character
            raise (OpenApiAuthError if auth else OpenApiServerError)(message, path=path, status=code)
        return envelope.get("data")

    @staticmethod
    def _bool(data: Any, path: str) -> bool:
        if not isinstance(data, bool):
            raise OpenApiResponseError(f"expected true/false as data, got {data!r}"[:200], path=path)
        return data

    @staticmethod
    def _int(data: Any, path: str) -> int:
        if isinstance(data, str) and data.isdigit():
            return int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            raise OpenApiResponseError(f"expected an id as data, got {data!r}"[:200], path=path)
        return data

    @staticmethod
    def _model(model: Type[_M], data: Any, path: str) -> Optional[_M]:
        if data is None:
            return None
        if not isinstance(data, dict):
            raise OpenApiResponseError(f"expected an object as data, got {data!r}"[:200], path=path)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise OpenApiResponseError(f"unexpected {model.__name__}: {clean(first['msg'], 200)} "
                                       f"at {location(first['loc']) or 'data'}", path=path) from None

    def _job_body(self, job: JobLike, *, job_id: Optional[int] = None, need_biz_id: bool = False) -> Dict[str, Any]:
        if isinstance(job, JobSpec):
            request = job.to_request(self.group, job_id=job_id)
        elif isinstance(job, JobRequest):
            request = job if job_id is None else job.model_copy(update={"id": job_id})
            if request.group_name is None:
                request = request.model_copy(update={"group_name": self.group})
        else:
            raise OpenApiValidationError("job", f"must be a JobSpec or a JobRequest, got {type(job).__name__}")
        if need_biz_id:
            _biz_id(request.biz_id)
        return request.wire()

    # ------------------------------------------------------------------------ jobs

    def add_job(self, job: JobLike) -> int:
        """``POST /api/job/add``: create a job; returns its id."""
        return self._int(self._call("POST", P.JOB_ADD, body=self._job_body(job)), P.JOB_ADD)

    def update_job(self, job_id: int, job: JobLike) -> bool:
        """``PUT /api/job/update``: replace job ``job_id``'s definition (its group cannot change).
        A ``JobRequest`` with ``None`` fields updates only the other fields."""
        body = self._job_body(job, job_id=_id(job_id))
        return self._bool(self._call("PUT", P.JOB_UPDATE, body=body), P.JOB_UPDATE)

    def job_detail(self, job_id: int) -> Optional[JobDetail]:
        """``GET /api/job/detail/id?id=``: the job, or ``None`` if there is none
        (the server then answers an empty object)."""
        detail = self._model(JobDetail, self._call("GET", P.JOB_DETAIL, query={"id": _id(job_id)}), P.JOB_DETAIL)
        return detail if detail is not None and detail.id is not None else None

    def job_exists(self, job_id: int) -> Optional[JobExists]:
        """``GET /api/job/exists?id=``: id, bizId, group and status, or ``None``."""
        return self._model(JobExists, self._call("GET", P.JOB_EXISTS, query={"id": _id(job_id)}), P.JOB_EXISTS)

    def trigger_job(self, job_id: int, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        """``POST /api/job/trigger``: run the job now (also a disabled one; its group must
        be enabled). ``args`` replace the job's whole ``argsStr`` for this run: use
        ``sharding_args(...)`` / ``map_reduce_args(...)`` for those task types.

        The server answers only ``true``: it does not say which batch it created
        (see ``wait_job_batch``)."""
        request = JobTriggerRequest(job_id=_id(job_id), tmp_args_str=_json_text(args, "tmpArgsStr", False))
        return self._bool(self._call("POST", P.JOB_TRIGGER, body=request.wire()), P.JOB_TRIGGER)

    def update_job_status(self, job_id: int, status: StatusLike) -> bool:
        """``PUT /api/job/update/status``: enable (True / ``JobStatus.ENABLED``) or disable."""
        request = StatusUpdateRequest(id=_id(job_id), status=_status(status))
        return self._bool(self._call("PUT", P.JOB_UPDATE_STATUS, body=request.wire()), P.JOB_UPDATE_STATUS)

    def delete_jobs(self, job_ids: Iterable[int]) -> bool:
        """``DELETE /api/job/delete``: delete up to 100 jobs. All must exist and be
        disabled, and none may be used by a workflow, or nothing is deleted."""
        body = _ids(job_ids, "ids", _id)
        return self._bool(self._call("DELETE", P.JOB_DELETE, body=body), P.JOB_DELETE)

    # ----------------------------------------------------------------- jobs by bizId

    def add_job_by_biz_id(self, job: JobLike) -> int:
        """``POST /api/job/bizId/add``: create a job with its ``biz_id`` (required); the
        server refuses a bizId that already exists in the namespace. Returns the id."""
        body = self._job_body(job, need_biz_id=True)
        return self._int(self._call("POST", P.JOB_BIZ_ADD, body=body), P.JOB_BIZ_ADD)

    def update_job_by_biz_id(self, job: JobLike) -> bool:
        """``PUT /api/job/bizId/update``: update the job whose bizId is ``job.biz_id``."""
        body = self._job_body(job, need_biz_id=True)
        body.pop("id", None)
        return self._bool(self._call("PUT", P.JOB_BIZ_UPDATE, body=body), P.JOB_BIZ_UPDATE)

    def job_detail_by_biz_id(self, biz_id: str) -> Optional[JobDetail]:
        """``GET /api/job/bizId/detail?bizId=``: the job, or ``None``."""
        data = self._call("GET", P.JOB_BIZ_DETAIL, query={"bizId": _biz_id(biz_id)})
        detail = self._model(JobDetail, data, P.JOB_BIZ_DETAIL)
        return detail if detail is not None and detail.id is not None else None

    def job_exists_by_biz_id(self, biz_id: str) -> Optional[JobExists]:
        """``GET /api/job/bizId/exists?bizId=``: id, bizId, group and status, or ``None``."""
        data = self._call("GET", P.JOB_BIZ_EXISTS, query={"bizId": _biz_id(biz_id)})
        return self._model(JobExists, data, P.JOB_BIZ_EXISTS)

    def trigger_job_by_biz_id(self, biz_id: str, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        """``POST /api/job/bizId/trigger``: as ``trigger_job``, by bizId."""
        request = JobTriggerBizIdRequest(biz_id=_biz_id(biz_id), tmp_args_str=_json_text(args, "tmpArgsStr", False))
        return self._bool(self._call("POST", P.JOB_BIZ_TRIGGER, body=request.wire()), P.JOB_BIZ_TRIGGER)

    def update_job_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        """``PUT /api/job/bizId/updateStatus``: enable or disable, by bizId."""
        request = StatusUpdateBizIdRequest(biz_id=_biz_id(biz_id), status=_status(status))
        return self._bool(self._call("PUT", P.JOB_BIZ_UPDATE_STATUS, body=request.wire()), P.JOB_BIZ_UPDATE_STATUS)

    def delete_jobs_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        """``DELETE /api/job/bizId/delete`` with ``{"bizIds": [...]}``: up to 100 disabled jobs."""
        request = DeleteBizIdRequest(biz_ids=_ids(biz_ids, "bizIds", _biz_id))
        return self._bool(self._call("DELETE", P.JOB_BIZ_DELETE, body=request.wire()), P.JOB_BIZ_DELETE)

    # --------------------------------------------------------------------- workflows

    def trigger_workflow(self, workflow_id: int, context: Union[str, Mapping[str, Any], None] = None) -> bool:
        """``POST /api/workflow/trigger``: run the workflow now. ``context`` (a JSON object)
        is merged into the workflow's context for this run; on a key present in both,
        the workflow's stored value wins (that is how the server merges).

        Sends the deprecated but still required ``jobId`` (= the workflow id). The
        server answers only ``true``, not the new workflow batch's id."""
        request = WorkflowTriggerRequest(workflow_id=_id(workflow_id, "workflowId"), job_id=workflow_id,
                                         tmp_wf_context=_json_text(context, "tmpWfContext", True))
        return self._bool(self._call("POST", P.WORKFLOW_TRIGGER, body=request.wire()), P.WORKFLOW_TRIGGER)

    def update_workflow_status(self, workflow_id: int, status: StatusLike) -> bool:
        """``PUT /api/workflow/update/status``: enable or disable a workflow."""
        request = StatusUpdateRequest(id=_id(workflow_id), status=_status(status))
        return self._bool(self._call("PUT", P.WORKFLOW_UPDATE_STATUS, body=request.wire()), P.WORKFLOW_UPDATE_STATUS)

    def delete_workflows(self, workflow_ids: Iterable[int]) -> bool:
        """``DELETE /api/workflow/delete``: delete up to 100 disabled workflows."""
        body = _ids(workflow_ids, "ids", _id)
        return self._bool(self._call("DELETE", P.WORKFLOW_DELETE, body=body), P.WORKFLOW_DELETE)

    def workflow_exists(self, workflow_id: int) -> Optional[WorkflowExists]:
        """``GET /api/workflow/exists?id=``: id, bizId, group, status and version, or ``None``."""
        data = self._call("GET", P.WORKFLOW_EXISTS, query={"id": _id(workflow_id)})
        return self._model(WorkflowExists, data, P.WORKFLOW_EXISTS)

    def trigger_workflow_by_biz_id(self, biz_id: str, context: Union[str, Mapping[str, Any], None] = None, *,
                                   workflow_id: Optional[int] = None) -> bool:
        """``POST /api/workflow/bizId/trigger``: as ``trigger_workflow``, by bizId.

        The server's request class inherits a required ``workflowId`` that it then
        ignores; unless ``workflow_id`` is given, the client first looks it up with
        ``workflow_exists_by_biz_id`` (and raises ``OpenApiNotFoundError`` if there is
        no such workflow)."""
        biz_id = _biz_id(biz_id)
        if workflow_id is None:
            found = self.workflow_exists_by_biz_id(biz_id)
            if found is None or found.id is None:
                raise OpenApiNotFoundError(f"no workflow with bizId {biz_id!r}", path=P.WORKFLOW_BIZ_EXISTS)
            workflow_id = found.id
        request = WorkflowTriggerBizIdRequest(biz_id=biz_id, workflow_id=_id(workflow_id, "workflowId"),
                                              tmp_wf_context=_json_text(context, "tmpWfContext", True))
        return self._bool(self._call("POST", P.WORKFLOW_BIZ_TRIGGER, body=request.wire()), P.WORKFLOW_BIZ_TRIGGER)

    def update_workflow_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        """``PUT /api/workflow/bizId/updateStatus``: enable or disable, by bizId."""
        request = StatusUpdateBizIdRequest(biz_id=_biz_id(biz_id), status=_status(status))
        return self._bool(self._call("PUT", P.WORKFLOW_BIZ_UPDATE_STATUS, body=request.wire()),
                          P.WORKFLOW_BIZ_UPDATE_STATUS)

    def delete_workflows_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        """``DELETE /api/workflow/bizId/delete``: the body is a bare JSON list of bizIds
        (unlike the job variant's ``{"bizIds": [...]}``)."""
        body = _ids(biz_ids, "bizIds", _biz_id)
        return self._bool(self._call("DELETE", P.WORKFLOW_BIZ_DELETE, body=body), P.WORKFLOW_BIZ_DELETE)

    def workflow_exists_by_biz_id(self, biz_id: str) -> Optional[WorkflowExists]:
        """``GET /api/workflow/bizId/exists?bizId=``: or ``None``."""
        data = self._call("GET", P.WORKFLOW_BIZ_EXISTS, query={"bizId": _biz_id(biz_id)})
        return self._model(WorkflowExists, data, P.WORKFLOW_BIZ_EXISTS)

    # ----------------------------------------------------------------------- batches

    def job_batch_detail(self, batch_id: int) -> Optional[JobBatch]:
        """``GET /api/job-batch/detail/{id}?id=``: one job batch (status and
        ``operationReason``; no task results), or ``None``."""
        batch_id = _id(batch_id)
        path = f"{P.JOB_BATCH_DETAIL}{batch_id}"
        return self._model(JobBatch, self._call("GET", path, query={"id": batch_id}), path)

    def workflow_batch_detail(self, workflow_batch_id: int) -> Optional[WorkflowBatch]:
        """``GET /api/workflow-batch/detail/id?id=``: the workflow batch's status and,
        per node, the job batches it created (``WorkflowBatch.job_batches()``), or ``None``."""
        data = self._call("GET", P.WORKFLOW_BATCH_DETAIL, query={"id": _id(workflow_batch_id)})
        return self._model(WorkflowBatch, data, P.WORKFLOW_BATCH_DETAIL)

    # ------------------------------------------------------------------------- retry

    def retry_detail(self, retry_id: int) -> RetryTask:
        """``GET /api/retry/query?id=``: one retry task (the server answers an error if
        there is none)."""
        data = self._call("GET", P.RETRY_QUERY, query={"id": _id(retry_id)})
        task = self._model(RetryTask, data, P.RETRY_QUERY)
        if task is None:
            raise OpenApiNotFoundError(f"no retry task {retry_id}", path=P.RETRY_QUERY)
        return task

    def trigger_retry(self, retry_id: int) -> bool:
        """``POST /api/retry/trigger``: run a retry task now (its group must be enabled)."""
        request = TriggerRetryRequest(id=_id(retry_id))
        return self._bool(self._call("POST", P.RETRY_TRIGGER, body=request.wire()), P.RETRY_TRIGGER)

    def update_retry_status(self, retry_id: int, status: Union[RetryStatus, int]) -> bool:
        """``PUT /api/retry/update/status``: RUNNING (0, resume), FINISH (1), MAX_COUNT (2)
        or SUSPEND (3)."""
        try:
            code = int(RetryStatus(status)) if not isinstance(status, bool) else -1
        except (ValueError, TypeError):
            code = -1
        if code < 0:
            raise OpenApiValidationError("status", f"must be a RetryStatus (0-3), got {status!r}")
        request = StatusUpdateRequest(id=_id(retry_id), status=code)
        return self._bool(self._call("PUT", P.RETRY_UPDATE_STATUS, body=request.wire()), P.RETRY_UPDATE_STATUS)

    # ----------------------------------------------------------------------- helpers

    def wait_job_batch(self, batch_id: int, timeout: float = 300.0, poll: float = 1.0) -> JobBatch:
        """Poll ``job_batch_detail`` until the batch is SUCCESS, FAIL, STOP or CANCEL; return it.

        The result has ``status`` (``BatchStatus``), ``reason`` (``OperationReason``),
        ``succeeded`` and the rest of the batch detail. The OpenAPI does not return
        task results: read them in the console or the web API.

        Where the batch id comes from: no OpenAPI call returns it (a trigger answers
        only ``true``). Take it from the console or the web API's batch list
        (``GET /job/batch/list?jobId=``), from a workflow batch
        (``workflow_batch_detail(...).job_batches()``), or from inside the job
        (``args.task_batch_id``).

        Network errors and HTTP 5xx while polling are retried until ``timeout``;
        raises ``OpenApiNotFoundError`` if there is no such batch and
        ``BatchWaitTimeout`` (with ``.last``) when ``timeout`` seconds pass."""
        batch_id = _id(batch_id)
        return self._wait(lambda: self.job_batch_detail(batch_id), f"job batch {batch_id}",
                          f"{P.JOB_BATCH_DETAIL}{batch_id}", timeout, poll)

    def wait_workflow_batch(self, workflow_batch_id: int, timeout: float = 600.0, poll: float = 1.0) -> WorkflowBatch:
        """As ``wait_job_batch``, for a workflow batch (``workflowBatchStatus``)."""
        workflow_batch_id = _id(workflow_batch_id)
        return self._wait(lambda: self.workflow_batch_detail(workflow_batch_id),
                          f"workflow batch {workflow_batch_id}", P.WORKFLOW_BATCH_DETAIL, timeout, poll)

    def _wait(self, read: Any, what: str, path: str, timeout: float, poll: float) -> Any:
        _check_wait(timeout, poll)
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                current = read()
            except (OpenApiTransportError, OpenApiHTTPError) as exc:
                if isinstance(exc, OpenApiHTTPError) and exc.http_status < 500:
                    raise
                logger.warning("waiting for %s: %s (retrying)", what, exc)
            else:
                if current is None:
                    raise OpenApiNotFoundError(f"no {what}", path=path)
                last = current
                if current.is_final:
                    return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _wait_timeout(what, path, timeout, last)
            time.sleep(min(poll, remaining))

    def sync_jobs(self, jobs: Sequence[JobSpec], *, dry_run: bool = False,
                  raise_on_error: bool = True) -> List[SyncResult]:
        """Jobs as code: make the server's jobs match ``jobs``, keyed by ``biz_id``.

        For each spec (in order): if a job with its bizId exists, update it
        (``PUT /api/job/bizId/update``), else add it (``POST /api/job/bizId/add``).
        Returns one ``SyncResult`` per job. Jobs on the server that are not in the list
        are left alone. Every spec is checked (bizId present and unique, fields valid)
        before anything is sent. A bizId that exists in another group of the
        namespace is not touched (a job cannot change group) and is reported as failed.

        ``dry_run``: only look up, report ``would_add`` / ``would_update``. If some jobs
        failed, ``SyncJobsError`` (with ``.results``) is raised after all the others
        were applied, unless ``raise_on_error`` is false."""
        plan = _plan(jobs, self.group)
        results: List[SyncResult] = []
        for spec in plan:
            assert spec.biz_id is not None
            target_group = spec.group or self.group
            try:
                found = self.job_exists_by_biz_id(spec.biz_id)
                if found is not None and found.group_name not in (None, target_group):
                    raise OpenApiValidationError("groupName", f"bizId {spec.biz_id!r} belongs to a job of group "
                                                              f"{found.group_name!r}, not {target_group!r}")
                if dry_run:
                    results.append(SyncResult(spec.biz_id, spec.name, "would_update" if found else "would_add",
                                              found.id if found else None))
                elif found is not None:
                    if not self.update_job_by_biz_id(spec):
                        raise OpenApiServerError("the server updated nothing", path=P.JOB_BIZ_UPDATE)
                    results.append(SyncResult(spec.biz_id, spec.name, "updated", found.id))
                else:
                    results.append(SyncResult(spec.biz_id, spec.name, "added", self.add_job_by_biz_id(spec)))
            except OpenApiError as exc:
                logger.warning("sync_jobs: %s (%s): %s", spec.biz_id, spec.name, exc)
                results.append(SyncResult(spec.biz_id, spec.name, "failed", None, exc))
        if raise_on_error and any(not r.ok for r in results):
            raise SyncJobsError(results)
        return results


def _check_wait(timeout: float, poll: float) -> None:
    for field, value in (("timeout", timeout), ("poll", poll)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise OpenApiValidationError(field, f"must be a number of seconds > 0, got {value!r}")


def _wait_timeout(what: str, path: str, timeout: float, last: Any) -> BatchWaitTimeout:
    status = getattr(last, "status", None)
    seen = f"still {status.name}" if status is not None else "never read"
    return BatchWaitTimeout(f"{what} is {seen} after {timeout:g}s", path=path, last=last)


def _plan(jobs: Sequence[JobSpec], group: str) -> List[JobSpec]:
    if isinstance(jobs, JobSpec) or not isinstance(jobs, Sequence):
        raise OpenApiValidationError("jobs", "must be a list of JobSpec")
    seen: Dict[str, str] = {}
    for index, spec in enumerate(jobs):
        if not isinstance(spec, JobSpec):
            raise OpenApiValidationError(f"jobs[{index}]", f"must be a JobSpec, got {type(spec).__name__}")
        if spec.biz_id is None:
            raise OpenApiValidationError("bizId", f"job {spec.name!r} needs a biz_id to be synced")
        if spec.biz_id in seen:
            raise OpenApiValidationError("bizId", f"{spec.biz_id!r} is used by both {seen[spec.biz_id]!r} "
                                                  f"and {spec.name!r}")
        seen[spec.biz_id] = spec.name
        spec.to_request(group)  # checks what can go stale (point-in-time triggers) before sending anything
    return list(jobs)


# ------------------------------------------------------------------------ async client


class AsyncOpenApiClient:
    """The same calls as ``OpenApiClient``, as coroutines.

    Honest note: this is not a native asyncio HTTP client. Each call runs the
    blocking ``OpenApiClient`` method in a worker thread (``asyncio.to_thread``), so
    the event loop is never blocked, but every call in flight occupies a thread of
    the loop's default executor. That is fine for management calls (a few at a
    time); it avoids a dependency on an async HTTP library. ``wait_job_batch`` and
    ``wait_workflow_batch`` sleep with ``asyncio.sleep`` between polls.
    Constructor arguments are those of ``OpenApiClient``; ``.sync`` is the wrapped
    blocking client.
    """

    def __init__(self, base_url: Optional[str] = None, *, client: Optional[OpenApiClient] = None,
                 **options: Any) -> None:
        self.sync = client if client is not None else OpenApiClient(base_url, **options)

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None, **overrides: Any) -> AsyncOpenApiClient:
        return cls(client=OpenApiClient.from_settings(settings, **overrides))

    def __repr__(self) -> str:
        return f"AsyncOpenApiClient({self.sync!r})"

    async def add_job(self, job: JobLike) -> int:
        return await asyncio.to_thread(self.sync.add_job, job)

    async def update_job(self, job_id: int, job: JobLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job, job_id, job)

    async def job_detail(self, job_id: int) -> Optional[JobDetail]:
        return await asyncio.to_thread(self.sync.job_detail, job_id)

    async def job_exists(self, job_id: int) -> Optional[JobExists]:
        return await asyncio.to_thread(self.sync.job_exists, job_id)

    async def trigger_job(self, job_id: int, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_job, job_id, args)

    async def update_job_status(self, job_id: int, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job_status, job_id, status)

    async def delete_jobs(self, job_ids: Iterable[int]) -> bool:
        return await asyncio.to_thread(self.sync.delete_jobs, list(job_ids))

    async def add_job_by_biz_id(self, job: JobLike) -> int:
        return await asyncio.to_thread(self.sync.add_job_by_biz_id, job)

    async def update_job_by_biz_id(self, job: JobLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job_by_biz_id, job)

    async def job_detail_by_biz_id(self, biz_id: str) -> Optional[JobDetail]:
        return await asyncio.to_thread(self.sync.job_detail_by_biz_id, biz_id)

    async def job_exists_by_biz_id(self, biz_id: str) -> Optional[JobExists]:
        return await asyncio.to_thread(self.sync.job_exists_by_biz_id, biz_id)

    async def trigger_job_by_biz_id(self, biz_id: str, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_job_by_biz_id, biz_id, args)

    async def update_job_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job_status_by_biz_id, biz_id, status)

    async def delete_jobs_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        return await asyncio.to_thread(self.sync.delete_jobs_by_biz_id, list(biz_ids))

    async def trigger_workflow(self, workflow_id: int, context: Union[str, Mapping[str, Any], None] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_workflow, workflow_id, context)

    async def update_workflow_status(self, workflow_id: int, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_workflow_status, workflow_id, status)

    async def delete_workflows(self, workflow_ids: Iterable[int]) -> bool:
        return await asyncio.to_thread(self.sync.delete_workflows, list(workflow_ids))

    async def workflow_exists(self, workflow_id: int) -> Optional[WorkflowExists]:
        return await asyncio.to_thread(self.sync.workflow_exists, workflow_id)

    async def trigger_workflow_by_biz_id(self, biz_id: str, context: Union[str, Mapping[str, Any], None] = None, *,
                                         workflow_id: Optional[int] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_workflow_by_biz_id, biz_id, context,
                                       workflow_id=workflow_id)

    async def update_workflow_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_workflow_status_by_biz_id, biz_id, status)

    async def delete_workflows_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        return await asyncio.to_thread(self.sync.delete_workflows_by_biz_id, list(biz_ids))

    async def workflow_exists_by_biz_id(self, biz_id: str) -> Optional[WorkflowExists]:
        return await asyncio.to_thread(self.sync.workflow_exists_by_biz_id, biz_id)

    async def job_batch_detail(self, batch_id: int) -> Optional[JobBatch]:
        return await asyncio.to_thread(self.sync.job_batch_detail, batch_id)

    async def workflow_batch_detail(self, workflow_batch_id: int) -> Optional[WorkflowBatch]:
        return await asyncio.to_thread(self.sync.workflow_batch_detail, workflow_batch_id)

    async def retry_detail(self, retry_id: int) -> RetryTask:
        return await asyncio.to_thread(self.sync.retry_detail, retry_id)

    async def trigger_retry(self, retry_id: int) -> bool:
        return await asyncio.to_thread(self.sync.trigger_retry, retry_id)

    async def update_retry_status(self, retry_id: int, status: Union[RetryStatus, int]) -> bool:
        return await asyncio.to_thread(self.sync.update_retry_status, retry_id, status)

    async def sync_jobs(self, jobs: Sequence[JobSpec], *, dry_run: bool = False,
                        raise_on_error: bool = True) -> List[SyncResult]:
        return await asyncio.to_thread(self.sync.sync_jobs, jobs, dry_run=dry_run, raise_on_error=raise_on_error)

    async def wait_job_batch(self, batch_id: int, timeout: float = 300.0, poll: float = 1.0) -> JobBatch:
        """As ``OpenApiClient.wait_job_batch``; sleeps with ``asyncio.sleep``."""
        batch_id = _id(batch_id)
        result: JobBatch = await self._wait(self.job_batch_detail, batch_id, f"job batch {batch_id}",
                                            f"{P.JOB_BATCH_DETAIL}{batch_id}", timeout, poll)
        return result

    async def wait_workflow_batch(self, workflow_batch_id: int, timeout: float = 600.0,
                                  poll: float = 1.0) -> WorkflowBatch:
        """As ``OpenApiClient.wait_workflow_batch``; sleeps with ``asyncio.sleep``."""
        workflow_batch_id = _id(workflow_batch_id)
        result: WorkflowBatch = await self._wait(self.workflow_batch_detail, workflow_batch_id,
                                                 f"workflow batch {workflow_batch_id}", P.WORKFLOW_BATCH_DETAIL,
                                                 timeout, poll)
        return result

    async def _wait(self, read: Any, ident: int, what: str, path: str, timeout: float, poll: float) -> Any:
        _check_wait(timeout, poll)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Any = None
        while True:
            try:
                current = await read(ident)
            except (OpenApiTransportError, OpenApiHTTPError) as exc:
                if isinstance(exc, OpenApiHTTPError) and exc.http_status < 500:
                    raise
                logger.warning("waiting for %s: %s (retrying)", what, exc)
            else:
                if current is None:
                    raise OpenApiNotFoundError(f"no {what}", path=path)
                last = current
                if current.is_final:
                    return current
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _wait_timeout(what, path, timeout, last)
            await asyncio.sleep(min(poll, remaining))
