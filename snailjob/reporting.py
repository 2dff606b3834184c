"""What a node tells the server about its work: results, map reports, logs
and retry reports.

``Reports`` is the node's outbound side once it is started.  It is the
``TaskServices`` of every task's context (map reports, job logs), the
outcome handler of job tasks (``task_done``: a result queued in the outbox,
the map sentinel's rule applied), and where the retry feature queues its
reports.  Encoding lives here too, apart from the client's wiring:
``result_body`` builds a task's ``/report/dispatch/result`` body.

Verbs: ``queue_*`` hands something to a background sender and returns at
once; ``report_map`` is a call that waits for the server's answer.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Dict, List, Optional

from snailjob.args import JobArgs
from snailjob.config_sync import ClientScene
from snailjob.context import TaskContext
from snailjob.delivery import LogShipper, ResultOutbox, RetryReporter, backoff, call_with_retry
from snailjob.errors import MapError, RetryReportError, SnailJobError, TransportError
from snailjob.settings import Settings
from snailjob.transport import Transport
from snailjob.wire import enums
from snailjob.wire.codec import dumps, encode_body
from snailjob.wire.models import DispatchJobResultRequest, MapTaskRequest, RetryTaskRequest, WireExecuteResult
from snailjob.work import Task, Work

logger = logging.getLogger(__name__)

SENTINEL_FAILURE_DELAY = 2.0
"""Seconds a map task's sentinel sub-task holds back a failure: time for the
parent's own result to be stored first (see ``mr_do_map``)."""


