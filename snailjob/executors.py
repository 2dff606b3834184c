"""Executor declaration (``@job``, ``MapExecutor``, ``MapReduceExecutor``) and
the registry that maps a dispatch to the function that runs it.

Decorators return the function unchanged (only an ``executor_name`` attribute
is added), so decorated functions stay plain callables that tests can call.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union

from snailjob.args import declare_types
from snailjob.errors import ExecutorRegistrationError
from snailjob.wire.enums import ROOT_MAP, JobTaskTypeEnum, MapReduceStageEnum

F = TypeVar("F", bound=Callable[..., Any])


ISOLATIONS = ("thread", "process")


def job(executor_name: str, params: Any = None, isolation: Optional[str] = None) -> Callable[[F], F]:
    """Mark ``func`` as the executor named ``executor_name`` (the name typed in
    the console's "executor name" field).  Register it with
    ``ExecutorManager.register`` or ``Client(executors=[...])``.

    ``func`` may be a plain function or an ``async def``.  ``params`` declares
    the type of ``args.job_params`` (a pydantic model, a dataclass, ``dict``,
    ``int``...); annotating the argument as ``JobArgs[T]`` does the same.
    ``isolation="process"`` runs it in a worker process (``snailjob.processes``:
    all cores, hard stop and timeout, crash isolation); ``"thread"`` in a
    thread of the client; unset, as ``SNAIL_ISOLATION`` says.
    """
    _check_name(executor_name, "executor name")
    _check_isolation(isolation, f"@job({executor_name!r})")

    def decorator(func: F) -> F:
        if not callable(func):
            raise ExecutorRegistrationError(f"@job({executor_name!r}) must decorate a function")
        func.executor_name = executor_name  # type: ignore[attr-defined]
        declare_types(func, params=params)
        _mark(func, isolation)
        return func

    return decorator


class MapExecutor:
    """A map job: one function per task name, ``ROOT_MAP`` first.

    >>> ex = MapExecutor("myMap")
    >>> @ex.map()                 # ROOT_MAP
    ... def root(args): ...
    """

    def __init__(self, executor_name: str, isolation: Optional[str] = None) -> None:
        """``isolation``: the default of every stage (see ``job``); a stage's
        own ``isolation=`` wins."""
        _check_name(executor_name, "executor name")
        _check_isolation(isolation, f"executor {executor_name!r}")
        self.executor_name = executor_name
        self.isolation = isolation
        self.map_methods: Dict[str, Callable[..., Any]] = {}

    def map(self, task_name: Optional[str] = None, params: Any = None, item: Any = None,
            isolation: Optional[str] = None) -> Callable[[F], F]:
        """Decorate the function that runs tasks named ``task_name``
        (default ``ROOT_MAP``).  ``item`` declares the type of
        ``args.map_result`` (the sub-task item), ``params`` that of
        ``args.job_params``."""
        name = task_name or ROOT_MAP
        _check_name(name, "map task name")
        _check_isolation(isolation, f"map task {name!r}")

        def decorator(func: F) -> F:
            if name in self.map_methods:
                raise ExecutorRegistrationError(
                    f"map task {name!r} is already defined in executor {self.executor_name!r}")
            declare_types(func, params=params, item=item)
            _mark(func, isolation or self.isolation)
            self.map_methods[name] = func
            return func

        return decorator


class MapReduceExecutor(MapExecutor):
    """A map-reduce job: map functions plus one ``reduce`` and an optional
    ``merge`` (run when the job has more than one reduce shard)."""

    def __init__(self, executor_name: str, isolation: Optional[str] = None) -> None:
        super().__init__(executor_name, isolation)
        self.reduce_method: Optional[Callable[..., Any]] = None
        self.merge_method: Optional[Callable[..., Any]] = None

    def reduce(self, params: Any = None, item: Any = None, isolation: Optional[str] = None) -> Callable[[F], F]:
        """Decorate the reduce function; ``item`` declares the type of each
        element of ``args.map_result`` (each map result, decoded from JSON)."""

        def decorator(func: F) -> F:
            if self.reduce_method is not None:
                raise ExecutorRegistrationError(
                    f"executor {self.executor_name!r} already has a reduce function")
            declare_types(func, params=params, item=item)
            _mark(func, isolation or self.isolation)
            self.reduce_method = func
            return func

        return decorator

    def merge(self, params: Any = None, item: Any = None, isolation: Optional[str] = None) -> Callable[[F], F]:
        """Decorate the merge function; ``item`` declares the type of each
        element of ``args.reduces`` (each reduce result, decoded from JSON)."""

        def decorator(func: F) -> F:
            if self.merge_method is not None:
                raise ExecutorRegistrationError(
                    f"executor {self.executor_name!r} already has a merge function")
            declare_types(func, params=params, item=item)
            _mark(func, isolation or self.isolation)
            self.merge_method = func
            return func

        return decorator


Executor = Union[Callable[..., Any], MapExecutor, MapReduceExecutor]


class UnknownTask(LookupError):
    """No function of the executor fits the dispatched task."""


class ExecutorSpec:
    """What the registry knows of one executor.  Map functions are read from
    the executor object at dispatch time, so functions decorated after
    registration are found too."""

    def __init__(self, name: str, source: object) -> None:
        self.name = name
        self.source = source

    @property
    def job(self) -> Optional[Callable[..., Any]]:
        return None if isinstance(self.source, MapExecutor) else self.source  # type: ignore[return-value]

    @property
    def maps(self) -> Dict[str, Callable[..., Any]]:
        return self.source.map_methods if isinstance(self.source, MapExecutor) else {}

    @property
    def reduce(self) -> Optional[Callable[..., Any]]:
        return self.source.reduce_method if isinstance(self.source, MapReduceExecutor) else None

    @property
    def merge(self) -> Optional[Callable[..., Any]]:
        return self.source.merge_method if isinstance(self.source, MapReduceExecutor) else None

    def resolve(self, task_type: int, mr_stage: Optional[int], task_name: Optional[str]
                ) -> Callable[..., Any]:
        """The function for a dispatched task, or ``UnknownTask`` with the reason."""
        if task_type == JobTaskTypeEnum.MAP or (
                task_type == JobTaskTypeEnum.MAP_REDUCE
                and mr_stage in (None, MapReduceStageEnum.MAP)):
            name = task_name or ROOT_MAP
            if not isinstance(self.source, MapExecutor):
                raise UnknownTask(f"executor {self.name!r} is a @job function, not a map executor; "
                                  f"it cannot run map task {name[:100]!r}")
            if name not in self.maps:
                raise UnknownTask(f"executor {self.name!r} has no map function for task {name[:100]!r}")
            return self.maps[name]
        if task_type == JobTaskTypeEnum.MAP_REDUCE:
            if mr_stage == MapReduceStageEnum.REDUCE and self.reduce is not None:
                return self.reduce
            if mr_stage == MapReduceStageEnum.MERGE_REDUCE and self.merge is not None:
                return self.merge
            raise UnknownTask(f"executor {self.name!r} has no function for map-reduce stage {mr_stage}")
        if task_type in (JobTaskTypeEnum.CLUSTER, JobTaskTypeEnum.BROADCAST, JobTaskTypeEnum.SHARDING):
            if self.job is None:
                raise UnknownTask(f"executor {self.name!r} is a map executor; "
                                  f"it cannot run task type {task_type}")
            return self.job
        raise UnknownTask(f"unknown task type {task_type}")


class ExecutorRegistry:
    """Executors by name.  Thread-safe; one per client (0.1.3's module-level
    ``ExecutorManager`` uses a default one)."""

    def __init__(self) -> None:
        self._specs: Dict[str, ExecutorSpec] = {}
        self._lock = threading.Lock()

    def register(self, executor: Executor) -> ExecutorSpec:
        spec = _spec_of(executor)
        with self._lock:
            existing = self._specs.get(spec.name)
            if existing is not None:
                if existing.source is executor:
                    return existing
                raise ExecutorRegistrationError(f"an executor named {spec.name!r} is already registered")
            self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> Optional[ExecutorSpec]:
        with self._lock:
            return self._specs.get(name)

    def names(self) -> List[str]:
        with self._lock:
            return sorted(self._specs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._specs)


def _spec_of(executor: Executor) -> ExecutorSpec:
    if isinstance(executor, MapExecutor):
        return ExecutorSpec(executor.executor_name, executor)
    if callable(executor):
        name = getattr(executor, "executor_name", None)
        if not isinstance(name, str):
            label = getattr(executor, "__name__", repr(executor))
            raise ExecutorRegistrationError(f"{label} is not decorated with @job(...)")
        return ExecutorSpec(name, executor)
    raise ExecutorRegistrationError(
        f"cannot register {type(executor).__name__}: expected an @job function, "
        "a MapExecutor or a MapReduceExecutor")


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ExecutorRegistrationError(f"{what} must be a non-blank string, got {name!r}")


def _check_isolation(isolation: Optional[str], where: str) -> None:
    if isolation is not None and isolation not in ISOLATIONS:
        raise ExecutorRegistrationError(f"{where}: isolation must be 'thread' or 'process', got {isolation!r}")


def isolation_of(func: Callable[..., Any], default: str) -> str:
    """``"process"`` or ``"thread"``: the function's own choice, else ``default``."""
    return str(getattr(func, "snailjob_isolation", None) or default)


def _mark(func: Callable[..., Any], isolation: Optional[str]) -> None:
    if isolation is not None:
        func.snailjob_isolation = isolation  # type: ignore[attr-defined]
