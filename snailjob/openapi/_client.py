"""``OpenApiClient``: the blocking client, one method per OpenAPI endpoint.

Each method checks its arguments (``paths.py``), builds the request body
(``_codec.py``), sends it through its ``Transport`` (``_transport.py``: one
HTTP request on a new connection) and decodes the answer (``_codec.py``). The
helpers on top, ``wait_job_batch`` / ``wait_workflow_batch`` and
``sync_jobs``, run in ``_waiting.py`` and ``_jobs_as_code.py``.
``AsyncOpenApiClient`` (``_async_client.py``) wraps this class.
"""

from __future__ import annotations

import ssl
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

from snailjob.openapi._codec import JobLike, StatusLike, as_bool, as_int, as_model, job_body
from snailjob.openapi._jobs_as_code import SyncResult, sync_jobs
from snailjob.openapi._transport import Transport
from snailjob.openapi._waiting import wait
from snailjob.openapi.enums import RetryStatus
from snailjob.openapi.errors import OpenApiNotFoundError, OpenApiValidationError
from snailjob.openapi.models import (
    DeleteBizIdRequest,
    JobBatch,
    JobDetail,
    JobExists,
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
from snailjob.openapi.paths import P, _biz_id, _id, _ids, _json_text, _status, default_base_url
from snailjob.openapi.spec import JobSpec
from snailjob.settings import Settings


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
        url_source = "base_url"
        if settings is not None:
            if base_url is None:
                url_source = "SNAIL_OPENAPI_URL" if settings.snail_openapi_url else "default"
            base_url = base_url if base_url is not None else default_base_url(settings)
            namespace = namespace if namespace is not None else settings.snail_namespace
            group = group if group is not None else settings.snail_group_name
            token = token if token is not None else settings.snail_token
            timeout = timeout if timeout is not None else float(settings.snail_openapi_timeout)
        assert base_url is not None and namespace is not None and group is not None and token is not None
        self._http = Transport(base_url, namespace=namespace, group=group, token=token, timeout=timeout,
                               ssl_context=ssl_context, url_source=url_source)

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None, **overrides: Any) -> OpenApiClient:
        """A client configured by ``settings`` (default: ``Settings.load()``, i.e. the
        ``SNAIL_*`` environment and ``.env``); keyword ``overrides`` as for the constructor."""
        return cls(settings=settings if settings is not None else Settings.load(), **overrides)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_url={self.base_url!r}, namespace={self.namespace!r}, "
                f"group={self.group!r}, timeout={self.timeout})")

    # the connection settings live in the transport; these are its attributes

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self._http.base_url = value

    @property
    def namespace(self) -> str:
        return self._http.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._http.namespace = value

    @property
    def group(self) -> str:
        return self._http.group

    @group.setter
    def group(self, value: str) -> None:
        self._http.group = value

    @property
    def timeout(self) -> float:
        return self._http.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._http.timeout = value

    # ------------------------------------------------------------------------ jobs
    def add_job(self, job: JobLike) -> int:
        """``POST /api/job/add``: create a job; returns its id."""
        return as_int(self._http.call("POST", P.JOB_ADD, body=job_body(job, self.group)), P.JOB_ADD)

    def update_job(self, job_id: int, job: JobLike) -> bool:
        """``PUT /api/job/update``: replace job ``job_id``'s definition (its group cannot change).
        A ``JobRequest`` with ``None`` fields updates only the other fields."""
        body = job_body(job, self.group, job_id=_id(job_id))
        return as_bool(self._http.call("PUT", P.JOB_UPDATE, body=body), P.JOB_UPDATE)

    def job_detail(self, job_id: int) -> Optional[JobDetail]:
        """``GET /api/job/detail/id?id=``: the job, or ``None`` if there is none
        (the server then answers an empty object)."""
        detail = as_model(JobDetail, self._http.call("GET", P.JOB_DETAIL, query={"id": _id(job_id)}), P.JOB_DETAIL)
        return detail if detail is not None and detail.id is not None else None

    def job_exists(self, job_id: int) -> Optional[JobExists]:
        """``GET /api/job/exists?id=``: id, bizId, group and status, or ``None``."""
        return as_model(JobExists, self._http.call("GET", P.JOB_EXISTS, query={"id": _id(job_id)}), P.JOB_EXISTS)

    def trigger_job(self, job_id: int, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        """``POST /api/job/trigger``: run the job now (also a disabled one; its group must
        be enabled). ``args`` replace the job's whole ``argsStr`` for this run: use
        ``sharding_args(...)`` / ``map_reduce_args(...)`` for those task types.

        The server answers only ``true``: it does not say which batch it created
        (see ``wait_job_batch``)."""
        request = JobTriggerRequest(job_id=_id(job_id), tmp_args_str=_json_text(args, "tmpArgsStr", False))
        return as_bool(self._http.call("POST", P.JOB_TRIGGER, body=request.wire()), P.JOB_TRIGGER)

    def update_job_status(self, job_id: int, status: StatusLike) -> bool:
        """``PUT /api/job/update/status``: enable (True / ``JobStatus.ENABLED``) or disable."""
        request = StatusUpdateRequest(id=_id(job_id), status=_status(status))
        return as_bool(self._http.call("PUT", P.JOB_UPDATE_STATUS, body=request.wire()), P.JOB_UPDATE_STATUS)

    def delete_jobs(self, job_ids: Iterable[int]) -> bool:
        """``DELETE /api/job/delete``: delete up to 100 jobs. All must exist and be
        disabled, and none may be used by a workflow, or nothing is deleted."""
        body = _ids(job_ids, "ids", _id)
        return as_bool(self._http.call("DELETE", P.JOB_DELETE, body=body), P.JOB_DELETE)

    # ----------------------------------------------------------------- jobs by bizId

    def add_job_by_biz_id(self, job: JobLike) -> int:
        """``POST /api/job/bizId/add``: create a job with its ``biz_id`` (required); the
        server refuses a bizId that already exists in the namespace. Returns the id."""
        body = job_body(job, self.group, need_biz_id=True)
        return as_int(self._http.call("POST", P.JOB_BIZ_ADD, body=body), P.JOB_BIZ_ADD)

    def update_job_by_biz_id(self, job: JobLike) -> bool:
        """``PUT /api/job/bizId/update``: update the job whose bizId is ``job.biz_id``."""
        body = job_body(job, self.group, need_biz_id=True)
        body.pop("id", None)
        return as_bool(self._http.call("PUT", P.JOB_BIZ_UPDATE, body=body), P.JOB_BIZ_UPDATE)

    def job_detail_by_biz_id(self, biz_id: str) -> Optional[JobDetail]:
        """``GET /api/job/bizId/detail?bizId=``: the job, or ``None``."""
        data = self._http.call("GET", P.JOB_BIZ_DETAIL, query={"bizId": _biz_id(biz_id)})
        detail = as_model(JobDetail, data, P.JOB_BIZ_DETAIL)
        return detail if detail is not None and detail.id is not None else None

    def job_exists_by_biz_id(self, biz_id: str) -> Optional[JobExists]:
        """``GET /api/job/bizId/exists?bizId=``: id, bizId, group and status, or ``None``."""
        data = self._http.call("GET", P.JOB_BIZ_EXISTS, query={"bizId": _biz_id(biz_id)})
        return as_model(JobExists, data, P.JOB_BIZ_EXISTS)

    def trigger_job_by_biz_id(self, biz_id: str, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        """``POST /api/job/bizId/trigger``: as ``trigger_job``, by bizId."""
        request = JobTriggerBizIdRequest(biz_id=_biz_id(biz_id), tmp_args_str=_json_text(args, "tmpArgsStr", False))
        return as_bool(self._http.call("POST", P.JOB_BIZ_TRIGGER, body=request.wire()), P.JOB_BIZ_TRIGGER)

    def update_job_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        """``PUT /api/job/bizId/updateStatus``: enable or disable, by bizId."""
        request = StatusUpdateBizIdRequest(biz_id=_biz_id(biz_id), status=_status(status))
        return as_bool(self._http.call("PUT", P.JOB_BIZ_UPDATE_STATUS, body=request.wire()), P.JOB_BIZ_UPDATE_STATUS)

    def delete_jobs_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        """``DELETE /api/job/bizId/delete`` with ``{"bizIds": [...]}``: up to 100 disabled jobs."""
        request = DeleteBizIdRequest(biz_ids=_ids(biz_ids, "bizIds", _biz_id))
        return as_bool(self._http.call("DELETE", P.JOB_BIZ_DELETE, body=request.wire()), P.JOB_BIZ_DELETE)

    # --------------------------------------------------------------------- workflows

    def trigger_workflow(self, workflow_id: int, context: Union[str, Mapping[str, Any], None] = None) -> bool:
        """``POST /api/workflow/trigger``: run the workflow now. ``context`` (a JSON object)
        is merged into the workflow's context for this run; on a key present in both,
        the workflow's stored value wins (that is how the server merges).

        Sends the deprecated but still required ``jobId`` (= the workflow id). The
        server answers only ``true``, not the new workflow batch's id."""
        request = WorkflowTriggerRequest(workflow_id=_id(workflow_id, "workflowId"), job_id=workflow_id,
                                         tmp_wf_context=_json_text(context, "tmpWfContext", True))
        return as_bool(self._http.call("POST", P.WORKFLOW_TRIGGER, body=request.wire()), P.WORKFLOW_TRIGGER)

    def update_workflow_status(self, workflow_id: int, status: StatusLike) -> bool:
        """``PUT /api/workflow/update/status``: enable or disable a workflow."""
        request = StatusUpdateRequest(id=_id(workflow_id), status=_status(status))
        return as_bool(self._http.call("PUT", P.WORKFLOW_UPDATE_STATUS, body=request.wire()), P.WORKFLOW_UPDATE_STATUS)

    def delete_workflows(self, workflow_ids: Iterable[int]) -> bool:
        """``DELETE /api/workflow/delete``: delete up to 100 disabled workflows."""
        body = _ids(workflow_ids, "ids", _id)
        return as_bool(self._http.call("DELETE", P.WORKFLOW_DELETE, body=body), P.WORKFLOW_DELETE)

    def workflow_exists(self, workflow_id: int) -> Optional[WorkflowExists]:
        """``GET /api/workflow/exists?id=``: id, bizId, group, status and version, or ``None``."""
        data = self._http.call("GET", P.WORKFLOW_EXISTS, query={"id": _id(workflow_id)})
        return as_model(WorkflowExists, data, P.WORKFLOW_EXISTS)

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
        return as_bool(self._http.call("POST", P.WORKFLOW_BIZ_TRIGGER, body=request.wire()), P.WORKFLOW_BIZ_TRIGGER)

    def update_workflow_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        """``PUT /api/workflow/bizId/updateStatus``: enable or disable, by bizId."""
        request = StatusUpdateBizIdRequest(biz_id=_biz_id(biz_id), status=_status(status))
        return as_bool(self._http.call("PUT", P.WORKFLOW_BIZ_UPDATE_STATUS, body=request.wire()),
                          P.WORKFLOW_BIZ_UPDATE_STATUS)

    def delete_workflows_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        """``DELETE /api/workflow/bizId/delete``: the body is a bare JSON list of bizIds
        (unlike the job variant's ``{"bizIds": [...]}``)."""
        body = _ids(biz_ids, "bizIds", _biz_id)
        return as_bool(self._http.call("DELETE", P.WORKFLOW_BIZ_DELETE, body=body), P.WORKFLOW_BIZ_DELETE)

    def workflow_exists_by_biz_id(self, biz_id: str) -> Optional[WorkflowExists]:
        """``GET /api/workflow/bizId/exists?bizId=``: or ``None``."""
        data = self._http.call("GET", P.WORKFLOW_BIZ_EXISTS, query={"bizId": _biz_id(biz_id)})
        return as_model(WorkflowExists, data, P.WORKFLOW_BIZ_EXISTS)

    # ----------------------------------------------------------------------- batches

    def job_batch_detail(self, batch_id: int) -> Optional[JobBatch]:
        """``GET /api/job-batch/detail/{id}?id=``: one job batch (status and
        ``operationReason``; no task results), or ``None``."""
        batch_id = _id(batch_id)
        path = f"{P.JOB_BATCH_DETAIL}{batch_id}"
        return as_model(JobBatch, self._http.call("GET", path, query={"id": batch_id}), path)

    def workflow_batch_detail(self, workflow_batch_id: int) -> Optional[WorkflowBatch]:
        """``GET /api/workflow-batch/detail/id?id=``: the workflow batch's status and,
        per node, the job batches it created (``WorkflowBatch.job_batches()``), or ``None``."""
        data = self._http.call("GET", P.WORKFLOW_BATCH_DETAIL, query={"id": _id(workflow_batch_id)})
        return as_model(WorkflowBatch, data, P.WORKFLOW_BATCH_DETAIL)

    # ------------------------------------------------------------------------- retry

    def retry_detail(self, retry_id: int) -> RetryTask:
        """``GET /api/retry/query?id=``: one retry task (the server answers an error if
        there is none)."""
        data = self._http.call("GET", P.RETRY_QUERY, query={"id": _id(retry_id)})
        task = as_model(RetryTask, data, P.RETRY_QUERY)
        if task is None:
            raise OpenApiNotFoundError(f"no retry task {retry_id}", path=P.RETRY_QUERY)
        return task

    def trigger_retry(self, retry_id: int) -> bool:
        """``POST /api/retry/trigger``: run a retry task now (its group must be enabled)."""
        request = TriggerRetryRequest(id=_id(retry_id))
        return as_bool(self._http.call("POST", P.RETRY_TRIGGER, body=request.wire()), P.RETRY_TRIGGER)

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
        return as_bool(self._http.call("PUT", P.RETRY_UPDATE_STATUS, body=request.wire()), P.RETRY_UPDATE_STATUS)

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
        return wait(lambda: self.job_batch_detail(batch_id), f"job batch {batch_id}",
                    f"{P.JOB_BATCH_DETAIL}{batch_id}", timeout, poll)

    def wait_workflow_batch(self, workflow_batch_id: int, timeout: float = 600.0, poll: float = 1.0) -> WorkflowBatch:
        """As ``wait_job_batch``, for a workflow batch (``workflowBatchStatus``)."""
        workflow_batch_id = _id(workflow_batch_id)
        return wait(lambda: self.workflow_batch_detail(workflow_batch_id),
                    f"workflow batch {workflow_batch_id}", P.WORKFLOW_BATCH_DETAIL, timeout, poll)

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
        return sync_jobs(jobs, self.group, exists=self.job_exists_by_biz_id, add=self.add_job_by_biz_id,
                         update=self.update_job_by_biz_id, dry_run=dry_run, raise_on_error=raise_on_error)
