"""Inspection of the server emulator: what it received, sent and keeps, and the waits tests use.

``_Queries`` gets the state and the transport (node liveness).  Its views
take a snapshot under the lock; its waits are bounded.  ``ServerEmulator``
is built on it (these views are most of its public surface and need nothing
but the state), and delegates everything else to its parts.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Set

from snailjob.testing._state import _State
from snailjob.testing._transport import _Transport
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


class _Queries:
    """Read-only views (snapshots taken under the lock) and bounded waits."""

    def __init__(self, state: _State, transport: _Transport) -> None:
        self._state = state
        self._transport = transport

    # ------------------------------------------------------------------
    # inspection
    # ------------------------------------------------------------------

    @property
    def nodes(self) -> List[ClientNode]:
        """Registered nodes that have not expired (whatever their ``alive`` flag)."""
        with self._state.lock:
            return [n for n in self._state.nodes.values() if n.registered and not self._transport.expired(n)]

    @property
    def live_nodes(self) -> List[ClientNode]:
        """Nodes the emulator would dispatch to (registered, not expired, alive)."""
        with self._state.lock:
            return [n for n in self._state.nodes.values() if self._transport.is_live(n)]

    @property
    def beats(self) -> List[RecordedBeat]:
        """Every accepted ``/beat`` (``len(emu.beats)`` is the count)."""
        with self._state.lock:
            return list(self._state.beats)

    @property
    def registered_executors(self) -> Set[str]:
        with self._state.lock:
            return set(self._state.executors)

    @property
    def results(self) -> List[Dict[str, Any]]:
        """Every ``/report/dispatch/result`` body element received (after the
        token check), in order, including rejected ones."""
        with self._state.lock:
            return list(self._state.results)

    @property
    def map_reports(self) -> List[Dict[str, Any]]:
        """Every ``/batch/report/job/map/task/v1`` body element received."""
        with self._state.lock:
            return list(self._state.map_reports)

    @property
    def logs(self) -> List[Dict[str, Any]]:
        """Every stored job log entry, as received (dropped batches excluded)."""
        with self._state.lock:
            return list(self._state.logs)

    @property
    def retry_logs(self) -> List[Dict[str, Any]]:
        with self._state.lock:
            return list(self._state.retry_logs)

    @property
    def log_rows(self) -> List[Dict[str, Any]]:
        """The ``sj_job_log_message`` rows the server would write: one per
        ``taskId`` group of a batch, ``message`` a list of name -> value maps
        (null values dropped)."""
        with self._state.lock:
            return [dict(row) for row in self._state.log_rows]

    @property
    def dropped_logs(self) -> List[DroppedLogBatch]:
        """Log batches the server would drop entirely, with the reason."""
        with self._state.lock:
            return list(self._state.dropped_logs)

    @property
    def requests(self) -> List[RecordedRequest]:
        """Every inbound call as ``(uri, headers, body)``, in arrival order."""
        with self._state.lock:
            return [RecordedRequest(e.uri, dict(e.headers), e.body) for e in self._state.exchanges]

    @property
    def exchanges(self) -> List[Exchange]:
        """Every inbound call with the reply given."""
        with self._state.lock:
            return list(self._state.exchanges)

    @property
    def outbound(self) -> List[OutboundCall]:
        """Every server -> client call made, in order."""
        with self._state.lock:
            return list(self._state.outbound)

    @property
    def dispatch_calls(self) -> List[OutboundCall]:
        with self._state.lock:
            return [c for c in self._state.outbound if c.uri == enums.URI_DISPATCH]

    @property
    def stop_calls(self) -> List[OutboundCall]:
        with self._state.lock:
            return [c for c in self._state.outbound if c.uri == enums.URI_STOP]

    @property
    def retry_requests(self) -> List[RecordedRequest]:
        """Every call to a retry-module URI (``/batch/report``,
        ``/report/retry/dispatch/result``, ``/report/retry/callback/result``)
        that passed the token check; ``body`` is the parsed body re-encoded."""
        with self._state.lock:
            return list(self._state.retry_requests)

    @property
    def retry_reports(self) -> List[Dict[str, Any]]:
        """Every row of every ``/batch/report`` answered ``data=true``, as
        sent (rows de-duplicated by the server included)."""
        with self._state.lock:
            return [dict(row) for row in self._state.retry_reports]

    @property
    def retry_scenes(self) -> Dict[str, RetryScene]:
        with self._state.lock:
            return dict(self._state.retry_scenes)

    @property
    def retries(self) -> List[EmulatedRetry]:
        """Every retry, in creation order."""
        with self._state.lock:
            return list(self._state.retries.values())

    def retry(self, retry_id: int) -> EmulatedRetry:
        """The retry with this id; ``KeyError`` if there is none."""
        with self._state.lock:
            return self._state.retries[retry_id]

    def retries_for(self, scene: str) -> List[EmulatedRetry]:
        with self._state.lock:
            return [r for r in self._state.retries.values() if r.scene == scene]

    def retry_task(self, task_id: int) -> EmulatedRetryTask:
        with self._state.lock:
            return self._state.retry_task_index[task_id]

    @property
    def retry_dispatch_calls(self) -> List[OutboundCall]:
        with self._state.lock:
            return [c for c in self._state.outbound if c.uri == enums.URI_RETRY_DISPATCH]

    @property
    def retry_callback_calls(self) -> List[OutboundCall]:
        with self._state.lock:
            return [c for c in self._state.outbound if c.uri == enums.URI_RETRY_CALLBACK]

    @property
    def retry_stop_calls(self) -> List[OutboundCall]:
        with self._state.lock:
            return [c for c in self._state.outbound if c.uri == enums.URI_RETRY_STOP]

    @property
    def problems(self) -> List[str]:
        """Protocol violations noticed (see the class docstring)."""
        with self._state.lock:
            return list(self._state.problems)

    @property
    def batches(self) -> List[EmulatedBatch]:
        with self._state.lock:
            return list(self._state.batches.values())

    def batch(self, batch_id: int) -> EmulatedBatch:
        with self._state.lock:
            return self._state.batches[batch_id]

    def task(self, task_id: int) -> EmulatedTask:
        with self._state.lock:
            return self._state.task_index[task_id]

    def wait_for_clients(self, n: int = 1, timeout: float = 10.0) -> List[ClientNode]:
        """Wait until at least ``n`` nodes are live; return the live nodes."""
        st = self._state

        def live() -> List[ClientNode]:
            return [node for node in st.nodes.values() if self._transport.is_live(node)]

        def timed_out() -> str:
            known = ", ".join(f"{x.host_id}@{x.address} registered={x.registered} alive={x.alive}"
                              for x in st.nodes.values()) or "none"
            return (f"{len(live())} of {n} client node(s) live after {timeout:g}s "
                    f"({len(st.beats)} beats received; known nodes: {known})")

        return st.guard.wait(lambda: len(live()) >= n, live, timeout, timed_out,
                             stopped="emulator stopped while waiting for clients")

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0,
                   message: str = "condition") -> None:
        """Wait until ``predicate()`` is true (re-checked on every state change
        and every 50 ms); ``TimeoutError`` otherwise."""
        self._state.guard.wait(predicate, lambda: None, timeout, lambda: f"{message} not met after {timeout:g}s",
                               poll=0.05)

    def expire_node(self, host_id: str) -> None:
        """Forget a node as if its beats had stopped ``node_expiry`` ago."""
        with self._state.cond:
            for key, node in list(self._state.nodes.items()):
                if node.host_id == host_id:
                    del self._state.nodes[key]
            self._state.cond.notify_all()
