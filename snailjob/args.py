"""Arguments handed to executors (the 0.1.3 dataclasses, plus task ids) and
their construction from a dispatch.

``argsStr`` is decoded as protocol.md section 4.4 describes: a JSON object
``{"jobParams": ..., "maps": ..., "reduces": ...}``.  Blank text gives
``job_params=None``; text that is not a JSON object is passed through as the
raw ``job_params`` string, as the Java client does.  ``maps`` and ``reduces``
are given exactly as the server sends them (for reduce and merge: lists of
strings, one per upstream result).
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Iterator, List, NamedTuple, Optional, Tuple, TypeVar

from pydantic import TypeAdapter, ValidationError

from snailjob.errors import SnailJobError
from snailjob.wire.codec import clean, location
from snailjob.wire.enums import JobTaskTypeEnum, MapReduceStageEnum
from snailjob.wire.models import DispatchJobRequest

P = TypeVar("P")
"""The type of ``job_params`` (``JobArgs[MyModel]``); ``Any`` when undeclared."""


class WfContext:
    """The workflow-context keys a task adds or changes (thread-safe)."""

    def __init__(self, context: Optional[Dict[str, Any]] = None) -> None:
        self._context: Dict[str, Any] = dict(context or {})
        self._lock = threading.Lock()

    @staticmethod
    def from_dict(context: Dict[str, Any]) -> WfContext:
        return WfContext(copy.deepcopy(context))

    def to_dict(self) -> Dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._context)

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._context[key] = value

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            return self._context[key]

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._context[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._context

    def __len__(self) -> int:
        with self._lock:
            return len(self._context)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())


@dataclass
class JobArgs(Generic[P]):
    """Arguments of a cluster or broadcast task (and the base of the others).

    ``job_params`` is the job's parameter text as the console holds it (a
    string; decode JSON yourself), unless the executor declares its type:
    ``def run(args: JobArgs[Order])`` or ``@job("name", params=Order)`` make
    the client decode and validate it (pydantic), failing the task with a
    message naming the field when it does not fit.  ``wf_context`` is the whole workflow
    context at dispatch; ``append_context`` records a change that is sent back
    with the result and merged by the server into the workflow.
    """

    job_params: P = None  # type: ignore[assignment]
    executor_info: Optional[str] = None
    task_batch_id: Optional[int] = None
    job_id: Optional[int] = None
    wf_context: Dict[str, Any] = field(default_factory=dict)
    change_wf_context: WfContext = field(default_factory=WfContext)
    # new in this client
    task_id: Optional[int] = None
    task_type: Optional[int] = None
    workflow_task_batch_id: Optional[int] = None
    workflow_node_id: Optional[int] = None
    retry_count: int = 0
    job_biz_id: Optional[str] = None

    def append_context(self, key: str, value: Any) -> None:
        """Add or change a workflow-context key (sent with this task's result)."""
        if self.change_wf_context is None:
            self.change_wf_context = WfContext()
        self.change_wf_context[key] = value

    def get_wf_context(self, key: str) -> Any:
        """A workflow-context value: this task's own change if it made one,
        else the value at dispatch, else ``None``."""
        if not key:
            return None
        if self.change_wf_context is not None and key in self.change_wf_context:
            return self.change_wf_context[key]
        return (self.wf_context or {}).get(key)


@dataclass
class ShardingJobArgs(JobArgs[P]):
    """A sharding task: ``job_params`` is this shard's element of the job's
    parameter array."""

    sharding_total: Optional[int] = None
    sharding_index: Optional[int] = None


@dataclass
class MapArgs(JobArgs[P]):
    """A map task.  ``map_result`` is the sub-task item this task received
    (``""`` for ``ROOT_MAP``)."""

    task_name: Optional[str] = None
    map_result: Any = None


@dataclass
class ReduceArgs(JobArgs[P]):
    """A reduce task: ``map_result`` is a list of strings, one per map task
    result (JSON text for non-string results)."""

    map_result: Any = None


@dataclass
class MergeReduceArgs(JobArgs[P]):
    """A merge task: ``reduces`` is a list of strings, one per reduce result."""

    reduces: Any = None


class ParamsError(SnailJobError):
    """Job parameters, map items or reduce inputs do not fit the declared type."""


_TYPES_ATTR = "__snailjob_types__"
_adapters: Dict[Any, TypeAdapter] = {}
_adapters_lock = threading.Lock()


def declare_types(func: Callable[..., Any], params: Any = None, item: Any = None) -> None:
    """Record the declared ``params`` / ``item`` types on an executor function."""
    declared = {k: v for k, v in (("params", params), ("item", item)) if v is not None}
    if declared:
        setattr(func, _TYPES_ATTR, {**getattr(func, _TYPES_ATTR, {}), **declared})
        declared_types.cache_clear()


@functools.lru_cache(maxsize=1024)
def declared_types(func: Callable[..., Any]) -> Dict[str, Any]:
    """Declared types of an executor: decorator arguments first, then the
    annotation of its first parameter (``JobArgs[T]`` and subclasses).
    Cached per function (resolving annotations costs more than a task)."""
    declared = dict(getattr(func, _TYPES_ATTR, {}))
    if "params" not in declared:
        target = getattr(func, "__func__", func)
        try:
            hints = typing.get_type_hints(target)
        except Exception:
            hints = {}
        names = [n for n in getattr(getattr(target, "__code__", None), "co_varnames", ())[:1]]
        hint = hints.get(names[0]) if names else None
        origin = typing.get_origin(hint)
        if isinstance(origin, type) and issubclass(origin, JobArgs) and typing.get_args(hint):
            declared["params"] = typing.get_args(hint)[0]
    return declared


def _adapter(kind: Any) -> TypeAdapter:
    with _adapters_lock:
        try:
            adapter = _adapters.get(kind)
        except TypeError:  # unhashable type expression
            return TypeAdapter(kind)
        if adapter is None:
            adapter = _adapters[kind] = TypeAdapter(kind)
        return adapter


def convert(value: Any, kind: Any, what: str) -> Any:
    """``value`` validated as ``kind``; JSON text is decoded first (unless
    ``kind`` is ``str``).  ``ParamsError`` names ``what`` and the field."""
    if kind is Any or kind is object:
        return value
    try:
        if isinstance(value, (str, bytes)) and kind is not str:
            if not value.strip():
                raise ParamsError(f"invalid {what}: empty, expected {_name(kind)}")
            return _adapter(kind).validate_json(value)
        return _adapter(kind).validate_python(value)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            # keys and input of the server's argsStr may be in either part: quoted
            where = location(err["loc"])
            msg = clean(err["msg"], 200)
            problems.append(f"{where}: {msg}" if where else msg)
        raise ParamsError(f"invalid {what} for {_name(kind)}: " + "; ".join(problems)) from None


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind)


