"""Integer codes of the SnailJob protocol (protocol.md section 7)."""

from __future__ import annotations

from enum import IntEnum


class StatusEnum(IntEnum):
    """``status`` of a ``GrpcResult`` and of an ``ExecuteResult``."""

    NO = 0
    YES = 1


class ExecutorTypeEnum(IntEnum):
    JAVA = 1
    PYTHON = 2
    GO = 3


class JobTaskTypeEnum(IntEnum):
    """``taskType``: how a batch is split into tasks."""

    CLUSTER = 1  #: one task on one client, chosen by the route strategy
    BROADCAST = 2  #: one task on every live client of the group
    SHARDING = 3  #: one task per element of the args (a JSON list of strings)
    MAP = 4  #: a ROOT_MAP task that fans out with mr_do_map
    MAP_REDUCE = 5  #: map, then ``shardNum`` reduce tasks, then one merge


class MapReduceStageEnum(IntEnum):
    MAP = 1
    REDUCE = 2
    MERGE_REDUCE = 3


class JobTaskStatusEnum(IntEnum):
    """Status of one task row; the client reports SUCCESS or FAIL."""

    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    STOP = 5
    CANCEL = 6


class JobTaskBatchStatusEnum(IntEnum):
    """Status of a batch (``taskBatchStatus``; also a workflow batch's
    ``workflowBatchStatus``); the name is kept for 0.1.3 compatibility."""

    WAITING = 1
    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    STOP = 5
    CANCEL = 6

    @property
    def is_final(self) -> bool:
        """SUCCESS, FAIL, STOP or CANCEL: the batch will not change any more."""
        return self >= JobTaskBatchStatusEnum.SUCCESS


class JobRetrySceneEnum(IntEnum):
    AUTO = 1
    MANUAL = 2


class RetryTaskStatusEnum(IntEnum):
    """Status of one retry execution (``/report/retry/dispatch/result`` and
    ``/report/retry/callback/result`` send 3, 4 or 5)."""

    WAITING = 1
    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    STOP = 5
    CANCEL = 6


class RetryStatusEnum(IntEnum):
    """Status of a retry as a whole (``retryStatus`` of ``/retry/callback/v1``)."""

    RUNNING = 0
    FINISH = 1
    MAX_COUNT = 2
    SUSPEND = 3


ROOT_MAP = "ROOT_MAP"
"""Task name of the first task of a map or map-reduce batch."""

# URIs the client calls on the server.
URI_BEAT = "/beat"
URI_REGISTER_EXECUTORS = "/register/job/executors"
URI_REPORT_RESULT = "/report/dispatch/result"
URI_REPORT_MAP = "/batch/report/job/map/task/v1"
URI_REPORT_LOG = "/batch/server/report/log"
URI_RETRY_REPORT = "/batch/report"
URI_RETRY_RESULT = "/report/retry/dispatch/result"
URI_RETRY_CALLBACK_RESULT = "/report/retry/callback/result"

# URIs the server calls on the client.
URI_DISPATCH = "/job/dispatch/v1"
URI_STOP = "/job/stop/v1"
URI_SYNC_VERSION = "/sync/version"
URI_RETRY_DISPATCH = "/retry/dispatch/v1"
URI_RETRY_CALLBACK = "/retry/callback/v1"
URI_RETRY_STOP = "/retry/stop/v1"
URI_RETRY_IDEMPOTENT_ID = "/retry/generate/idempotent-id/v1"
URI_RETRY_DESERIALIZE = "/retry/deserialize/args/v1"

# Header keys (lower case, as the Java client sends them).
HEADER_SERVER_TOKEN = "SJ-TOKEN"
