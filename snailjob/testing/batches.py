"""Job batches and linear workflows run by the server emulator.

``EmulatedBatch`` (a ``sj_job_task_batch`` with its tasks) and
``EmulatedWorkflow`` (a linear chain of batches), and ``_Job``, the job
configuration a batch runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol

from snailjob.testing.records import REASON_NONE, EmulatedTask
from snailjob.testing.support import _RUNNING, _WAITING, _Owner


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
    rr: int = 0


class _BatchOwner(_Owner, Protocol):
    """What an ``EmulatedBatch`` calls on its emulator (the console's buttons)."""

    def stop_batch(self, batch_id: int) -> None: ...

    def retry_batch(self, batch_id: int) -> None: ...


class EmulatedBatch:
    """A job batch (``sj_job_task_batch``) run by the emulator.

    All attributes are read under the emulator's lock; ``tasks`` is a
    snapshot list (the task objects themselves keep changing).
    """

    def __init__(self, emulator: _BatchOwner, batch_id: int, job: _Job,
                 wf_context: Optional[Dict[str, Any]],
                 workflow: Optional[EmulatedWorkflow], workflow_index: Optional[int]) -> None:
        self._emu = emulator
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
        with self._emu._lock:
            return self._status

    @property
    def done(self) -> bool:
        with self._emu._lock:
            return self._done

    @property
    def tasks(self) -> List[EmulatedTask]:
        with self._emu._lock:
            return list(self._tasks)

    def task(self, task_id: int) -> EmulatedTask:
        """The task with this id; ``KeyError`` if it is not in the batch."""
        with self._emu._lock:
            for task in self._tasks:
                if task.task_id == task_id:
                    return task
        raise KeyError(task_id)

    def tasks_named(self, task_name: str) -> List[EmulatedTask]:
        with self._emu._lock:
            return [t for t in self._tasks if t.task_name == task_name]

    def tasks_in_stage(self, mr_stage: int) -> List[EmulatedTask]:
        with self._emu._lock:
            return [t for t in self._tasks if t.mr_stage == mr_stage]

    # -- actions -------------------------------------------------------------

    def wait(self, timeout: float = 10.0) -> int:
        """Block until the batch completes; return its final status.

        Raises ``TimeoutError`` naming the batch and its pending tasks.
        """
        deadline = time.monotonic() + timeout
        with self._emu._cond:
            while not self._done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._describe_pending(timeout))
                if self._emu._stopping.is_set():
                    raise RuntimeError(f"emulator stopped while waiting for batch {self.id}")
                self._emu._cond.wait(min(remaining, 0.25))
            return self._status

    def stop(self) -> None:
        """Stop the batch like the console's stop button."""
        self._emu.stop_batch(self.id)

    def retry(self) -> None:
        """Retry the batch like the console's retry button (manual retry)."""
        self._emu.retry_batch(self.id)

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

    def __init__(self, emulator: _Owner, workflow_id: int, nodes: List[Dict[str, Any]],
                 node_ids: List[int], jobs: List[_Job], context: Dict[str, Any]) -> None:
        self._emu = emulator
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
        with self._emu._lock:
            return self._status

    @property
    def done(self) -> bool:
        with self._emu._lock:
            return self._done

    @property
    def context(self) -> Dict[str, Any]:
        with self._emu._lock:
            return dict(self._context)

    @property
    def batches(self) -> List[EmulatedBatch]:
        with self._emu._lock:
            return list(self._batches)

    def wait(self, timeout: float = 10.0) -> int:
        """Block until the workflow ends; return its status (3, 4, 5 or 6)."""
        deadline = time.monotonic() + timeout
        with self._emu._cond:
            while not self._done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    current = self._batches[-1] if self._batches else None
                    detail = current._describe_pending(timeout) if current is not None else "no batch"
                    raise TimeoutError(
                        f"workflow {self.id} not finished after {timeout:g}s "
                        f"({len(self._batches)}/{len(self.nodes)} nodes opened); current: {detail}")
                if self._emu._stopping.is_set():
                    raise RuntimeError(f"emulator stopped while waiting for workflow {self.id}")
                self._emu._cond.wait(min(remaining, 0.25))
            return self._status

    def __repr__(self) -> str:
        return f"EmulatedWorkflow(id={self.id}, status={self._status}, nodes={len(self.nodes)})"
