"""The shared state of ``ServerEmulator``.

``_EmulatorBase`` declares, with annotations only (nothing is created here),
the attributes ``ServerEmulator.__init__`` sets and the concern mixins use,
and holds the two helpers every concern calls.  ``_lock`` (an RLock) guards
all of this state; ``_cond`` is a condition on the same lock, notified on
every change.  No lock is held during an RPC.
"""

from __future__ import annotations

import random
import threading
from concurrent import futures
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import grpc

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
from snailjob.testing.support import Handler, _Scheduler, logger


class _EmulatorBase:
    """State shared by the emulator's concerns (set in ``ServerEmulator.__init__``)."""

    # configuration
    namespace: str
    group: str
    token: str
    server_token: str
    node_expiry: float
    register_delay: float
    strict_primitives: bool
    map_race_quirk: bool
    map_report_delay: float
    host: str
    _requested_port: int
    port: int
    server_host_id: str
    config: Dict[str, Any]
    init_scene: bool
    retry_stop_quirk: bool

    # lifecycle, threads and calls
    _max_workers: int
    _random: random.Random
    _lock: threading.RLock
    _cond: threading.Condition
    _stopping: threading.Event
    _started: bool
    _stopped: bool
    _server: Optional[grpc.Server]
    _pool: Optional[futures.ThreadPoolExecutor]
    _scheduler: Optional[_Scheduler]
    _channels: Dict[str, Tuple[grpc.Channel, Any]]
    _tls: threading.local
    _handlers: Dict[str, Handler]

    # jobs
    _ids: Iterator[int]
    _task_ids: Iterator[int]
    _req_ids: Iterator[int]
    _nodes: Dict[Tuple[str, str, str], ClientNode]
    _jobs: Dict[int, _Job]
    _batches: Dict[int, EmulatedBatch]
    _task_index: Dict[int, EmulatedTask]
    _workflows: Dict[int, EmulatedWorkflow]
    _manual_loops: Dict[int, int]

    # what was received and sent
    _exchanges: List[Exchange]
    _outbound: List[OutboundCall]
    _beats: List[RecordedBeat]
    _executors: Set[str]
    _results: List[Dict[str, Any]]
    _map_reports: List[Dict[str, Any]]
    _logs: List[Dict[str, Any]]
    _retry_logs: List[Dict[str, Any]]
    _log_rows: List[Dict[str, Any]]
    _dropped_logs: List[DroppedLogBatch]
    _retry_requests: List[RecordedRequest]
    _problems: List[str]

    # retries
    _retry_scenes: Dict[str, RetryScene]
    _retries: Dict[int, EmulatedRetry]
    _retries_by_key: Dict[Tuple[str, str], List[EmulatedRetry]]
    _retry_task_index: Dict[int, EmulatedRetryTask]
    _retry_reports: List[Dict[str, Any]]
    _retry_rr: int

    def _require_running(self) -> None:
        if not self._started or self._stopping.is_set():
            raise RuntimeError("the emulator is not running (call start() or use it as a context manager)")

    def _problem(self, text: str) -> None:
        logger.warning("snailjob emulator: %s", text)
        self._problems.append(text)
