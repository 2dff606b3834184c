"""The running task's context, held in a ``contextvars.ContextVar``.

The dispatcher sets it around each task and resets it afterwards, so a pooled
thread never carries a finished task's identity into the next one.  Code the
job runs in the same thread sees it; asyncio tasks created inside the job
inherit it (they copy the context); threads the job starts itself do not,
unless started through ``contextvars.copy_context().run``.
"""

from __future__ import annotations

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
    def map_batch_size(self) -> int: ...

    @property
    def log_identity(self) -> Dict[str, str]: ...

    def report_map(self, task: TaskContext, items: list, next_task_name: str) -> None: ...

    def ship_log(self, entry: Dict[str, Any]) -> None: ...


@dataclass
class TaskContext:
    """Identity and controls of the task running in this context."""

    request: DispatchJobRequest
    args: JobArgs
    stop_event: threading.Event
    services: TaskServices
    extra: Dict[str, Any] = field(default_factory=dict)

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
    def workflow_task_batch_id(self) -> Optional[int]:
        return self.request.workflowTaskBatchId

    @property
    def workflow_node_id(self) -> Optional[int]:
        return self.request.workflowNodeId

    @property
    def retry_count(self) -> int:
        return self.request.retryCount or 0

    def is_stopped(self) -> bool:
        """True once the batch was stopped or the task timed out."""
        return self.stop_event.is_set()

    def wait_stopped(self, timeout: Optional[float] = None) -> bool:
        """Block until stopped or ``timeout`` seconds; True if stopped."""
        return self.stop_event.wait(timeout)


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


def enter(ctx: TaskContext) -> contextvars.Token:
    return _current.set(ctx)


def leave(token: contextvars.Token) -> None:
    _current.reset(token)
