"""Inspection of the server emulator: what it received, sent and keeps, and the waits tests use."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Set

from snailjob.testing._transport import _TransportMixin
from snailjob.testing.batches import EmulatedBatch
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
from snailjob.wire import enums


class _QueriesMixin(_TransportMixin):
    """Read-only views (snapshots taken under the lock) and bounded waits."""

    # ------------------------------------------------------------------
    # inspection
    # ------------------------------------------------------------------

    @property
    def nodes(self) -> List[ClientNode]:
        """Registered nodes that have not expired (whatever their ``alive`` flag)."""
        with self._lock:
            return [n for n in self._nodes.values() if n.registered and not self._expired(n)]

    @property
    def live_nodes(self) -> List[ClientNode]:
        """Nodes the emulator would dispatch to (registered, not expired, alive)."""
        with self._lock:
            return [n for n in self._nodes.values() if self._is_live(n)]

    @property
    def beats(self) -> List[RecordedBeat]:
        """Every accepted ``/beat`` (``len(emu.beats)`` is the count)."""
        with self._lock:
            return list(self._beats)

    @property
    def registered_executors(self) -> Set[str]:
        with self._lock:
            return set(self._executors)

    @property
    def results(self) -> List[Dict[str, Any]]:
        """Every ``/report/dispatch/result`` body element received (after the
        token check), in order, including rejected ones."""
        with self._lock:
            return list(self._results)

    @property
    def map_reports(self) -> List[Dict[str, Any]]:
        """Every ``/batch/report/job/map/task/v1`` body element received."""
        with self._lock:
            return list(self._map_reports)

    @property
    def logs(self) -> List[Dict[str, Any]]:
        """Every stored job log entry, as received (dropped batches excluded)."""
        with self._lock:
            return list(self._logs)

    @property
    def retry_logs(self) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self._retry_logs)

    @property
    def log_rows(self) -> List[Dict[str, Any]]:
        """The ``sj_job_log_message`` rows the server would write: one per
        ``taskId`` group of a batch, ``message`` a list of name -> value maps
        (null values dropped)."""
        with self._lock:
            return [dict(row) for row in self._log_rows]

    @property
    def dropped_logs(self) -> List[DroppedLogBatch]:
        """Log batches the server would drop entirely, with the reason."""
        with self._lock:
            return list(self._dropped_logs)

    @property
    def requests(self) -> List[RecordedRequest]:
        """Every inbound call as ``(uri, headers, body)``, in arrival order."""
        with self._lock:
            return [RecordedRequest(e.uri, dict(e.headers), e.body) for e in self._exchanges]

    @property
    def exchanges(self) -> List[Exchange]:
        """Every inbound call with the reply given."""
        with self._lock:
            return list(self._exchanges)

    @property
    def outbound(self) -> List[OutboundCall]:
        """Every server -> client call made, in order."""
        with self._lock:
            return list(self._outbound)

    @property
    def dispatch_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_DISPATCH]

    @property
    def stop_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_STOP]

    @property
    def retry_requests(self) -> List[RecordedRequest]:
        """Every call to a retry-module URI (``/batch/report``,
        ``/report/retry/dispatch/result``, ``/report/retry/callback/result``)
        that passed the token check; ``body`` is the parsed body re-encoded."""
        with self._lock:
            return list(self._retry_requests)

    @property
    def retry_reports(self) -> List[Dict[str, Any]]:
        """Every row of every ``/batch/report`` answered ``data=true``, as
        sent (rows de-duplicated by the server included)."""
        with self._lock:
            return [dict(row) for row in self._retry_reports]

    @property
    def retry_scenes(self) -> Dict[str, RetryScene]:
        with self._lock:
            return dict(self._retry_scenes)

    @property
    def retries(self) -> List[EmulatedRetry]:
        """Every retry, in creation order."""
        with self._lock:
            return list(self._retries.values())

    def retry(self, retry_id: int) -> EmulatedRetry:
        """The retry with this id; ``KeyError`` if there is none."""
        with self._lock:
            return self._retries[retry_id]

    def retries_for(self, scene: str) -> List[EmulatedRetry]:
        with self._lock:
            return [r for r in self._retries.values() if r.scene == scene]

    def retry_task(self, task_id: int) -> EmulatedRetryTask:
        with self._lock:
            return self._retry_task_index[task_id]

    @property
    def retry_dispatch_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_RETRY_DISPATCH]

    @property
    def retry_callback_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_RETRY_CALLBACK]

    @property
    def retry_stop_calls(self) -> List[OutboundCall]:
        with self._lock:
            return [c for c in self._outbound if c.uri == enums.URI_RETRY_STOP]

    @property
    def problems(self) -> List[str]:
        """Protocol violations noticed (see the class docstring)."""
        with self._lock:
            return list(self._problems)

    @property
    def batches(self) -> List[EmulatedBatch]:
        with self._lock:
            return list(self._batches.values())

    def batch(self, batch_id: int) -> EmulatedBatch:
        with self._lock:
            return self._batches[batch_id]

    def task(self, task_id: int) -> EmulatedTask:
        with self._lock:
            return self._task_index[task_id]

    def wait_for_clients(self, n: int = 1, timeout: float = 10.0) -> List[ClientNode]:
        """Wait until at least ``n`` nodes are live; return the live nodes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                live = [node for node in self._nodes.values() if self._is_live(node)]
                if len(live) >= n:
                    return live
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    known = ", ".join(f"{x.host_id}@{x.address} registered={x.registered} alive={x.alive}"
                                      for x in self._nodes.values()) or "none"
                    raise TimeoutError(f"{len(live)} of {n} client node(s) live after {timeout:g}s "
                                       f"({len(self._beats)} beats received; known nodes: {known})")
                if self._stopping.is_set():
                    raise RuntimeError("emulator stopped while waiting for clients")
                self._cond.wait(min(remaining, 0.25))

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0,
                   message: str = "condition") -> None:
        """Wait until ``predicate()`` is true (re-checked on every state change
        and every 50 ms); ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{message} not met after {timeout:g}s")
                self._cond.wait(min(remaining, 0.05))

    def expire_node(self, host_id: str) -> None:
        """Forget a node as if its beats had stopped ``node_expiry`` ago."""
        with self._cond:
            for key, node in list(self._nodes.items()):
                if node.host_id == host_id:
                    del self._nodes[key]
            self._cond.notify_all()
