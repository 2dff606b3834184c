"""Job batches and linear workflows run by the server emulator.

``EmulatedBatch`` (a ``sj_job_task_batch`` with its tasks) and
``EmulatedWorkflow`` (a linear chain of batches), and ``_Job``, the job
configuration a batch runs (``_make_job`` checks ``trigger()``'s arguments).
The records read the emulator's state through its ``_Guard``; their console
buttons (stop, retry) go to the ``_BatchButtons`` they are given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol

from snailjob.testing._support import (
    _BROADCAST,
    _CLUSTER,
    _MAP,
    _MAP_REDUCE,
    _RUNNING,
    _SHARDING,
    _WAITING,
    _Guard,
)
from snailjob.testing.records import REASON_NONE, EmulatedTask
from snailjob.wire.codec import dumps


@dataclass
class _Job:
    job_id: int
    executor: str
    task_type: int
    args_str: str
    job_params: Optional[str]
    parallel_num: int
    executor_timeout: int
    max_retry_times: int
    retry_interval: float
    executor_type: int
    labels: Dict[str, str]
    namespace: str
    group: str
    shard_num: int
    biz_id: str = ""  # the job's bizId (1.10+), sent as jobBizId
    rr: int = 0


def _make_job(job_id: int, namespace: str, group: str, executor: str, task_type: int, args_str: Optional[str],
              parallel_num: int, executor_timeout: int, max_retry_times: int, retry_interval: float,
              shard_num: int, executor_type: int, labels: Optional[Dict[str, str]]) -> _Job:
    """A job config from ``trigger()``'s arguments; ``ValueError`` where the
    server would generate no task or the arguments make no sense."""
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
    return _Job(job_id=job_id, executor=executor, task_type=int(task_type),
                args_str=stored or "", job_params=job_params, parallel_num=int(parallel_num),
                executor_timeout=int(executor_timeout), max_retry_times=int(max_retry_times),
                retry_interval=float(retry_interval), executor_type=int(executor_type),
                labels=dict(labels or {}), namespace=namespace, group=group, shard_num=int(shard_num),
                biz_id=f"job-{job_id}")


class _BatchButtons(Protocol):
    """The console's buttons an ``EmulatedBatch`` offers (the emulator's jobs)."""

    def stop_batch(self, batch_id: int) -> None: ...

    def retry_batch(self, batch_id: int) -> None: ...


class EmulatedBatch:
    """A job batch (``sj_job_task_batch``) run by the emulator.

    All attributes are read under the emulator's lock; ``tasks`` is a
    snapshot list (the task objects themselves keep changing).
    """

    def __init__(self, guard: _Guard, buttons: _BatchButtons, batch_id: int, job: _Job,
                 wf_context: Optional[Dict[str, Any]],
                 workflow: Optional[EmulatedWorkflow], workflow_index: Optional[int]) -> None:
        self._guard = guard
        self._buttons = buttons
        self.id = batch_id
        self._job = job
        self._wf_context = wf_context
        self.workflow = workflow
        self.workflow_index = workflow_index
        self.workflow_node_id: Optional[int] = (
            workflow.node_ids[workflow_index]
            if workflow is not None and workflow_index is not None else None)
        self._status = _WAITING
        self._done = False
        self._tasks: List[EmulatedTask] = []
        self.operation_reason = REASON_NONE
        self.started_at = time.time()
        self.completed_at: Optional[float] = None

    # -- read-only views ---------------------------------------------------

    @property
    def job_id(self) -> int:
        return self._job.job_id

    @property
    def executor(self) -> str:
        return self._job.executor

    @property
    def task_type(self) -> int:
        return self._job.task_type

    @property
    def job_params(self) -> Optional[str]:
        """The ``jobParams`` every task of the batch receives."""
        return self._job.job_params

    @property
    def status(self) -> int:
        """1 WAITING, 2 RUNNING, 3 SUCCESS, 4 FAIL, 5 STOP, 6 CANCEL."""
        return self._guard.read(lambda: self._status)

    @property
    def done(self) -> bool:
        return self._guard.read(lambda: self._done)

    @property
    def tasks(self) -> List[EmulatedTask]:
        return self._guard.read(lambda: list(self._tasks))

    def task(self, task_id: int) -> EmulatedTask:
        """The task with this id; ``KeyError`` if it is not in the batch."""
        found = self._guard.read(lambda: [t for t in self._tasks if t.task_id == task_id])
        if not found:
            raise KeyError(task_id)
        return found[0]

    def tasks_named(self, task_name: str) -> List[EmulatedTask]:
        return self._guard.read(lambda: [t for t in self._tasks if t.task_name == task_name])

    def tasks_in_stage(self, mr_stage: int) -> List[EmulatedTask]:
        return self._guard.read(lambda: [t for t in self._tasks if t.mr_stage == mr_stage])

    # -- actions -------------------------------------------------------------

    def wait(self, timeout: float = 10.0) -> int:
        """Block until the batch completes; return its final status.

        Raises ``TimeoutError`` naming the batch and its pending tasks.
        """
        return self._guard.wait(lambda: self._done, lambda: self._status, timeout,
                                lambda: self._describe_pending(timeout),
                                stopped=f"emulator stopped while waiting for batch {self.id}")

    def stop(self) -> None:
        """Stop the batch like the console's stop button."""
        self._buttons.stop_batch(self.id)

    def retry(self) -> None:
        """Retry the batch like the console's retry button (manual retry)."""
        self._buttons.retry_batch(self.id)

    def _wf_context_text(self) -> Optional[str]:
        """The ``wfContext`` a task of this batch is sent: the workflow's
        merged context, or ``trigger()``'s ``wf_context``."""
        if self.workflow is not None:
            return dumps(self.workflow._context)
        if self._wf_context is not None:
            return dumps(self._wf_context)
        return None

    def _describe_pending(self, timeout: float) -> str:
        pending = [t for t in self._tasks if t.status in (_WAITING, _RUNNING)]
        shown = ", ".join(
            f"task {t.task_id} {t.task_name} on {t.node or '-'} (dispatched {t.dispatch_count}x, "
            f"replies {len(t.dispatch_replies)}, reports {len(t.reports)})"
            for t in pending[:10])
        more = f" and {len(pending) - 10} more" if len(pending) > 10 else ""
        return (f"batch {self.id} (job {self.job_id}, executor {self.executor!r}, task type "
                f"{self.task_type}) still has status {self._status} after {timeout:g}s; "
                f"{len(pending)} pending task(s): [{shown}{more}]")

    def __repr__(self) -> str:
        return (f"EmulatedBatch(id={self.id}, executor={self.executor!r}, task_type={self.task_type}, "
                f"status={self._status}, tasks={len(self._tasks)})")


