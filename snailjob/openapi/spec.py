"""Job definitions that are checked before they are sent: ``Trigger`` and ``JobSpec``.

::

    from snailjob.openapi import JobSpec, Trigger

    nightly = JobSpec.cluster("nightly-report", "reportJob", Trigger.cron("0 0 2 * * ?"),
                              biz_id="nightly_report", args={"since": "yesterday"})
    shards = JobSpec.sharding("reindex", "reindexJob", Trigger.fixed(3600),
                              shards=["a-f", "g-m", "n-z"], parallel_num=2)

Every constructor checks its inputs and raises ``OpenApiValidationError`` naming
the field (with the server's wire name) at once, so a bad definition fails in your
code or your deploy, not as a batch stuck on the server. The checks are those the
server or its Java client make, plus the ones whose absence makes a job silently
misbehave on the server (a sharding job whose args are not a list of strings gets
no tasks and stays RUNNING until its timeout).
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timedelta
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from snailjob.openapi.enums import (
    ArgsType,
    BlockStrategy,
    ExecutorType,
    JobStatus,
    RouteStrategy,
    TaskType,
    TriggerType,
)
from snailjob.openapi.errors import OpenApiValidationError
from snailjob.openapi.models import JobRequest

__all__ = ["JobSpec", "Trigger", "map_reduce_args", "sharding_args"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # groupName and bizId (the server's @Pattern)
POINT_IN_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MIN_POINT_IN_TIME_GAP = timedelta(seconds=10)
_TRIGGER_INTERVAL_MAX = 255  # sj_job.trigger_interval varchar(255)
Args = Union[str, Mapping[str, Any], None]


def _fail(field: str, message: str) -> OpenApiValidationError:
    return OpenApiValidationError(field, message)


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, f"must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise _fail(field, f"must be >= {minimum}, got {value}")
    return int(value)


def _text(field: str, value: Any, max_len: int, blank_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _fail(field, f"must be a string, got {type(value).__name__}")
    if not blank_ok and not value.strip():
        raise _fail(field, "must not be blank")
    if len(value) > max_len:
        raise _fail(field, f"is {len(value)} characters long, the server stores at most {max_len}")
    return value


def check_biz_id(value: Any, field: str = "bizId") -> str:
    """A bizId (or group name): 1-64 letters, digits, ``_`` or ``-``."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise _fail(field, f"must be 1-64 letters, digits, '_' or '-', got {value!r}")
    return value


def sharding_args(shards: Sequence[str]) -> str:
    """The ``argsStr`` of a sharding job: a JSON list of strings, one task per element.

    Also the ``tmp_args`` to pass to ``trigger_job`` to run other shards once."""
    if isinstance(shards, (str, bytes)) or not isinstance(shards, Sequence):
        raise _fail("argsStr", f"sharding args must be a list of strings, got {type(shards).__name__}")
    if not shards:
        raise _fail("argsStr", "sharding args must not be empty (the server would create no task and the "
                               "batch would stay RUNNING until its timeout)")
    for index, shard in enumerate(shards):
        if not isinstance(shard, str):
            raise _fail("argsStr", f"sharding args must be a list of strings; element {index} is "
                                   f"{type(shard).__name__} ({shard!r})")
    return json.dumps(list(shards), ensure_ascii=False, separators=(",", ":"))


def map_reduce_args(shard_num: int, args: Args = None) -> str:
    """The ``argsStr`` of a map-reduce job: ``{"shardNum": n, "argsStr": "<your args>"}``.

    ``shardNum`` is the number of reduce tasks; ``args`` (text, or a mapping sent
    as JSON text) is what every task gets as its job parameters. Also the
    ``tmp_args`` to pass to ``trigger_job`` (a trigger's args replace the job's whole
    ``argsStr``, so they need this shape too)."""
    _int("shardNum", shard_num, 1)
    inner, _ = _args_text(args, "argsStr")
    body: Dict[str, Any] = {"shardNum": shard_num}
    if inner:
        body["argsStr"] = inner
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _args_text(args: Args, field: str) -> Tuple[str, ArgsType]:
    if args is None:
        return "", ArgsType.TEXT
    if isinstance(args, str):
        return args, ArgsType.TEXT
    if isinstance(args, Mapping):
        try:
            return json.dumps(dict(args), ensure_ascii=False, separators=(",", ":")), ArgsType.JSON
        except (TypeError, ValueError) as exc:
            raise _fail(field, f"args are not JSON-serialisable: {exc}") from None
    raise _fail(field, f"args must be a string or a mapping, got {type(args).__name__}")


