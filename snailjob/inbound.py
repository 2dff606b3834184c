"""The inbound gRPC server: the port the SnailJob server calls back into
(dispatch, stop, config sync, the retry calls).

It is the node's one surface exposed to the network, so it is built to hold
nothing for a caller that has not proved who it is:

* It runs on ``grpc.aio`` in one event-loop thread (``snailjob-inbound``).
  A call waiting for its request message is a suspended coroutine, not a
  thread: idle streams cost a few kilobytes each, never a worker.
* At most ``pending_calls`` calls may wait for their message at once; a new
  call beyond that evicts the one that has waited longest (a real server
  sends its message at once, so only a stalled stream is ever the oldest),
  and a call whose message has not arrived within ``receive_timeout`` is
  ended.  A stranger can therefore slow the node down by opening streams
  faster than messages arrive, but cannot silence it.
* The request is read as raw bytes.  ``SJ-TOKEN`` is checked from the
  request's ``metadata`` field before the ``body`` field is decoded, so a
  call without the token costs one scan of its bytes, no copy of its body.
* gRPC itself bounds the rest: 10 MiB per message (the Java client's limit),
  ``max_streams`` per connection, ``max_connections``, connection age and
  idle time, and keepalive-ping enforcement.
* Refused calls are logged at most once a minute per peer, with a count,
  and every text taken from the call is quoted.

New calls are taken in by grpcio's own request and, where this grpcio
allows it, ``acceptors`` more kept pending beside it (``inbound_accept``):
under load a burst is then taken in within one turn of the loop.

Handlers are plain functions ``handler(uri, headers, body) -> Reply``.  Those
of the URIs ``inline`` accepts run on the event-loop thread (they must only
parse, validate and queue, as the dispatch and stop handlers do); the others
run on a pool of up to ``workers`` threads (the retry calls run user code).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, cast

from snailjob.address import is_loopback, join_host_port
from snailjob.errors import TransportError
from snailjob.inbound_accept import Acceptors
from snailjob.inbound_calls import Abort, Calls, InboundHandler, LoopServer, Work, peer_host
from snailjob.settings import DEFAULT_TOKEN

if TYPE_CHECKING:
    import grpc
    import grpc.aio

    from snailjob.wire import snailjob_pb2 as pb
else:
    grpc = pb = None  # set by _load_grpc()

logger = logging.getLogger(__name__)

SERVICE, METHOD_NAME = "UnaryRequest", "unaryRequest"
MiB = 1024 * 1024


@dataclass(frozen=True)
class InboundLimits:
    """What one peer, or all of them together, can take from the port."""

    message_bytes: int = 10 * MiB  # as the Java client's inbound server
    # concurrent calls per connection (HTTP/2 setting).  gRPC counts a call until the loop has
    # released it, and the server may have 2 x 128 calls in flight, so a tight limit refuses a
    # well-behaved server's burst whenever the loop falls behind.
    max_streams: int = 1000
    max_connections: int = 4096  # open connections; the fd limit is raised to fit at start
    pending_calls: int = 4096  # calls waiting for their request message; beyond: the oldest is ended
    receive_timeout: float = 10.0  # seconds a call may take to send its request message
    buffered_bytes: int = 256 * MiB  # messages still coming in, over all calls (native server only)
    connection_idle: float = 300.0  # seconds without a call before a connection is closed
    connection_age: float = 3600.0  # seconds before a connection is asked to reconnect
    connection_age_grace: float = 30.0  # ... and then given to finish its calls
    min_ping_interval: float = 10.0  # pings closer than this without data are strikes (2 close it)
    keepalive: float = 60.0  # seconds between this side's pings on a quiet connection
    keepalive_timeout: float = 20.0  # a ping unanswered this long closes the connection

    def options(self) -> List[Tuple[str, Any]]:
        ms = lambda seconds: int(seconds * 1000)  # noqa: E731
        return [
            ("grpc.max_receive_message_length", self.message_bytes),
            ("grpc.max_send_message_length", self.message_bytes),
            ("grpc.max_concurrent_streams", self.max_streams),
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.max_connection_idle_ms", ms(self.connection_idle)),
            ("grpc.max_connection_age_ms", ms(self.connection_age)),
            ("grpc.max_connection_age_grace_ms", ms(self.connection_age_grace)),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", ms(self.min_ping_interval)),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_time_ms", ms(self.keepalive)),
            ("grpc.keepalive_timeout_ms", ms(self.keepalive_timeout)),
            ("grpc.so_reuseport", 0),
        ]


def _one_at_a_time(why: str) -> None:
    logger.debug("inbound server takes in one new call at a time: %s", why)


def _load_grpc() -> None:
    if pb is None:
        globals()["grpc"] = importlib.import_module("grpc")
        importlib.import_module("grpc.aio")
        globals()["pb"] = importlib.import_module("snailjob.wire.snailjob_pb2")


# --- the server ----------------------------------------------------------------


class InboundServer(LoopServer):
    """The gRPC server the SnailJob server calls (dispatch, stop, ...).

    ``handler(uri, headers, body)`` returns a ``Reply``; an exception in it
    becomes a ``status=0`` reply, never a gRPC error.  With ``token``, calls
    without that ``SJ-TOKEN`` are answered ``status=0`` before their body is
    decoded and never reach the handler.  ``inline(path)`` says which URIs'
    handlers are quick enough to run on the event-loop thread.
    """

    def __init__(self, bind_host: str, port: int, handler: InboundHandler, workers: int = 16, *,
                 token: Optional[str] = None, inline: Callable[[str], bool] = lambda path: False,
                 limits: Optional[InboundLimits] = None, acceptors: int = 16) -> None:
        _load_grpc()
        super().__init__(Calls(handler, workers, token, inline, logger))
        self.limits = limits or InboundLimits()
        self._acceptor_count = acceptors
        self.acceptors: Optional[Acceptors] = None
        """The extra requests for new calls (``inbound_accept``), when this grpcio allows them."""
        self._waiting: OrderedDict[asyncio.Task[Any], None] = OrderedDict()  # calls waiting for their message
        self._ended: Dict[asyncio.Task[Any], str] = {}  # why a waiting call was cancelled
        self.evicted = 0  # calls ended because newer ones needed their place
        self.timed_out = 0  # calls ended because their message did not come in time
        self._stopped = threading.Event()
        self._started = False
        self.address = join_host_port(bind_host, port)
        try:
            self._server, self.port = self._on_loop(self._create(self.address))
        except Exception:
            self._close_loop()
            raise

    async def _create(self, address: str) -> Tuple[Any, int]:
        server = grpc.aio.server(options=self.limits.options())
        method = grpc.stream_unary_rpc_method_handler(
            self._serve, request_deserializer=None,
            response_serializer=pb.GrpcResult.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD_NAME: method}),))
        acceptors = Acceptors(server, SERVICE, METHOD_NAME, method, self._acceptor_count)
        why = acceptors.register()
        if why is None:
            self.acceptors = acceptors
        else:
            _one_at_a_time(why)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise TransportError(f"cannot listen on {address}: {exc}") from None
        if port == 0:
            raise TransportError(f"cannot listen on {address} (port in use?)")
        return server, port

    # --- one call -----------------------------------------------------------

    async def _receive(self, context: Any) -> bytes:
        """The request message; the call is aborted when it was evicted, too
        slow, or closed without a message.  The handler's own task waits for
        the message (no task or waiter of its own: this is every call's path)
        and is cancelled to end the wait."""
        task = asyncio.current_task()
        assert task is not None
        waiting = self._waiting
        waiting[task] = None
        if len(waiting) > self.limits.pending_calls:
            oldest, _ = waiting.popitem(last=False)
            self._ended[oldest] = "evicted"
            oldest.cancel()
        timer = self._loop.call_later(self.limits.receive_timeout, self._expire, task)
        try:
            data = await context.read()
        except asyncio.CancelledError:
            why = self._ended.pop(task, None)
            if why is None:  # cancelled by gRPC: the caller went away
                raise
            if why == "evicted":
                self.evicted += 1
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    "too many calls wait for their request; this one waited longest")
            self.timed_out += 1
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no request message within {self.limits.receive_timeout:g} s")
            raise
        finally:
            timer.cancel()
            waiting.pop(task, None)
        if data is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")
        return cast(bytes, data)

    def _expire(self, task: asyncio.Task[Any]) -> None:
        """The receive timeout of a call still waiting for its message."""
        if task in self._waiting:
            del self._waiting[task]
            self._ended[task] = "timed out"
            task.cancel()

    async def _serve(self, request_iterator: Any, context: Any) -> Any:
        data = await self._receive(context)
        step = self._calls.prepare(data, peer_host(context.peer() or "unknown"))
        if isinstance(step, Abort):
            await context.abort(getattr(grpc.StatusCode, step.code), step.message)
        if isinstance(step, pb.GrpcResult):
            return step
        return await self._calls.answer(cast(Work, step), self._loop)

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._on_loop(self._server.start())
        self._started = True
        if self.acceptors is not None:
            why = self._on_loop(self._start_acceptors(self.acceptors))
            if why is not None:
                self.acceptors = None
                _one_at_a_time(why)

    async def _start_acceptors(self, acceptors: Acceptors) -> Optional[str]:
        return acceptors.start(self._loop)

    def stop(self, grace: Optional[float] = None) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            if not self._started:  # a gRPC server never started keeps its port until started and stopped
                self._on_loop(self._server.start())
            self._on_loop(self._server.stop(grace), timeout=(grace or 0) + 5)
            if self.acceptors is not None:
                self._on_loop(self.acceptors.close())
        except Exception as exc:  # a loop that cannot stop in time still gets closed
            logger.debug("inbound server stop: %r", exc)
        self._close_loop()
        self._calls.close()



def default_token_warning(token: str, bind_host: str) -> Optional[str]:
    """The start-up warning for a node that anyone beyond this host can call
    with the public default token, or None."""
    if token != DEFAULT_TOKEN or is_loopback(bind_host):
        return None
    return (f"SNAIL_TOKEN is SnailJob's public default token and the inbound port listens on {bind_host}: "
            "anyone who can reach it can run this node's jobs. Set the group's own token in the console "
            "and in SNAIL_TOKEN (docs/security.md)")


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's soft limit of open files towards ``wanted``
    (never above the hard limit, never lower), so that the connections the
    inbound port allows do not run the process out of descriptors.  The
    JVM does the same for the Java client."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            logger.debug("open-file limit raised from %d to %d", soft, target)
        except (OSError, ValueError) as exc:
            logger.debug("open-file limit left at %d: %r", soft, exc)
