"""``Client``: one SnailJob node.  It wires the executor registry to one
outbound gRPC channel, a heartbeat thread, the inbound gRPC server, the
dispatcher and the outbound queues, and owns their lifecycle.

Several clients can run in one process (each with its own settings, port and
executors); ``client_main()`` runs one built from the environment.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, cast

from pydantic import ValidationError

from snailjob._version import __version__
from snailjob.address import AddressChoice, BindChoice, choose_advertised, choose_bind, join_host_port
from snailjob.advice import FIX_SERVER, REFUSED, WARN_AGAIN, LastingProblem, fix_for_kind, kind_of
from snailjob.args import JobArgs, build_args
from snailjob.context import UNASSIGNED_STOP, TaskContext
from snailjob.delivery import LogShipper, OutboxStore, ResultOutbox, RetryReporter, backoff, call_with_retry
from snailjob.dispatcher import Dispatcher, DispatcherFull, Task, Work
from snailjob.errors import MapError, SnailJobError, TransportError
from snailjob.executors import Executor, ExecutorRegistry, UnknownTask, isolation_of
from snailjob.inbound import InboundLimits, InboundServer, RefusalLog, default_token_warning, raise_fd_limit
from snailjob.log import build_entry, install_remote_handler
from snailjob.observe import TaskObserver
from snailjob.retry_registry import RetryRegistry, is_retryable
from snailjob.settings import Settings, new_host_id
from snailjob.transport import FailoverTransport, GrpcTransport, Reply, Transport
from snailjob.wire import enums
from snailjob.wire.codec import BodyError, clean, decode_body, dumps, encode_body, first_object, short, summarize
from snailjob.wire.models import (
    DispatchJobRequest,
    DispatchJobResultRequest,
    JobExecutorRequest,
    MapTaskRequest,
    StopJobRequest,
    WireExecuteResult,
)

if TYPE_CHECKING:  # loaded on first use: worker processes, the retry feature
    from snailjob.processes import ProcessPool
    from snailjob.retry import Retryable
    from snailjob.retry_endpoint import RetryEndpoint
    from snailjob.retry_work import RetryWork
    from snailjob.wire.models import RetryTaskRequest

logger = logging.getLogger(__name__)

SENTINEL_FAILURE_DELAY = 2.0
"""Seconds a map task's sentinel sub-task holds back a failure: time for the
parent's own result to be stored first (see ``mr_do_map``)."""

_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_REGISTER_RETRY = 30  # seconds between registration attempts after a refusal
_INLINE_URIS = frozenset((enums.URI_DISPATCH, enums.URI_STOP, enums.URI_SYNC_VERSION))
"""Server calls whose handlers only parse, validate and queue: they run on
the inbound server's event loop; the others (retry calls run user code) on
its worker threads."""
REFUSAL_LOGS_PER_MINUTE = 1000
"""At most this many refused dispatches a minute get an entry in their task's
log in the console (one per task and attempt); the rest are only counted."""
_REFUSALS_REMEMBERED = 10_000  # (task, attempt) pairs already logged, most recent kept
_RETRY_URIS = frozenset((enums.URI_RETRY_DISPATCH, enums.URI_RETRY_CALLBACK, enums.URI_RETRY_STOP,
                         enums.URI_RETRY_IDEMPOTENT_ID, enums.URI_RETRY_DESERIALIZE))


def live_clients() -> List[Client]:
    """Clients started and not yet stopped in this process."""
    return list(_live_clients)


TransportFactory = Callable[[str, Callable[[], Dict[str, str]]], Transport]


