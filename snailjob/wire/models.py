"""Pydantic models of the JSON payloads, with the Java server's field names.

Every name here is spelled exactly as the server's DTO spells it; golden tests
in ``tests/test_wire_golden.py`` pin the JSON the client sends.  Incoming
models ignore unknown fields (the server adds fields between versions) and
outgoing models omit ``None`` fields, as the server's own Jackson setup does.

Each model builds its validator and serializer on first use
(``defer_build``), not at import: a job client never uses the retry
module's models, and the others are first needed when work arrives.
"""

from __future__ import annotations

from typing import Annotated, Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from snailjob.wire.enums import StatusEnum

# Java ``Long`` and ``Integer`` fields: a value outside their range cannot come
# from the server and could not be reported back to it.
Long = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Int = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class _Incoming(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class _Outgoing(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    def to_wire(self) -> Dict[str, Any]:
        """The JSON-ready dict, without ``None`` fields (server: NON_NULL)."""
        return self.model_dump(mode="python", exclude_none=True)


# --- server -> client -----------------------------------------------------


class DispatchJobRequest(_Incoming):
    """Body element of ``/job/dispatch/v1`` (``DispatchJobRequest.java``)."""

    namespaceId: Optional[str] = None
    jobId: Long
    jobBizId: Optional[str] = None
    taskBatchId: Long
    taskId: Long
    taskType: Int
    groupName: Optional[str] = None
    parallelNum: Int = 1
    executorType: Int
    executorInfo: str
    executorTimeout: Optional[Int] = None
    taskName: Optional[str] = None
    mrStage: Optional[Int] = None
    argsStr: Optional[str] = None
    shardingTotal: Optional[Int] = None
    shardingIndex: Optional[Int] = None
    workflowTaskBatchId: Optional[Long] = None
    workflowNodeId: Optional[Long] = None
    wfContext: Optional[str] = None
    retryCount: Optional[Int] = None
    retryScene: Optional[Int] = None
    retry: bool = False
    retryStatus: bool = False

    @field_validator("executorInfo")
    @classmethod
    def _executor_info_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("executorInfo is blank")
        return value


class StopJobRequest(_Incoming):
    """Body element of ``/job/stop/v1``."""

    jobId: Optional[Long] = None
    taskBatchId: Long
    groupName: Optional[str] = None


# --- client -> server -----------------------------------------------------


class ExecuteResult(BaseModel):
    """What an executor returns: ``status`` 1 = success, 0 = failure.

    ``result`` is stored by the server as the task's result text (a string as
    is, anything else as JSON); ``message`` is the reason shown in alarms.
    """

    model_config = ConfigDict(defer_build=True)

    status: int = StatusEnum.YES
    result: Any = None
    message: str = ""

    @staticmethod
    def success(result: Any = None, message: str = "Task executed successfully") -> ExecuteResult:
        return ExecuteResult(status=StatusEnum.YES, result=result, message=message)

    @staticmethod
    def failure(result: Any = None, message: Optional[str] = None) -> ExecuteResult:
        """A failed outcome.

        As in 0.1.3, the first argument is the ``result``; when no ``message``
        is given and ``result`` is a string, that string is also used as the
        ``message`` so the server's alarm shows the reason.
        """
        if message is None:
            message = result if isinstance(result, str) and result else "Task execution failed"
        return ExecuteResult(status=StatusEnum.NO, result=result, message=message)

    @property
    def is_success(self) -> bool:
        return int(self.status) == StatusEnum.YES


class WireExecuteResult(_Outgoing):
    status: int
    result: Any = None
    message: str = ""


class DispatchJobResultRequest(_Outgoing):
    """Body element of ``/report/dispatch/result``."""

    jobId: int
    taskBatchId: int
    workflowTaskBatchId: Optional[int] = None
    workflowNodeId: Optional[int] = None
    taskId: int
    taskType: int
    groupName: Optional[str] = None
    taskStatus: int
    executeResult: WireExecuteResult
    retryScene: Optional[int] = None
    # ``retry`` is a Java primitive: never null (2.x rejects null primitives).
    retry: bool = False
    retryStatus: bool = False
    wfContext: Optional[str] = None


class MapTaskRequest(_Outgoing):
    """Body element of ``/batch/report/job/map/task/v1``."""

    jobId: int
    taskBatchId: int
    parentId: int
    workflowTaskBatchId: Optional[int] = None
    workflowNodeId: Optional[int] = None
    wfContext: Optional[str] = None
    taskName: str
    subTask: List[Any] = Field(min_length=1)


class JobExecutorRequest(_Outgoing):
    """One element of the list sent to ``/register/job/executors``."""

    executorInfo: str


class TaskLogField(_Outgoing):
    name: str
    value: Optional[str] = None

    def to_wire(self) -> Dict[str, Any]:
        # ``value`` stays even when null: the entry is a name/value pair.
        return {"name": self.name, "value": self.value}


class JobLogTask(_Outgoing):
    """One entry of ``/batch/server/report/log`` (``JobLogTaskRequest``)."""

    logType: str = "JOB"
    namespaceId: str
    groupName: str
    jobId: int
    taskBatchId: int
    taskId: int
    realTime: int
    fieldList: List[TaskLogField]

    def to_wire(self) -> Dict[str, Any]:
        data = self.model_dump(exclude={"fieldList"})
        data["fieldList"] = [f.to_wire() for f in self.fieldList]
        return data


# --- retry module: server -> client -----------------------------------------


class RetryCallRequest(_Incoming):
    """The fields ``/retry/dispatch/v1`` and ``/retry/callback/v1`` share: the
    scene, the call (``executorName``, ``argsStr``, ``serializerName``, which
    exists from server 1.5 on) and the attempt."""

    namespaceId: Optional[str] = None
    groupName: Optional[str] = None
    sceneName: str
    argsStr: Optional[str] = None
    executorName: str
    retryTaskId: Long
    retryId: Optional[Long] = None
    executorTimeout: Optional[Int] = None
    serializerName: Optional[str] = None


class DispatchRetryRequest(RetryCallRequest):
    """Body element of ``/retry/dispatch/v1`` (``DispatchRetryRequest.java``)."""

    retryCount: Optional[Int] = None


class RetryCallbackRequest(RetryCallRequest):
    """Body element of ``/retry/callback/v1``: ``retryStatus`` 1 FINISH or
    2 MAX_COUNT; ``retryId`` is the callback's own retry row."""

    retryStatus: Int


class StopRetryRequest(_Incoming):
    """Body element of ``/retry/stop/v1`` (note: ``scene``, not ``sceneName``)."""

    namespaceId: Optional[str] = None
    groupName: Optional[str] = None
    scene: Optional[str] = None
    retryTaskId: Long
    retryId: Optional[Long] = None


class GenerateRetryIdempotentIdRequest(_Incoming):
    """Body element of ``/retry/generate/idempotent-id/v1``."""

    group: Optional[str] = None
    scene: str
    argsStr: Optional[str] = None
    executorName: str
    serializerName: Optional[str] = None


class RetryArgsDeserializeRequest(GenerateRetryIdempotentIdRequest):
    """Body element of ``/retry/deserialize/args/v1`` (server 1.5+)."""

    namespaceId: Optional[str] = None


# --- retry module: client -> server -----------------------------------------


class RetryTaskRequest(_Outgoing):
    """One element of the list sent to ``/batch/report`` (``RetryTaskRequest``;
    ``RetryTaskDTO`` before server 1.5, which ignores ``serializerName``).
    The server stores ``extAttrs`` in a NOT NULL column: it is never null."""

    groupName: str
    sceneName: str
    idempotentId: str
    executorName: str
    bizNo: str = ""
    argsStr: str
    extAttrs: str = ""
    serializerName: str


class DispatchCallbackResultRequest(_Outgoing):
    """Body element of ``/report/retry/callback/result``: 3 SUCCESS or 4 FAIL."""

    namespaceId: Optional[str] = None
    groupName: Optional[str] = None
    sceneName: str
    retryId: Optional[int] = None
    retryTaskId: int
    taskStatus: int
    exceptionMsg: Optional[str] = None


class DispatchRetryResultRequest(DispatchCallbackResultRequest):
    """Body element of ``/report/retry/dispatch/result``: the callback result
    plus ``result`` (the replay's return value as JSON text)."""

    result: Optional[str] = None


# --- group config (/sync/version, both directions) --------------------------


class ConfigRecipient(_Incoming):
    """``ConfigRequest.Notify.Recipient``: a channel (``notifyType``: 1 DingTalk,
    2 email, 3 WeCom, 4 Lark, 5 webhook) and its settings, a JSON text
    (``notifyAttribute``) the channel parses."""

    notifyType: Optional[Int] = None
    notifyAttribute: Optional[str] = None


class ConfigNotify(_Incoming):
    """``ConfigRequest.Notify``: who is told of one client scene."""

    recipients: Optional[List[ConfigRecipient]] = None
    notifyThreshold: Optional[Int] = None
    retryNotifyScene: Optional[Int] = None
    jobNotifyScene: Optional[Int] = None


class ConfigScene(_Incoming):
    """``ConfigRequest.Scene``: a retry scene's call-chain deadline (ms)."""

    sceneName: str
    ddl: Long = 60_000


class ConfigRequest(_Incoming):
    """The group's config: the ``data`` of the ``/sync/version`` reply and
    the body element of the server's ``/sync/version`` push."""

    version: Optional[Int] = None
    sceneList: Optional[List[ConfigScene]] = None
    notifyList: Optional[List[ConfigNotify]] = None