def prepare_args(func: Callable[..., Any], args: JobArgs) -> JobArgs:
    """Apply the executor's declared types to ``args`` (in place)."""
    declared = declared_types(func)
    if not declared:
        return args
    if "params" in declared:
        args.job_params = convert(args.job_params, declared["params"], "job_params")
    item = declared.get("item")
    if item is not None:
        if isinstance(args, MergeReduceArgs):
            args.reduces = [convert(v, item, f"reduces[{i}]") for i, v in enumerate(args.reduces or [])]
        elif isinstance(args, ReduceArgs):
            args.map_result = [convert(v, item, f"map_result[{i}]")
                               for i, v in enumerate(args.map_result or [])]
        elif isinstance(args, MapArgs) and args.task_name != "ROOT_MAP":
            args.map_result = convert(args.map_result, item, "map_result")
    return args


SENTINEL_KEY = "__snailjob_sentinel__"
"""Marks the one sub-task of a map task whose node repeats its result until
the batch ends (see ``mapreduce.mr_do_map``): its item travels as
``{"__snailjob_sentinel__": 1, "item": <item>}`` and the job sees the item."""


def wrap_sentinel(item: Any) -> Dict[str, Any]:
    return {SENTINEL_KEY: 1, "item": item}


def unwrap_sentinel(maps: Any) -> Tuple[Any, bool]:
    """``(item, True)`` for a sentinel's item (as an object or its JSON text), else ``(maps, False)``."""
    value = maps
    if isinstance(value, str) and value.startswith('{"' + SENTINEL_KEY):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return maps, False
    if isinstance(value, dict) and len(value) == 2 and value.get(SENTINEL_KEY) == 1 and "item" in value:
        return value["item"], True
    return maps, False


class BuiltArgs(NamedTuple):
    args: JobArgs
    warnings: List[str]
    sentinel: bool  # a map sub-task that repeats its result until the batch ends


def decode_args_str(args_str: Optional[str]) -> Tuple[Any, Any, Any]:
    """``(job_params, maps, reduces)`` from a dispatch's ``argsStr``."""
    if args_str is None or not args_str.strip():
        return None, None, None
    try:
        holder = json.loads(args_str)
    except (ValueError, RecursionError):
        return args_str, None, None
    if not isinstance(holder, dict):
        return args_str, None, None
    return holder.get("jobParams"), holder.get("maps"), holder.get("reduces")


def decode_wf_context(text: Optional[str]) -> Tuple[Dict[str, Any], Optional[str]]:
    """The workflow context as a dict, and a warning when it was unusable."""
    if text is None or not text.strip():
        return {}, None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}, "wfContext is not valid JSON; the job sees an empty context"
    if not isinstance(value, dict):
        return {}, f"wfContext is a JSON {type(value).__name__}, not an object; the job sees an empty context"
    return value, None


def build_args(request: DispatchJobRequest) -> BuiltArgs:
    """The args object for a dispatch, warnings about unusable input, and
    whether the task is its map task's sentinel."""
    job_params, maps, reduces = decode_args_str(request.argsStr)
    wf_context, warning = decode_wf_context(request.wfContext)
    common: Dict[str, Any] = dict(
        job_params=job_params,
        executor_info=request.executorInfo,
        task_batch_id=request.taskBatchId,
        job_id=request.jobId,
        wf_context=wf_context,
        change_wf_context=WfContext(),
        task_id=request.taskId,
        task_type=request.taskType,
        workflow_task_batch_id=request.workflowTaskBatchId,
        workflow_node_id=request.workflowNodeId,
        retry_count=request.retryCount or 0,
        job_biz_id=request.jobBizId,
    )
    warnings = [warning] if warning else []
    task_type, stage = request.taskType, request.mrStage
    args: JobArgs
    if task_type == JobTaskTypeEnum.SHARDING:
        args = ShardingJobArgs(sharding_total=request.shardingTotal,
                               sharding_index=request.shardingIndex, **common)
    elif task_type == JobTaskTypeEnum.MAP_REDUCE and stage == MapReduceStageEnum.REDUCE:
        args = ReduceArgs(map_result=maps, **common)
    elif task_type == JobTaskTypeEnum.MAP_REDUCE and stage == MapReduceStageEnum.MERGE_REDUCE:
        args = MergeReduceArgs(reduces=reduces, **common)
    elif task_type in (JobTaskTypeEnum.MAP, JobTaskTypeEnum.MAP_REDUCE):
        maps, sentinel = unwrap_sentinel(maps)
        args = MapArgs(task_name=request.taskName, map_result=maps, **common)
        return BuiltArgs(args, warnings, sentinel)
    else:
        args = JobArgs(**common)
    return BuiltArgs(args, warnings, False)