# ------------------------------------------------------------------------------ Trigger


@dataclasses.dataclass(frozen=True)
class Trigger:
    """When the server starts the job on its own (``triggerType`` + ``triggerInterval``).

    Use the constructors: ``Trigger.fixed(seconds)``, ``Trigger.cron(expression)``,
    ``Trigger.at(*datetimes)`` and ``Trigger.workflow()``.
    """

    type: TriggerType
    interval: str
    times: Tuple[datetime, ...] = ()

    @classmethod
    def fixed(cls, seconds: int) -> Trigger:
        """Every ``seconds`` seconds. Below 10 s the server runs the job as "resident"
        (kept scheduled in memory); prefer 10 s or more."""
        _int("triggerInterval", seconds, 1)
        return cls(TriggerType.SCHEDULED_TIME, str(seconds))

    @classmethod
    def cron(cls, expression: str) -> Trigger:
        """A Quartz-style cron expression, seconds first: 6 or 7 fields
        (``"0 0 2 * * ?"`` = every day at 02:00). The server checks the rest."""
        _text("triggerInterval", expression, _TRIGGER_INTERVAL_MAX)
        fields = expression.split()
        if len(fields) not in (6, 7):
            raise _fail("triggerInterval", f"a cron expression has 6 or 7 fields (seconds first), "
                                           f"got {len(fields)} in {expression!r}")
        return cls(TriggerType.CRON, " ".join(fields))

    @classmethod
    def at(cls, *times: datetime) -> Trigger:
        """Once at each of these times (``POINT_IN_TIME``).

        The server requires every time to be in the future and any two at least 10 s
        apart; it reads them as ``yyyy-MM-dd HH:mm:ss`` in *its own* time zone. A naive
        datetime is sent as it is; an aware one is converted to this machine's local
        time first, so run the server in the same time zone or pass naive times in
        the server's zone."""
        if not times:
            raise _fail("triggerInterval", "Trigger.at() needs at least one time")
        local = []
        for index, moment in enumerate(times):
            if not isinstance(moment, datetime):
                raise _fail("triggerInterval", f"time {index} must be a datetime, got {type(moment).__name__}")
            if moment.tzinfo is not None:
                moment = moment.astimezone().replace(tzinfo=None)
            local.append(moment.replace(microsecond=0))
        ordered = tuple(sorted(local))
        for earlier, later in zip(ordered, ordered[1:]):
            if later - earlier < MIN_POINT_IN_TIME_GAP:
                raise _fail("triggerInterval", f"point-in-time triggers must be at least 10 s apart: "
                                               f"{earlier:{POINT_IN_TIME_FORMAT}} and {later:{POINT_IN_TIME_FORMAT}}")
        # the server stores them as [{"time":<epoch ms>},...] in a varchar(255)
        stored = len(ordered) * len('{"time":1735689600000}') + len(ordered) + 1
        if stored > _TRIGGER_INTERVAL_MAX:
            raise _fail("triggerInterval", f"{len(ordered)} point-in-time triggers do not fit the server's "
                                           f"255-character column; use at most 11")
        trigger = cls(TriggerType.POINT_IN_TIME,
                      json.dumps([t.strftime(POINT_IN_TIME_FORMAT) for t in ordered]), ordered)
        trigger.check()
        return trigger

    @classmethod
    def workflow(cls) -> Trigger:
        """Never started by the scheduler: the job runs only as a workflow node."""
        return cls(TriggerType.WORKFLOW, "*")

    def check(self, now: Optional[datetime] = None) -> None:
        """Raise if a point-in-time trigger's first time is no longer in the future."""
        if self.type is TriggerType.POINT_IN_TIME and self.times:
            now = now or datetime.now()
            if self.times[0] <= now:
                raise _fail("triggerInterval", f"point-in-time trigger {self.times[0]:{POINT_IN_TIME_FORMAT}} "
                                               f"is not in the future (now {now:{POINT_IN_TIME_FORMAT}})")


