"""The one state object the parts of the server emulator share.

``ServerEmulator`` creates a single ``_State`` and hands it to every part it
builds (transport, endpoint, jobs, workflows, retry server, console, logs,
queries), so what each part reads and writes is declared once, here, with its
initial value.  ``guard`` (a ``_Guard``: the lock, the change condition, the
stopping flag) protects all of it; a part notifies ``cond`` after every
change and holds no lock during an RPC.

``_Forward`` makes the emulator's public settings (``group``,
``init_scene``, ``retry_stop_quirk``...) attributes of ``ServerEmulator``
that read and write the state, so a test that sets one after construction
changes what the parts do.
"""

from __future__ import annotations

import itertools
import random
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Iterator, List, Optional, Set, Tuple, TypeVar, overload

import grpc

from snailjob.testing._support import _Guard, _Scheduler, logger
from snailjob.testing.batches import EmulatedBatch, EmulatedWorkflow, _Job
from snailjob.testing.records import (
    ClientNode,
    DroppedLogBatch,
    EmulatedTask,
    Exchange,
    OutboundCall,
    RecordedBeat,
    RecordedRequest,
)
from snailjob.testing.retries import EmulatedRetry, EmulatedRetryTask, RetryScene

_T = TypeVar("_T")


@dataclass(eq=False)
class _State:
    """Configuration, lifecycle and every record of one emulator."""

    # configuration (the public ones are ServerEmulator attributes through _Forward)
    namespace: str
    group: str
    token: str
    server_token: str
    node_expiry: float
    register_delay: float
    strict_primitives: bool
    map_race_quirk: bool
    map_report_delay: float
    requested_port: int
    server_host_id: str
    max_workers: int
    random: random.Random
    host: str = "127.0.0.1"
    port: int = 0
    config: Dict[str, Any] = field(default_factory=lambda: {"version": 1, "sceneList": [], "notifyList": []})
    init_scene: bool = False
    retry_stop_quirk: bool = True

    # lifecycle, threads and calls
    guard: _Guard = field(default_factory=_Guard)
    started: bool = False
    stopped: bool = False
    server: Optional[grpc.Server] = None
    pool: Optional[futures.ThreadPoolExecutor] = None
    scheduler: Optional[_Scheduler] = None
    channels: Dict[str, Tuple[grpc.Channel, Any]] = field(default_factory=dict)
    tls: threading.local = field(default_factory=threading.local)  # req_id of the call being handled

    # jobs
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    task_ids: Iterator[int] = field(default_factory=lambda: itertools.count(10_001))
    req_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    nodes: Dict[Tuple[str, str, str], ClientNode] = field(default_factory=dict)  # (namespace, group, host id)
    jobs: Dict[int, _Job] = field(default_factory=dict)
    batches: Dict[int, EmulatedBatch] = field(default_factory=dict)
    task_index: Dict[int, EmulatedTask] = field(default_factory=dict)
    workflows: Dict[int, EmulatedWorkflow] = field(default_factory=dict)
    manual_loops: Dict[int, int] = field(default_factory=dict)

    # what was received and sent
    exchanges: List[Exchange] = field(default_factory=list)
    outbound: List[OutboundCall] = field(default_factory=list)
    beats: List[RecordedBeat] = field(default_factory=list)
    executors: Set[str] = field(default_factory=set)
    results: List[Dict[str, Any]] = field(default_factory=list)
    map_reports: List[Dict[str, Any]] = field(default_factory=list)
    logs: List[Dict[str, Any]] = field(default_factory=list)
    retry_logs: List[Dict[str, Any]] = field(default_factory=list)
    log_rows: List[Dict[str, Any]] = field(default_factory=list)
    dropped_logs: List[DroppedLogBatch] = field(default_factory=list)
    retry_requests: List[RecordedRequest] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    # retries
    retry_scenes: Dict[str, RetryScene] = field(default_factory=dict)
    retries: Dict[int, EmulatedRetry] = field(default_factory=dict)
    retries_by_key: Dict[Tuple[str, str], List[EmulatedRetry]] = field(default_factory=dict)  # (scene, id)
    retry_task_index: Dict[int, EmulatedRetryTask] = field(default_factory=dict)
    retry_reports: List[Dict[str, Any]] = field(default_factory=list)
    retry_rr: int = 0

    @property
    def lock(self) -> threading.RLock:
        return self.guard.lock

    @property
    def cond(self) -> threading.Condition:
        return self.guard.cond

    @property
    def stopping(self) -> threading.Event:
        return self.guard.stopping

    def require_running(self) -> None:
        if not self.started or self.stopping.is_set():
            raise RuntimeError("the emulator is not running (call start() or use it as a context manager)")

    def problem(self, text: str) -> None:
        """Log and keep a protocol violation (see ``ServerEmulator.problems``)."""
        logger.warning("snailjob emulator: %s", text)
        self.problems.append(text)

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the worker pool in ``delay`` seconds (nothing once stopped)."""
        if self.scheduler is not None:
            self.scheduler.schedule(delay, fn)


class _Forward(Generic[_T]):
    """An attribute of ``ServerEmulator`` kept in its ``_State`` under the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: Optional[type] = None) -> _Forward[_T]: ...

    @overload
    def __get__(self, obj: object, owner: Optional[type] = None) -> _T: ...

    def __get__(self, obj: Optional[object], owner: Optional[type] = None) -> Any:
        if obj is None:
            return self
        return getattr(obj._state, self._name)  # type: ignore[attr-defined]

    def __set__(self, obj: object, value: _T) -> None:
        setattr(obj._state, self._name, value)  # type: ignore[attr-defined]
