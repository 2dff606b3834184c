"""The integer codes of the OpenAPI, as ``IntEnum`` (each value is the server's).

Sources (SnailJob server 1.10.1 / 2.0.2): ``JobTaskTypeEnum``, ``TriggerTypeEnum``
(client side; the server's ``WaitStrategyEnum`` uses the same numbers),
``JobBlockStrategyEnum``, ``AllocationAlgorithmEnum``, ``StatusEnum``,
``JobTaskBatchStatusEnum``, ``JobOperationReasonEnum``, ``ExecutorTypeEnum``,
``JobArgsTypeEnum`` and ``RetryStatusEnum``.
"""

from __future__ import annotations

from enum import IntEnum

from snailjob.wire.enums import ExecutorTypeEnum as ExecutorType
from snailjob.wire.enums import JobTaskBatchStatusEnum as BatchStatus
from snailjob.wire.enums import JobTaskTypeEnum as TaskType
from snailjob.wire.enums import RetryStatusEnum as RetryStatus

# ``TaskType``, ``BatchStatus``, ``ExecutorType`` and ``RetryStatus`` are the
# job client's protocol enums (``snailjob.wire.enums``) under the names the
# OpenAPI documents use.


class TriggerType(IntEnum):
    """``triggerType``: what ``triggerInterval`` means."""

    SCHEDULED_TIME = 2  #: a fixed interval in seconds
    CRON = 3  #: a cron expression (seconds first, e.g. ``0 */5 * * * ?``)
    POINT_IN_TIME = 5  #: a JSON list of ``yyyy-MM-dd HH:mm:ss`` times
    WORKFLOW = 99  #: never scheduled by itself; runs only as a workflow node


class BlockStrategy(IntEnum):
    """``blockStrategy``: what a scheduled run does while the previous batch still runs.
    A manual trigger always creates a new batch."""

    DISCARD = 1
    OVERLAY = 2
    CONCURRENCY = 3
    RECOVERY = 4


class RouteStrategy(IntEnum):
    """``routeKey``: how the server picks a client (``AllocationAlgorithmEnum``)."""

    CONSISTENT_HASH = 1
    RANDOM = 2
    LRU = 3
    ROUND = 4
    FIRST = 5
    LAST = 6


class JobStatus(IntEnum):
    """``jobStatus`` / ``workflowStatus`` / the ``status`` of the update-status calls."""

    DISABLED = 0  #: the scheduler does not start it (a manual trigger still runs it)
    ENABLED = 1


class OperationReason(IntEnum):
    """``operationReason`` of a batch: why it ended the way it did (0 = nothing special)."""

    NONE = 0
    TASK_EXECUTION_TIMEOUT = 1
    NOT_CLIENT = 2  #: no client of the group was online; the batch is created as CANCEL
    JOB_CLOSED = 3
    JOB_DISCARD = 4
    JOB_OVERLAY = 5
    NOT_EXECUTION_TASK = 6  #: e.g. a sharding job whose args are not a list
    TASK_EXECUTION_ERROR = 7
    MANUAL_STOP = 8
    WORKFLOW_CONDITION_NODE_EXECUTION_ERROR = 9
    JOB_TASK_INTERRUPTED = 10
    WORKFLOW_CALLBACK_NODE_EXECUTION_ERROR = 11
    WORKFLOW_NODE_NO_REQUIRED = 12
    WORKFLOW_NODE_CLOSED_SKIP_EXECUTION = 13
    WORKFLOW_DECISION_FAILED = 14


class ArgsType(IntEnum):
    """``argsType``: a hint for the console; the server does not parse on it."""

    TEXT = 1
    JSON = 2


__all__ = ["ArgsType", "BatchStatus", "BlockStrategy", "ExecutorType", "JobStatus", "OperationReason",
           "RetryStatus", "RouteStrategy", "TaskType", "TriggerType"]