class Client:
    """A SnailJob client node.

    >>> client = Client(Settings.load(), executors=[my_job])
    >>> client.run()            # blocks until SIGINT/SIGTERM

    or, embedded: ``with Client(settings, executors=[...]) as client: ...``.
    ``stop()`` is idempotent and safe to call from any thread.
    """

    warn_again: Tuple[float, float] = WARN_AGAIN
    """While the server refuses the heartbeat or the executor registration, or
    cannot be reached, a warning at the first failure, again after
    ``warn_again[0]`` seconds, then every ``warn_again[1]`` seconds."""

    def __init__(self, settings: Optional[Settings] = None,
                 executors: Union[ExecutorRegistry, Iterable[Union[Executor, Retryable[Any, Any]]]] = (),
                 transport_factory: Optional[TransportFactory] = None,
                 retries: Optional[RetryRegistry] = None) -> None:
        self.settings = settings if settings is not None else Settings.load()
        self.retries = retries if retries is not None else RetryRegistry()
        if isinstance(executors, ExecutorRegistry):
            self.registry = executors
        else:
            self.registry = ExecutorRegistry()
            for executor in executors:
                if is_retryable(executor):
                    self.retries.register(cast("Retryable[Any, Any]", executor))
                else:
                    self.registry.register(executor)
        self._transport_factory = transport_factory or GrpcTransport
        self.host_id = self.settings.snail_host_id or new_host_id()
        self.host_port = self.settings.snail_host_port
        self.host_ip = self.settings.snail_host_ip or ""  # chosen at start() when unset
        self.bind_host = ""  # where the inbound port listens, chosen at start()
        self._lock = threading.Lock()
        self._state = "new"
        self._accepting = False
        self._stopping = threading.Event()
        self._server_up = False
        self._registered = False
        self._registry_version = 0
        self._register_after = 0.0
        self._beat_trouble = LastingProblem(logger, "heartbeat", self.warn_again)
        self._register_trouble = LastingProblem(logger, "executor registration", self.warn_again)
        self._last_problem: Optional[str] = None
        self._transport: Optional[Transport] = None
        self._inbound: Optional[InboundServer] = None
        self._store: Optional[OutboxStore] = None
        self._heartbeat: Optional[threading.Thread] = None
        s = self.settings
        self.dispatcher = Dispatcher(self._on_outcome, interrupt_delay=s.snail_interrupt_delay,
                                     max_running=s.snail_max_running, max_queued=s.snail_max_queued,
                                     max_queued_bytes=s.snail_max_queued_bytes,
                                     refuse_when_full=s.snail_when_busy == "refuse")
        self._outbox: Optional[ResultOutbox] = None
        self._logs: Optional[LogShipper] = None
        self._retry_reports: Optional[RetryReporter] = None
        self._retry_endpoint: Optional[RetryEndpoint] = None  # created by the first retry call
        self._headers: Dict[str, str] = {}
        self._observers: Tuple[TaskObserver, ...] = ()
        self._pool: Optional[ProcessPool] = None
        self._last_beat: Optional[float] = None  # monotonic time of the last accepted heartbeat
        self.heartbeat_failures = 0
        self._refusals = RefusalLog(logger, per="reason")
        self._refusal_entries: OrderedDict[Tuple[int, int], None] = OrderedDict()
        self._refusal_window = (0.0, 0)  # (start of the current minute, entries shipped in it)
        self._refusal_lock = threading.Lock()  # never held during I/O: taken on the inbound loop
        self.refusal_logs_skipped = 0  # refusals over REFUSAL_LOGS_PER_MINUTE, not shipped

    # --- public lifecycle -------------------------------------------------

    def register(self, executor: Union[Executor, Retryable[Any, Any]]) -> None:
        """Add an executor or a ``@retryable`` function; allowed before and
        after ``start()``."""
        if is_retryable(executor):
            self.retries.register(cast("Retryable[Any, Any]", executor))
            return
        self.registry.register(executor)
        with self._lock:
            self._registry_version += 1
            self._registered = False  # re-register on the next beat
            self._register_after = 0.0

    def _process_pool(self) -> ProcessPool:
        """The worker processes of ``isolation="process"`` jobs, started on first use."""
        from snailjob.processes import ProcessPool  # multiprocessing only when a job needs it

        with self._lock:
            if self._pool is None:
                s = self.settings
                self._pool = ProcessPool(
                    s.snail_process_pool_size or os.cpu_count() or 1, max_tasks=s.snail_process_max_tasks,
                    max_rss_mb=s.snail_process_max_rss_mb, memory_limit_mb=s.snail_process_memory_limit_mb,
                    kill_grace=s.snail_process_kill_grace, log_level=s.snail_log_level)
            return self._pool

    def use_event_loop(self, loop: Any) -> None:
        """Run ``async def`` executors on ``loop``, a loop running in another
        thread (a web app's), so that they can use what is bound to it
        (connection pools, HTTP clients).  A coroutine that blocks then
        blocks the app too.  Call it before the first async job runs."""
        self.dispatcher.use_event_loop(loop)

    def add_observer(self, observer: TaskObserver) -> None:
        """Call ``observer`` around every job task from now on (metrics,
        tracing; see ``snailjob.observe``)."""
        with self._lock:
            self._observers = (*self._observers, observer)

    def start(self) -> Client:
        """Bind the inbound server, open the channel and start the heartbeat.

        Returns at once; the client keeps (re)connecting in the background.
        """
        with self._lock:
            if self._state != "new":
                raise SnailJobError(f"client already {self._state}; create a new Client to start again")
            self._state = "starting"
        try:
            bind, choice = self._open()
        except BaseException:
            self._abandon_start()
            raise
        s = self.settings
        assert self._outbox is not None and self._logs is not None and self._retry_reports is not None
        assert self._inbound is not None
        self._outbox.start()
        self._logs.start()
        self._retry_reports.start()
        self.retries.attach(self)
        self._inbound.start()
        self._accepting = True
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="snailjob-heartbeat",
                                           daemon=True)
        self._heartbeat.start()
        with self._lock:
            self._state = "running"
        _live_clients.add(self)
        logger.info("snailjob client %s listening on %s (%s), advertised as %s (%s), server %s, group %s",
                    self.host_id, join_host_port(bind.host, self.host_port), bind.why,
                    join_host_port(self.host_ip, self.host_port), choice.how, s.server_target, s.snail_group_name)
        for warning in (choice.warning, bind.warning, default_token_warning(s.snail_token, bind.host)):
            if warning:
                logger.warning("%s", warning)
        return self

    def _open(self) -> Tuple[BindChoice, AddressChoice]:
        """Everything ``start()`` builds, in an order that fails before the
        port is bound when it can: the outbox file first (its checks and
        lock), then the inbound server, then the channel and the queues."""
        s = self.settings
        install_remote_handler()
        package = logging.getLogger("snailjob")
        if package.level == logging.NOTSET:
            package.setLevel(s.snail_log_level)
        store = OutboxStore(s.snail_outbox_path) if s.snail_outbox_path else None
        self._store = store
        choice = choose_advertised(s.snail_host_ip, s.server_targets)
        self.host_ip = choice.host
        bind = choose_bind(s.snail_bind_host, choice)
        raise_fd_limit(InboundLimits().max_connections + 256)
        self._inbound = InboundServer(bind.host, s.snail_host_port, self._handle_inbound,
                                      workers=s.snail_inbound_workers, token=s.snail_token,
                                      inline=_INLINE_URIS.__contains__)
        self.host_port = self._inbound.port
        self._headers = self._build_headers()
        targets = s.server_targets
        if len(targets) == 1:
            self._transport = self._transport_factory(targets[0], lambda: self._headers)
        else:
            self._transport = FailoverTransport(targets, lambda: self._headers, self._transport_factory)
        self._outbox = ResultOutbox(self._transport, s.snail_rpc_timeout,
                                    max_pending=s.snail_result_queue_max, store=store)
        self._logs = LogShipper(self._transport, s.snail_rpc_timeout, s.snail_log_remote_buffer_size,
                                s.snail_log_remote_interval, s.snail_log_remote_max_buffer)
        self._retry_reports = RetryReporter(self._transport, s.snail_rpc_timeout, batch_size=50,
                                            interval=s.snail_retry_report_interval,
                                            max_buffer=s.snail_retry_report_max_buffer, store=store)
        self.bind_host = bind.host
        return bind, choice

    def _abandon_start(self) -> None:
        """Undo a ``start()`` that failed: nothing is left listening or open,
        and the client can be started again."""
        for closer in (self._inbound.stop if self._inbound is not None else None,
                       self._transport.close if self._transport is not None else None,
                       getattr(self._store, "close", None)):
            if closer is not None:
                try:
                    closer()
                except Exception as exc:
                    logger.debug("while undoing a failed start: %r", exc)
        self._inbound = self._transport = self._store = None
        self._outbox = self._logs = self._retry_reports = None
        with self._lock:
            self._state = "new"

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop the node: refuse new dispatches, wait up to ``grace`` seconds
        (default ``SNAIL_SHUTDOWN_GRACE``) for running tasks, interrupt the
        rest, deliver pending results and logs, then close the channel."""
        with self._lock:
            if self._state != "running":
                if self._state == "new":
                    self._state = "stopped"
                return
            self._state = "stopping"
        grace = self.settings.snail_shutdown_grace if grace is None else grace
        self._accepting = False
        try:
            if not self.dispatcher.wait_idle(grace):
                logger.warning("tasks still running after %.1fs; interrupting them", grace)
                self.dispatcher.stop_all("shutdown")
                self.dispatcher.wait_idle(2.0)
            self._stopping.set()
            self.retries.detach(self)
            if self._retry_reports is not None:
                self._retry_reports.close(timeout=max(2.0, self.settings.snail_rpc_timeout))
            if self._outbox is not None:
                self._outbox.close(timeout=max(2.0, self.settings.snail_rpc_timeout))
            if self._logs is not None:
                self._logs.close(timeout=max(2.0, self.settings.snail_rpc_timeout))
            if self._inbound is not None:
                self._inbound.stop(grace=0.5)
            if self._heartbeat is not None:
                self._heartbeat.join(timeout=self.settings.snail_rpc_timeout + 1)
        finally:
            self.dispatcher.close()
            if self._pool is not None:
                self._pool.close()
            if self._transport is not None:
                self._transport.close()
            _live_clients.discard(self)
            with self._lock:
                self._state = "stopped"
            logger.info("snailjob client %s stopped", self.host_id)

    def run(self, install_signal_handlers: bool = True) -> None:
        """Start, block until SIGINT or SIGTERM, then stop gracefully.

        A second signal during the grace period stops at once.
        """
        stop_requested = threading.Event()
        signals_seen = [0]
        previous: Dict[Any, Any] = {}

        def on_signal(signum: int, frame: Any) -> None:
            signals_seen[0] += 1
            if signals_seen[0] > 1:
                logger.warning("second signal: stopping now")
                self.dispatcher.stop_all("shutdown")
            stop_requested.set()

        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            while not stop_requested.wait(0.5):
                pass
            logger.info("signal received: stopping (grace %.0fs)", self.settings.snail_shutdown_grace)
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Client:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def server_up(self) -> bool:
        """True while the last heartbeat reached the server."""
        return self._server_up

    @property
    def registered(self) -> bool:
        return self._registered

    @property
    def last_problem(self) -> Optional[str]:
        """Why the last heartbeat failed (token redacted), or None after a good one."""
        return self._redact(self._last_problem) if self._last_problem else None

    @property
    def server_in_use(self) -> str:
        """``host:port`` of the server the client talks to now."""
        return str(getattr(self._transport, "target", self.settings.server_target))

    def heartbeat_age(self) -> Optional[float]:
        """Seconds since the server last accepted a heartbeat; None if it never did."""
        return None if self._last_beat is None else time.monotonic() - self._last_beat

    def health(self) -> Dict[str, Any]:
        """Liveness and readiness, with the reasons when not (for probes).

        ``live``: running and the heartbeat thread alive. ``ready``: live,
        connected to a server, executors registered, the last heartbeat no
        older than 3 heartbeat periods (at least 30 s), and not stopping.
        """
        age = self.heartbeat_age()
        fresh = max(30.0, 3 * self.settings.snail_heartbeat_interval)
        beating = self._heartbeat is not None and self._heartbeat.is_alive()
        live = self._state == "running" and beating
        reasons = []
        if self._state != "running":
            reasons.append(f"client is {self._state}")
        elif not beating:
            reasons.append("heartbeat thread is not running")
        if not self._server_up:
            reasons.append(f"not connected to a server: {self.last_problem or 'no heartbeat answered yet'}")
        elif not self._registered:
            reasons.append("executors not registered yet")
        if age is not None and age > fresh:
            reasons.append(f"last heartbeat accepted {age:.0f}s ago (more than {fresh:.0f}s)")
        return {"live": live, "ready": live and not reasons, "reasons": reasons,
                "state": self._state, "server": self.server_in_use, "host_id": self.host_id,
                "address": join_host_port(self.host_ip, self.host_port),
                "last_heartbeat_age": None if age is None else round(age, 3)}

    def stats(self) -> Dict[str, int]:
        """Counters for monitoring and tests."""
        outbox, logs, inbound = self._outbox, self._logs, self._inbound
        return {
            "results_delivered": outbox.delivered if outbox else 0,
            "results_dropped": outbox.dropped if outbox else 0,
            "results_refused": outbox.refused if outbox else 0,
            "results_repeated": outbox.repeated if outbox else 0,
            "results_pending": outbox.pending() if outbox else 0,
            "results_held": outbox.held()[0] if outbox else 0,
            "results_late": outbox.late if outbox else 0,
            "delivery_retries": outbox.retries if outbox else 0,
            "heartbeat_failures": self.heartbeat_failures,
            "logs_shipped": logs.shipped if logs else 0,
            "logs_dropped": logs.dropped if logs else 0,
            "logs_buffered": logs.buffered() if logs else 0,
            "retry_reports_sent": self._retry_reports.shipped if self._retry_reports else 0,
            "retry_reports_refused": self._retry_reports.refused if self._retry_reports else 0,
            "retry_reports_dropped": self._retry_reports.dropped if self._retry_reports else 0,
            "retry_reports_pending": self._retry_reports.buffered() if self._retry_reports else 0,
            "tasks_active": self.dispatcher.running_count(),
            **self.dispatcher.load(),
            **_describe_pool(self._pool),
            "batches_active": self.dispatcher.batch_count(),
            "inbound_refused": inbound.refused if inbound else 0,
            "inbound_evicted": inbound.evicted if inbound else 0,
            "inbound_timed_out": inbound.timed_out if inbound else 0,
        }

    def held_batches(self) -> List[Any]:
        """Batch ids of results waiting for the server after a failed attempt (at most 20)."""
        return self._outbox.held()[1] if self._outbox else []

    def flush(self, timeout: float = 10.0) -> bool:
        """Send queued retry reports now and wait until they and queued
        results are delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        if self._retry_reports is not None and not self._retry_reports.flush(timeout):
            return False
        return self._outbox.flush(max(0.0, deadline - time.monotonic())) if self._outbox else True

    # --- headers, heartbeat, registration ----------------------------------

    def _build_headers(self) -> Dict[str, str]:
        s = self.settings
        return {
            "host-id": self.host_id,
            "host-ip": self.host_ip,
            "host-port": str(self.host_port),
            "namespace": s.snail_namespace,
            "group-name": s.snail_group_name,
            "token": s.snail_token,
            "executor-type": str(int(enums.ExecutorTypeEnum.PYTHON)),
            "system-version": __version__,
            "label": s.label_json,
        }

    def _redact(self, text: str) -> str:
        text = text.replace(self.settings.snail_token, "***")
        return re.sub(r"(token:)[^\]\s,]*", r"\1***", text)

    def _heartbeat_loop(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                ok = self._beat_once()
            except Exception:  # the heartbeat must survive anything
                logger.exception("heartbeat failed unexpectedly")
                ok = False
            if ok:
                attempt = 0
                pause = self.settings.snail_heartbeat_interval
            else:
                attempt += 1
                pause = min(self.settings.snail_heartbeat_interval, backoff(attempt, first=0.5))
            self._stopping.wait(pause)

    def _beat_once(self) -> bool:
        assert self._transport is not None
        s = self.settings
        try:
            reply = self._transport.call(enums.URI_BEAT, encode_body("PING"), s.snail_rpc_timeout)
        except TransportError as exc:
            self._server_down(kind_of(exc.code), str(exc), str(exc))
            return False
        if not reply.ok:
            message = self._redact(reply.message)
            self._server_down(REFUSED, f"server refused the heartbeat: {message}", message)
            return False
        self._last_beat = time.monotonic()
        recovered = self._beat_trouble.cleared()
        if not self._server_up:
            logger.info("connected to SnailJob server %s as %s%s", self.server_in_use, self.host_id,
                        f" ({recovered})" if recovered else "")
            self._server_up = True
            self._last_problem = None
            self._registered = False
            self._register_after = 0.0
        if not self._registered and time.monotonic() >= self._register_after:
            with self._lock:
                version = self._registry_version
            ok = self._register_executors()
            with self._lock:
                self._registered = ok and version == self._registry_version
        return True

    def _server_down(self, kind: str, problem: str, detail: str) -> None:
        """A failed heartbeat of ``kind`` (``advice.REFUSED``...): ``problem``
        for ``last_problem``, ``detail`` (the server's or gRPC's text) for the
        warning, which ``LastingProblem`` repeats while the problem lasts."""
        self.heartbeat_failures += 1
        detail = self._redact(detail)
        self._beat_trouble.failed(kind, self.server_in_use, clean(detail) or "no reason given",
                                  fix_for_kind(kind, detail))
        self._server_up = False
        self._registered = False
        self._last_problem = problem

    def _register_executors(self) -> bool:
        assert self._transport is not None
        names = self.registry.names()
        if not names:
            return True
        payload = [JobExecutorRequest(executorInfo=n).to_wire() for n in names]
        try:
            reply = self._transport.call(enums.URI_REGISTER_EXECUTORS, encode_body(payload),
                                         self.settings.snail_rpc_timeout)
        except TransportError as exc:
            self._register_trouble.failed(kind_of(exc.code), self.server_in_use,
                                          clean(self._redact(str(exc))), FIX_SERVER)
            return False
        if not reply.accepted:
            problem = self._redact(reply.message)
            self._register_trouble.failed(REFUSED, self.server_in_use,
                                          f"{clean(problem) or 'no reason given'} (tried every {_REGISTER_RETRY:g}s)",
                                          fix_for_kind(REFUSED, problem))
            self._register_after = time.monotonic() + _REGISTER_RETRY
            return False
        recovered = self._register_trouble.cleared()
        logger.info("registered executors: %s%s", ", ".join(names), f" ({recovered})" if recovered else "")
        return True

    # --- inbound ----------------------------------------------------------

    def _handle_inbound(self, uri: str, headers: Dict[str, str], body: str) -> Reply:
        """One call of the server; ``SJ-TOKEN`` was checked by the inbound server."""
        path = uri.split("?", 1)[0]
        if path == enums.URI_DISPATCH:
            return self._on_dispatch(body)
        if path == enums.URI_STOP:
            return self._on_stop(body)
        if path == enums.URI_SYNC_VERSION:
            return Reply(1, "", None)
        if path in _RETRY_URIS:
            return self._retry_calls().handlers[path](body)
        logger.debug("unsupported server call %s answered with null", short(path))
        return Reply(1, "", None)

    def _on_dispatch(self, body: str) -> Reply:
        try:
            request = _one_dispatch(body)
        except BodyError as exc:
            return self._refuse(0, f"invalid dispatch request: {exc}")
        except ValidationError as exc:
            return self._refuse(0, f"invalid dispatch request: {summarize(exc)}")
        if not self._accepting:
            return self._refuse(1, f"client {self.host_id} is shutting down; "
                                   "dispatch it to another node", request)
        if request.executorType != enums.ExecutorTypeEnum.PYTHON:
            return self._refuse(1, f"executorType {request.executorType} is not Python (2); "
                                   f"this is a Python client (registered: {self._known()})", request)
        spec = self.registry.get(request.executorInfo)
        if spec is None:
            return self._refuse(1, f"no executor named {short(request.executorInfo)} on this client "
                                   f"(registered: {self._known()})", request)
        try:
            func = spec.resolve(request.taskType, request.mrStage, request.taskName)
        except UnknownTask as exc:
            return self._refuse(1, f"{exc} (registered: {self._known()})", request)
        args, warnings, sentinel = build_args(request)
        ctx = TaskContext(request, args, UNASSIGNED_STOP, self,  # the dispatcher sets the batch's stop event
                          sentinel=sentinel)
        if warnings:
            ctx.extra["warnings"] = warnings
        pool = self._process_pool() if isolation_of(func, self.settings.snail_isolation) == "process" else None
        try:
            self.dispatcher.submit(Task(request, func, args, ctx, self._observers, pool))
        except DispatcherFull as exc:
            return self._refuse(1, str(exc), request)
        return Reply(1, "", True)

    def _known(self) -> str:
        return short(", ".join(self.registry.names()) or "none", 300)

    def _refuse(self, status: int, message: str, request: Optional[DispatchJobRequest] = None) -> Reply:
        """Refuse a dispatch; logged here at most once a minute per reason,
        and, for a request that could be read, in the task's log in the
        console (``_log_refusal``)."""
        where = f" of task {request.taskId}, batch {request.taskBatchId}" if request else ""
        self._refusals.refused(message[:80], f"dispatch{where}: {message}")
        if request is not None:
            self._log_refusal(request, message)
        return Reply(status, message, False)

    def _log_refusal(self, request: DispatchJobRequest, message: str) -> None:
        """Put the reason of a refused dispatch in the task's log in the
        console, at ERROR: the server shows the task as failed with no result
        and, without this, no log.  Once per task and attempt (a dispatch the
        server sends again is not logged again), at most
        ``REFUSAL_LOGS_PER_MINUTE`` a minute; queued without blocking (this
        runs on the inbound server's event loop), in the log shipper's
        bounded buffer."""
        key = (request.taskId, request.retryCount or 0)
        now = time.monotonic()
        with self._refusal_lock:
            if key in self._refusal_entries:
                return
            self._refusal_entries[key] = None
            if len(self._refusal_entries) > _REFUSALS_REMEMBERED:
                self._refusal_entries.popitem(last=False)
            start, shipped = self._refusal_window
            if now - start >= 60.0:
                start, shipped = now, 0
            if shipped >= REFUSAL_LOGS_PER_MINUTE:
                self.refusal_logs_skipped += 1
                return
            self._refusal_window = (start, shipped + 1)
        attempt = f" (attempt {request.retryCount + 1})" if request.retryCount else ""
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, _REFUSE_LINE,
                                   "node %s (%s) refused this task%s: %s", (
                                       self.host_id, join_host_port(self.host_ip, self.host_port), attempt,
                                       message), None, "_on_dispatch")
        record.threadName = "snailjob-inbound"
        self.ship_log(build_entry(record, self.log_identity, request.jobId, request.taskBatchId,
                                  request.taskId))

    def _on_stop(self, body: str) -> Reply:
        try:
            request = StopJobRequest.model_validate(first_object(decode_body(body), "stop"))
        except BodyError as exc:
            return Reply(0, f"invalid stop request: {exc}", False)
        except ValidationError as exc:
            return Reply(0, f"invalid stop request: {summarize(exc)}", False)
        self.dispatcher.stop_batch(request.taskBatchId)
        self.discard_reports(request.taskBatchId)
        return Reply(1, "", True)

    # --- retries: the server's side of a @retryable call --------------------

    def report_retry(self, request: RetryTaskRequest) -> None:
        """Queue a call for ``/batch/report`` (what ``Retryable.report`` uses)."""
        reporter = self._retry_reports
        entry = request.to_wire()
        entry["groupName"] = self.settings.snail_group_name
        if reporter is None or not reporter.offer(entry):
            raise SnailJobError(f"client {self.host_id} is not running")

    @property
    def accepting(self) -> bool:
        """True while the client takes new work from the server."""
        return self._accepting

    def discard_reports(self, key: Any) -> None:
        """Drop undelivered reports of a stopped batch or retry."""
        if self._outbox is not None:
            self._outbox.discard_batch(key)

    def put_report(self, work: Work, uri: str, body: str, timeout: Optional[int], describe: str,
                   repeat: bool = False, delay: float = 0.0) -> None:
        """Queue a report; it expires when the server has given up on the work
        (its timeout plus ``SNAIL_REPORT_MARGIN``).  ``repeat``: sent again
        after delivery until then; ``delay``: sent no sooner (a map task's
        sentinel, see ``mr_do_map``)."""
        assert self._outbox is not None
        s = self.settings
        if timeout and timeout > 0:
            expires = work.received_wall + timeout + s.snail_report_margin
        else:
            expires = time.time() + s.snail_report_retry_seconds
        self._outbox.put(work.key, uri, body, expires=max(expires, time.time() + s.snail_rpc_timeout),
                         describe=describe, repeat=repeat, delay=delay)

    # --- outcomes, map reports, logs (TaskServices) ------------------------

    def _retry_calls(self) -> RetryEndpoint:
        """The endpoint of the retry server's calls, created (and the retry
        feature loaded) on the first one."""
        endpoint = self._retry_endpoint
        if endpoint is not None:
            return endpoint
        with self._lock:
            if self._retry_endpoint is None:
                from snailjob.retry_endpoint import RetryEndpoint

                self._retry_endpoint = RetryEndpoint(self.retries, self.dispatcher, self.settings, self)
            return self._retry_endpoint

    def _on_outcome(self, work: Work, outcome: Any) -> None:
        if not isinstance(work, Task):  # a replay or callback, submitted by the retry endpoint
            self._retry_calls().on_outcome(cast("RetryWork", work), outcome)
            return
        task = work
        req = task.request
        success = outcome.is_success
        # after the timeout the server has recorded the task as stopped
        sentinel = _is_checking_sentinel(task)
        self.put_report(task, enums.URI_REPORT_RESULT, self._result_body(task, outcome), req.executorTimeout,
                        f"result of task {req.taskId} (batch {req.taskBatchId})",
                        repeat=sentinel and success, delay=SENTINEL_FAILURE_DELAY if sentinel and not success else 0.0)

    def _result_body(self, task: Task, outcome: Any) -> str:
        """The body of a task's ``/report/dispatch/result``: the JSON of a
        ``DispatchJobResultRequest``, built directly when the result is plain
        JSON data (the common case), else through the model."""
        req = task.request
        success = outcome.is_success
        result = outcome.result if success else _shown(outcome.result)
        group = req.groupName or self.settings.snail_group_name
        if group is not None and _plain(result):
            entry: Dict[str, Any] = {"jobId": req.jobId, "taskBatchId": req.taskBatchId}
            if req.workflowTaskBatchId is not None:
                entry["workflowTaskBatchId"] = req.workflowTaskBatchId
            if req.workflowNodeId is not None:
                entry["workflowNodeId"] = req.workflowNodeId
            entry["taskId"] = req.taskId
            entry["taskType"] = req.taskType
            entry["groupName"] = group
            entry["taskStatus"] = _SUCCESS if success else _FAIL
            execute: Dict[str, Any] = {"status": _YES if success else _NO}
            if result is not None:
                execute["result"] = result
            execute["message"] = str(outcome.message or "")
            entry["executeResult"] = execute
            if req.retryScene is not None:
                entry["retryScene"] = req.retryScene
            entry["retry"] = req.retry
            entry["retryStatus"] = req.retryStatus
            changed = _changed_context(task.args)
            if changed is not None:
                entry["wfContext"] = changed
            return dumps([entry])
        return self._result_body_from_model(task, outcome)

    def _result_body_from_model(self, task: Task, outcome: Any) -> str:
        """``_result_body`` through ``DispatchJobResultRequest`` (any result)."""
        req = task.request
        success = outcome.is_success
        report = DispatchJobResultRequest(
            jobId=req.jobId, taskBatchId=req.taskBatchId, taskId=req.taskId,
            workflowTaskBatchId=req.workflowTaskBatchId, workflowNodeId=req.workflowNodeId,
            taskType=req.taskType, groupName=req.groupName or self.settings.snail_group_name,
            taskStatus=int(enums.JobTaskStatusEnum.SUCCESS if success else enums.JobTaskStatusEnum.FAIL),
            executeResult=WireExecuteResult(status=int(enums.StatusEnum.YES if success else enums.StatusEnum.NO),
                                            result=outcome.result if success else _shown(outcome.result),
                                            message=outcome.message or ""),
            retryScene=req.retryScene, retry=req.retry, retryStatus=req.retryStatus,
            wfContext=_changed_context(task.args),
        )
        return encode_body(report.to_wire())

    @property
    def map_batch_size(self) -> int:
        return self.settings.snail_map_batch_size

    @property
    def log_identity(self) -> Dict[str, str]:
        s = self.settings
        return {"namespace": s.snail_namespace, "group": s.snail_group_name,
                "host": self.host_ip, "port": str(self.host_port)}

    def report_map(self, task: TaskContext, items: list, next_task_name: str) -> None:
        req = task.request
        payload = MapTaskRequest(
            jobId=req.jobId, taskBatchId=req.taskBatchId, parentId=req.taskId,
            workflowTaskBatchId=req.workflowTaskBatchId, workflowNodeId=req.workflowNodeId,
            wfContext=_changed_context(task.args), taskName=next_task_name, subTask=items)
        assert self._transport is not None
        try:
            # The server answers a map report only after creating every sub-task,
            # which can take seconds: it gets a long deadline and no retry after one.
            reply = call_with_retry(self._transport, enums.URI_REPORT_MAP, encode_body(payload.to_wire()),
                                    self.settings.snail_map_report_timeout,
                                    self.settings.snail_report_retry_seconds, stop=task.stop_event)
        except TransportError as exc:
            unsure = "" if exc.code == "UNAVAILABLE" else " (the server may have created some of them)"
            raise MapError(f"could not report {len(items)} sub-task(s) of {next_task_name!r}{unsure}: "
                           f"{exc}") from None
        if not reply.accepted:
            raise MapError(f"server refused {len(items)} sub-task(s) of {next_task_name!r}: "
                           f"{reply.message or 'no reason given'}")
        logger.debug("reported %d sub-task(s) %r of task %s", len(items), next_task_name, req.taskId)

    def ship_log(self, entry: Dict[str, Any]) -> None:
        if self._logs is not None:
            self._logs.offer(entry)


