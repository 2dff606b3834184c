"""The running task's context, held in a ``contextvars.ContextVar``.

The dispatcher sets it around each task and resets it afterwards, so a pooled
thread never carries a finished task's identity into the next one.  Code the
job runs in the same thread sees it; asyncio tasks created inside the job
inherit it (they copy the context); threads the job starts itself do not,
unless started through ``contextvars.copy_context().run``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Protocol

from snailjob.args import JobArgs
from snailjob.errors import NotInJobError
from snailjob.wire.models import DispatchJobRequest


class TaskServices(Protocol):
    """What job-side helpers need from the client that runs the task."""

    @property
    def host_id(self) -> str:
        """The id of the node running the task."""

    @property
    def map_batch_size(self) -> int: ...

    @property
    def map_sentinel(self) -> bool: ...

    @property
    def log_identity(self) -> Dict[str, str]: ...

    def report_map(self, task: TaskContext, items: list, next_task_name: str) -> None:
        """Report sub-tasks and wait for the server's answer (``MapError`` if refused)."""

    def queue_log(self, entry: Dict[str, Any]) -> None: ...


@dataclass
class TaskContext:
    """Identity and controls of the task running in this context."""

    request: DispatchJobRequest
    args: JobArgs
    stop_event: threading.Event
    services: TaskServices
    extra: Dict[str, Any] = field(default_factory=dict)
    map_items_sent: int = 0  # sub-tasks this task created with mr_do_map
    sentinel: bool = False  # its map task's sentinel sub-task (see mapreduce.mr_do_map)

    @property
    def job_id(self) -> int:
        return self.request.jobId

    @property
    def task_batch_id(self) -> int:
        return self.request.taskBatchId

    @property
    def task_id(self) -> int:
        return self.request.taskId

    @property
    def task_type(self) -> int:
        return self.request.taskType

    @property
    def job_biz_id(self) -> Optional[str]:
        """The job's business id (its ``jobBizId``)."""
        return self.request.jobBizId

    @property
    def namespace_id(self) -> Optional[str]:
        return self.request.namespaceId

    @property
    def group_name(self) -> Optional[str]:
        return self.request.groupName

    @property
    def executor_info(self) -> str:
        """The executor name the job names (what the console shows)."""
        return self.request.executorInfo

    @property
    def parallel_num(self) -> int:
        """Tasks of this batch that may run at once on this node."""
        return self.request.parallelNum

    @property
    def executor_timeout(self) -> Optional[int]:
        """Seconds the server gives the task (``executorTimeout``); the node
        stops it after that (``None``: no timeout given)."""
        return self.request.executorTimeout

    @property
    def sharding_total(self) -> Optional[int]:
        return self.request.shardingTotal

    @property
    def sharding_index(self) -> Optional[int]:
        return self.request.shardingIndex

    @property
    def retry_scene(self) -> Optional[int]:
        """1 automatic or 2 manual, when this run is a retry of the task."""
        return self.request.retryScene

    @property
    def retry_status(self) -> bool:
        """True when this run is a retry of the task."""
        return self.request.retryStatus

    @property
    def workflow_task_batch_id(self) -> Optional[int]:
        return self.request.workflowTaskBatchId

    @property
    def workflow_node_id(self) -> Optional[int]:
        return self.request.workflowNodeId

    @property
    def retry_count(self) -> int:
        return self.request.retryCount or 0

    @property
    def task_name(self) -> Optional[str]:
        return self.request.taskName

    @property
    def mr_stage(self) -> Optional[int]:
        return self.request.mrStage

    @property
    def wf_context(self) -> Dict[str, Any]:
        """The workflow context at dispatch plus this task's own changes."""
        merged = dict(self.args.wf_context or {})
        if self.args.change_wf_context is not None:
            merged.update(self.args.change_wf_context.to_dict())
        return merged

    def get_wf_context(self, key: str) -> Any:
        return self.args.get_wf_context(key)

    def append_context(self, key: str, value: Any) -> None:
        """Add or change a workflow-context key (sent with this task's result)."""
        self.args.append_context(key, value)

    def is_stopped(self) -> bool:
        """True once the batch was stopped or the task timed out."""
        return self.stop_event.is_set()

    def wait_stopped(self, timeout: Optional[float] = None) -> bool:
        """Block until stopped or ``timeout`` seconds; True if stopped."""
        return self.stop_event.wait(timeout)

    async def wait_stopped_async(self, timeout: Optional[float] = None) -> bool:
        """``wait_stopped`` for coroutines (checks every 50 ms; the coroutine
        is also cancelled after ``SNAIL_INTERRUPT_DELAY``)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.stop_event.is_set():
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True


_current: contextvars.ContextVar[Optional[TaskContext]] = contextvars.ContextVar(
    "snailjob_task", default=None)


def current_task() -> TaskContext:
    """The running task's context; ``NotInJobError`` outside a job."""
    ctx = _current.get()
    if ctx is None:
        raise NotInJobError("no SnailJob task is running in this context "
                            "(call this from inside an executor)")
    return ctx


def current_task_or_none() -> Optional[TaskContext]:
    return _current.get()


@dataclass
class RetryContext:
    """Identity of a server-driven retry (or completion callback) running in
    this context: what ``current_retry()`` returns and what makes logs of
    the run ship as the server's RETRY logs."""

    scene: str
    executor_name: str
    retry_id: Optional[int]
    retry_task_id: int
    retry_count: int
    kind: str  # "retry" or "callback"
    stop_event: threading.Event
    services: TaskServices
    retry_status: Optional[int] = None  # callbacks: 1 FINISH, 2 MAX_COUNT

    def is_stopped(self) -> bool:
        """True once the server stopped this run or it timed out."""
        return self.stop_event.is_set()


_current_retry: contextvars.ContextVar[Optional[RetryContext]] = contextvars.ContextVar(
    "snailjob_retry", default=None)


def current_retry() -> RetryContext:
    """The server-driven retry running in this context; ``NotInJobError``
    elsewhere (also during local retries, which the server does not know)."""
    ctx = _current_retry.get()
    if ctx is None:
        raise NotInJobError("no server-driven retry is running in this context")
    return ctx


def current_retry_or_none() -> Optional[RetryContext]:
    return _current_retry.get()


def enter_retry(ctx: RetryContext) -> contextvars.Token:
    return _current_retry.set(ctx)


def leave_retry(token: contextvars.Token) -> None:
    _current_retry.reset(token)


def enter(ctx: TaskContext) -> contextvars.Token:
    return _current.set(ctx)


def leave(token: contextvars.Token) -> None:
    _current.reset(token)
