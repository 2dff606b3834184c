"""The URIs that report a job's progress: ``/report/dispatch/result`` and
``/batch/report/job/map/task/v1``.

``_JobReports`` parses and checks a report the way the server does (its
error messages, the ``strict_primitives`` nulls, the problems a real server
would not tell) and hands the task to the jobs: a result to
``_Jobs.callback``, map children to ``_Jobs.new_task`` and the dispatch.
It gets the state and the jobs; the endpoint routes the URIs to it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from snailjob.testing._job_calls import _DispatchCtx
from snailjob.testing._jobs import _Jobs
from snailjob.testing._state import _State
from snailjob.testing._support import (
    _MAP,
    _MAP_REDUCE,
    _RUNNING,
    _SCENE_MANUAL,
    _STAGE_MAP,
    _arg0,
    _args_json,
    _as_long,
    _Failure,
    _header,
)
from snailjob.testing.records import EmulatedTask
from snailjob.wire import enums
from snailjob.wire.codec import dumps

_MSG_RESULT_OK = "Report Dispatch Result Processed Successfully"
_MSG_MAP_OK = "Report Map Task Processed Successfully"
_MSG_MAP_NO_JOB = "Job config not existed"
_MSG_MAP_EMPTY = "Job task is empty"


class _JobReports:
    """What clients report about their job tasks."""

    def __init__(self, state: _State, jobs: _Jobs) -> None:
        self._state = state
        self._jobs = jobs

    def on_report_result(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        req = _arg0(args)
        if isinstance(req, dict):
            with self._state.cond:
                self._state.results.append(req)
                self._state.cond.notify_all()
        if not isinstance(req, dict):
            raise _Failure("Cannot deserialize value of type `DispatchJobResultRequest` from "
                           f"{type(req).__name__}")
        if self._state.strict_primitives:
            for name in ("retry",):  # ``retryStatus`` is a boxed Boolean: null is fine
                if name in req and req[name] is None:
                    raise _Failure(f"Cannot map `null` into type `boolean` (set "
                                   "DeserializationConfig.DeserializationFeature."
                                   "FAIL_ON_NULL_FOR_PRIMITIVES "
                                   f"to 'false' to allow) (through reference chain: "
                                   f"DispatchJobResultRequest[\"{name}\"])")
        execute_result = req.get("executeResult")
        if execute_result is not None and not isinstance(execute_result, dict):
            raise _Failure("Cannot deserialize value of type `ExecuteResult` from "
                           f"{type(execute_result).__name__}")
        if (self._state.strict_primitives and isinstance(execute_result, dict)
                and "status" in execute_result and execute_result["status"] is None):
            raise _Failure("Cannot map `null` into type `int` (set DeserializationConfig."
                           "DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES to 'false' to allow) "
                           "(through reference chain: "
                           "DispatchJobResultRequest[\"executeResult\"]->ExecuteResult[\"status\"])")
        task_type = _as_long(req.get("taskType"), "taskType", required=False)
        if task_type is None:
            raise _Failure('Cannot invoke "java.lang.Integer.intValue()" because "taskType" is null')
        task_status = _as_long(req.get("taskStatus"), "taskStatus", required=False)
        task_id = _as_long(req.get("taskId"), "taskId", required=False)
        job_id = _as_long(req.get("jobId"), "jobId", required=False)
        batch_id = _as_long(req.get("taskBatchId"), "taskBatchId", required=False)
        retry = bool(req.get("retry") or False)
        retry_status = bool(req.get("retryStatus") or False)
        retry_scene = _as_long(req.get("retryScene"), "retryScene", required=False)
        wf_context = req.get("wfContext")
        if wf_context is not None and not isinstance(wf_context, str):
            wf_context = dumps(wf_context)

        with self._state.cond:
            task = self._state.task_index.get(task_id) if task_id is not None else None
            if task is None:
                if task_type in (_MAP, _MAP_REDUCE):
                    raise _Failure("job task is null")
                self._state.problem(f"result for unknown task {task_id} (batch {batch_id})")
                return 1, _MSG_RESULT_OK, True
            task.reports.append(req)
            if task_status is None:
                raise _Failure('Cannot invoke "java.lang.Integer.equals(Object)" because '
                               '"taskStatus" is null')
            if execute_result is None:
                raise _Failure('Cannot invoke "ExecuteResult.getResult()" because "executeResult" is null')
            if job_id is None or batch_id is None:
                self._state.problem(f"result for task {task_id} without jobId/taskBatchId: the server's "
                              "result actor drops it")
                self._state.cond.notify_all()
                return 1, _MSG_RESULT_OK, True
            if batch_id != task.batch_id or job_id != task.job_id:
                self._state.problem(f"result for task {task_id} names batch {batch_id}/job {job_id}, "
                              f"but the task belongs to batch {task.batch_id}/job {task.job_id}")
            batch = self._state.batches[task.batch_id]
            if batch.workflow is not None:
                if req.get("workflowTaskBatchId") in (None, 0) or req.get("workflowNodeId") is None:
                    self._state.problem(f"result for workflow task {task_id} does not echo "
                                  "workflowTaskBatchId/workflowNodeId")
            if retry_scene == _SCENE_MANUAL and not (retry or retry_status):
                loops = self._state.manual_loops.get(task.task_id, 0) + 1
                self._state.manual_loops[task.task_id] = loops
            self._jobs.callback(task, int(task_status), dict(execute_result), wf_context,
                           retry or retry_status, retry_scene)
            self._state.cond.notify_all()
        return 1, _MSG_RESULT_OK, True

    # -- /batch/report/job/map/task/v1 ---------------------------------------

    def on_map_report(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        if self._state.map_report_delay > 0:
            self._state.stopping.wait(self._state.map_report_delay)
        req = _arg0(args)
        if isinstance(req, dict):
            with self._state.cond:
                self._state.map_reports.append(req)
                self._state.cond.notify_all()
        if not isinstance(req, dict):
            raise _Failure(f"Cannot deserialize value of type `MapTaskRequest` from {type(req).__name__}",
                           data=False)
        try:
            job_id = _as_long(req.get("jobId"), "jobId", required=False)
            batch_id = _as_long(req.get("taskBatchId"), "taskBatchId", required=False)
            parent_id = _as_long(req.get("parentId"), "parentId", required=False)
        except _Failure as failure:
            raise _Failure(failure.message, data=False) from None
        group = _header(headers, "group-name")
        namespace = _header(headers, "namespace")
        with self._state.cond:
            job = self._state.jobs.get(job_id) if job_id is not None else None
            if job is None or job.group != group or job.namespace != namespace:
                return 0, _MSG_MAP_NO_JOB, False
            sub_tasks = req.get("subTask")
            if not isinstance(sub_tasks, list) or not sub_tasks:
                return 0, _MSG_MAP_EMPTY, False
            batch = self._state.batches.get(batch_id) if batch_id is not None else None
            if batch is None or batch.job_id != job.job_id:
                self._state.problem(f"map report for unknown batch {batch_id} of job {job_id}")
                return 0, _MSG_MAP_EMPTY, False
            task_name = req.get("taskName")
            if not isinstance(task_name, str) or not task_name:
                self._state.problem(f"map report without taskName (batch {batch_id})")
                task_name = str(task_name)
            elif task_name == enums.ROOT_MAP:
                self._state.problem(f"map report uses the reserved task name {enums.ROOT_MAP} (batch {batch_id})")
            if job.task_type not in (_MAP, _MAP_REDUCE):
                self._state.problem(f"map report for batch {batch_id} of a task type {job.task_type} job")
            wf_context = req.get("wfContext")
            if wf_context is not None and not isinstance(wf_context, str):
                wf_context = dumps(wf_context)
            parent = self._state.task_index.get(parent_id) if parent_id is not None else None
            if parent is None or parent.batch_id != batch.id:
                self._state.problem(f"map report names parent {parent_id}, not a task of batch {batch_id}")
            children: List[EmulatedTask] = []
            for element in sub_tasks:
                child = self._jobs.new_task(batch, task_name, _args_json(job.job_params, maps=element),
                                       mr_stage=_STAGE_MAP, parent_id=parent_id or 0)
                child.wf_context = wf_context
                self._jobs.assign_round_robin(batch, child)
                children.append(child)
            if parent is not None and parent.batch_id == batch.id:
                parent.leaf = False
            for child in children:
                if child.status == _RUNNING:
                    self._jobs.submit_dispatch(child, _DispatchCtx())
            self._state.cond.notify_all()
        return 1, _MSG_MAP_OK, True
