"""The retry module's records in the server emulator.

``RetryScene`` (a ``sj_retry_scene_config``), ``EmulatedRetry`` (a
``sj_retry`` row and its callback row) and ``EmulatedRetryTask`` (one
execution, ``sj_retry_task``).  A retry reads the emulator's state through
its ``_Guard``; its console buttons (stop, trigger) go to the
``_RetryButtons`` it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from snailjob.testing._support import (
    _KIND_CALLBACK,
    _KIND_RETRY,
    _RT_FAIL,
    _RT_NOT_COMPLETE,
    _RT_RUNNING,
    _RT_STOP,
    _RT_SUCCESS,
    _Guard,
)
from snailjob.testing.records import (
    RETRY_FINISH,
    RETRY_MAX_COUNT,
    RETRY_REASON_NONE,
    RETRY_RUNNING,
    RETRY_SUSPEND,
    DispatchReply,
)


@dataclass
class RetryScene:
    """A retry scene (``sj_retry_scene_config``) as the emulator keeps it.

    ``interval`` and ``cb_interval`` are seconds of a fixed backoff (the
    server's FIXED strategy; fractions allowed here).  ``auto_created`` marks a
    scene the emulator created on a report because ``init_scene`` was on.
    """

    name: str
    max_retry_count: int = 3
    interval: float = 0.2
    executor_timeout: int = 5
    callback: bool = False
    cb_max_count: int = 3
    cb_interval: float = 0.2
    enabled: bool = True
    auto_created: bool = False


@dataclass
class EmulatedRetryTask:
    """One execution (``sj_retry_task``) of a retry (``kind="retry"``,
    ``/retry/dispatch/v1``) or of its completion callback (``kind="callback"``,
    ``/retry/callback/v1``).

    ``status`` is a ``RetryTaskStatusEnum`` value (2 RUNNING, 3 SUCCESS, 4 FAIL,
    5 STOP, 6 CANCEL); ``operation_reason`` a ``RetryOperationReasonEnum``
    value (``RETRY_REASON_*``).  ``request`` is the body element sent (empty
    when nothing was sent) and ``snail_job_header`` the ``SnailJobHeaders``
    sent with a dispatch.  ``result`` and ``exception_msg`` are what the
    client reported (the server itself discards ``result``), or the failure
    message of a refused or failed call.
    """

    id: int
    retry_id: int
    kind: str
    status: int = _RT_RUNNING
    node: Optional[str] = None
    client_address: Optional[str] = None
    retry_count: int = 0
    manual: bool = False
    operation_reason: int = RETRY_REASON_NONE
    result: Optional[str] = None
    exception_msg: Optional[str] = None
    timed_out: bool = False
    request: Dict[str, Any] = field(default_factory=dict)
    snail_job_header: Optional[Dict[str, Any]] = None
    dispatch_replies: List[DispatchReply] = field(default_factory=list)
    reports: List[Dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: Optional[float] = None
    reported: bool = field(default=False, repr=False)

    @property
    def done(self) -> bool:
        return self.status not in _RT_NOT_COMPLETE


class _RetryButtons(Protocol):
    """The console's buttons an ``EmulatedRetry`` offers (the emulator's retry server)."""

    def stop_retry(self, retry_id: int, suspend: bool = False) -> Optional[Tuple[int, str, str]]: ...

    def trigger_retry(self, retry_id: int) -> EmulatedRetryTask: ...


class EmulatedRetry:
    """A retry (``sj_retry`` row of task type 1) and its callback.

    ``status``: 0 RUNNING, 1 FINISH, 2 MAX_COUNT, 3 SUSPEND.  The callback is
    the server's separate callback row (task type 2, its own id
    ``callback_id``, sent as ``retryId`` of ``/retry/callback/v1``);
    ``callback_status`` is ``None`` (no callback), 2 while it is pending, 3
    once the client reported success, 4 when it gave up after
    ``cb_max_count`` failed attempts, 5 when the client reported STOP on the
    dispatch-result URI (the callback row is suspended).  All attributes are
    read under the emulator's lock; ``tasks`` is a snapshot list.
    """

    RUNNING = RETRY_RUNNING
    FINISH = RETRY_FINISH
    MAX_COUNT = RETRY_MAX_COUNT
    SUSPEND = RETRY_SUSPEND

    def __init__(self, guard: _Guard, buttons: _RetryButtons, retry_id: int, namespace: str, group: str, scene: str,
                 idempotent_id: str, biz_no: str, executor_name: str, args_str: str,
                 serializer_name: str, ext_attrs: str, status: int, source: str) -> None:
        self._guard = guard
        self._buttons = buttons
        self.id = retry_id
        self.namespace = namespace
        self.group = group
        self.scene = scene
        self.idempotent_id = idempotent_id
        self.biz_no = biz_no
        self.executor_name = executor_name
        self.args_str = args_str
        self.serializer_name = serializer_name
        self.ext_attrs = ext_attrs
        self.source = source
        """``"report"`` (``/batch/report``) or ``"console"`` (``add_retry``)."""
        self.created_at = time.time()
        self._status = status
        self._retry_count = 0
        self._deleted = False  # the ``deleted`` column: set to the id on FINISH / MAX_COUNT
        self._tasks: List[EmulatedRetryTask] = []
        self._gen = 0
        self._parked = False
        self._cb_id: Optional[int] = None
        self._cb_status: Optional[int] = None
        self._cb_count = 0
        self._cb_gen = 0
        self._cb_parked = False

    @property
    def status(self) -> int:
        return self._guard.read(lambda: self._status)

    @property
    def retry_count(self) -> int:
        return self._guard.read(lambda: self._retry_count)

    @property
    def tasks(self) -> List[EmulatedRetryTask]:
        return self._guard.read(lambda: list(self._tasks))

    @property
    def retry_tasks(self) -> List[EmulatedRetryTask]:
        """The ``kind="retry"`` tasks."""
        return self._guard.read(lambda: [t for t in self._tasks if t.kind == _KIND_RETRY])

    @property
    def callback_tasks(self) -> List[EmulatedRetryTask]:
        """The ``kind="callback"`` tasks."""
        return self._guard.read(lambda: [t for t in self._tasks if t.kind == _KIND_CALLBACK])

    @property
    def callback_id(self) -> Optional[int]:
        return self._guard.read(lambda: self._cb_id)

    @property
    def callback_status(self) -> Optional[int]:
        return self._guard.read(lambda: self._cb_status)

    @property
    def callback_count(self) -> int:
        """The callback row's retry count (failed or finished attempts)."""
        return self._guard.read(lambda: self._cb_count)

    def task(self, task_id: int) -> EmulatedRetryTask:
        found = self._guard.read(lambda: [t for t in self._tasks if t.id == task_id])
        if not found:
            raise KeyError(task_id)
        return found[0]

    def wait(self, timeout: float = 10.0,
             statuses: Sequence[int] = (RETRY_FINISH, RETRY_MAX_COUNT, RETRY_SUSPEND)) -> int:
        """Block until the retry's status is one of ``statuses``; return it.
        Raises ``TimeoutError`` describing the retry and its tasks."""
        wanted = set(statuses)
        return self._guard.wait(lambda: self._status in wanted, lambda: self._status, timeout,
                                lambda: self._timed_out(f"status in {sorted(wanted)}", timeout),
                                stopped=f"emulator stopped while waiting for retry {self.id}")

    def wait_callback(self, timeout: float = 10.0) -> int:
        """Block until the callback ended (``callback_status`` 3, 4 or 5); return it."""
        return self._guard.wait(lambda: self._cb_status in (_RT_SUCCESS, _RT_FAIL, _RT_STOP),
                                lambda: int(self._cb_status or 0), timeout,
                                lambda: self._timed_out("an ended callback", timeout),
                                stopped=f"emulator stopped while waiting for retry {self.id}")

    def stop(self, suspend: bool = False) -> Optional[Tuple[int, str, str]]:
        """``ServerEmulator.stop_retry`` for this retry."""
        return self._buttons.stop_retry(self.id, suspend=suspend)

    def trigger(self) -> EmulatedRetryTask:
        """``ServerEmulator.trigger_retry`` for this retry."""
        return self._buttons.trigger_retry(self.id)

    def _timed_out(self, what: str, timeout: float) -> str:
        return f"{what} not reached after {timeout:g}s: {self._describe()}"

    def _describe(self) -> str:
        shown = ", ".join(f"{t.kind} task {t.id} status {t.status} on {t.node or '-'} "
                          f"(replies {len(t.dispatch_replies)}, reports {len(t.reports)})"
                          for t in self._tasks[-10:])
        return (f"retry {self.id} (scene {self.scene!r}, executor {self.executor_name!r}) has status "
                f"{self._status}, retry_count {self._retry_count}, callback_status {self._cb_status}; "
                f"{len(self._tasks)} task(s): [{shown}]")

    def __repr__(self) -> str:
        return (f"EmulatedRetry(id={self.id}, scene={self.scene!r}, idempotent_id={self.idempotent_id!r}, "
                f"status={self._status}, retry_count={self._retry_count}, tasks={len(self._tasks)})")