_SUCCESS = int(enums.JobTaskStatusEnum.SUCCESS)
_FAIL = int(enums.JobTaskStatusEnum.FAIL)
_YES = int(enums.StatusEnum.YES)
_NO = int(enums.StatusEnum.NO)
_SCALARS = (str, int, float, bool, type(None))


_REFUSE_LINE = Client._on_dispatch.__code__.co_firstlineno  # the location of a refusal's log entry


def _plain(value: Any, depth: int = 0) -> bool:
    """True when ``value`` is JSON data made of dicts with string keys,
    lists and scalars of exactly those types (not subclasses such as enums),
    which the model would pass through unchanged."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 20:
        return False
    if kind is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


def _one_dispatch(body: str) -> DispatchJobRequest:
    """The ``DispatchJobRequest`` of a dispatch body (a JSON array whose
    first element is the request).  The usual body, an array of exactly one
    object, is validated straight from its text; anything else (and any
    problem) goes the long way, which gives the exact error."""
    if body[:1] == "[" and body[-1:] == "]":
        try:
            return DispatchJobRequest.model_validate_json(body[1:-1])
        except ValidationError:
            pass
    return DispatchJobRequest.model_validate(first_object(decode_body(body), "dispatch"))


def _describe_pool(pool: Optional[ProcessPool]) -> Dict[str, int]:
    """``processes.describe_pool``, without loading that module when no pool was started."""
    if pool is None:
        return {"process_workers": 0, "process_workers_started": 0, "process_workers_died": 0}
    from snailjob.processes import describe_pool

    return describe_pool(pool)


def _shown(result: Any) -> Any:
    """A failure's result as the console's result view can show it: that
    view renders only JSON, and the server stores a string as it is, so
    text that is not JSON goes as a JSON string.  (A success's result is sent
    unchanged: reduce and merge stages receive it as the server stores it.)"""
    if isinstance(result, str):
        try:
            json.loads(result)
        except ValueError:
            return dumps(result)
    return result


def _is_checking_sentinel(task: Task) -> bool:
    """Whether a task is a map task's sentinel whose result makes the server
    check its batch: one without sub-tasks of its own (a result of a task
    with children is not checked) and not the first run of a manual retry
    (the server answers that by retrying).  Its success is repeated until
    the batch ends; its failure is delayed instead, since the server would
    count each copy of a failure as a failed attempt and retry the task."""
    ctx = task.context
    manual_first_run = task.request.retryScene == enums.JobRetrySceneEnum.MANUAL and not task.request.retryStatus
    return ctx.sentinel and ctx.map_items_sent == 0 and not manual_first_run


def _changed_context(args: JobArgs) -> Optional[str]:
    """The workflow-context keys a task changed, as the JSON text the server
    stores, or ``None`` when it changed none."""
    context = args.change_wf_context
    changed = context.to_dict() if context is not None and len(context) else {}
    return dumps(changed) if changed else None

