"""The node's heartbeat and executor registration.

One thread (``snailjob-heartbeat``) calls ``/beat`` every
``SNAIL_HEARTBEAT_INTERVAL`` seconds (sooner, with backoff, after a failure)
and registers the executors after each (re)connection and after every change
of the registry.  It keeps what ``Client.health()`` reports: whether the
server answered, whether the executors are registered, why the last heartbeat
failed (the token redacted) and when the server last accepted one.  Lasting
failures are warned about through ``advice.LastingProblem``, not once per
beat.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable, Optional, Tuple

from snailjob.advice import FIX_SERVER, REFUSED, LastingProblem, fix_for_kind, kind_of
from snailjob.delivery import backoff
from snailjob.errors import TransportError
from snailjob.executors import ExecutorRegistry
from snailjob.settings import Settings
from snailjob.transport import Transport
from snailjob.wire import enums
from snailjob.wire.codec import clean, encode_body
from snailjob.wire.models import JobExecutorRequest

logger = logging.getLogger(__name__)

REGISTER_RETRY = 30.0
"""Seconds between registration attempts after the server refused one."""


class Heartbeat:
    """Beats and registers for one node; started with the node's transport."""

    def __init__(self, settings: Settings, registry: ExecutorRegistry, host_id: str,
                 warn_again: Tuple[float, float]) -> None:
        self._settings = settings
        self._registry = registry
        self._host_id = host_id
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._transport: Optional[Transport] = None
        self._thread: Optional[threading.Thread] = None
        self._beat_trouble = LastingProblem(logger, "heartbeat", warn_again)
        self._register_trouble = LastingProblem(logger, "executor registration", warn_again)
        self._registry_version = 0
        self._register_after = 0.0
        self.on_internal_error: Callable[[str], None] = lambda problem: None
        """Told (without blocking) of an internal error: the client's alarms."""
        self.on_connected: Callable[[], None] = lambda: None
        """Called when a heartbeat is answered after none or after a failure (the config pull)."""
        self._problem: Optional[str] = None
        self._last_beat: Optional[float] = None  # monotonic time of the last accepted heartbeat
        self.server_up = False
        """True while the last heartbeat reached the server."""
        self.registered = False
        self.failures = 0
        """Heartbeats that failed or were refused."""

    # --- lifecycle ----------------------------------------------------------

    def start(self, transport: Transport) -> None:
        self._transport = transport
        self._thread = threading.Thread(target=self._loop, name="snailjob-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No heartbeat from now on (``join`` waits for the thread)."""
        self._stopping.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def registry_changed(self) -> None:
        """Register again on the next beat (an executor was added)."""
        with self._lock:
            self._registry_version += 1
            self.registered = False
            self._register_after = 0.0

    # --- what health() reports -----------------------------------------------

    @property
    def server_in_use(self) -> str:
        """``host:port`` of the server the node talks to now."""
        return str(getattr(self._transport, "target", self._settings.server_target))

    @property
    def last_problem(self) -> Optional[str]:
        """Why the last heartbeat failed (token redacted), or None after a good one."""
        return self.redact(self._problem) if self._problem else None

    def age(self) -> Optional[float]:
        """Seconds since the server last accepted a heartbeat; None if it never did."""
        return None if self._last_beat is None else time.monotonic() - self._last_beat

    def redact(self, text: str) -> str:
        text = text.replace(self._settings.snail_token, "***")
        return re.sub(r"(token:)[^\]\s,]*", r"\1***", text)

    # --- the thread -----------------------------------------------------------

    def _loop(self) -> None:
        attempt = 0
        interval = self._settings.snail_heartbeat_interval
        while not self._stopping.is_set():
            try:
                ok = self.beat_once()
            except Exception:  # the heartbeat must survive anything
                logger.exception("heartbeat failed unexpectedly")
                self.on_internal_error("the heartbeat failed unexpectedly (see the client's log)")
                ok = False
            if ok:
                attempt = 0
                pause = interval
            else:
                attempt += 1
                pause = min(interval, backoff(attempt, first=0.5))
            self._stopping.wait(pause)

    def beat_once(self) -> bool:
        """One heartbeat, and the registration it may call for; True when the server answered."""
        assert self._transport is not None
        try:
            reply = self._transport.call(enums.URI_BEAT, encode_body("PING"), self._settings.snail_rpc_timeout)
        except TransportError as exc:
            self._server_down(kind_of(exc.code), str(exc), str(exc))
            return False
        if not reply.ok:
            message = self.redact(reply.message)
            self._server_down(REFUSED, f"server refused the heartbeat: {message}", message)
            return False
        self._last_beat = time.monotonic()
        recovered = self._beat_trouble.cleared()
        if not self.server_up:
            logger.info("connected to SnailJob server %s as %s%s", self.server_in_use, self._host_id,
                        f" ({recovered})" if recovered else "")
            self.server_up = True
            self.on_connected()
            self._problem = None
            self.registered = False
            self._register_after = 0.0
        if not self.registered and time.monotonic() >= self._register_after:
            with self._lock:
                version = self._registry_version
            ok = self._register_executors()
            with self._lock:
                self.registered = ok and version == self._registry_version
        return True

    def _server_down(self, kind: str, problem: str, detail: str) -> None:
        """A failed heartbeat of ``kind`` (``advice.REFUSED``...): ``problem``
        for ``last_problem``, ``detail`` (the server's or gRPC's text) for the
        warning, which ``LastingProblem`` repeats while the problem lasts."""
        self.failures += 1
        detail = self.redact(detail)
        self._beat_trouble.failed(kind, self.server_in_use, clean(detail) or "no reason given",
                                  fix_for_kind(kind, detail))
        self.server_up = False
        self.registered = False
        self._problem = problem

    def _register_executors(self) -> bool:
        assert self._transport is not None
        names = self._registry.names()
        if not names:
            return True
        payload = [JobExecutorRequest(executorInfo=n).to_wire() for n in names]
        try:
            reply = self._transport.call(enums.URI_REGISTER_EXECUTORS, encode_body(payload),
                                         self._settings.snail_rpc_timeout)
        except TransportError as exc:
            self._register_trouble.failed(kind_of(exc.code), self.server_in_use,
                                          clean(self.redact(str(exc))), FIX_SERVER)
            return False
        if not reply.accepted:
            problem = self.redact(reply.message)
            self._register_trouble.failed(REFUSED, self.server_in_use,
                                          f"{clean(problem) or 'no reason given'} (tried every {REGISTER_RETRY:g}s)",
                                          fix_for_kind(REFUSED, problem))
            self._register_after = time.monotonic() + REGISTER_RETRY
            return False
        recovered = self._register_trouble.cleared()
        logger.info("registered executors: %s%s", ", ".join(names), f" ({recovered})" if recovered else "")
        return True

