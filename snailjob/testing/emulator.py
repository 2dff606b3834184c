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

``ServerEmulator`` is a shell: it creates the shared ``_State`` and the
parts of the server (one module each, every part given the state and the
parts it calls), offers the views of ``_Queries`` and delegates every other
public method to the part that does the work.  This module re-exports every
name it always had.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from snailjob.testing._console import _Console
from snailjob.testing._endpoint import _Endpoint
from snailjob.testing._job_calls import _JobCalls
from snailjob.testing._job_reports import _JobReports
from snailjob.testing._jobs import _Jobs
from snailjob.testing._logs import _Logs
from snailjob.testing._queries import _Queries
from snailjob.testing._retry_reports import _RetryReports
from snailjob.testing._retry_server import _RetryServer
from snailjob.testing._state import _Forward, _State
from snailjob.testing._support import _CLUSTER, logger
from snailjob.testing._transport import _Transport
from snailjob.testing._workflows import _Workflows
from snailjob.testing.batches import EmulatedBatch, EmulatedWorkflow
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
from snailjob.wire.enums import URI_SYNC_VERSION

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


class ServerEmulator(_Queries):
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

    namespace: _Forward[str] = _Forward()
    group: _Forward[str] = _Forward()
    token: _Forward[str] = _Forward()
    server_token: _Forward[str] = _Forward()
    node_expiry: _Forward[float] = _Forward()
    register_delay: _Forward[float] = _Forward()
    strict_primitives: _Forward[bool] = _Forward()
    map_race_quirk: _Forward[bool] = _Forward()
    map_report_delay: _Forward[float] = _Forward()
    """Seconds a map report takes before it is processed and answered (the
    real server creates every sub-task before answering: seconds per 200)."""
    host: _Forward[str] = _Forward()
    port: _Forward[int] = _Forward()
    server_host_id: _Forward[str] = _Forward()
    config: _Forward[Dict[str, Any]] = _Forward()
    """The ``ConfigRequest`` answered to ``/sync/version`` (a node pulls it;
    ``push_config()`` sends it as the server pushes it)."""
    init_scene: _Forward[bool] = _Forward()
    """The group's ``initScene``: create an unknown scene (server defaults)
    when a report names it, instead of refusing the report."""
    retry_stop_quirk: _Forward[bool] = _Forward()
    """Reproduce the stop defects of the real servers (default; see the class docstring)."""

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
        state = _State(namespace=namespace, group=group, token=token, server_token=server_token,
                       node_expiry=float(node_expiry), register_delay=float(register_delay),
                       strict_primitives=strict_primitives, map_race_quirk=map_race_quirk,
                       map_report_delay=float(map_report_delay), requested_port=int(port), port=int(port),
                       server_host_id=host_id or f"emu-{uuid.uuid4().hex[:12]}",
                       max_workers=max(4, int(max_workers)), random=random.Random(seed))
        transport = _Transport(state)
        super().__init__(state, transport)
        jobs = _Jobs(state, transport, _JobCalls(state, transport))
        retry_server = _RetryServer(state, transport)
        retry_reports = _RetryReports(state, retry_server)
        self._jobs = jobs
        self._workflows = _Workflows(state, jobs)
        self._retry_server = retry_server
        self._console = _Console(state, transport, retry_server, retry_reports)
        self._endpoint = _Endpoint(state, transport, _JobReports(state, jobs), _Logs(state), retry_reports)

    # ------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------

    def start(self) -> ServerEmulator:
        """Bind 127.0.0.1 (a free port when ``port=0``) and start serving."""
        st = self._state
        with st.lock:
            if st.started:
                raise RuntimeError("ServerEmulator.start() called twice (create a new emulator)")
            st.started = True
        self._transport.open()
        st.port = self._endpoint.serve()
        logger.debug("snailjob emulator listening on %s:%d", st.host, st.port)
        return self

    def stop(self) -> None:
        """Stop serving, cancel pending timers and outbound calls.  Idempotent."""
        st = self._state
        with st.cond:
            if st.stopped or not st.started:
                return
            st.stopped = True
            st.stopping.set()
            st.cond.notify_all()
        self._endpoint.close()
        self._transport.close()
        logger.debug("snailjob emulator on port %d stopped", st.port)

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

    # ------------------------------------------------------------------
    # driving jobs, workflows and retries; raw calls
    # ------------------------------------------------------------------

    def trigger(self, executor: str, task_type: int = _CLUSTER, args_str: str = "",
                parallel_num: int = 1, executor_timeout: int = 60, max_retry_times: int = 0,
                retry_interval: float = 0.0, shard_num: int = 2,
                wf_context: Optional[Dict[str, Any]] = None, executor_type: int = 2,
                labels: Optional[Dict[str, str]] = None, node: Optional[str] = None) -> EmulatedBatch:
        """Run a job once (a new job config per call) and return its batch.

        ``task_type``: 1 CLUSTER, 2 BROADCAST, 3 SHARDING (``args_str`` a
        JSON array of strings), 4 MAP, 5 MAP_REDUCE (``args_str`` is the
        user's parameters; the job's stored args become
        ``{"shardNum": shard_num, "argsStr": args_str}``).  ``wf_context`` is
        sent as ``wfContext`` (outside a workflow).  ``node`` (a host id)
        pins a CLUSTER task to that node.  ``retry_interval`` may be
        fractional here (the server uses whole seconds).
        """
        return self._jobs.trigger(executor, task_type, args_str, parallel_num, executor_timeout, max_retry_times,
                                  retry_interval, shard_num, wf_context, executor_type, labels, node)

    def stop_batch(self, batch_id: int) -> None:
        """Manual stop: send ``/job/stop/v1`` to the batch's nodes, mark every
        non-SUCCESS task STOP and the batch STOP.  No-op on a finished batch."""
        self._jobs.stop_batch(batch_id)

    def retry_batch(self, batch_id: int) -> None:
        """Manual retry from the console: every task that is not RUNNING or
        SUCCESS is re-dispatched at once with ``retry=true``,
        ``retryStatus=true``, ``retryScene=2``; the batch runs again with a
        new timeout."""
        self._jobs.retry_batch(batch_id)

    def trigger_workflow(self, nodes: Sequence[Mapping[str, Any]],
                         wf_context: Optional[Dict[str, Any]] = None) -> EmulatedWorkflow:
        """Run a linear workflow: each element is a dict of ``trigger()``
        arguments (``executor`` required).  Each node's tasks are dispatched
        with ``workflowTaskBatchId``, ``workflowNodeId`` and the merged
        ``wfContext``."""
        return self._workflows.trigger_workflow(nodes, wf_context)

    def add_retry_scene(self, name: str, max_retry_count: int = 3, interval: float = 0.2,
                        executor_timeout: int = 5, callback: bool = False, cb_max_count: int = 3,
                        cb_interval: float = 0.2, enabled: bool = True) -> RetryScene:
        """Create a retry scene of the emulator's group, or replace the
        settings of an existing one (its retries are kept).

        ``interval`` / ``cb_interval``: seconds between the end of an attempt
        and the next one (a new retry is first dispatched ``interval`` after
        it was reported).  ``executor_timeout``: whole seconds, sent as
        ``executorTimeout`` and ``ddl``; an attempt without a result after
        ``executor_timeout + 0.5`` s fails.  ``callback``: send
        ``/retry/callback/v1`` once the retry reaches FINISH or MAX_COUNT, up
        to ``cb_max_count`` attempts.  A disabled scene accepts reports but
        nothing of it is dispatched until ``set_retry_scene_enabled``.
        """
        return self._console.add_retry_scene(name, max_retry_count, interval, executor_timeout, callback,
                                             cb_max_count, cb_interval, enabled)

    def set_retry_scene_enabled(self, name: str, enabled: bool) -> None:
        """Open or close a scene (the console's scene switch).  Retries that
        came due while it was closed are dispatched at once when it opens."""
        self._console.set_retry_scene_enabled(name, enabled)

    def add_retry(self, scene: str, executor_name: str, args_str: str, idempotent_id: Optional[str] = None,
                  biz_no: str = "", serializer_name: str = "jackson", ext_attrs: str = "",
                  status: int = RETRY_RUNNING) -> Optional[EmulatedRetry]:
        """Create a retry like the console's "add retry" (``RetryWebServiceImpl.saveRetryTask``).

        Without ``idempotent_id`` the client is asked first
        (``generate_idempotent_id``), as the console's form does.  Returns the
        new retry, or ``None`` when a RUNNING retry of the scene already has
        this idempotent id (the server then inserts nothing and still reports
        success).  Raises ``RuntimeError`` where the console shows an error.
        """
        return self._console.add_retry(scene, executor_name, args_str, idempotent_id, biz_no, serializer_name,
                                       ext_attrs, status)

    def generate_idempotent_id(self, scene: str, executor_name: str, args_str: str,
                               serializer_name: str = "jackson") -> str:
        """Ask a live client for the idempotent id of these arguments
        (``/retry/generate/idempotent-id/v1``, as the console's "generate"
        button does) and return its answer.  ``RuntimeError`` with the
        server's message when the scene is unknown, no client is live, the
        call fails or the client answers ``status`` 0 or a non-string."""
        return self._console.generate_idempotent_id(scene, executor_name, args_str, serializer_name)

    def deserialize_args(self, scene: str, executor_name: str, args_str: str,
                         serializer_name: str = "jackson") -> Any:
        """Ask a live client to decode ``args_str`` (``/retry/deserialize/args/v1``,
        as the console's retry detail view does) and return its ``data``
        decoded.  Like the server, fall back to ``args_str`` itself when the
        scene is unknown, no client is live, the call fails, or the client
        answers ``status`` 0 or a null ``data``."""
        return self._console.deserialize_args(scene, executor_name, args_str, serializer_name)

    def trigger_retry(self, retry_id: int) -> EmulatedRetryTask:
        """Run a retry now, like the console's "execute" button
        (``triggerRetry``): whatever its status, without waiting for a running
        task.  Returns the new task (CANCEL when the scene is closed or no
        client is live); the dispatch itself is asynchronous."""
        return self._retry_server.trigger_retry(retry_id)

    def stop_retry(self, retry_id: int, suspend: bool = False) -> Optional[Tuple[int, str, str]]:
        """Stop the retry's running task like the console's stop button
        (``RetryTaskServiceImpl.stopById`` -> ``RetryTaskStopHandler``): the
        task becomes FAIL with reason 7 and counts as a failed attempt
        (MAX_COUNT when the limit is reached, otherwise the retry runs again
        after its interval), and ``/retry/stop/v1`` goes to the node running
        it.  With ``suspend=True`` the retry is first set to SUSPEND (the
        console's status switch), so it does not run again.

        Returns the node's answer ``(status, message, data)`` to the stop
        call, or ``None`` when nothing was sent.  With ``retry_stop_quirk``
        only ``suspend`` has an effect (vsj2.0.2, see the class docstring).
        """
        return self._retry_server.stop_retry(retry_id, suspend)

    def update_retry_status(self, retry_id: int, status: int) -> None:
        """The console's status switch (``updateRetryStatus``): 0 resumes
        (next run after the scene interval), 1 FINISH, 2 MAX_COUNT, 3
        SUSPEND.  No client is called; a running task keeps running."""
        self._console.update_retry_status(retry_id, status)

    def server_headers(self, node: Optional[ClientNode] = None) -> Dict[str, str]:
        """The headers the server sends on a server -> client call."""
        return self._transport.server_headers(node)

    def push_config(self, node: Union[ClientNode, str, None] = None) -> Tuple[int, str, str]:
        """Send ``config`` to a node's ``/sync/version`` (``[ConfigRequest]``),
        as the server does when a notify config's status changes; returns
        ``(status, message, data)`` of the node's answer."""
        return self.call_client(URI_SYNC_VERSION, json.dumps([self.config]), node=node)

    def call_client(self, uri: str, body: str, headers: Optional[Dict[str, str]] = None,
                    node: Union[ClientNode, str, None] = None,
                    timeout: float = 3.0) -> Tuple[int, str, str]:
        """Make a raw server -> client call and return ``(status, message, data)``.

        ``headers`` defaults to the server's headers (with the node group's
        ``SJ-TOKEN``); ``node`` (a ``ClientNode`` or host id) defaults to the
        first live node.  A gRPC failure raises the ``grpc.RpcError``.
        """
        return self._transport.call_client(uri, body, headers, node, timeout)
