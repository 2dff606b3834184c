"""Jobs in the server emulator: triggering, batches and tasks, results and map/reduce.

``trigger`` / ``stop_batch`` / ``retry_batch``; ``/report/dispatch/result``
and ``/batch/report/job/map/task/v1``; the task generators, routing,
job-level retries, map, reduce and merge stages, completion, timeouts and
stops; and the ``/job/dispatch/v1`` and ``/job/stop/v1`` calls.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from snailjob.testing._transport import _TransportMixin
from snailjob.testing.batches import EmulatedBatch, EmulatedWorkflow, _Job
from snailjob.testing.records import (
    REASON_MANUAL_STOP,
    REASON_NONE,
    REASON_NOT_CLIENT,
    REASON_TIMEOUT,
    ClientNode,
    EmulatedTask,
)
from snailjob.testing.support import (
    _BROADCAST,
    _CANCEL,
    _CLUSTER,
    _FAIL,
    _MAP,
    _MAP_REDUCE,
    _MSG_CLIENT_MISSING,
    _RUNNING,
    _SCENE_AUTO,
    _SCENE_MANUAL,
    _SHARDING,
    _STAGE_MAP,
    _STAGE_MERGE,
    _STAGE_REDUCE,
    _STOP,
    _STOP_TIMEOUT,
    _SUCCESS,
    _TIMEOUT_GRACE,
    _WAITING,
    _arg0,
    _args_json,
    _as_long,
    _Failure,
    _header,
    _partition,
    _result_message,
    logger,
)
from snailjob.wire import enums
from snailjob.wire.codec import dumps

_STOP_ATTEMPTS = 3
_STOP_RETRY_WAIT = 1.0
_MANUAL_LOOP_LIMIT = 3

_TASK_NAMES = {
    _CLUSTER: "CLUSTER_TASK",
    _BROADCAST: "BROADCAST_TASK",
    _SHARDING: "SHARDING_TASK",
}
_REDUCE_TASK = "REDUCE_TASK"
_MERGE_REDUCE_TASK = "MERGE_REDUCE_TASK"

_MSG_RESULT_OK = "Report Dispatch Result Processed Successfully"
_MSG_MAP_OK = "Report Map Task Processed Successfully"
_MSG_MAP_NO_JOB = "Job config not existed"
_MSG_MAP_EMPTY = "Job task is empty"


@dataclass
class _DispatchCtx:
    retry: bool = False
    retry_scene: Optional[int] = None


class _JobsMixin(_TransportMixin):
    """Jobs, batches and tasks, their results and the dispatch and stop calls."""

    if TYPE_CHECKING:  # provided by _WorkflowsMixin
        def _workflow_step(self, batch: EmulatedBatch) -> None: ...

        def _wf_context_text(self, batch: EmulatedBatch) -> Optional[str]: ...

    # ------------------------------------------------------------------
    # driving jobs
    # ------------------------------------------------------------------

    def trigger(self, executor: str, task_type: int = _CLUSTER, args_str: str = "",
                parallel_num: int = 1, executor_timeout: int = 60, max_retry_times: int = 0,
                retry_interval: float = 0.0, shard_num: int = 2,
                wf_context: Optional[Dict[str, Any]] = None, executor_type: int = 2,
                labels: Optional[Dict[str, str]] = None, node: Optional[str] = None) -> EmulatedBatch:
        """Run a job once (a new job config per call) and return its batch.

        ``task_type``: 1 CLUSTER, 2 BROADCAST, 3 SHARDING (``args_str`` a
        JSON array of strings), 4 MAP, 5 MAP_REDUCE (``args_str`` is the
        user's parameters; the job's stored args become
        ``{"shardNum": shard_num, "argsStr": args_str}``).  ``wf_context`` is
        sent as ``wfContext`` (outside a workflow).  ``node`` (a host id)
        pins a CLUSTER task to that node.  ``retry_interval`` may be
        fractional here (the server uses whole seconds).
        """
        self._require_running()
        job = self._new_job(executor, task_type, args_str, parallel_num, executor_timeout,
                            max_retry_times, retry_interval, shard_num, executor_type, labels)
        with self._cond:
            return self._start_batch(job, wf_context=wf_context, workflow=None, index=None, target=node)

    def stop_batch(self, batch_id: int) -> None:
        """Manual stop: send ``/job/stop/v1`` to the batch's nodes, mark every
        non-SUCCESS task STOP and the batch STOP.  No-op on a finished batch."""
        with self._cond:
            batch = self._batches[batch_id]
            if batch._done:
                return
            self._stop_running_batch(batch, REASON_MANUAL_STOP)

    def retry_batch(self, batch_id: int) -> None:
        """Manual retry from the console: every task that is not RUNNING or
        SUCCESS is re-dispatched at once with ``retry=true``,
        ``retryStatus=true``, ``retryScene=2``; the batch runs again with a
        new timeout."""
        with self._cond:
            batch = self._batches[batch_id]
            if not batch._done:
                raise RuntimeError(f"batch {batch_id} is still running")
            targets = [t for t in batch._tasks if t.status not in (_RUNNING, _SUCCESS)]
            if not targets:
                return
            batch._done = False
            batch._status = _RUNNING
            batch.completed_at = None
            batch.operation_reason = REASON_NONE
            for task in targets:
                task.status = _RUNNING
                task.retry_count += 1
                self._reroute(batch, task)
                self._submit_dispatch(task, _DispatchCtx(retry=True, retry_scene=_SCENE_MANUAL))
            self._schedule_timeout(batch)

    # -- /report/dispatch/result ---------------------------------------------

    def _on_report_result(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        req = _arg0(args)
        if isinstance(req, dict):
            with self._cond:
                self._results.append(req)
                self._cond.notify_all()
        if not isinstance(req, dict):
            raise _Failure("Cannot deserialize value of type `DispatchJobResultRequest` from "
                           f"{type(req).__name__}")
        if self.strict_primitives:
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
        if (self.strict_primitives and isinstance(execute_result, dict)
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

        with self._cond:
            task = self._task_index.get(task_id) if task_id is not None else None
            if task is None:
                if task_type in (_MAP, _MAP_REDUCE):
                    raise _Failure("job task is null")
                self._problem(f"result for unknown task {task_id} (batch {batch_id})")
                return 1, _MSG_RESULT_OK, True
            task.reports.append(req)
            if task_status is None:
                raise _Failure('Cannot invoke "java.lang.Integer.equals(Object)" because '
                               '"taskStatus" is null')
            if execute_result is None:
                raise _Failure('Cannot invoke "ExecuteResult.getResult()" because "executeResult" is null')
            if job_id is None or batch_id is None:
                self._problem(f"result for task {task_id} without jobId/taskBatchId: the server's "
                              "result actor drops it")
                self._cond.notify_all()
                return 1, _MSG_RESULT_OK, True
            if batch_id != task.batch_id or job_id != task.job_id:
                self._problem(f"result for task {task_id} names batch {batch_id}/job {job_id}, "
                              f"but the task belongs to batch {task.batch_id}/job {task.job_id}")
            batch = self._batches[task.batch_id]
            if batch.workflow is not None:
                if req.get("workflowTaskBatchId") in (None, 0) or req.get("workflowNodeId") is None:
                    self._problem(f"result for workflow task {task_id} does not echo "
                                  "workflowTaskBatchId/workflowNodeId")
            if retry_scene == _SCENE_MANUAL and not (retry or retry_status):
                loops = self._manual_loops.get(task.task_id, 0) + 1
                self._manual_loops[task.task_id] = loops
            self._callback(task, int(task_status), dict(execute_result), wf_context,
                           retry or retry_status, retry_scene)
            self._cond.notify_all()
        return 1, _MSG_RESULT_OK, True

    # -- /batch/report/job/map/task/v1 ---------------------------------------

    def _on_map_report(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        if self.map_report_delay > 0:
            self._stopping.wait(self.map_report_delay)
        req = _arg0(args)
        if isinstance(req, dict):
            with self._cond:
                self._map_reports.append(req)
                self._cond.notify_all()
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
        with self._cond:
            job = self._jobs.get(job_id) if job_id is not None else None
            if job is None or job.group != group or job.namespace != namespace:
                return 0, _MSG_MAP_NO_JOB, False
            sub_tasks = req.get("subTask")
            if not isinstance(sub_tasks, list) or not sub_tasks:
                return 0, _MSG_MAP_EMPTY, False
            batch = self._batches.get(batch_id) if batch_id is not None else None
            if batch is None or batch.job_id != job.job_id:
                self._problem(f"map report for unknown batch {batch_id} of job {job_id}")
                return 0, _MSG_MAP_EMPTY, False
            task_name = req.get("taskName")
            if not isinstance(task_name, str) or not task_name:
                self._problem(f"map report without taskName (batch {batch_id})")
                task_name = str(task_name)
            elif task_name == enums.ROOT_MAP:
                self._problem(f"map report uses the reserved task name {enums.ROOT_MAP} (batch {batch_id})")
            if job.task_type not in (_MAP, _MAP_REDUCE):
                self._problem(f"map report for batch {batch_id} of a task type {job.task_type} job")
            wf_context = req.get("wfContext")
            if wf_context is not None and not isinstance(wf_context, str):
                wf_context = dumps(wf_context)
            parent = self._task_index.get(parent_id) if parent_id is not None else None
            if parent is None or parent.batch_id != batch.id:
                self._problem(f"map report names parent {parent_id}, not a task of batch {batch_id}")
            children: List[EmulatedTask] = []
            for element in sub_tasks:
                child = self._new_task(batch, task_name, _args_json(job.job_params, maps=element),
                                       mr_stage=_STAGE_MAP, parent_id=parent_id or 0)
                child.wf_context = wf_context
                self._assign_round_robin(batch, child)
                children.append(child)
            if parent is not None and parent.batch_id == batch.id:
                parent.leaf = False
            for child in children:
                if child.status == _RUNNING:
                    self._submit_dispatch(child, _DispatchCtx())
            self._cond.notify_all()
        return 1, _MSG_MAP_OK, True

    # ------------------------------------------------------------------
    # jobs, batches and tasks (callers hold the lock unless noted)
    # ------------------------------------------------------------------

    def _new_job(self, executor: str, task_type: int, args_str: Optional[str], parallel_num: int,
                 executor_timeout: int, max_retry_times: int, retry_interval: float, shard_num: int,
                 executor_type: int, labels: Optional[Dict[str, str]]) -> _Job:
        if not isinstance(executor, str) or not executor.strip():
            raise ValueError("executor must be a non-blank string")
        if task_type not in (_CLUSTER, _BROADCAST, _SHARDING, _MAP, _MAP_REDUCE):
            raise ValueError(f"task_type must be 1..5, not {task_type!r}")
        if executor_timeout < 1 or int(executor_timeout) != executor_timeout:
            raise ValueError("executor_timeout is whole seconds, at least 1")
        if max_retry_times < 0 or retry_interval < 0:
            raise ValueError("max_retry_times and retry_interval must not be negative")
        stored = args_str
        job_params: Optional[str] = args_str
        if task_type == _SHARDING:
            try:
                shards = json.loads(args_str or "")
            except ValueError:
                shards = None
            if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
                raise ValueError("a SHARDING job's args_str must be a non-empty JSON array of strings "
                                 "(the server generates no task otherwise)")
        if task_type == _MAP_REDUCE:
            stored = dumps({"shardNum": int(shard_num), "argsStr": args_str})
            job_params = args_str
        with self._lock:
            job = _Job(job_id=next(self._ids), executor=executor, task_type=int(task_type),
                       args_str=stored or "", job_params=job_params, parallel_num=int(parallel_num),
                       executor_timeout=int(executor_timeout), max_retry_times=int(max_retry_times),
                       retry_interval=float(retry_interval), executor_type=int(executor_type),
                       labels=dict(labels or {}), namespace=self.namespace, group=self.group,
                       shard_num=int(shard_num))
            self._jobs[job.job_id] = job
        return job

    def _start_batch(self, job: _Job, wf_context: Optional[Dict[str, Any]],
                     workflow: Optional[EmulatedWorkflow], index: Optional[int],
                     target: Optional[str]) -> EmulatedBatch:
        batch = EmulatedBatch(self, next(self._ids), job, wf_context, workflow, index)
        self._batches[batch.id] = batch
        if workflow is not None:
            workflow._batches.append(batch)
        live = self._live_nodes(job)
        if not live:
            logger.info("snailjob emulator: no live client for batch %d: CANCEL", batch.id)
            self._finish(batch, _CANCEL, REASON_NOT_CLIENT, post_stop=False)
            return batch
        batch._status = _RUNNING
        if job.task_type == _CLUSTER:
            task = self._new_task(batch, _TASK_NAMES[_CLUSTER], _args_json(job.job_params))
            chosen = None
            if target is not None:
                chosen = next((n for n in live if n.host_id == target), None)
                if chosen is None:
                    self._problem(f"trigger(node={target!r}): no such live node; routing round-robin")
            if chosen is not None:
                self._assign(task, chosen)
            else:
                self._assign_round_robin(batch, task)
        elif job.task_type == _BROADCAST:
            seen: Set[str] = set()
            for node in live:
                if node.address in seen:
                    continue
                seen.add(node.address)
                self._assign(self._new_task(batch, _TASK_NAMES[_BROADCAST], _args_json(job.job_params)), node)
        elif job.task_type == _SHARDING:
            shards = json.loads(job.args_str)
            for i, shard in enumerate(shards):
                task = self._new_task(batch, _TASK_NAMES[_SHARDING], _args_json(shard))
                task.sharding_index, task.sharding_total = i, len(shards)
                self._assign(task, live[i % len(live)])
        else:
            task = self._new_task(batch, enums.ROOT_MAP, _args_json(job.job_params, maps=""),
                                  mr_stage=_STAGE_MAP)
            self._assign_round_robin(batch, task)
        self._schedule_timeout(batch)
        for task in batch._tasks:
            if task.status == _RUNNING:
                self._submit_dispatch(task, _DispatchCtx())
        self._cond.notify_all()
        return batch

    def _new_task(self, batch: EmulatedBatch, name: str, args_str: str,
                  mr_stage: Optional[int] = None, parent_id: int = 0) -> EmulatedTask:
        task = EmulatedTask(task_id=next(self._task_ids), batch_id=batch.id, job_id=batch.job_id,
                            task_name=name, args_str=args_str, parent_id=parent_id, mr_stage=mr_stage)
        batch._tasks.append(task)
        self._task_index[task.task_id] = task
        return task

    def _assign(self, task: EmulatedTask, node: ClientNode) -> None:
        task.node = node.host_id
        task.client_address = node.address

    def _assign_round_robin(self, batch: EmulatedBatch, task: EmulatedTask) -> None:
        live = self._live_nodes(batch._job)
        if not live:
            task.status = _CANCEL
            task.node = None
            task.client_address = None
            return
        node = live[batch._job.rr % len(live)]
        batch._job.rr += 1
        self._assign(task, node)

    def _reroute(self, batch: EmulatedBatch, task: EmulatedTask) -> None:
        """Node choice for a job-level retry (protocol.md section 5.6)."""
        live = self._live_nodes(batch._job)
        if not live:
            return  # keep the old node: the dispatch then fails "Client does not exist"
        if batch.task_type == _CLUSTER:
            self._assign_round_robin(batch, task)
        elif batch.task_type == _BROADCAST:
            current = next((n for n in live if n.host_id == task.node), None)
            if current is None:
                used = {t.client_address for t in batch._tasks}
                current = next((n for n in live if n.address not in used), None)
            if current is not None:
                self._assign(task, current)
        else:
            self._assign(task, self._random.choice(live))

    def _schedule_timeout(self, batch: EmulatedBatch) -> None:
        if self._scheduler is None:
            return
        started = time.monotonic()
        delay = batch._job.executor_timeout + _TIMEOUT_GRACE

        def check() -> None:
            with self._cond:
                if self._stopping.is_set() or batch._done:
                    return
                logger.info("snailjob emulator: batch %d timed out after %.1fs",
                            batch.id, time.monotonic() - started)
                self._stop_running_batch(batch, REASON_TIMEOUT)

        self._scheduler.schedule(delay, check)

    def _stop_running_batch(self, batch: EmulatedBatch, reason: int) -> None:
        nodes: List[str] = []
        for task in batch._tasks:
            if task.node and task.node not in nodes:
                nodes.append(task.node)
        for task in batch._tasks:
            if task.status != _SUCCESS:
                task.status = _STOP
        self._finish(batch, _STOP, reason, post_stop=False)
        for host_id in nodes:
            self._send_stop(batch, host_id)

    # -- results ------------------------------------------------------------

    def _callback(self, task: EmulatedTask, task_status: int, execute_result: Dict[str, Any],
                  wf_context: Optional[str], is_retry: bool, retry_scene: Optional[int]) -> None:
        """``AbstractClientCallbackHandler.callback``: job-level retry or result."""
        batch = self._batches[task.batch_id]
        job = batch._job
        need_retry = False
        scene = retry_scene
        if retry_scene == _SCENE_MANUAL and not is_retry:
            need_retry = True
            if self._manual_loops.get(task.task_id, 0) > _MANUAL_LOOP_LIMIT:
                self._problem(f"task {task.task_id}: manual retry reported back without retry/retryStatus "
                              f"{_MANUAL_LOOP_LIMIT}+ times; the server would re-dispatch forever "
                              "(emulator stops re-dispatching)")
                need_retry = False
        elif task_status == _FAIL and task.retry_count < job.max_retry_times:
            need_retry = True
            scene = _SCENE_AUTO
        if need_retry:
            task.retry_count += 1
            self._reroute(batch, task)
            ctx = _DispatchCtx(retry=True, retry_scene=scene)
            if scene == _SCENE_MANUAL:
                self._submit_dispatch(task, ctx)
            else:
                if self._scheduler is not None:
                    self._scheduler.schedule(job.retry_interval,
                                             lambda: self._dispatch(task, ctx))
                return
        self._apply_result(task, task_status, execute_result, wf_context)

    def _apply_result(self, task: EmulatedTask, task_status: int, execute_result: Dict[str, Any],
                      wf_context: Optional[str]) -> None:
        """``JobExecutorResultActor``: update the row, then try to complete."""
        batch = self._batches[task.batch_id]
        task.status = task_status
        if wf_context is not None:
            task.wf_context = wf_context
        result = execute_result.get("result")
        if result is not None:
            task.result = _result_message(result)
        task.execute_result = execute_result
        message = execute_result.get("message")
        if isinstance(message, str):
            task.message = message
        if batch.task_type in (_MAP, _MAP_REDUCE) and not task.leaf and self.map_race_quirk:
            return
        self._try_complete(batch)

    def _fail_directly(self, task: EmulatedTask, message: str) -> None:
        """``RequestClientActor.taskExecuteFailure``: FAIL without the retry rules."""
        self._apply_result(task, _FAIL, {"status": 0, "result": None, "message": message}, None)

    def _try_complete(self, batch: EmulatedBatch) -> None:
        if batch._done or not batch._tasks:
            return
        if any(t.status in (_WAITING, _RUNNING) for t in batch._tasks):
            return
        statuses = {t.status for t in batch._tasks}
        if _FAIL in statuses:
            self._finish(batch, _FAIL, REASON_NONE, post_stop=True)
            return
        if _STOP in statuses:
            self._finish(batch, _STOP, REASON_NONE, post_stop=True)
            return
        if batch.task_type == _MAP_REDUCE:
            stages = [t.mr_stage for t in batch._tasks]
            if all(stage == _STAGE_MAP for stage in stages):
                if self._create_reduce(batch):
                    return
            elif stages.count(_STAGE_REDUCE) > 1 and _STAGE_MERGE not in stages:
                self._create_merge(batch)
                return
        self._finish(batch, _SUCCESS, REASON_NONE, post_stop=True)

    def _create_reduce(self, batch: EmulatedBatch) -> bool:
        leaves = [t for t in batch._tasks if t.mr_stage == _STAGE_MAP and t.leaf]
        if not leaves:
            return False
        parts = _partition([t.result for t in leaves], batch._job.shard_num)
        created = []
        for part in parts:
            task = self._new_task(batch, _REDUCE_TASK, _args_json(batch.job_params, maps=part),
                                  mr_stage=_STAGE_REDUCE)
            self._assign_round_robin(batch, task)
            created.append(task)
        self._dispatch_created(batch, created)
        return True

    def _create_merge(self, batch: EmulatedBatch) -> None:
        reduces = [t.result for t in batch._tasks if t.mr_stage == _STAGE_REDUCE and t.leaf]
        task = self._new_task(batch, _MERGE_REDUCE_TASK, _args_json(batch.job_params, reduces=reduces),
                              mr_stage=_STAGE_MERGE)
        self._assign_round_robin(batch, task)
        self._dispatch_created(batch, [task])

    def _dispatch_created(self, batch: EmulatedBatch, created: List[EmulatedTask]) -> None:
        running = [t for t in created if t.status == _RUNNING]
        for task in running:
            self._submit_dispatch(task, _DispatchCtx())
        if not running:  # no live node: the new tasks are CANCEL
            self._try_complete(batch)

    def _finish(self, batch: EmulatedBatch, status: int, reason: int, post_stop: bool) -> None:
        if batch._done:
            return
        batch._status = status
        batch._done = True
        batch.operation_reason = reason
        batch.completed_at = time.time()
        logger.debug("snailjob emulator: batch %d finished with status %d", batch.id, status)
        if post_stop and batch.task_type != _CLUSTER:
            for task in batch._tasks:
                if task.node:
                    self._send_stop(batch, task.node)
        self._cond.notify_all()
        if batch.workflow is not None and not batch.workflow._done:
            self._workflow_step(batch)

    # ------------------------------------------------------------------
    # outbound calls (never under the lock)
    # ------------------------------------------------------------------

    def _submit_dispatch(self, task: EmulatedTask, ctx: _DispatchCtx) -> None:
        self._submit(lambda: self._dispatch(task, ctx))

    def _dispatch_body(self, batch: EmulatedBatch, task: EmulatedTask, ctx: _DispatchCtx) -> Dict[str, Any]:
        job = batch._job
        body: Dict[str, Any] = {
            "namespaceId": job.namespace,
            "jobId": job.job_id,
            "taskBatchId": batch.id,
            "taskId": task.task_id,
            "taskType": job.task_type,
            "groupName": job.group,
            "parallelNum": job.parallel_num,
            "executorType": job.executor_type,
            "executorInfo": job.executor,
            "executorTimeout": job.executor_timeout,
            "taskName": task.task_name,
            "mrStage": task.mr_stage,
            "argsStr": task.args_str,
            "shardingTotal": task.sharding_total,
            "shardingIndex": task.sharding_index,
            "workflowTaskBatchId": batch.workflow.id if batch.workflow is not None else None,
            "workflowNodeId": batch.workflow_node_id,
            "wfContext": self._wf_context_text(batch),
            "retryCount": task.retry_count,
            "retryScene": ctx.retry_scene,
            "retry": ctx.retry,
            "retryStatus": ctx.retry,
        }
        return {key: value for key, value in body.items() if value is not None}

    def _dispatch(self, task: EmulatedTask, ctx: _DispatchCtx) -> None:
        """``RequestClientActor``: dispatch one task (runs on a pool thread)."""
        if self._stopping.is_set():
            return
        with self._cond:
            batch = self._batches[task.batch_id]
            job = batch._job
            node = self._node_by_id(task.node, job) if task.node else None
            if node is None or not self._is_live(node):
                task.message = _MSG_CLIENT_MISSING
                self._fail_directly(task, _MSG_CLIENT_MISSING)
                self._cond.notify_all()
                return
            body = self._dispatch_body(batch, task, ctx)
            task.dispatch_requests.append(body)
            text = dumps([body])
            attempts = job.max_retry_times if job.max_retry_times > 0 and not ctx.retry else 1
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                headers = self.server_headers(node)
            reply, error, data_value = self._call_and_record(node, enums.URI_DISPATCH, text, headers,
                                                             task.dispatch_replies)
            if error is None:
                break
            if self._stopping.is_set():
                return
            with self._cond:
                node.alive = False  # a failed call marks the node not alive until its next beat
                if attempt >= attempts:
                    self._fail_directly(task, error)
                    self._cond.notify_all()
                    return
            if self._stopping.wait(job.retry_interval):
                return
            with self._cond:
                live = self._live_nodes(job)
                if not live:
                    self._fail_directly(task, f"{error} (no live node to fail over to)")
                    self._cond.notify_all()
                    return
                node = live[0]
                self._assign(task, node)
        assert reply is not None
        with self._cond:
            if attempt > 1:
                task.retry_count = attempt
            if not (reply.status == 1 and data_value is True):
                self._callback(task, _FAIL, {"status": 0, "result": None, "message": reply.message},
                               None, ctx.retry, ctx.retry_scene)
            self._cond.notify_all()

    def _send_stop(self, batch: EmulatedBatch, host_id: str) -> None:
        """``RealStopTaskActor``: ``/job/stop/v1`` to a live node, 1 s deadline,
        up to 3 attempts 1 s apart; the reply is ignored."""
        node = self._node_by_id(host_id, batch._job)
        if node is None or not self._is_live(node):
            return
        body = dumps([{"jobId": batch.job_id, "taskBatchId": batch.id, "groupName": batch._job.group}])

        def attempt(n: int) -> None:
            with self._lock:
                headers = self.server_headers(node)
            _, error, _ = self._invoke(node, enums.URI_STOP, body, headers, _STOP_TIMEOUT)
            if error is not None and n < _STOP_ATTEMPTS and self._scheduler is not None:
                self._scheduler.schedule(_STOP_RETRY_WAIT, lambda: attempt(n + 1))

        self._submit(lambda: attempt(1))
