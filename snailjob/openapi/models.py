"""Request and response bodies of the OpenAPI, as pydantic models.

Every field has the server's exact wire name as its alias (``bizId``,
``executorInfo``, ``taskBatchStatus``...) and a snake_case attribute name
(``biz_id``...). Both spellings are accepted when building a model;
``model.wire()`` gives the JSON body exactly as it is sent.

Field names and types follow the server's classes (SnailJob 1.10.1 and 2.0.2,
identical): ``JobRequest`` / ``JobBizIdApiRequest``, ``JobTriggerRequest``,
``StatusUpdateRequest``, ``WorkflowTriggerApiRequest``, ``JobResponse``,
``JobExistsResponse``, ``WorkflowExistsResponse``, ``JobBatchResponse``,
``WorkflowDetailResponse`` and ``RetryResponse``.

Response models keep fields they do not know (``model_extra``), so a newer
server does not break them. Date-times arrive as ``yyyy-MM-dd HH:mm:ss`` in the
server's time zone and are returned as naive ``datetime``; a value in another
shape becomes ``None`` rather than failing the whole reply.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from snailjob.openapi.enums import BatchStatus, OperationReason

__all__ = [
    "DecisionConfig",
    "DeleteBizIdRequest",
    "JobBatch",
    "JobDetail",
    "JobExists",
    "JobRequest",
    "JobTaskConfig",
    "JobTriggerBizIdRequest",
    "JobTriggerRequest",
    "RetryTask",
    "StatusUpdateBizIdRequest",
    "StatusUpdateRequest",
    "TriggerRetryRequest",
    "WorkflowBatch",
    "WorkflowExists",
    "WorkflowNodeConfig",
    "WorkflowNodeInfo",
    "WorkflowTriggerBizIdRequest",
    "WorkflowTriggerRequest",
]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def wire(self) -> Dict[str, Any]:
        """The JSON body as sent: wire names, ``None`` fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class _Request(_Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Response(_Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


def _lenient_datetime(value: Any) -> Optional[datetime]:
    """``yyyy-MM-dd HH:mm:ss`` (the server's format), ISO 8601, epoch milliseconds
    or Jackson's ``[y, m, d, h, mi, s]``; anything else becomes ``None``."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value / 1000.0)
        if isinstance(value, list) and 3 <= len(value) <= 7:
            parts = [int(v) for v in value[:6]] + [0] * (6 - min(len(value), 6))
            return datetime(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5])
        if isinstance(value, str) and value.strip():
            return datetime.fromisoformat(value.strip().replace("T", " ").replace("Z", ""))
    except (ValueError, TypeError, OverflowError, OSError):
        return None
    return None


# ---------------------------------------------------------------------------- requests


class JobRequest(_Request):
    """Body of ``POST /api/job/add``, ``PUT /api/job/update`` and their bizId variants.

    Build it with ``JobSpec`` (which validates every field); use it directly only
    for a partial update (fields left ``None`` are not sent, and the server keeps
    their stored values)."""

    id: Optional[int] = None
    group_name: Optional[str] = None
    biz_id: Optional[str] = None
    job_name: Optional[str] = None
    job_status: Optional[int] = None
    args_str: Optional[str] = None
    args_type: Optional[int] = None
    route_key: Optional[int] = None
    executor_type: Optional[int] = None
    executor_info: Optional[str] = None
    trigger_type: Optional[int] = None
    trigger_interval: Optional[str] = None
    block_strategy: Optional[int] = None
    executor_timeout: Optional[int] = None
    max_retry_times: Optional[int] = None
    retry_interval: Optional[int] = None
    task_type: Optional[int] = None
    parallel_num: Optional[int] = None
    description: Optional[str] = None
    notify_ids: Optional[List[int]] = None
    owner_id: Optional[int] = None
    labels: Optional[str] = None


class JobTriggerRequest(_Request):
    """Body of ``POST /api/job/trigger``. ``tmpArgsStr`` replaces the job's args for this run."""

    job_id: int
    tmp_args_str: Optional[str] = None


class JobTriggerBizIdRequest(_Request):
    """Body of ``POST /api/job/bizId/trigger``."""

    biz_id: str
    tmp_args_str: Optional[str] = None


class StatusUpdateRequest(_Request):
    """Body of ``PUT /api/job/update/status``, ``/api/workflow/update/status`` and
    ``/api/retry/update/status``."""

    id: int
    status: int


class StatusUpdateBizIdRequest(_Request):
    """Body of ``PUT /api/job/bizId/updateStatus`` and ``/api/workflow/bizId/updateStatus``."""

    biz_id: str
    status: int


class DeleteBizIdRequest(_Request):
    """Body of ``DELETE /api/job/bizId/delete`` (the workflow variant takes a bare list)."""

    biz_ids: List[str]


class WorkflowTriggerRequest(_Request):
    """Body of ``POST /api/workflow/trigger``.

    The server's ``WorkflowTriggerApiRequest`` still declares a deprecated
    ``@NotNull jobId``; the client sends the workflow id in it, as the Java client does."""

    workflow_id: int
    job_id: int
    tmp_wf_context: Optional[str] = None


class WorkflowTriggerBizIdRequest(_Request):
    """Body of ``POST /api/workflow/bizId/trigger``.

    The server's ``WorkflowTriggerBizIdRequest`` extends ``WorkflowTriggerRequest``
    and so inherits its ``@NotNull workflowId``; the server then ignores that value
    and looks the workflow up by ``bizId``. The client therefore sends both."""

    biz_id: str
    workflow_id: int
    tmp_wf_context: Optional[str] = None


class TriggerRetryRequest(_Request):
    """Body of ``POST /api/retry/trigger``."""

    id: int


# --------------------------------------------------------------------------- responses


class JobDetail(_Response):
    """``JobApiResponse``: a job as stored (``GET /api/job/detail/id``, ``/api/job/bizId/detail``)."""

    id: Optional[int] = None
    biz_id: Optional[str] = None
    group_name: Optional[str] = None
    job_name: Optional[str] = None
    args_str: Optional[str] = None
    args_type: Optional[int] = None  # a String in the server's class, holding the number
    ext_attrs: Optional[str] = None
    next_trigger_at: Optional[datetime] = None
    job_status: Optional[int] = None
    route_key: Optional[int] = None
    executor_type: Optional[int] = None
    executor_info: Optional[str] = None
    trigger_type: Optional[int] = None
    trigger_interval: Optional[str] = None
    block_strategy: Optional[int] = None
    executor_timeout: Optional[int] = None
    max_retry_times: Optional[int] = None
    retry_interval: Optional[int] = None
    task_type: Optional[int] = None
    parallel_num: Optional[int] = None
    bucket_index: Optional[int] = None
    description: Optional[str] = None
    create_dt: Optional[datetime] = None
    update_dt: Optional[datetime] = None
    deleted: Optional[int] = None
    notify_ids: Optional[List[int]] = None
    labels: Optional[str] = None

    @field_validator("next_trigger_at", "create_dt", "update_dt", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Optional[datetime]:
        return _lenient_datetime(value)

    @field_validator("args_type", mode="before")
    @classmethod
    def _args_type(cls, value: Any) -> Any:
        if isinstance(value, str):
            return int(value) if value.strip().isdigit() else None
        return value


class JobExists(_Response):
    """``JobExistsResponse`` (``GET /api/job/exists``, ``/api/job/bizId/exists``)."""

    group_name: Optional[str] = None
    id: Optional[int] = None
    biz_id: Optional[str] = None
    job_status: Optional[int] = None


class WorkflowExists(_Response):
    """``WorkflowExistsResponse`` (``GET /api/workflow/exists``, ``/api/workflow/bizId/exists``)."""

    group_name: Optional[str] = None
    id: Optional[int] = None
    biz_id: Optional[str] = None
    workflow_status: Optional[int] = None
    version: Optional[int] = None


class DecisionConfig(_Response):
    """``DecisionConfigRequest`` of a workflow decision node."""

    expression_type: Optional[int] = None
    node_expression: Optional[str] = None
    default_decision: Optional[int] = None


class JobTaskConfig(_Response):
    """``JobTaskConfigRequest``: the job a workflow node runs."""

    job_id: Optional[int] = None
    job_biz_id: Optional[str] = None
    job_name: Optional[str] = None
    labels: Optional[str] = None


class JobBatch(_Response):
    """``JobBatchApiResponse`` (``GET /api/job-batch/detail/{id}?id=``): one batch.

    This is all the OpenAPI tells about a batch: its status and why it ended
    (``operationReason``), not its tasks or their results."""

    id: Optional[int] = None
    group_name: Optional[str] = None
    job_name: Optional[str] = None
    task_type: Optional[int] = None  # a String in the server's class, holding the number
    node_name: Optional[str] = None
    job_id: Optional[int] = None
    task_batch_status: Optional[int] = None
    create_dt: Optional[datetime] = None
    update_dt: Optional[datetime] = None
    execution_at: Optional[datetime] = None
    operation_reason: Optional[int] = None
    executor_type: Optional[int] = None
    executor_info: Optional[str] = None
    decision: Optional[DecisionConfig] = None
    workflow_task_batch_id: Optional[int] = None
    workflow_node_id: Optional[int] = None

    @field_validator("create_dt", "update_dt", "execution_at", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Optional[datetime]:
        return _lenient_datetime(value)

    @field_validator("task_type", mode="before")
    @classmethod
    def _task_type(cls, value: Any) -> Any:
        if isinstance(value, str):
            return int(value) if value.strip().isdigit() else None
        return value

    @property
    def status(self) -> Optional[BatchStatus]:
        """``taskBatchStatus`` as ``BatchStatus`` (``None`` if absent or unknown)."""
        try:
            return BatchStatus(self.task_batch_status) if self.task_batch_status is not None else None
        except ValueError:
            return None

    @property
    def reason(self) -> Optional[OperationReason]:
        """``operationReason`` as ``OperationReason`` (``None`` if absent or unknown)."""
        try:
            return OperationReason(self.operation_reason) if self.operation_reason is not None else None
        except ValueError:
            return None

    @property
    def is_final(self) -> bool:
        return self.status is not None and self.status.is_final

    @property
    def succeeded(self) -> bool:
        return self.status is BatchStatus.SUCCESS


class WorkflowNodeInfo(_Response):
    """``WorkflowDetailResponse.NodeInfo``: one node, with the job batches it ran."""

    id: Optional[int] = None
    node_type: Optional[int] = None
    node_name: Optional[str] = None
    priority_level: Optional[int] = None
    workflow_node_status: Optional[int] = None
    fail_strategy: Optional[int] = None
    task_batch_status: Optional[int] = None  # 98 = decision not passed (the console's code)
    decision: Optional[DecisionConfig] = None
    job_task: Optional[JobTaskConfig] = None
    job_batch_list: Optional[List[JobBatch]] = None
    child_node: Optional[WorkflowNodeConfig] = None


class WorkflowNodeConfig(_Response):
    """``WorkflowDetailResponse.NodeConfig``: one level of the graph."""

    node_type: Optional[int] = None
    condition_nodes: Optional[List[WorkflowNodeInfo]] = None
    child_node: Optional[WorkflowNodeConfig] = None


class WorkflowBatch(_Response):
    """``WorkflowDetailApiResponse`` (``GET /api/workflow-batch/detail/id?id=``): the workflow
    with the status of this batch (``workflowBatchStatus``) and, per node, its job batches."""

    id: Optional[int] = None  # the workflow's id, not the batch's
    biz_id: Optional[str] = None
    workflow_name: Optional[str] = None
    group_name: Optional[str] = None
    trigger_type: Optional[int] = None
    block_strategy: Optional[int] = None
    trigger_interval: Optional[str] = None
    executor_timeout: Optional[int] = None
    workflow_status: Optional[int] = None
    description: Optional[str] = None
    workflow_batch_status: Optional[int] = None
    wf_context: Optional[str] = None
    node_config: Optional[WorkflowNodeConfig] = None
    notify_ids: Optional[List[int]] = None
    owner_id: Optional[int] = None

    @property
    def status(self) -> Optional[BatchStatus]:
        try:
            return BatchStatus(self.workflow_batch_status) if self.workflow_batch_status is not None else None
        except ValueError:
            return None

    @property
    def is_final(self) -> bool:
        return self.status is not None and self.status.is_final

    def nodes(self) -> List[WorkflowNodeInfo]:
        """Every node of the graph, level by level."""
        found: List[WorkflowNodeInfo] = []
        seen: set = set()

        def walk(level: Optional[WorkflowNodeConfig]) -> None:
            while level is not None and id(level) not in seen:
                seen.add(id(level))
                for node in level.condition_nodes or []:
                    found.append(node)
                    if node.child_node is not None:
                        walk(node.child_node)
                level = level.child_node

        walk(self.node_config)
        return found

    def job_batches(self) -> List[JobBatch]:
        """The job batches this workflow batch created (with their ids), over all nodes.
        Placeholder rows the server adds for skipped nodes (no ``id``) are left out."""
        return [b for node in self.nodes() for b in (node.job_batch_list or []) if b.id is not None]


class RetryTask(_Response):
    """``RetryApiResponse`` (``GET /api/retry/query?id=``): one retry task."""

    id: Optional[int] = None
    namespace_id: Optional[str] = None
    group_name: Optional[str] = None
    scene_name: Optional[str] = None
    idempotent_id: Optional[str] = None
    biz_no: Optional[str] = None
    args_str: Optional[str] = None
    ext_attrs: Optional[str] = None
    executor_name: Optional[str] = None
    serializer_name: Optional[str] = None
    next_trigger_at: Optional[datetime] = None
    retry_count: Optional[int] = None
    retry_status: Optional[int] = None
    task_type: Optional[int] = None
    parent_id: Optional[int] = None
    bucket_index: Optional[int] = None
    deleted: Optional[int] = None
    create_dt: Optional[datetime] = None
    update_dt: Optional[datetime] = None

    @field_validator("next_trigger_at", "create_dt", "update_dt", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Optional[datetime]:
        return _lenient_datetime(value)


WorkflowNodeInfo.model_rebuild()
WorkflowNodeConfig.model_rebuild()
WorkflowBatch.model_rebuild()
