"""An in-process fake of the SnailJob server's client-facing gRPC protocol.

``ServerEmulator`` is a real gRPC server on ``127.0.0.1`` that answers the
URIs a job client calls (``/beat``, ``/register/job/executors``,
``/report/dispatch/result``, ``/batch/report/job/map/task/v1``,
``/batch/server/report/log``, ``/sync/version``) the way the Java server does,
and that plays the server's side of a job: it builds the tasks of a batch,
dispatches them to the registered nodes with ``/job/dispatch/v1``, applies
the reported results, creates map, reduce and merge tasks, retries failed
tasks, times batches out, sends ``/job/stop/v1`` and runs linear workflows.
It also plays the server's side of the distributed retry module: it takes
``/batch/report``, dispatches retries with ``/retry/dispatch/v1``, applies
``/report/retry/dispatch/result``, sends ``/retry/callback/v1`` and applies
``/report/retry/callback/result``, and makes the console's calls
(``/retry/stop/v1``, ``/retry/generate/idempotent-id/v1``,
``/retry/deserialize/args/v1``).

The rules follow ``protocol.md`` (sections 2-6 and the checklist of section
9).  Deliberate simplifications are listed in the class docstring.

Threading: inbound calls are answered on the gRPC server's threads; every
server -> client call runs on the emulator's own worker pool, never inside
an inbound handler, and no lock is held during an RPC.  Every wait is
bounded.

The implementation is split by concern across the ``snailjob.testing``
package (records, support, batches, retries and one mixin module per part of
the server); this module holds the ``ServerEmulator`` facade and re-exports
every name it always had.
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
import uuid
from concurrent import futures
from typing import Any, Dict, List, Optional, Set, Tuple

import grpc

from snailjob.testing._console import _ConsoleMixin
from snailjob.testing._endpoint import _EndpointMixin
from snailjob.testing._logs import _LogsMixin
from snailjob.testing._queries import _QueriesMixin
from snailjob.testing._workflows import _WorkflowsMixin
from snailjob.testing.batches import EmulatedBatch, EmulatedWorkflow, _Job
from snailjob.testing.records import (
    DEFAULT_GROUP,
    DEFAULT_NAMESPACE,
    DEFAULT_SERVER_TOKEN,
    DEFAULT_TOKEN,
    ClientNode,
    DispatchReply,
    DroppedLogBatch,
    EmulatedTask,
    Exchange,
    OutboundCall,
    RecordedBeat,
    RecordedRequest,
)
from snailjob.testing.records import REASON_MANUAL_STOP as REASON_MANUAL_STOP
from snailjob.testing.records import REASON_NONE as REASON_NONE
from snailjob.testing.records import REASON_NOT_CLIENT as REASON_NOT_CLIENT
from snailjob.testing.records import REASON_TIMEOUT as REASON_TIMEOUT
from snailjob.testing.records import RETRY_FINISH as RETRY_FINISH
from snailjob.testing.records import RETRY_MAX_COUNT as RETRY_MAX_COUNT
from snailjob.testing.records import RETRY_REASON_CLIENT_STOP as RETRY_REASON_CLIENT_STOP
from snailjob.testing.records import RETRY_REASON_MANUAL_STOP as RETRY_REASON_MANUAL_STOP
from snailjob.testing.records import RETRY_REASON_NONE as RETRY_REASON_NONE
from snailjob.testing.records import RETRY_REASON_NOT_CLIENT as RETRY_REASON_NOT_CLIENT
from snailjob.testing.records import RETRY_REASON_RETRY_FAIL as RETRY_REASON_RETRY_FAIL
from snailjob.testing.records import RETRY_REASON_SCENE_CLOSED as RETRY_REASON_SCENE_CLOSED
from snailjob.testing.records import RETRY_REASON_TIMEOUT as RETRY_REASON_TIMEOUT
from snailjob.testing.records import RETRY_RUNNING as RETRY_RUNNING
from snailjob.testing.records import RETRY_SUSPEND as RETRY_SUSPEND
from snailjob.testing.records import SERVER_GROUP as SERVER_GROUP
from snailjob.testing.retries import EmulatedRetry, EmulatedRetryTask, RetryScene
from snailjob.testing.support import _MAX_MESSAGE, Handler, _Scheduler, logger
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2

__all__ = [
    "ClientNode",
    "DEFAULT_GROUP",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SERVER_TOKEN",
    "DEFAULT_TOKEN",
    "DispatchReply",
    "DroppedLogBatch",
    "EmulatedBatch",
    "EmulatedRetry",
    "EmulatedRetryTask",
    "EmulatedTask",
    "EmulatedWorkflow",
    "Exchange",
    "OutboundCall",
    "RecordedBeat",
    "RecordedRequest",
    "RetryScene",
    "ServerEmulator",
]


class ServerEmulator(_ConsoleMixin, _WorkflowsMixin, _EndpointMixin, _QueriesMixin, _LogsMixin):
    """A fake SnailJob server for tests, speaking the real wire protocol.

    Usage::

        with ServerEmulator() as emu:
            start_client(**emu.client_env())
            emu.wait_for_clients(1)
            batch = emu.trigger("myExecutor", args_str="hello")
            assert batch.wait(10) == 3
            assert batch.tasks[0].result == "..."

    Faithful to the server (protocol.md): body parsing and error messages,
    token check on every URI, reqId echo, JSON ``data``, the reply of each
    URI, the retry rules of ``/report/dispatch/result``, the dispatch
    request and its headers, the success condition of a dispatch reply,
    RPC-level dispatch retries with failover, job-level retries, the task
    generators (argsStr shapes, task names, sharding indices, broadcast per
    address, ROOT_MAP, map children, REDUCE and MERGE_REDUCE), batch
    completion, stop after completion of non-CLUSTER batches, timeouts at
    ``executorTimeout + 0.5 s``, node expiry, labels routing, workflow
    context merge, and the log batch rules.

    Simplifications (documented choices):

    * Node liveness is computed on demand: a node is live while its last beat
      is at most ``node_expiry`` seconds old (the server also checks only every
      10 s), it is registered (``register_delay`` after its first beat) and no
      server -> client call to it has failed since its last beat.
    * CLUSTER tasks and map/reduce children go to live nodes round-robin;
      job-level retries of SHARDING and MAP tasks pick a random live node
      (``seed`` makes that deterministic).
    * Like the real servers (``JobExecutorResultActor``, 1.4 to 2.0), only
      the result of a task without children re-evaluates completion
      (``map_race_quirk=True``, the default): when every child of a map task
      has reported before the parent, the batch stays RUNNING until another
      leaf reports (the client's sentinel repeat, see ``mr_do_map``).
      ``map_race_quirk=False`` lets a parent's report complete the batch too.
    * Once a batch has completed its status never changes (the server's update
      applies only to unfinished batches) until ``retry_batch()``; later
      reports still overwrite the task rows.
    * Only ``group`` / ``namespace`` (and ``DEFAULT_SERVER`` with
      ``server_token``) pass the token check.
    * ``strict_primitives`` (default true) rejects an explicit JSON null for
      ``retry``/``executeResult.status`` (Java primitives) like the 2.x server;
      pass false to emulate 1.10.x.

    Retry module (vsj2.0.2 ``snail-job-server-retry-task``): scenes
    (``add_retry_scene``; ``init_scene`` mirrors the group's ``initScene``),
    ``/batch/report`` with the server's checks, replies and de-duplication
    (same idempotent id in one report, or a RUNNING retry of the scene),
    ``/retry/dispatch/v1`` with the ``[DispatchRetryRequest, SnailJobHeaders]``
    body and the ``snail-job`` header, the success condition of its reply,
    ``/report/retry/dispatch/result`` and ``/report/retry/callback/result``
    (their replies and the success / stop / failure handlers: retry count,
    MAX_COUNT, SUSPEND, the NOT_COMPLETE guard of a failure), the timeout
    check at ``executorTimeout + 0.5 s``, callbacks (``/retry/callback/v1``
    with the parent's ``retryStatus`` and the callback row's id, up to
    ``cb_max_count``), and the console operations (``add_retry``,
    ``trigger_retry``, ``stop_retry``, ``update_retry_status``,
    ``generate_idempotent_id``, ``deserialize_args``).  Retry simplifications:

    * Backoff is fixed: the next attempt starts ``interval`` seconds after the
      previous one ended (the server re-triggers every interval from the last
      trigger time, with a 10 s scan period, and applies the scene's block
      strategy to a still-running task; here the scan never meets one).  An
      automatically created scene uses ``max_retry_count=21``,
      ``executor_timeout=5`` and ``cb_max_count=16`` like the server, but the
      emulator's default interval instead of the delay-level table.
    * Nodes are chosen round-robin among the group's live nodes; scene labels
      and route strategies are not modelled.
    * A dispatch or callback whose call fails or is refused fails the task
      without counting an attempt (the server's ``incrementRetryCount`` is
      false there), so a client that always refuses is re-dispatched forever,
      as on the server, unless the next count reaches the limit.
    * Database errors are reported with abbreviated messages; the insert
      limits are those of the MySQL schema in strict mode (a too long value
      is refused, with a ``problems`` entry).  A report colliding with a
      SUSPEND retry's unique key is refused at once (the server first retries
      the insert 5 times, 1 s apart).
    * A result whose ``retryId``, ``sceneName``, ``groupName`` or
      ``namespaceId`` does not match the task is ignored with a ``problems``
      entry (the server looks the retry and the scene up by these fields and
      fails silently).  ``result`` is kept on the task (the server drops it).
    * The stop defects of the real servers are reproduced by default
      (``retry_stop_quirk=True``; all seen on 1.4.0, the first two also on
      1.10.0 and 2.0.2):
      ``RetryStopHandler`` throws on a client STOP (taskStatus 5 on the
      dispatch-result URI) so nothing changes and the task later times out;
      ``RetryTaskStopHandler`` never sends ``/retry/stop/v1`` (its message
      does not match the stop actor), neither on a timeout nor from the
      console; and the console's stop button changes nothing (no task id is
      set).  A timed-out attempt is counted as in 1.10.0 and 2.0.2 (1.4.0 does not
      count it, so there a timed-out retry is replayed forever).  With
      ``retry_stop_quirk=False`` the intended behaviour is emulated: a
      client STOP suspends the retry (task STOP, count + 1), a timeout and
      ``stop_retry`` send ``/retry/stop/v1`` (with the field ``scene``), and
      ``stop_retry`` fails the running task like a manual stop.

    ``problems`` lists protocol violations the emulator noticed that the real
    server would not report to the client (bad labels, missing
    ``time_stamp`` in a log entry, results for unknown tasks, endless manual
    retry loops, retry results it ignores or refuses with ``data=false``,
    duplicate retry results, dropped RETRY log batches, over-long retry
    fields...).  A well-behaved client leaves it empty.
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, group: str = DEFAULT_GROUP,
                 token: str = DEFAULT_TOKEN, port: int = 0, node_expiry: float = 40.0,
                 register_delay: float = 0.0, server_token: str = DEFAULT_SERVER_TOKEN,
                 host_id: Optional[str] = None, strict_primitives: bool = True,
                 map_race_quirk: bool = True, max_workers: int = 32,
                 seed: Optional[int] = None, map_report_delay: float = 0.0) -> None:
        """Configure (but do not start) an emulator.

        ``port=0`` picks a free port on 127.0.0.1 at ``start()``.
        """
        if not group.strip():
            raise ValueError("group must not be blank")
        if not token.strip():
            raise ValueError("token must not be blank")
        self.namespace = namespace
        self.group = group
        self.token = token
        self.server_token = server_token
        self.node_expiry = float(node_expiry)
        self.register_delay = float(register_delay)
        self.strict_primitives = strict_primitives
        self.map_race_quirk = map_race_quirk
        self.map_report_delay = float(map_report_delay)
        """Seconds a map report takes before it is processed and answered (the
        real server creates every sub-task before answering: seconds per 200)."""
        self.host = "127.0.0.1"
        self._requested_port = int(port)
        self.port = int(port)
        self.server_host_id = host_id or f"emu-{uuid.uuid4().hex[:12]}"
        self.config: Dict[str, Any] = {"version": 1, "sceneList": [], "notifyList": []}
        """The ``ConfigRequest`` answered to ``/sync/version``."""

        self._max_workers = max(4, int(max_workers))
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._started = False
        self._stopped = False
        self._server: Optional[grpc.Server] = None
        self._pool: Optional[futures.ThreadPoolExecutor] = None
        self._scheduler: Optional[_Scheduler] = None
        self._channels: Dict[str, Tuple[grpc.Channel, Any]] = {}

        self._ids = itertools.count(1)
        self._task_ids = itertools.count(10_001)
        self._req_ids = itertools.count(1)
        self._nodes: Dict[Tuple[str, str, str], ClientNode] = {}
        self._jobs: Dict[int, _Job] = {}
        self._batches: Dict[int, EmulatedBatch] = {}
        self._task_index: Dict[int, EmulatedTask] = {}
        self._workflows: Dict[int, EmulatedWorkflow] = {}
        self._manual_loops: Dict[int, int] = {}

        self._exchanges: List[Exchange] = []
        self._outbound: List[OutboundCall] = []
        self._beats: List[RecordedBeat] = []
        self._executors: Set[str] = set()
        self._results: List[Dict[str, Any]] = []
        self._map_reports: List[Dict[str, Any]] = []
        self._logs: List[Dict[str, Any]] = []
        self._retry_logs: List[Dict[str, Any]] = []
        self._log_rows: List[Dict[str, Any]] = []
        self._dropped_logs: List[DroppedLogBatch] = []
        self._retry_requests: List[RecordedRequest] = []
        self._problems: List[str] = []
        self._tls = threading.local()

        self.init_scene = False
        """The group's ``initScene``: create an unknown scene (server defaults)
        when a report names it, instead of refusing the report."""
        self.retry_stop_quirk = True
        """Reproduce the stop defects of the real servers (default; see the class docstring)."""
        self._retry_scenes: Dict[str, RetryScene] = {}
        self._retries: Dict[int, EmulatedRetry] = {}
        self._retries_by_key: Dict[Tuple[str, str], List[EmulatedRetry]] = {}  # (scene, idempotent id)
        self._retry_task_index: Dict[int, EmulatedRetryTask] = {}
        self._retry_reports: List[Dict[str, Any]] = []
        self._retry_rr = 0

        self._handlers: Dict[str, Handler] = {
            enums.URI_BEAT: self._on_beat,
            enums.URI_REGISTER_EXECUTORS: self._on_register_executors,
            enums.URI_REPORT_RESULT: self._on_report_result,
            enums.URI_REPORT_MAP: self._on_map_report,
            enums.URI_REPORT_LOG: self._on_logs,
            enums.URI_SYNC_VERSION: self._on_sync_version,
            enums.URI_RETRY_REPORT: self._on_retry_report,
            enums.URI_RETRY_RESULT: functools.partial(self._on_retry_result, enums.URI_RETRY_RESULT),
            enums.URI_RETRY_CALLBACK_RESULT: functools.partial(self._on_retry_result,
                                                               enums.URI_RETRY_CALLBACK_RESULT),
        }

    # ------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------

    def start(self) -> ServerEmulator:
        """Bind 127.0.0.1 (a free port when ``port=0``) and start serving."""
        with self._lock:
            if self._started:
                raise RuntimeError("ServerEmulator.start() called twice (create a new emulator)")
            self._started = True
        self._pool = futures.ThreadPoolExecutor(max_workers=max(16, self._max_workers),
                                                thread_name_prefix="snailjob-emu-call")
        self._scheduler = _Scheduler(self._submit, name="snailjob-emu-timer")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="snailjob-emu-rpc"),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE),
                     ("grpc.max_send_message_length", _MAX_MESSAGE),
                     ("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._handle,
            request_deserializer=pb2.GrpcSnailJobRequest.FromString,
            response_serializer=pb2.GrpcResult.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": handler}),))
        bound = server.add_insecure_port(f"{self.host}:{self._requested_port}")
        if not bound:
            raise RuntimeError(f"could not bind {self.host}:{self._requested_port}")
        self.port = bound
        server.start()
        self._server = server
        self._scheduler.start()
        logger.debug("snailjob emulator listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving, cancel pending timers and outbound calls.  Idempotent."""
        with self._cond:
            if self._stopped or not self._started:
                return
            self._stopped = True
            self._stopping.set()
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace=0).wait(timeout=3.0)
        if self._scheduler is not None:
            self._scheduler.close()
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
        for channel, _ in channels:
            try:
                channel.close()
            except Exception:  # pragma: no cover - best effort
                logger.debug("closing a client channel failed", exc_info=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        logger.debug("snailjob emulator on port %d stopped", self.port)

    def __enter__(self) -> ServerEmulator:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` of the emulator's gRPC server."""
        return f"{self.host}:{self.port}"

    def client_env(self) -> Dict[str, str]:
        """Environment variables pointing a client at this emulator."""
        return {
            "SNAIL_SERVER_HOST": self.host,
            "SNAIL_SERVER_PORT": str(self.port),
            "SNAIL_NAMESPACE": self.namespace,
            "SNAIL_GROUP_NAME": self.group,
            "SNAIL_TOKEN": self.token,
        }
