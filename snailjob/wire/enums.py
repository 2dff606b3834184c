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
    CLUSTER = 1
    BROADCAST = 2
    SHARDING = 3
    MAP = 4
    MAP_REDUCE = 5


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
    """Status of a batch (job instance); kept for 0.1.3 compatibility."""

    WAITING = 1
    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    STOP = 5
    CANCEL = 6


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
