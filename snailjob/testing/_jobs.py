"""Jobs in the server emulator: triggering, batches and tasks, results and map/reduce.

``trigger`` / ``stop_batch`` / ``retry_batch``; the task generators, routing,
job-level retries, map, reduce and merge stages, completion, timeouts and
stops, and the step of a linear workflow when a node's batch finishes.
``_Jobs`` gets the state, the transport (live nodes) and the job calls
(dispatch, stop); it is the ``_DispatchOutcome`` of its own dispatches and
the console buttons of its batches.  The URIs that report results are
parsed in ``_job_reports.py``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Set

from snailjob.testing._job_calls import _DispatchCtx, _JobCalls
from snailjob.testing._state import _State
from snailjob.testing._support import (
    _BROADCAST,
    _CANCEL,
    _CLUSTER,
    _FAIL,
    _MAP,
    _MAP_REDUCE,
    _RUNNING,
    _SCENE_AUTO,
    _SCENE_MANUAL,
    _SHARDING,
    _STAGE_MAP,
    _STAGE_MERGE,
    _STAGE_REDUCE,
    _STOP,
    _SUCCESS,
    _TIMEOUT_GRACE,
    _WAITING,
    _args_json,
    _partition,
    _result_message,
    logger,
)
from snailjob.testing._transport import _Transport
from snailjob.testing.batches import EmulatedBatch, EmulatedWorkflow, _Job, _make_job
from snailjob.testing.records import (
    REASON_MANUAL_STOP,
    REASON_NONE,
    REASON_NOT_CLIENT,
    REASON_TIMEOUT,
    ClientNode,
    EmulatedTask,
)
from snailjob.wire import enums

_MANUAL_LOOP_LIMIT = 3

_TASK_NAMES = {
    _CLUSTER: "CLUSTER_TASK",
    _BROADCAST: "BROADCAST_TASK",
    _SHARDING: "SHARDING_TASK",
}
_REDUCE_TASK = "REDUCE_TASK"
_MERGE_REDUCE_TASK = "MERGE_REDUCE_TASK"


class _Jobs:
    """Jobs, batches and tasks and their results; a finished workflow node opens the next."""

    def __init__(self, state: _State, transport: _Transport, calls: _JobCalls) -> None:
        self._state = state
        self._transport = transport
        self._calls = calls

    # ------------------------------------------------------------------
    # driving jobs
    # ------------------------------------------------------------------

    def trigger(self, executor: str, task_type: int = _CLUSTER, args_str: str = "",
                parallel_num: int = 1, executor_timeout: int = 60, max_retry_times: int = 0,
                retry_interval: float = 0.0, shard_num: int = 2,
                wf_context: Optional[Dict[str, Any]] = None, executor_type: int = 2,
                labels: Optional[Dict[str, str]] = None, node: Optional[str] = None) -> EmulatedBatch:
        """``ServerEmulator.trigger`` (documented there)."""
        self._state.require_running()
        job = self.new_job(executor, task_type, args_str, parallel_num, executor_timeout,
                            max_retry_times, retry_interval, shard_num, executor_type, labels)
        with self._state.cond:
            return self.start_batch(job, wf_context=wf_context, workflow=None, index=None, target=node)

    def stop_batch(self, batch_id: int) -> None:
        """``ServerEmulator.stop_batch`` (documented there)."""
        with self._state.cond:
            batch = self._state.batches[batch_id]
            if batch._done:
                return
            self.stop_running_batch(batch, REASON_MANUAL_STOP)

    def retry_batch(self, batch_id: int) -> None:
        """``ServerEmulator.retry_batch`` (documented there)."""
        with self._state.cond:
            batch = self._state.batches[batch_id]
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
                self.reroute(batch, task)
                self.submit_dispatch(task, _DispatchCtx(retry=True, retry_scene=_SCENE_MANUAL))
            self.schedule_timeout(batch)

    # ------------------------------------------------------------------
    # jobs, batches and tasks (callers hold the lock unless noted)
    # ------------------------------------------------------------------

    def new_job(self, executor: str, task_type: int, args_str: Optional[str], parallel_num: int,
                executor_timeout: int, max_retry_times: int, retry_interval: float, shard_num: int,
                executor_type: int, labels: Optional[Dict[str, str]]) -> _Job:
        st = self._state
        with st.lock:
            job = _make_job(next(st.ids), st.namespace, st.group, executor, task_type, args_str, parallel_num,
                            executor_timeout, max_retry_times, retry_interval, shard_num, executor_type, labels)
            st.jobs[job.job_id] = job
        return job

    def start_batch(self, job: _Job, wf_context: Optional[Dict[str, Any]],
                     workflow: Optional[EmulatedWorkflow], index: Optional[int],
                     target: Optional[str]) -> EmulatedBatch:
        batch = EmulatedBatch(self._state.guard, self, next(self._state.ids), job, wf_context, workflow, index)
        self._state.batches[batch.id] = batch
        if workflow is not None:
            workflow._batches.append(batch)
        live = self._transport.live_nodes(job)
        if not live:
            logger.info("snailjob emulator: no live client for batch %d: CANCEL", batch.id)
            self.finish(batch, _CANCEL, REASON_NOT_CLIENT, post_stop=False)
            return batch
        batch._status = _RUNNING
        if job.task_type == _CLUSTER:
            task = self.new_task(batch, _TASK_NAMES[_CLUSTER], _args_json(job.job_params))
            chosen = None
            if target is not None:
                chosen = next((n for n in live if n.host_id == target), None)
                if chosen is None:
                    self._state.problem(f"trigger(node={target!r}): no such live node; routing round-robin")
            if chosen is not None:
                self.assign(task, chosen)
            else:
                self.assign_round_robin(batch, task)
        elif job.task_type == _BROADCAST:
            seen: Set[str] = set()
            for node in live:
                if node.address in seen:
                    continue
                seen.add(node.address)
                self.assign(self.new_task(batch, _TASK_NAMES[_BROADCAST], _args_json(job.job_params)), node)
        elif job.task_type == _SHARDING:
            shards = json.loads(job.args_str)
            for i, shard in enumerate(shards):
                task = self.new_task(batch, _TASK_NAMES[_SHARDING], _args_json(shard))
                task.sharding_index, task.sharding_total = i, len(shards)
                self.assign(task, live[i % len(live)])
        else:
            task = self.new_task(batch, enums.ROOT_MAP, _args_json(job.job_params, maps=""),
                                  mr_stage=_STAGE_MAP)
            self.assign_round_robin(batch, task)
        self.schedule_timeout(batch)
        for task in batch._tasks:
            if task.status == _RUNNING:
                self.submit_dispatch(task, _DispatchCtx())
        self._state.cond.notify_all()
        return batch

    def new_task(self, batch: EmulatedBatch, name: str, args_str: str,
                  mr_stage: Optional[int] = None, parent_id: int = 0) -> EmulatedTask:
        task = EmulatedTask(task_id=next(self._state.task_ids), batch_id=batch.id, job_id=batch.job_id,
                            task_name=name, args_str=args_str, parent_id=parent_id, mr_stage=mr_stage)
        batch._tasks.append(task)
        self._state.task_index[task.task_id] = task
        return task

    def assign(self, task: EmulatedTask, node: ClientNode) -> None:
        task.node = node.host_id
        task.client_address = node.address

    def assign_round_robin(self, batch: EmulatedBatch, task: EmulatedTask) -> None:
        live = self._transport.live_nodes(batch._job)
        if not live:
            task.status = _CANCEL
            task.node = None
            task.client_address = None
            return
        node = live[batch._job.rr % len(live)]
        batch._job.rr += 1
        self.assign(task, node)

    def reroute(self, batch: EmulatedBatch, task: EmulatedTask) -> None:
        """Node choice for a job-level retry (protocol.md section 5.6)."""
        live = self._transport.live_nodes(batch._job)
        if not live:
            return  # keep the old node: the dispatch then fails "Client does not exist"
        if batch.task_type == _CLUSTER:
            self.assign_round_robin(batch, task)
        elif batch.task_type == _BROADCAST:
            current = next((n for n in live if n.host_id == task.node), None)
            if current is None:
                used = {t.client_address for t in batch._tasks}
                current = next((n for n in live if n.address not in used), None)
            if current is not None:
                self.assign(task, current)
        else:
            self.assign(task, self._state.random.choice(live))

    def schedule_timeout(self, batch: EmulatedBatch) -> None:
        started = time.monotonic()
        delay = batch._job.executor_timeout + _TIMEOUT_GRACE

        def check() -> None:
            with self._state.cond:
                if self._state.stopping.is_set() or batch._done:
                    return
                logger.info("snailjob emulator: batch %d timed out after %.1fs",
                            batch.id, time.monotonic() - started)
                self.stop_running_batch(batch, REASON_TIMEOUT)

        self._state.schedule(delay, check)

    def stop_running_batch(self, batch: EmulatedBatch, reason: int) -> None:
        nodes: List[str] = []
        for task in batch._tasks:
            if task.node and task.node not in nodes:
                nodes.append(task.node)
        for task in batch._tasks:
            if task.status != _SUCCESS:
                task.status = _STOP
        self.finish(batch, _STOP, reason, post_stop=False)
        for host_id in nodes:
            self._calls.send_stop(batch, host_id)

    # -- results ------------------------------------------------------------

    def callback(self, task: EmulatedTask, task_status: int, execute_result: Dict[str, Any],
                  wf_context: Optional[str], is_retry: bool, retry_scene: Optional[int]) -> None:
        """``AbstractClientCallbackHandler.callback``: job-level retry or result."""
        batch = self._state.batches[task.batch_id]
        job = batch._job
        need_retry = False
        scene = retry_scene
        if retry_scene == _SCENE_MANUAL and not is_retry:
            need_retry = True
            if self._state.manual_loops.get(task.task_id, 0) > _MANUAL_LOOP_LIMIT:
                self._state.problem(f"task {task.task_id}: manual retry reported back without retry/retryStatus "
                              f"{_MANUAL_LOOP_LIMIT}+ times; the server would re-dispatch forever "
                              "(emulator stops re-dispatching)")
                need_retry = False
        elif task_status == _FAIL and task.retry_count < job.max_retry_times:
            need_retry = True
            scene = _SCENE_AUTO
        if need_retry:
            task.retry_count += 1
            self.reroute(batch, task)
            ctx = _DispatchCtx(retry=True, retry_scene=scene)
            if scene == _SCENE_MANUAL:
                self.submit_dispatch(task, ctx)
            else:
                self._state.schedule(job.retry_interval, lambda: self._calls.dispatch(task, ctx, self))
                return
        self.apply_result(task, task_status, execute_result, wf_context)

    def apply_result(self, task: EmulatedTask, task_status: int, execute_result: Dict[str, Any],
                      wf_context: Optional[str]) -> None:
        """``JobExecutorResultActor``: update the row, then try to complete."""
        batch = self._state.batches[task.batch_id]
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
        if batch.task_type in (_MAP, _MAP_REDUCE) and not task.leaf and self._state.map_race_quirk:
            return
        self.try_complete(batch)

    def fail_directly(self, task: EmulatedTask, message: str) -> None:
        """``RequestClientActor.taskExecuteFailure``: FAIL without the retry rules."""
        self.apply_result(task, _FAIL, {"status": 0, "result": None, "message": message}, None)

    def try_complete(self, batch: EmulatedBatch) -> None:
        if batch._done or not batch._tasks:
            return
        if any(t.status in (_WAITING, _RUNNING) for t in batch._tasks):
            return
        statuses = {t.status for t in batch._tasks}
        if _FAIL in statuses:
            self.finish(batch, _FAIL, REASON_NONE, post_stop=True)
            return
        if _STOP in statuses:
            self.finish(batch, _STOP, REASON_NONE, post_stop=True)
            return
        if batch.task_type == _MAP_REDUCE:
            stages = [t.mr_stage for t in batch._tasks]
            if all(stage == _STAGE_MAP for stage in stages):
                if self._create_reduce(batch):
                    return
            elif stages.count(_STAGE_REDUCE) > 1 and _STAGE_MERGE not in stages:
                self._create_merge(batch)
                return
        self.finish(batch, _SUCCESS, REASON_NONE, post_stop=True)

    def _create_reduce(self, batch: EmulatedBatch) -> bool:
        leaves = [t for t in batch._tasks if t.mr_stage == _STAGE_MAP and t.leaf]
        if not leaves:
            return False
        parts = _partition([t.result for t in leaves], batch._job.shard_num)
        created = []
        for part in parts:
            task = self.new_task(batch, _REDUCE_TASK, _args_json(batch.job_params, maps=part),
                                  mr_stage=_STAGE_REDUCE)
            self.assign_round_robin(batch, task)
            created.append(task)
        self._dispatch_created(batch, created)
        return True

    def _create_merge(self, batch: EmulatedBatch) -> None:
        reduces = [t.result for t in batch._tasks if t.mr_stage == _STAGE_REDUCE and t.leaf]
        task = self.new_task(batch, _MERGE_REDUCE_TASK, _args_json(batch.job_params, reduces=reduces),
                              mr_stage=_STAGE_MERGE)
        self.assign_round_robin(batch, task)
        self._dispatch_created(batch, [task])

    def _dispatch_created(self, batch: EmulatedBatch, created: List[EmulatedTask]) -> None:
        running = [t for t in created if t.status == _RUNNING]
        for task in running:
            self.submit_dispatch(task, _DispatchCtx())
        if not running:  # no live node: the new tasks are CANCEL
            self.try_complete(batch)

    def finish(self, batch: EmulatedBatch, status: int, reason: int, post_stop: bool) -> None:
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
                    self._calls.send_stop(batch, task.node)
        self._state.cond.notify_all()
        if batch.workflow is not None and not batch.workflow._done:
            self._workflow_step(batch)

    def _workflow_step(self, batch: EmulatedBatch) -> None:
        """A workflow node's batch finished: merge its context, open the next node or end the workflow."""
        workflow = batch.workflow
        if workflow is None or batch.workflow_index is None:
            return
        if workflow._batches and workflow._batches[-1] is not batch:
            return  # a stale node (for example a manual retry of an earlier node)
        index = batch.workflow_index
        has_next = index + 1 < len(workflow.nodes)
        if has_next:
            for task in batch._tasks:
                workflow._merge_context(task.wf_context)
        if batch._status == _SUCCESS and has_next:
            self.start_batch(workflow._jobs[index + 1], wf_context=None, workflow=workflow,
                             index=index + 1, target=None)
            return
        workflow._status = batch._status
        workflow._done = True
        self._state.cond.notify_all()

    def submit_dispatch(self, task: EmulatedTask, ctx: _DispatchCtx) -> None:
        self._transport.submit(lambda: self._calls.dispatch(task, ctx, self))

