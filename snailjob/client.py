"""``Client``: one SnailJob node.  It wires the executor registry to one
outbound gRPC channel, a heartbeat thread, the inbound gRPC server, the
dispatcher and the outbound queues, and owns their lifecycle.

Several clients can run in one process (each with its own settings, port and
executors); ``client_main()`` runs one built from the environment.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, cast

from snailjob._version import __version__
from snailjob.address import AddressChoice, BindChoice, choose_advertised, choose_bind, join_host_port
from snailjob.advice import WARN_AGAIN
from snailjob.alarms import AlarmDelivery, Alarms, ClientScene, Identity
from snailjob.config_sync import ConfigCache, ConfigSync
from snailjob.delivery import LogShipper, OutboxStore, ResultOutbox, RetryReporter
from snailjob.dispatcher import Dispatcher
from snailjob.errors import SnailJobError
from snailjob.executors import Executor, ExecutorRegistry
from snailjob.heartbeat import Heartbeat
from snailjob.inbound import InboundLimits, InboundServer, default_token_warning, raise_fd_limit
from snailjob.log import install_remote_handler
from snailjob.native_inbound import NativeInboundServer
from snailjob.native_transport import NativeTransport
from snailjob.observe import TaskObserver
from snailjob.reporting import Reports, delivery_stats
from snailjob.retry_registry import RetryRegistry, is_retryable
from snailjob.routing import INLINE_URIS, Router
from snailjob.settings import Settings, new_host_id
from snailjob.transport import FailoverTransport, GrpcTransport, Reply, Transport
from snailjob.wire import enums

if TYPE_CHECKING:  # loaded on first use: worker processes, the retry feature
    from snailjob.processes import ProcessPool
    from snailjob.retry import Retryable
    from snailjob.retry_endpoint import RetryEndpoint

logger = logging.getLogger(__name__)

_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def live_clients() -> List[Client]:
    """Clients started and not yet stopped in this process."""
    return list(_live_clients)


_ALARM_STATS = ("alarms_raised", "alarms_sent", "alarms_failed", "alarms_dropped", "alarms_rate_limited")

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
        self._transport_factory = transport_factory or (
            NativeTransport if self.settings.snail_transport == "native" else GrpcTransport)
        self.host_id = self.settings.snail_host_id or new_host_id()
        self.host_port = self.settings.snail_host_port
        self.host_ip = self.settings.snail_host_ip or ""  # chosen at start() when unset
        self.bind_host = ""  # where the inbound port listens, chosen at start()
        self._lock = threading.Lock()
        self._state = "new"
        self._accepting = False
        s = self.settings
        self.dispatcher = Dispatcher(interrupt_delay=s.snail_interrupt_delay,
                                     max_running=s.snail_max_running, max_queued=s.snail_max_queued,
                                     max_queued_bytes=s.snail_max_queued_bytes,
                                     refuse_when_full=s.snail_when_busy == "refuse")
        self._heartbeat = Heartbeat(s, self.registry, self.host_id, self.warn_again)
        self.config = ConfigCache()
        """The group's config from the server (``scene_ddl(scene)``: a retry scene's deadline in ms)."""
        self._config_sync = ConfigSync(self.config, s.snail_config_sync_interval, s.snail_rpc_timeout,
                                       redact=self._heartbeat.redact)
        self._alarms: Optional[Alarms] = None  # built by start()
        self._heartbeat.on_connected = self._config_sync.pull_soon
        # built by start(): the port, the channel, the outbound queues and their users
        self._transport: Optional[Transport] = None
        self._inbound: Optional[Union[InboundServer, NativeInboundServer]] = None
        self._store: Optional[OutboxStore] = None
        self._reports: Optional[Reports] = None
        self._router: Optional[Router] = None
        self._retry_endpoint: Optional[RetryEndpoint] = None  # created by the first retry call
        self._headers: Dict[str, str] = {}
        self._observers: Tuple[TaskObserver, ...] = ()
        self._pool: Optional[ProcessPool] = None

    # --- public lifecycle -------------------------------------------------

    def register(self, executor: Union[Executor, Retryable[Any, Any]]) -> None:
        """Add an executor or a ``@retryable`` function; allowed before and
        after ``start()``."""
        if is_retryable(executor):
            self.retries.register(cast("Retryable[Any, Any]", executor))
            return
        self.registry.register(executor)
        self._heartbeat.registry_changed()

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
        reports, inbound, transport = self._reports, self._inbound, self._transport
        assert reports is not None and inbound is not None and transport is not None
        reports.outbox.start()
        reports.logs.start()
        reports.retry_reports.start()
        self.retries.attach(reports)
        inbound.start()
        self._accepting = True
        self._heartbeat.start(transport)
        self._config_sync.start(transport)
        with self._lock:
            self._state = "running"
        _live_clients.add(self)
        logger.info("snailjob client %s listening on %s (%s), advertised as %s (%s), server %s%s, group %s",
                    self.host_id, join_host_port(bind.host, self.host_port), bind.why,
                    join_host_port(self.host_ip, self.host_port), choice.how, s.server_target,
                    _natives(self._transport_factory is NativeTransport, isinstance(inbound, NativeInboundServer)),
                    s.snail_group_name)
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
        server = NativeInboundServer if s.snail_inbound == "native" else InboundServer
        self._inbound = server(bind.host, s.snail_host_port, self._route, workers=s.snail_inbound_workers,
                               acceptors=s.snail_inbound_acceptors, token=s.snail_token,
                               inline=INLINE_URIS.__contains__)
        self.host_port = self._inbound.port
        self._headers = self._build_headers()
        targets = s.server_targets
        if len(targets) == 1:
            self._transport = self._transport_factory(targets[0], lambda: self._headers)
        else:
            self._transport = FailoverTransport(targets, lambda: self._headers, self._transport_factory)
        transport = self._transport
        use_loop = getattr(transport, "use_loop", None)
        if callable(use_loop):
            use_loop(self._inbound.loop)
        self._reports = Reports(
            s, transport,
            ResultOutbox(transport, s.snail_rpc_timeout, max_pending=s.snail_result_queue_max, store=store),
            LogShipper(transport, s.snail_rpc_timeout, s.snail_log_remote_buffer_size,
                       s.snail_log_remote_interval, s.snail_log_remote_max_buffer),
            RetryReporter(transport, s.snail_rpc_timeout, parcel_size=50, interval=s.snail_retry_report_interval,
                          max_buffer=s.snail_retry_report_max_buffer, store=store),
            self.host_id, self.host_ip, self.host_port)
        self._router = Router(s, self.registry, self.dispatcher, self._reports, host_id=self.host_id,
                              address=join_host_port(self.host_ip, self.host_port),
                              accepting=lambda: self._accepting, observers=lambda: self._observers,
                              process_pool=self._process_pool, retry_calls=self._retry_calls,
                              sync_config=self._config_sync.accept_push)
        self._alarms = self._wire_alarms(self._reports)
        self.bind_host = bind.host
        return bind, choice

    def _abandon_start(self) -> None:
        """Undo a ``start()`` that failed: nothing is left listening or open,
        and the client can be started again."""
        for closer in (self._detach_loop,
                       self._inbound.stop if self._inbound is not None else None,
                       self._transport.close if self._transport is not None else None,
                       getattr(self._store, "close", None)):
            if closer is not None:
                try:
                    closer()
                except Exception as exc:
                    logger.debug("while undoing a failed start: %r", exc)
        self._inbound = self._transport = self._store = None
        self._reports = self._router = None
        with self._lock:
            self._state = "new"

    def _detach_loop(self) -> None:
        """Results stop using the inbound server's loop, which is about to stop."""
        detach = getattr(self._transport, "detach_loop", None)
        if callable(detach):
            detach()

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
            self._heartbeat.stop()
            self._config_sync.stop()
            reports, closing = self._reports, max(2.0, self.settings.snail_rpc_timeout)
            if reports is not None:
                self.retries.detach(reports)
                reports.retry_reports.close(timeout=closing)
                reports.outbox.close(timeout=closing)
                reports.logs.close(timeout=closing)
            self._detach_loop()
            if self._inbound is not None:
                self._inbound.stop(grace=0.5)
            self._heartbeat.join(timeout=self.settings.snail_rpc_timeout + 1)
            self._config_sync.join(timeout=self.settings.snail_rpc_timeout + 1)
            if self._alarms is not None:  # last: alarms of undelivered results still go out
                self._alarms.close(timeout=min(5.0, self.settings.snail_alarm_timeout))
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
        return self._heartbeat.server_up

    @property
    def registered(self) -> bool:
        return self._heartbeat.registered

    @property
    def last_problem(self) -> Optional[str]:
        """Why the last heartbeat failed (token redacted), or None after a good one."""
        return self._heartbeat.last_problem

    @property
    def server_in_use(self) -> str:
        """``host:port`` of the server the client talks to now."""
        return self._heartbeat.server_in_use

    @property
    def heartbeat_failures(self) -> int:
        """Heartbeats that failed or were refused."""
        return self._heartbeat.failures

    @property
    def accepting(self) -> bool:
        """True while the client takes new work from the server."""
        return self._accepting

    def heartbeat_age(self) -> Optional[float]:
        """Seconds since the server last accepted a heartbeat; None if it never did."""
        return self._heartbeat.age()

    def health(self) -> Dict[str, Any]:
        """Liveness and readiness, with the reasons when not (for probes).

        ``live``: running and the heartbeat thread alive. ``ready``: live,
        connected to a server, executors registered, the last heartbeat no
        older than 3 heartbeat periods (at least 30 s), and not stopping.
        """
        age = self.heartbeat_age()
        fresh = max(30.0, 3 * self.settings.snail_heartbeat_interval)
        beating = self._heartbeat.alive
        live = self._state == "running" and beating
        reasons = []
        if self._state != "running":
            reasons.append(f"client is {self._state}")
        elif not beating:
            reasons.append("heartbeat thread is not running")
        if not self.server_up:
            reasons.append(f"not connected to a server: {self.last_problem or 'no heartbeat answered yet'}")
        elif not self.registered:
            reasons.append("executors not registered yet")
        if age is not None and age > fresh:
            reasons.append(f"last heartbeat accepted {age:.0f}s ago (more than {fresh:.0f}s)")
        return {"live": live, "ready": live and not reasons, "reasons": reasons,
                "state": self._state, "server": self.server_in_use, "host_id": self.host_id,
                "address": join_host_port(self.host_ip, self.host_port),
                "last_heartbeat_age": None if age is None else round(age, 3)}

    def stats(self) -> Dict[str, int]:
        """Counters for monitoring and tests."""
        inbound = self._inbound
        return {
            **delivery_stats(self._reports),
            "heartbeat_failures": self.heartbeat_failures,
            "tasks_active": self.dispatcher.running_count(),
            **self.dispatcher.load(),
            **_describe_pool(self._pool),
            "batches_active": self.dispatcher.batch_count(),
            "inbound_refused": inbound.refused if inbound else 0,
            "inbound_evicted": inbound.evicted if inbound else 0,
            "inbound_timed_out": inbound.timed_out if inbound else 0,
            "inbound_acceptors": inbound.acceptors.count if inbound and inbound.acceptors else 0,
            **(self._alarms.stats() if self._alarms is not None else dict.fromkeys(_ALARM_STATS, 0)),
            "config_version": self.config.version,
            "config_updates": self.config.updates,
            "config_rejected": self.config.rejected,
        }

    def held_batches(self) -> List[Any]:
        """Batch ids of results waiting for the server after a failed attempt (at most 20)."""
        return self._reports.outbox.held()[1] if self._reports else []

    def flush(self, timeout: float = 10.0) -> bool:
        """Send queued retry reports now and wait until they and queued
        results are delivered; False on timeout."""
        reports = self._reports
        if reports is None:
            return True
        deadline = time.monotonic() + timeout
        if not reports.retry_reports.flush(timeout):
            return False
        return reports.outbox.flush(max(0.0, deadline - time.monotonic()))

    # --- parts -------------------------------------------------------------

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

    def _route(self, uri: str, headers: Dict[str, str], body: str) -> Reply:
        """The inbound server's handler (built before the router, which needs the port it binds)."""
        assert self._router is not None
        try:
            return self._router.handle(uri, headers, body)
        except Exception as exc:  # the inbound server logs it and answers the server
            self.raise_alarm(ClientScene.CLIENT_COMPONENT_ERROR,
                             f"internal error answering the server's {uri.split('?', 1)[0]!r}: {type(exc).__name__}")
            raise

    def _wire_alarms(self, reports: Reports) -> Alarms:
        """The node's alarms, told of what its parts could not do."""
        s = self.settings
        mail = None
        if s.snail_mail_host:
            from snailjob.alarms.channels import MailSettings

            mail = MailSettings(s.snail_mail_host, s.snail_mail_port or (465 if s.snail_mail_ssl else 25),
                                s.snail_mail_user, s.snail_mail_password, s.snail_mail_from,
                                s.snail_mail_ssl, s.snail_mail_starttls)
        alarms = Alarms(self.config, Identity(s.snail_namespace, s.snail_group_name, self.host_id,
                                              join_host_port(self.host_ip, self.host_port),
                                              secrets=tuple(x for x in (s.snail_token, s.snail_mail_password) if x)),
                        enabled=s.snail_alarms, rate_limit=s.snail_alarm_rate_limit,
                        queue_max=s.snail_alarm_queue_max, timeout=s.snail_alarm_timeout, mail=mail)
        raise_alarm = alarms.raise_alarm
        reports.alarm = raise_alarm
        reports.scene_ddl = self.config.scene_ddl
        reports.outbox.on_problem = lambda problem: raise_alarm(ClientScene.JOB_CLIENT_ERROR, problem)
        reports.retry_reports.on_problem = lambda problem: raise_alarm(ClientScene.CLIENT_REPORT_ERROR, problem)
        component = lambda problem: raise_alarm(ClientScene.CLIENT_COMPONENT_ERROR, problem)  # noqa: E731
        self.dispatcher.on_internal_error = component
        self._heartbeat.on_internal_error = component
        return alarms

    # --- alarms and the group config -------------------------------------------

    def raise_alarm(self, scene: ClientScene, problem: str) -> None:
        """Raise a client-side alarm of ``scene`` with ``problem`` (what
        failed) to the recipients the group config names for it; returns at
        once (queued, rate-limited).  Nothing happens before ``start()``,
        with ``SNAIL_ALARMS=false`` or without recipients for the scene."""
        alarms = self._alarms
        if alarms is not None:
            alarms.raise_alarm(scene, problem)

    def scene_ddl(self, scene: str) -> int:
        """The call-chain deadline of retry scene ``scene`` in milliseconds, from
        the group config (60 000 until the server names the scene)."""
        return self.config.scene_ddl(scene)

    def sync_config(self) -> bool:
        """Pull the group config now (it is pulled every ``SNAIL_CONFIG_SYNC_INTERVAL``
        seconds anyway); True when the server answered with a config that was taken."""
        return self._config_sync.pull_once()

    def send_test_alarm(self) -> List[AlarmDelivery]:
        """Pull the group config, then send a test alarm to every recipient of
        every client scene now, on this thread (no rate limit); one
        ``AlarmDelivery`` per recipient saying whether it went out (and why
        not).  An empty list: no recipient configured for a client scene."""
        alarms = self._alarms
        if alarms is None or self._state != "running":
            raise SnailJobError("start the client before sending a test alarm")
        self.sync_config()
        return alarms.test()

    def _retry_calls(self) -> RetryEndpoint:
        """The endpoint of the retry server's calls, created (and the retry
        feature loaded) on the first one."""
        endpoint = self._retry_endpoint
        if endpoint is not None:
            return endpoint
        with self._lock:
            if self._retry_endpoint is None:
                from snailjob.retry_endpoint import RetryEndpoint

                assert self._reports is not None
                self._retry_endpoint = RetryEndpoint(self.retries, self.dispatcher, self.settings, self._reports,
                                                     accepting=lambda: self._accepting)
            return self._retry_endpoint


def _describe_pool(pool: Optional[ProcessPool]) -> Dict[str, int]:
    """``processes.describe_pool``, without loading that module when no pool was started."""
    if pool is None:
        return {"process_workers": 0, "process_workers_started": 0, "process_workers_died": 0}
    from snailjob.processes import describe_pool

    return describe_pool(pool)


def _natives(transport: bool, inbound: bool) -> str:
    """The start-up line's note of what runs on ``snailjob.http2``."""
    parts = ["native transport"] * transport + ["native inbound server"] * inbound
    return f" ({' and '.join(parts)})" if parts else ""
