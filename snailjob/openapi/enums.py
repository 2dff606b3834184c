"""The integer codes of the OpenAPI, as ``IntEnum`` (each value is the server's).

Sources (SnailJob server 1.10.1 / 2.0.2): ``JobTaskTypeEnum``, ``TriggerTypeEnum``
(client side; the server's ``WaitStrategyEnum`` uses the same numbers),
``JobBlockStrategyEnum``, ``AllocationAlgorithmEnum``, ``StatusEnum``,
``JobTaskBatchStatusEnum``, ``JobOperationReasonEnum``, ``ExecutorTypeEnum``,
``JobArgsTypeEnum`` and ``RetryStatusEnum``.
"""

from __future__ import annotations

from enum import IntEnum


class TaskType(IntEnum):
    """``taskType``: how a batch is split into tasks."""

    CLUSTER = 1  #: one task on one client, chosen by the route strategy
    BROADCAST = 2  #: one task on every live client of the group
    SHARDING = 3  #: one task per element of the args (a JSON list of strings)
    MAP = 4  #: a ROOT_MAP task that fans out with mr_do_map
    MAP_REDUCE = 5  #: map, then ``shardNum`` reduce tasks, then one merge


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


class BatchStatus(IntEnum):
    """``taskBatchStatus`` of a job batch, ``workflowBatchStatus`` of a workflow batch."""

    WAITING = 1
    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    STOP = 5
    CANCEL = 6

    @property
    def is_final(self) -> bool:
        """SUCCESS, FAIL, STOP or CANCEL: the batch will not change any more."""
        return self >= BatchStatus.SUCCESS


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


class ExecutorType(IntEnum):
    """``executorType``: the language of the executor (the server passes it through)."""

    JAVA = 1
    PYTHON = 2
    GO = 3


class ArgsType(IntEnum):
    """``argsType``: a hint for the console; the server does not parse on it."""

    TEXT = 1
    JSON = 2


class RetryStatus(IntEnum):
    """``retryStatus`` of a retry task (``RetryStatusEnum``)."""

    RUNNING = 0
    FINISH = 1
    MAX_COUNT = 2
    SUSPEND = 3