class Reports:
    """The outbound reports of one started node (see the module's docstring)."""

    def __init__(self, settings: Settings, transport: Transport, outbox: ResultOutbox, logs: LogShipper,
                 retry_reports: RetryReporter, host_id: str, host_ip: str, host_port: int) -> None:
        self._settings = settings
        self._transport = transport
        self.outbox = outbox
        self.logs = logs
        self.retry_reports = retry_reports
        self.host_id = host_id
        s = settings
        self._identity = {"namespace": s.snail_namespace, "group": s.snail_group_name,
                          "host": host_ip, "port": str(host_port)}
        self.alarm: Callable[[ClientScene, str], None] = lambda scene, problem: None
        """Raises a client-side alarm without blocking (the client's ``Alarms``)."""
        self.scene_ddl: Callable[[str], int] = lambda scene: 60_000
        """A retry scene's call-chain deadline in ms (the client's synced group config)."""

    # --- TaskServices ---------------------------------------------------------

    @property
    def map_batch_size(self) -> int:
        return self._settings.snail_map_batch_size

    @property
    def log_identity(self) -> Dict[str, str]:
        return self._identity

    @property
    def map_sentinel(self) -> bool:
        """Whether a map task's first sub-task is its sentinel (``SNAIL_MAP_SENTINEL``)."""
        return self._settings.snail_map_sentinel

    def queue_log(self, entry: Dict[str, Any]) -> None:
        """Queue a job or retry log entry (dropped, and counted, when the buffer is full)."""
        self.logs.offer(entry)

    def report_map(self, task: TaskContext, items: list, next_task_name: str) -> None:
        """Report ``items`` as sub-tasks of ``task``; returns once the server
        created them, raises ``MapError`` otherwise."""
        req = task.request
        payload = MapTaskRequest(
            jobId=req.jobId, taskBatchId=req.taskBatchId, parentId=req.taskId,
            workflowTaskBatchId=req.workflowTaskBatchId, workflowNodeId=req.workflowNodeId,
            wfContext=changed_context(task.args), taskName=next_task_name, subTask=items)
        s = self._settings
        try:
            # The server answers a map report only after creating every sub-task,
            # which can take seconds: it gets a long deadline and no retry after one.
            reply = call_with_retry(self._transport, enums.URI_REPORT_MAP, encode_body(payload.to_wire()),
                                    s.snail_map_report_timeout, s.snail_report_retry_seconds, stop=task.stop_event)
        except TransportError as exc:
            unsure = "" if exc.code == "UNAVAILABLE" else " (the server may have created some of them)"
            self.alarm(ClientScene.JOB_CLIENT_ERROR, f"could not report {len(items)} sub-task(s) of "
                       f"{next_task_name!r} (task {req.taskId}, batch {req.taskBatchId}){unsure}: {exc}")
            raise MapError(f"could not report {len(items)} sub-task(s) of {next_task_name!r}{unsure}: "
                           f"{exc}") from None
        if not reply.accepted:
            self.alarm(ClientScene.JOB_CLIENT_ERROR, f"the server refused {len(items)} sub-task(s) of "
                       f"{next_task_name!r} (task {req.taskId}, batch {req.taskBatchId}): "
                       f"{reply.message or 'no reason given'}")
            raise MapError(f"server refused {len(items)} sub-task(s) of {next_task_name!r}: "
                           f"{reply.message or 'no reason given'}")
        logger.debug("reported %d sub-task(s) %r of task %s", len(items), next_task_name, req.taskId)

    # --- results ----------------------------------------------------------------

    def task_done(self, task: Task, outcome: Any) -> None:
        """The outcome handler of job tasks: queue the task's result."""
        req = task.request
        success = outcome.is_success
        sentinel = is_checking_sentinel(task)
        # after the timeout the server has recorded the task as stopped
        self.queue_result(task, enums.URI_REPORT_RESULT,
                          result_body(task, outcome, self._settings.snail_group_name), req.executorTimeout,
                          f"result of task {req.taskId} (batch {req.taskBatchId})",
                          repeat=sentinel and success,
                          delay=SENTINEL_FAILURE_DELAY if sentinel and not success else 0.0,
                          wait=task.may_wait)

    def queue_result(self, work: Work, uri: str, body: str, timeout: Optional[int], describe: str,
                     repeat: bool = False, delay: float = 0.0, wait: bool = False) -> None:
        """Queue a result; it expires when the server has given up on the work
        (its timeout plus ``SNAIL_REPORT_MARGIN``).  ``repeat``: sent again
        after delivery until then; ``delay``: sent no sooner (a map task's
        sentinel, see ``mr_do_map``); ``wait``: this thread may deliver it
        itself (``ResultOutbox.offer``)."""
        s = self._settings
        if timeout and timeout > 0:
            expires = work.received_wall + timeout + s.snail_report_margin
        else:
            expires = time.time() + s.snail_report_retry_seconds
        self.outbox.offer(work.key, uri, body, expires=max(expires, time.time() + s.snail_rpc_timeout),
                        describe=describe, repeat=repeat, delay=delay, wait=wait)

    def discard_results(self, key: Any) -> None:
        """Drop undelivered results of a stopped batch or retry."""
        self.outbox.discard_batch(key)

    def batch_past_its_maps(self, batch_id: int) -> None:
        """A later stage of the batch arrived: every map task has ended, so
        its sentinel's result need not be repeated any more."""
        if self.outbox.end_repeats(batch_id):
            logger.debug("batch %s reached its reduce stage: the sentinel's repeats end", batch_id)

    # --- retry reports ------------------------------------------------------------

    def retry_ddl_ms(self, scene: str) -> int:
        """The deadline a retry of ``scene`` gives the calls it makes to other
        services (``retry_site``): the scene's ``ddl`` in the group config."""
        return self.scene_ddl(scene)

    def queue_retry_report(self, request: RetryTaskRequest) -> None:
        """Queue a call for ``/batch/report`` (what ``Retryable.report`` uses)."""
        if not self.retry_reports.offer(self._retry_entry(request)):
            raise SnailJobError(f"client {self.host_id} is not running")

    def send_retry_report(self, request: RetryTaskRequest, timeout: float) -> None:
        """Report a call now and return once the server took it; ``RetryReportError``
        when it did not within ``timeout`` seconds (unreachable meanwhile, or
        it refused the report)."""
        what = f"{request.executorName} (scene {request.sceneName}, idempotent id {request.idempotentId})"
        body = encode_body([self._retry_entry(request)])
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:  # unreachable (UNAVAILABLE: not sent) is tried again until the deadline
            try:
                reply = self._transport.call(enums.URI_RETRY_REPORT, body, max(deadline - time.monotonic(), 0.05))
                break
            except TransportError as exc:
                attempt += 1
                pause = backoff(attempt)
                if exc.code != "UNAVAILABLE" or time.monotonic() + pause >= deadline:
                    unsure = "" if exc.code == "UNAVAILABLE" else " (it may have it)"
                    self.alarm(ClientScene.CLIENT_REPORT_ERROR, f"the server did not take the report of {what} "
                               f"within {timeout:g}s{unsure}: {exc}")
                    raise RetryReportError(f"the server did not take the report of {what} within {timeout:g}s"
                                           f"{unsure}: {exc}") from None
                time.sleep(pause)
        if not reply.accepted:
            self.alarm(ClientScene.CLIENT_REPORT_ERROR, f"the server refused the report of {what}: "
                       f"{reply.message or 'no reason given'}")
            raise RetryReportError(f"the server refused the report of {what}: {reply.message or 'no reason given'}")
        self.retry_reports.count_sent(1)

    def _retry_entry(self, request: RetryTaskRequest) -> Dict[str, Any]:
        entry = request.to_wire()
        entry["groupName"] = self._settings.snail_group_name
        return entry


def delivery_stats(reports: Optional[Reports]) -> Dict[str, int]:
    """The outbound queues' counters for ``Client.stats()`` (zeros before the node started)."""
    outbox = reports.outbox if reports else None
    logs = reports.logs if reports else None
    retry = reports.retry_reports if reports else None
    return {
        "results_delivered": outbox.delivered if outbox else 0,
        "results_dropped": outbox.dropped if outbox else 0,
        "results_refused": outbox.refused if outbox else 0,
        "results_repeated": outbox.repeated if outbox else 0,
        "results_pending": outbox.pending() if outbox else 0,
        "results_held": outbox.held()[0] if outbox else 0,
        "results_late": outbox.late if outbox else 0,
        "delivery_retries": outbox.retries if outbox else 0,
        "logs_shipped": logs.shipped if logs else 0,
        "logs_dropped": logs.dropped if logs else 0,
        "logs_buffered": logs.buffered() if logs else 0,
        "retry_reports_sent": retry.shipped if retry else 0,
        "retry_reports_refused": retry.refused if retry else 0,
        "retry_reports_dropped": retry.dropped if retry else 0,
        "retry_reports_pending": retry.buffered() if retry else 0,
    }