# ------------------------------------------------------------------------------ JobSpec


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A job definition: what ``add_job`` / ``update_job`` / ``sync_jobs`` send.

    Build one with ``JobSpec.cluster``, ``.broadcast``, ``.sharding``, ``.map`` or
    ``.map_reduce``; every field is validated when the object is created (also by
    ``dataclasses.replace`` / ``spec.replace(...)``). ``group`` defaults to the
    client's group. ``biz_id`` is your stable key for the job (needed by the bizId
    calls and ``sync_jobs``); the server invents one when it is ``None``.
    """

    task_type: TaskType
    name: str
    executor: str
    trigger: Trigger
    args_str: str = ""
    args_type: ArgsType = ArgsType.TEXT
    biz_id: Optional[str] = None
    enabled: bool = True
    route: RouteStrategy = RouteStrategy.ROUND
    block_strategy: BlockStrategy = BlockStrategy.DISCARD
    executor_timeout: int = 60
    max_retry_times: int = 0
    retry_interval: int = 1
    parallel_num: int = 1
    description: str = ""
    labels: Optional[Mapping[str, str]] = None
    notify_ids: Tuple[int, ...] = ()
    owner_id: Optional[int] = None
    executor_type: ExecutorType = ExecutorType.PYTHON
    group: Optional[str] = None

    # -- constructors, one per task type --------------------------------------------
    # Common options: biz_id, enabled (jobStatus), block_strategy, executor_timeout (s),
    # max_retry_times, retry_interval (s), description, labels, notify_ids, owner_id,
    # executor_type (default PYTHON) and group (default: the client's group).

    @classmethod
    def cluster(cls, name: str, executor: str, trigger: Trigger, *, args: Args = None,
                route: RouteStrategy = RouteStrategy.ROUND, biz_id: Optional[str] = None, enabled: bool = True,
                block_strategy: BlockStrategy = BlockStrategy.DISCARD, executor_timeout: int = 60,
                max_retry_times: int = 0, retry_interval: int = 1, description: str = "",
                labels: Optional[Mapping[str, str]] = None, notify_ids: Sequence[int] = (),
                owner_id: Optional[int] = None, executor_type: ExecutorType = ExecutorType.PYTHON,
                group: Optional[str] = None) -> JobSpec:
        """One task on one client picked by ``route``. Parallelism is always 1."""
        text, kind = _args_text(args, "argsStr")
        return cls(TaskType.CLUSTER, name, executor, trigger, args_str=text, args_type=kind, route=route,
                   parallel_num=1, biz_id=biz_id, enabled=enabled, block_strategy=block_strategy,
                   executor_timeout=executor_timeout, max_retry_times=max_retry_times,
                   retry_interval=retry_interval, description=description, labels=labels,
                   notify_ids=tuple(notify_ids), owner_id=owner_id, executor_type=executor_type, group=group)

    @classmethod
    def broadcast(cls, name: str, executor: str, trigger: Trigger, *, args: Args = None,
                  biz_id: Optional[str] = None, enabled: bool = True,
                  block_strategy: BlockStrategy = BlockStrategy.DISCARD, executor_timeout: int = 60,
                  max_retry_times: int = 0, retry_interval: int = 1, description: str = "",
                  labels: Optional[Mapping[str, str]] = None, notify_ids: Sequence[int] = (),
                  owner_id: Optional[int] = None, executor_type: ExecutorType = ExecutorType.PYTHON,
                  group: Optional[str] = None) -> JobSpec:
        """One task on every live client of the group. Parallelism is always 1."""
        text, kind = _args_text(args, "argsStr")
        return cls(TaskType.BROADCAST, name, executor, trigger, args_str=text, args_type=kind,
                   route=RouteStrategy.ROUND, parallel_num=1, biz_id=biz_id, enabled=enabled,
                   block_strategy=block_strategy,
                   executor_timeout=executor_timeout, max_retry_times=max_retry_times,
                   retry_interval=retry_interval, description=description, labels=labels,
                   notify_ids=tuple(notify_ids), owner_id=owner_id, executor_type=executor_type, group=group)

    @classmethod
    def sharding(cls, name: str, executor: str, trigger: Trigger, *, shards: Sequence[str],
                 parallel_num: int = 1, biz_id: Optional[str] = None, enabled: bool = True,
                 block_strategy: BlockStrategy = BlockStrategy.DISCARD, executor_timeout: int = 60,
                 max_retry_times: int = 0, retry_interval: int = 1, description: str = "",
                 labels: Optional[Mapping[str, str]] = None, notify_ids: Sequence[int] = (),
                 owner_id: Optional[int] = None, executor_type: ExecutorType = ExecutorType.PYTHON,
                 group: Optional[str] = None) -> JobSpec:
        """One task per element of ``shards`` (strings), spread round-robin over the clients."""
        return cls(TaskType.SHARDING, name, executor, trigger, args_str=sharding_args(shards),
                   args_type=ArgsType.TEXT, route=RouteStrategy.ROUND, parallel_num=parallel_num,
                   biz_id=biz_id, enabled=enabled, block_strategy=block_strategy,
                   executor_timeout=executor_timeout, max_retry_times=max_retry_times,
                   retry_interval=retry_interval, description=description, labels=labels,
                   notify_ids=tuple(notify_ids), owner_id=owner_id, executor_type=executor_type, group=group)

    @classmethod
    def map(cls, name: str, executor: str, trigger: Trigger, *, args: Args = None,
            route: RouteStrategy = RouteStrategy.ROUND, parallel_num: int = 1,
            biz_id: Optional[str] = None, enabled: bool = True,
            block_strategy: BlockStrategy = BlockStrategy.DISCARD, executor_timeout: int = 60,
            max_retry_times: int = 0, retry_interval: int = 1, description: str = "",
            labels: Optional[Mapping[str, str]] = None, notify_ids: Sequence[int] = (),
            owner_id: Optional[int] = None, executor_type: ExecutorType = ExecutorType.PYTHON,
            group: Optional[str] = None) -> JobSpec:
        """A ``ROOT_MAP`` task that fans out with ``mr_do_map``."""
        text, kind = _args_text(args, "argsStr")
        return cls(TaskType.MAP, name, executor, trigger, args_str=text, args_type=kind, route=route,
                   parallel_num=parallel_num, biz_id=biz_id, enabled=enabled, block_strategy=block_strategy,
                   executor_timeout=executor_timeout, max_retry_times=max_retry_times,
                   retry_interval=retry_interval, description=description, labels=labels,
                   notify_ids=tuple(notify_ids), owner_id=owner_id, executor_type=executor_type, group=group)

    @classmethod
    def map_reduce(cls, name: str, executor: str, trigger: Trigger, *, shard_num: int, args: Args = None,
                   route: RouteStrategy = RouteStrategy.ROUND, parallel_num: int = 1,
                   biz_id: Optional[str] = None, enabled: bool = True,
                   block_strategy: BlockStrategy = BlockStrategy.DISCARD, executor_timeout: int = 60,
                   max_retry_times: int = 0, retry_interval: int = 1, description: str = "",
                   labels: Optional[Mapping[str, str]] = None, notify_ids: Sequence[int] = (),
                   owner_id: Optional[int] = None, executor_type: ExecutorType = ExecutorType.PYTHON,
                   group: Optional[str] = None) -> JobSpec:
        """Map, then ``shard_num`` (>= 1) reduce tasks, then one merge task."""
        return cls(TaskType.MAP_REDUCE, name, executor, trigger, args_str=map_reduce_args(shard_num, args),
                   args_type=ArgsType.JSON, route=route, parallel_num=parallel_num, biz_id=biz_id,
                   enabled=enabled, block_strategy=block_strategy,
                   executor_timeout=executor_timeout, max_retry_times=max_retry_times,
                   retry_interval=retry_interval, description=description, labels=labels,
                   notify_ids=tuple(notify_ids), owner_id=owner_id, executor_type=executor_type, group=group)

    # -- validation ------------------------------------------------------------------

    def __post_init__(self) -> None:
        for attr, enum in (("task_type", TaskType), ("args_type", ArgsType), ("route", RouteStrategy),
                           ("block_strategy", BlockStrategy), ("executor_type", ExecutorType)):
            value = getattr(self, attr)
            try:
                object.__setattr__(self, attr, enum(value))
            except (ValueError, TypeError):
                raise _fail(_WIRE[attr], f"{value!r} is not one of "
                                         f"{', '.join(f'{m.name}={m.value}' for m in enum)}") from None
        _text("jobName", self.name, 64)
        _text("executorInfo", self.executor, 255)
        if not isinstance(self.trigger, Trigger):
            raise _fail("triggerType", f"must be a Trigger (Trigger.cron(...), ...), got {type(self.trigger).__name__}")
        if self.biz_id is not None:
            check_biz_id(self.biz_id)
        if self.group is not None:
            check_biz_id(self.group, "groupName")
        if not isinstance(self.enabled, bool):
            raise _fail("jobStatus", f"enabled must be True or False, got {self.enabled!r}")
        _int("executorTimeout", self.executor_timeout, 1)
        _int("maxRetryTimes", self.max_retry_times, 0)
        _int("retryInterval", self.retry_interval, 0)
        _int("parallelNum", self.parallel_num, 1)
        _text("description", self.description, 256, blank_ok=True)
        if not isinstance(self.args_str, str):
            raise _fail("argsStr", f"must be a string, got {type(self.args_str).__name__}")
        if self.task_type in (TaskType.CLUSTER, TaskType.BROADCAST) and self.parallel_num != 1:
            raise _fail("parallelNum", f"a {self.task_type.name.lower()} job runs one task per client: "
                                       f"parallelNum is always 1, got {self.parallel_num}")
        if self.task_type is TaskType.SHARDING:
            try:
                shards = json.loads(self.args_str)
            except ValueError:
                raise _fail("argsStr", "sharding args must be a JSON list of strings, got "
                                       f"{self.args_str[:60]!r}") from None
            sharding_args(shards)
        if self.task_type is TaskType.MAP_REDUCE:
            self._check_map_reduce_args()
        object.__setattr__(self, "notify_ids", tuple(self.notify_ids))
        for index, notify_id in enumerate(self.notify_ids):
            _int(f"notifyIds[{index}]", notify_id, 1)
        if self.owner_id is not None:
            _int("ownerId", self.owner_id, 1)
        self._check_labels()

    def _check_map_reduce_args(self) -> None:
        try:
            body = json.loads(self.args_str)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _fail("argsStr", 'map-reduce args must be {"shardNum": n, "argsStr": "..."}; '
                                   "build them with map_reduce_args()")
        _int("shardNum", body.get("shardNum"), 1)
        if not isinstance(body.get("argsStr", ""), str):
            raise _fail("argsStr", "the argsStr inside map-reduce args must be a string")

    def _check_labels(self) -> None:
        if self.labels is None:
            return
        if not isinstance(self.labels, Mapping):
            raise _fail("labels", f"must be a mapping of strings, got {type(self.labels).__name__}")
        for key, value in self.labels.items():
            if not isinstance(key, str) or not key.strip():
                raise _fail("labels", f"label keys must be non-blank strings, got {key!r}")
            if key == "state":
                raise _fail("labels", "the key 'state' is reserved (the server routes on the node label state=up)")
            if not isinstance(value, str):
                raise _fail("labels", f"label {key!r} must have a string value, got {type(value).__name__}")
        object.__setattr__(self, "labels", dict(self.labels))
        if len(self._labels_json()) > 512:
            raise _fail("labels", "the labels' JSON is longer than the server's 512 characters")

    def _labels_json(self) -> str:
        if not self.labels:
            return ""
        return json.dumps(dict(self.labels), ensure_ascii=False, separators=(",", ":"))

    # -- use -------------------------------------------------------------------------

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_request(self, group_name: str, *, job_id: Optional[int] = None) -> JobRequest:
        """The ``JobRequest`` body for ``group_name`` (this spec's ``group`` wins when set).

        Checks again that a point-in-time trigger is still in the future."""
        self.trigger.check()
        return JobRequest(
            id=job_id,
            group_name=check_biz_id(self.group or group_name, "groupName"),
            biz_id=self.biz_id,
            job_name=self.name,
            job_status=int(JobStatus.ENABLED if self.enabled else JobStatus.DISABLED),
            args_str=self.args_str,
            args_type=int(self.args_type),
            route_key=int(self.route),
            executor_type=int(self.executor_type),
            executor_info=self.executor,
            trigger_type=int(self.trigger.type),
            trigger_interval=self.trigger.interval,
            block_strategy=int(self.block_strategy),
            executor_timeout=self.executor_timeout,
            max_retry_times=self.max_retry_times,
            retry_interval=self.retry_interval,
            task_type=int(self.task_type),
            parallel_num=self.parallel_num,
            description=self.description,
            notify_ids=list(self.notify_ids),
            owner_id=self.owner_id,
            labels=self._labels_json(),
        )


_WIRE = {"task_type": "taskType", "args_type": "argsType", "route": "routeKey",
         "block_strategy": "blockStrategy", "executor_type": "executorType"}
