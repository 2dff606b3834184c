"""Task observers: code called around every job task a client runs, for
metrics, tracing or auditing (``Client.add_observer``).

An observer's ``task_started`` runs on the task's own thread (or in its
asyncio task) just before the job function, with the task context current,
so what it makes current (an OpenTelemetry span, a context variable) is
current inside the job too; ``task_finished`` runs in the same place right
after the function returns or raises, and gets back what ``task_started``
returned.  Both must be quick and must not block on the network.  An
exception in an observer is logged and otherwise ignored: it never fails a
task.

Limits: tasks refused at dispatch (unknown executor, bad arguments) and
tasks stopped before they started are not observed; server-driven retry
replays are not observed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from snailjob.wire.enums import JobTaskTypeEnum
from snailjob.wire.models import DispatchJobRequest

logger = logging.getLogger(__name__)

SUCCESS, FAILURE, STOPPED = "success", "failure", "stopped"


@dataclass(frozen=True)
class TaskInfo:
    """What an observer knows of a task (all from its dispatch request)."""

    namespace: str
    group: str
    job_id: int
    batch_id: int
    task_id: int
    executor: str
    task_type: str  # CLUSTER, BROADCAST, SHARDING, MAP, MAP_REDUCE
    task_name: Optional[str]
    retry_count: int
    workflow_batch_id: Optional[int]
    is_async: bool

    @staticmethod
    def of(request: DispatchJobRequest, is_async: bool = False) -> TaskInfo:
        try:
            task_type = JobTaskTypeEnum(request.taskType).name
        except ValueError:
            task_type = str(request.taskType)
        return TaskInfo(namespace=request.namespaceId or "", group=request.groupName or "",
                        job_id=request.jobId, batch_id=request.taskBatchId, task_id=request.taskId,
                        executor=request.executorInfo, task_type=task_type, task_name=request.taskName,
                        retry_count=request.retryCount or 0, workflow_batch_id=request.workflowTaskBatchId,
                        is_async=is_async)


class TaskObserver(Protocol):
    """Called around each job task; see the module docstring."""

    def task_started(self, task: TaskInfo) -> Any: ...

    def task_finished(self, task: TaskInfo, state: Any, outcome: str, duration: float,
                      error: Optional[BaseException]) -> None:
        """``outcome``: ``"success"``, ``"failure"`` or ``"stopped"`` (stop,
        timeout or shutdown interrupted it); ``error``: the exception the job
        raised, if any."""


def notify_started(observers: tuple, task: TaskInfo) -> list:
    states = []
    for observer in observers:
        try:
            states.append(observer.task_started(task))
        except Exception:
            logger.exception("task observer %r failed in task_started", observer)
            states.append(None)
    return states


def notify_finished(observers: tuple, states: list, task: TaskInfo, outcome: str, duration: float,
                    error: Optional[BaseException]) -> None:
    for observer, state in reversed(list(zip(observers, states))):
        try:
            observer.task_finished(task, state, outcome, duration, error)
        except Exception:
            logger.exception("task observer %r failed in task_finished", observer)