class EmulatedWorkflow:
    """A linear workflow: node *i+1* opens when node *i*'s batch succeeds.

    ``context`` is the workflow batch's ``wf_context`` as the server keeps
    it.  Like the server, the context is merged from a finished node's tasks
    only when that node has a successor, so the last node's changes are not
    merged (they are visible on its tasks' ``wf_context_changes``).
    """

    def __init__(self, guard: _Guard, workflow_id: int, nodes: List[Dict[str, Any]],
                 node_ids: List[int], jobs: List[_Job], context: Dict[str, Any]) -> None:
        self._guard = guard
        self.id = workflow_id
        self.nodes = nodes
        self.node_ids = node_ids
        self._jobs = jobs
        self._context = context
        self._batches: List[EmulatedBatch] = []
        self._status = _RUNNING
        self._done = False

    @property
    def status(self) -> int:
        return self._guard.read(lambda: self._status)

    @property
    def done(self) -> bool:
        return self._guard.read(lambda: self._done)

    @property
    def context(self) -> Dict[str, Any]:
        return self._guard.read(lambda: dict(self._context))

    @property
    def batches(self) -> List[EmulatedBatch]:
        return self._guard.read(lambda: list(self._batches))

    def _merge_context(self, text: Optional[str]) -> None:
        """``mergeMaps``: the task's keys overwrite; null keys/values skipped;
        a value that is not a JSON object is ignored."""
        if not text:
            return
        try:
            value = json.loads(text)
        except ValueError:
            return
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            if key is None or item is None:
                continue
            self._context[key] = item

    def wait(self, timeout: float = 10.0) -> int:
        """Block until the workflow ends; return its status (3, 4, 5 or 6)."""
        def timed_out() -> str:
            current = self._batches[-1] if self._batches else None
            detail = current._describe_pending(timeout) if current is not None else "no batch"
            return (f"workflow {self.id} not finished after {timeout:g}s "
                    f"({len(self._batches)}/{len(self.nodes)} nodes opened); current: {detail}")

        return self._guard.wait(lambda: self._done, lambda: self._status, timeout, timed_out,
                                stopped=f"emulator stopped while waiting for workflow {self.id}")

    def __repr__(self) -> str:
        return f"EmulatedWorkflow(id={self.id}, status={self._status}, nodes={len(self.nodes)})"