# --- encoding ---------------------------------------------------------------------

_SUCCESS = int(enums.JobTaskStatusEnum.SUCCESS)
_FAIL = int(enums.JobTaskStatusEnum.FAIL)
_YES = int(enums.StatusEnum.YES)
_NO = int(enums.StatusEnum.NO)
_SCALARS = (str, int, float, bool, type(None))


def result_body(task: Task, outcome: Any, default_group: str) -> str:
    """The body of a task's ``/report/dispatch/result``: the JSON of a
    ``DispatchJobResultRequest``, built directly when the result is plain
    JSON data (the common case), else through the model."""
    req = task.request
    success = outcome.is_success
    result = outcome.result if success else shown(outcome.result)
    group = req.groupName or default_group
    if group is None or not _plain(result):
        return result_body_from_model(task, outcome, default_group)
    entry: Dict[str, Any] = {"jobId": req.jobId, "taskBatchId": req.taskBatchId}
    if req.workflowTaskBatchId is not None:
        entry["workflowTaskBatchId"] = req.workflowTaskBatchId
    if req.workflowNodeId is not None:
        entry["workflowNodeId"] = req.workflowNodeId
    entry["taskId"] = req.taskId
    entry["taskType"] = req.taskType
    entry["groupName"] = group
    entry["taskStatus"] = _SUCCESS if success else _FAIL
    execute: Dict[str, Any] = {"status": _YES if success else _NO}
    if result is not None:
        execute["result"] = result
    execute["message"] = str(outcome.message or "")
    entry["executeResult"] = execute
    if req.retryScene is not None:
        entry["retryScene"] = req.retryScene
    entry["retry"] = req.retry
    entry["retryStatus"] = req.retryStatus
    changed = changed_context(task.args)
    if changed is not None:
        entry["wfContext"] = changed
    return dumps([entry])


def result_body_from_model(task: Task, outcome: Any, default_group: str) -> str:
    """``result_body`` through ``DispatchJobResultRequest`` (any result)."""
    req = task.request
    success = outcome.is_success
    report = DispatchJobResultRequest(
        jobId=req.jobId, taskBatchId=req.taskBatchId, taskId=req.taskId,
        workflowTaskBatchId=req.workflowTaskBatchId, workflowNodeId=req.workflowNodeId,
        taskType=req.taskType, groupName=req.groupName or default_group,
        taskStatus=int(enums.JobTaskStatusEnum.SUCCESS if success else enums.JobTaskStatusEnum.FAIL),
        executeResult=WireExecuteResult(status=int(enums.StatusEnum.YES if success else enums.StatusEnum.NO),
                                        result=outcome.result if success else shown(outcome.result),
                                        message=outcome.message or ""),
        retryScene=req.retryScene, retry=req.retry, retryStatus=req.retryStatus,
        wfContext=changed_context(task.args),
    )
    return encode_body(report.to_wire())


def _plain(value: Any, depth: int = 0) -> bool:
    """True when ``value`` is JSON data made of dicts with string keys,
    lists and scalars of exactly those types (not subclasses such as enums),
    which the model would pass through unchanged."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 20:
        return False
    if kind is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


def shown(result: Any) -> Any:
    """A failure's result as the console's result view can show it: that
    view renders only JSON, and the server stores a string as it is, so
    text that is not JSON goes as a JSON string.  (A success's result is sent
    unchanged: reduce and merge stages receive it as the server stores it.)"""
    if isinstance(result, str):
        try:
            json.loads(result)
        except ValueError:
            return dumps(result)
    return result


def is_checking_sentinel(task: Task) -> bool:
    """Whether a task is a map task's sentinel whose result makes the server
    check its batch: one without sub-tasks of its own (a result of a task
    with children is not checked) and not the first run of a manual retry
    (the server answers that by retrying).  Its success is repeated until
    the batch ends; its failure is delayed instead, since the server would
    count each copy of a failure as a failed attempt and retry the task."""
    ctx = task.context
    manual_first_run = task.request.retryScene == enums.JobRetrySceneEnum.MANUAL and not task.request.retryStatus
    return ctx.sentinel and ctx.map_items_sent == 0 and not manual_first_run


def changed_context(args: JobArgs) -> Optional[str]:
    """The workflow-context keys a task changed, as the JSON text the server
    stores, or ``None`` when it changed none."""
    context = args.change_wf_context
    changed = context.to_dict() if context is not None and len(context) else {}
    return dumps(changed) if changed else None


__all__: List[str] = ["Reports", "SENTINEL_FAILURE_DELAY", "delivery_stats", "result_body"]
