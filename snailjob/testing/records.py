"""Records of the server emulator: the public constants and the data classes tests read.

Constants: the default namespace, group and tokens, the group the server
uses when it calls a client, the operation reasons of a batch
(``REASON_*``), and the retry statuses and retry-task operation reasons
(``RETRY_*``).  Records: ``RecordedRequest``, ``Exchange``, ``OutboundCall``,
``DispatchReply``, ``RecordedBeat``, ``DroppedLogBatch``, ``ClientNode`` and
``EmulatedTask``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional

from snailjob.testing._support import _RUNNING, _header
from snailjob.wire import enums

DEFAULT_NAMESPACE = "764d604ec6fc45f68cd92514c40e9e1a"
DEFAULT_GROUP = "snail_job_demo_group"
DEFAULT_TOKEN = "SJ_Wyz3dmsdbDOkDujOTSSoBjGQP1BMsVnj"
DEFAULT_SERVER_TOKEN = "SJ_H9HGGmrX3QBVTfsAAG2mcKH3SR7bCLsK"
"""``snail-job.server-token`` default: the token the server sends in ``token``."""
SERVER_GROUP = "DEFAULT_SERVER"
"""``group-name`` the server sends when it calls a client."""

# Operation reasons of a batch (JobOperationReasonEnum).
REASON_NONE = 0
REASON_TIMEOUT = 1
REASON_NOT_CLIENT = 2
REASON_MANUAL_STOP = 8

# Retry module (protocol.md sections 3.10, 4.7; the vsj2.0.2 retry-task module).
RETRY_RUNNING = int(enums.RetryStatusEnum.RUNNING)
RETRY_FINISH = int(enums.RetryStatusEnum.FINISH)
RETRY_MAX_COUNT = int(enums.RetryStatusEnum.MAX_COUNT)
RETRY_SUSPEND = int(enums.RetryStatusEnum.SUSPEND)

# Operation reasons of a retry task (RetryOperationReasonEnum).
RETRY_REASON_NONE = 0
RETRY_REASON_TIMEOUT = 1
RETRY_REASON_NOT_CLIENT = 2
RETRY_REASON_MANUAL_STOP = 7
RETRY_REASON_SCENE_CLOSED = 9
RETRY_REASON_RETRY_FAIL = 10
RETRY_REASON_CLIENT_STOP = 11


class RecordedRequest(NamedTuple):
    """One inbound call: ``(uri, headers, body)`` exactly as received."""

    uri: str
    headers: Dict[str, str]
    body: str


@dataclass
class Exchange:
    """One inbound call and the reply the emulator gave (``None`` fields while
    unanswered; a blank ``uri`` is never answered)."""

    uri: str
    headers: Dict[str, str]
    body: str
    req_id: int
    at: float
    status: Optional[int] = None
    message: Optional[str] = None
    data: Optional[str] = None

    @property
    def answered(self) -> bool:
        return self.status is not None


@dataclass
class OutboundCall:
    """One server -> client call made by the emulator."""

    uri: str
    node: str
    address: str
    headers: Dict[str, str]
    body: str
    req_id: int
    at: float
    status: Optional[int] = None
    message: Optional[str] = None
    data: Optional[str] = None
    error: Optional[str] = None
    finished: bool = False

    @property
    def body_args(self) -> List[Any]:
        """The body decoded (a JSON array)."""
        value = json.loads(self.body)
        return value if isinstance(value, list) else [value]


class DispatchReply(NamedTuple):
    """What a node answered to one ``/job/dispatch/v1`` attempt.

    ``error`` is set (and the other fields may be ``None``) when the call
    failed at the gRPC level or ``data`` was not JSON.
    """

    node: str
    status: Optional[int]
    message: Optional[str]
    data: Optional[str]
    error: Optional[str]


@dataclass
class RecordedBeat:
    """One accepted ``/beat``."""

    host_id: Optional[str]
    host_ip: Optional[str]
    host_port: int
    headers: Dict[str, str]
    args: Optional[List[Any]]
    at: float


@dataclass
class DroppedLogBatch:
    """A ``/batch/server/report/log`` batch the server would drop entirely."""

    entries: List[Any]
    reason: str


@dataclass
class ClientNode:
    """A client node as the server's ``InstanceManager`` knows it.

    ``labels`` come from the first registration only (later beats do not
    change them); ``headers`` are those of the latest beat.  ``alive`` turns
    false after a failed server -> client call and true again on the next
    beat.  ``last_beat`` is wall-clock time (``time.time()``).
    """

    host_id: str
    host_ip: str
    host_port: int
    namespace: str
    group: str
    labels: Dict[str, str]
    headers: Dict[str, str]
    first_beat: float
    last_beat: float
    beat_count: int = 1
    registered: bool = False
    alive: bool = True
    last_beat_monotonic: float = field(default=0.0, repr=False)

    @property
    def address(self) -> str:
        """``host-ip:host-port``: where the server connects back to."""
        return f"{self.host_ip}:{self.host_port}"

    @property
    def client_info(self) -> str:
        """``hostId@ip:port``, as the server stores it on a task."""
        return f"{self.host_id}@{self.host_ip}:{self.host_port}"

    @property
    def executor_type(self) -> Optional[str]:
        return _header(self.headers, "executor-type")

    @property
    def system_version(self) -> Optional[str]:
        return _header(self.headers, "system-version")


@dataclass
class EmulatedTask:
    """One task row (``sj_job_task``) of an emulated batch.

    ``result`` is the ``result_message`` the server stores: a string result
    as is, any other JSON value compact, ``""`` while no non-null result was
    reported.  ``wf_context`` is the changed-keys JSON text the task reported.
    """

    task_id: int
    batch_id: int
    job_id: int
    task_name: str
    args_str: str
    parent_id: int = 0
    mr_stage: Optional[int] = None
    status: int = _RUNNING
    result: str = ""
    execute_result: Optional[Dict[str, Any]] = None
    node: Optional[str] = None
    client_address: Optional[str] = None
    leaf: bool = True
    sharding_index: Optional[int] = None
    sharding_total: Optional[int] = None
    wf_context: Optional[str] = None
    retry_count: int = 0
    message: str = ""
    dispatch_replies: List[DispatchReply] = field(default_factory=list)
    dispatch_requests: List[Dict[str, Any]] = field(default_factory=list)
    reports: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def dispatch_count(self) -> int:
        """How many ``/job/dispatch/v1`` bodies were built for this task
        (RPC-level failover retries of one dispatch count once)."""
        return len(self.dispatch_requests)

    @property
    def args(self) -> Dict[str, Any]:
        """``args_str`` decoded."""
        value = json.loads(self.args_str)
        return value if isinstance(value, dict) else {}

    @property
    def wf_context_changes(self) -> Dict[str, Any]:
        """The reported ``wfContext`` decoded; ``{}`` when absent or not an object."""
        if not self.wf_context:
            return {}
        try:
            value = json.loads(self.wf_context)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
